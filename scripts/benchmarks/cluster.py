"""Metadata and presign throughput of the cluster profile, against the embedded default.

What runs: `scripts/cluster up` in a temporary directory (PostgreSQL, SeaweedFS, backend
instances, nginx terminating TLS), grown from 1 instance to 2 (and 4 in a full run) with
`scripts/cluster up --instances N` (idempotent: it only adds instances and reloads
nginx), and, for comparison, one embedded backend (`python -m backend`, SQLite and the
local block store, plain HTTP on loopback) as `backend.*` runs it. K clients (threads of
this process, each with its own device login and HTTPS connection) go through the load
balancer. For the writes (`create`, `rename`, `commit`, `presign`) each client is a device
of an account of its own, as the users of a team are: one account's changes are
serialised on its namespace by design, so K devices of one account would measure one
namespace's lock, not the cluster. For `journal` reads they are K devices of one account
with a long journal. The workloads and their checks are those of `backend_meta`, plus
`presign`: `POST /chunks/upload-urls` for 16 objects per call, whose figure counts
presigned chunk operations per second (the unit of the design's 14,500 chunk operations
per second at full scale).

Each figure's note gives the p50 and p99 latency of the requests of that run. Everything,
load generator included, shares this machine's cores: the figures say what one machine
holds, and the step from 1 to N instances says how far adding processes helps here; on
separate machines each instance would have cores of its own.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from .backend_meta import (
    API,
    TARGET_AVERAGE_QPS,
    TARGET_PEAK_QPS,
    WORKLOADS,
    Client,
    Operation,
    Session,
    UnexpectedAnswer,
    drive,
    open_session,
)
from .harness import Benchmark, FixedReference, Metric, Options, Report, Sample, Suite, Table

if TYPE_CHECKING:
    from tests.support.backend import BackendProcess

__all__ = ["SUITE"]

ROOT = Path(__file__).resolve().parents[2]
TARGET_CHUNK_OPS = 14_500.0
PRESIGN_BATCH = 16
META = ("create", "rename", "commit", "journal")
READS = frozenset({"cluster.journal"})
PRESIGN = Metric("chunk presigns", "objects/s", True)


class _Endpoint:
    """What `open_session` needs of a server: its base URL."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url


def presign_ops(session: Session, run: int) -> list[Operation]:
    """Each client asks for presigned PUTs of 16 (random, never uploaded) objects."""

    def op_for(client: Client) -> Operation:
        def presign() -> None:
            objects = [
                {"object": hashlib.sha256(os.urandom(16)).hexdigest(), "size": 1 << 20}
                for _ in range(PRESIGN_BATCH)
            ]
            answer = client.call(
                "POST", f"{API}/chunks/upload-urls", (200,), json={"objects": objects}
            )
            if len(answer["urls"]) != PRESIGN_BATCH:
                raise UnexpectedAnswer(f"asked {PRESIGN_BATCH} URLs, got {len(answer['urls'])}")

        return presign

    return [op_for(client) for client in session.clients]


class _Latencies:
    """Wraps operations to record how long each call took (thread-safe appends)."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._lock = threading.Lock()

    def wrap(self, ops: list[Operation]) -> list[Operation]:
        def timed(op: Operation) -> Operation:
            def call() -> None:
                started = time.perf_counter()
                op()
                took = time.perf_counter() - started
                with self._lock:
                    self.seconds.append(took)

            return call

        return [timed(op) for op in ops]

    def note(self, requests: int, seconds: float) -> str:
        ordered = sorted(self.seconds)
        if not ordered:
            return "no request completed"
        p50 = ordered[len(ordered) // 2] * 1000
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000
        return f"{requests:,} in {seconds:.1f} s; p50 {p50:.1f} ms, p99 {p99:.1f} ms"


def _measure(
    sessions: list[Session],
    prepare: Callable[[Session, int], list[Operation]],
    run_index: int,
    duration_s: float,
) -> tuple[float, str]:
    latencies = _Latencies()
    ops = [op for session in sessions for op in prepare(session, run_index)]
    outcome = drive(latencies.wrap(ops), duration_s, os.getpid())
    return outcome.requests / outcome.seconds, latencies.note(outcome.requests, outcome.seconds)


def _workloads() -> list[tuple[str, Metric, Callable[[Session, int], list[Operation]], int]]:
    """(benchmark, metric, prepare, units per request) of every cluster benchmark."""
    rows = [(f"cluster.{w}", *_meta(w)) for w in META]
    return [*rows, ("cluster.presign", PRESIGN, presign_ops, PRESIGN_BATCH)]


def _meta(name: str) -> tuple[Metric, Callable[[Session, int], list[Operation]], int]:
    workload = WORKLOADS[f"backend.{name}"]
    return workload.metric, workload.prepare, 1


@contextlib.contextmanager
def _cluster(workdir: Path) -> Iterator[Callable[[int], str]]:
    """A cluster in a temporary directory; yields `scale(n) -> url`; always purged."""
    from tests.support.ports import free_port

    directory = Path(tempfile.mkdtemp(prefix="bench-cluster-", dir=workdir))
    script = [str(ROOT / "scripts" / "cluster"), "--dir", str(directory)]
    ports = ["--port", str(free_port()), "--s3-port", str(free_port())]
    saved = os.environ.get("SSL_CERT_FILE")

    def scale(instances: int) -> str:
        result = subprocess.run(
            [*script, "up", "--instances", str(instances), *ports, "--json"],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"scripts/cluster up failed:\n{result.stderr}")
        state = json.loads(result.stdout)
        os.environ["SSL_CERT_FILE"] = str(state["ca_file"])  # clients verify the cluster's CA
        return str(state["url"])

    try:
        yield scale
    finally:
        subprocess.run([*script, "down", "--purge"], capture_output=True, check=False)
        if saved is None:
            os.environ.pop("SSL_CERT_FILE", None)
        else:
            os.environ["SSL_CERT_FILE"] = saved


def run(report: Report, options: Options, selected: tuple[str, ...]) -> None:
    from tests.support.backend import running_backend
    from tests.support.cluster import cluster_unavailable

    reason = cluster_unavailable()
    if reason is not None:
        for name in selected:
            report.skip(name, reason)
        return
    k = options.clients
    meta = report.table(
        "cluster",
        f"Cluster profile: metadata throughput through nginx + TLS on PostgreSQL, {k} clients "
        f"of {k} accounts ({options.duration_s:g} s per run)",
        FixedReference(
            (("1,000 QPS target", TARGET_AVERAGE_QPS), ("5,800 QPS peak", TARGET_PEAK_QPS))
        ),
    )
    presign = report.table(
        "cluster-presign",
        f"Cluster profile: presigned chunk operations ({PRESIGN_BATCH} objects per request)",
        FixedReference((("14,500 chunk ops/s target", TARGET_CHUNK_OPS),)),
    )
    wanted = [w for w in _workloads() if w[0] in selected]
    scales = (1, 2) if options.quick else (1, 2, 4)
    with tempfile.TemporaryDirectory(prefix="bench-embedded-", dir=options.workdir) as tmp:
        report.progress("measuring the embedded default (SQLite, one process)")
        with running_backend(Path(tmp)) as backend:
            _column(report, meta, presign, backend, "embedded", wanted, options)
    with _cluster(options.workdir) as scale:
        for n in scales:
            report.progress(f"scaling the cluster to {n} instance(s)")
            url = scale(n)
            column = f"{n} instance{'s' if n > 1 else ''}"
            _column(report, meta, presign, _Endpoint(url), column, wanted, options)


def _column(
    report: Report,
    meta: Table,
    presign: Table,
    server: BackendProcess | _Endpoint,
    column: str,
    wanted: list[tuple[str, Metric, Callable[[Session, int], list[Operation]], int]],
    options: Options,
) -> None:
    """Measure every wanted workload on `server` into `column`: for writes, K clients, each
    a device of an account of its own (a team's users, not one user's K devices: changes
    of one account are serialised on its namespace, by design, so one account cannot show
    what the cluster holds); for reads, K devices of one account."""
    with contextlib.ExitStack() as stack:
        writers = [
            stack.enter_context(open_session(server, 1))  # type: ignore[arg-type]
            for _ in range(options.clients)
        ]
        # Reads need a long journal, which costs 1,000 creates per account to build: the
        # readers are K devices of one account (reads take no namespace lock).
        readers = [stack.enter_context(open_session(server, options.clients))]  # type: ignore[arg-type]
        for run_index in range(options.runs):
            for name, metric, prepare, units in wanted:
                sessions = readers if name in READS else writers
                try:
                    rate, note = _measure(sessions, prepare, run_index, options.duration_s)
                except Exception as exc:
                    report.error(name, exc)
                    continue
                table = presign if metric is PRESIGN else meta
                table.add(name, column, Sample(metric, rate * units, note))
                report.progress(f"{name} ({column}) run {run_index + 1}: {rate * units:,.0f}")


SUITE = Suite(
    name="cluster",
    benchmarks=(
        Benchmark("cluster.create", "creates through nginx/TLS, embedded vs 1/2/4 instances"),
        Benchmark("cluster.rename", "renames, embedded vs 1/2/4 instances"),
        Benchmark("cluster.commit", "4-chunk commits (S3 HeadObject per new object once)"),
        Benchmark("cluster.journal", "change-feed reads of 100 entries"),
        Benchmark("cluster.presign", "presigned PUTs, 16 per request, against 14,500/s"),
    ),
    run=run,
)
