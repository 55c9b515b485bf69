"""Prometheus instruments that services and stores update (exposed by
`backend.api.metrics`, which documents every metric; here so that the layers below the
API can count without importing it)."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "FANOUT_LAG",
    "GC_BYTES",
    "GC_OBJECTS",
    "GC_RUNS",
    "PUSH_CONNECTIONS",
    "SCRUB_BYTES",
    "SCRUB_LAST_PROBLEMS",
    "SCRUB_OBJECTS",
    "SCRUB_PROBLEMS",
    "SCRUB_RUNS",
    "STORE_OPERATIONS",
    "timed_store_operation",
]

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

STORE_OPERATIONS = Histogram(
    "mountfs_blockstore_operation_duration_seconds",
    "Block store operations the backend performs, by store (local, s3), operation "
    "(finish_upload, discard_upload_evidence, exists, delete, read_object) and outcome.",
    ["store", "operation", "outcome"],
    buckets=LATENCY_BUCKETS,
)
PUSH_CONNECTIONS = Gauge(
    "mountfs_push_connections",
    "Open push channels (watch streams) on this instance.",
    multiprocess_mode="livesum",
)
FANOUT_LAG = Histogram(
    "mountfs_journal_fanout_lag_seconds",
    "Journal lag between instances: from the commit of a journal entry on another "
    "instance (its NOTIFY) to this instance hearing of it and waking its push channels.",
    buckets=LATENCY_BUCKETS,
)
GC_RUNS = Counter("mountfs_gc_runs_total", "Garbage collection passes, by outcome.", ["outcome"])
GC_OBJECTS = Counter("mountfs_gc_objects_deleted_total", "Objects garbage collection deleted.")
GC_BYTES = Counter("mountfs_gc_bytes_deleted_total", "Stored bytes garbage collection freed.")
SCRUB_RUNS = Counter("mountfs_scrub_runs_total", "Scrub passes, by outcome.", ["outcome"])
SCRUB_OBJECTS = Counter("mountfs_scrub_objects_checked_total", "Objects scrub read and hashed.")
SCRUB_BYTES = Counter("mountfs_scrub_bytes_checked_total", "Bytes scrub read and hashed.")
SCRUB_PROBLEMS = Counter(
    "mountfs_scrub_problems_total",
    "Problems scrub found, by kind (missing, corrupt, orphaned, bad_manifest).",
    ["kind"],
)

SCRUB_LAST_PROBLEMS = Gauge(
    "mountfs_scrub_last_problems",
    "Problems the last finished scrub of this process found, by kind: alert on missing "
    "or corrupt above 0.",
    ["kind"],
    multiprocess_mode="mostrecent",
)

P = ParamSpec("P")
R = TypeVar("R")


def timed_store_operation(operation: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Time a store method into `STORE_OPERATIONS`; the store is named by the instance's
    `metrics_kind` attribute (its first argument)."""

    def decorate(method: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(method)
        def timed(*args: P.args, **kwargs: P.kwargs) -> R:
            kind = str(getattr(args[0], "metrics_kind", "unknown"))
            started = time.perf_counter()
            outcome = "error"
            try:
                result = method(*args, **kwargs)
                outcome = "ok"
                return result
            finally:
                STORE_OPERATIONS.labels(kind, operation, outcome).observe(
                    time.perf_counter() - started
                )

        return timed

    return decorate
