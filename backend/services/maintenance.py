"""Periodic storage hygiene: retention, then garbage collection (and, with
`--scrub-interval`, a read-only scrub now and then).

`run_pass` is one pass: `versions.apply_retention` (thin old versions, purge expired
trash) then `gc.collect` (delete unreferenced chunks past the grace period). The server
runs it every `maintenance_interval` seconds in a background thread (`MaintenanceLoop`,
started by the app's lifespan); `mountfs admin gc` runs it on demand.

Passes are safe to run concurrently (each step is its own transactions; see
`backend.services.gc`), but one at a time is cheaper: a pass holds an exclusive `flock` on
`DATA/maintenance.lock`, and the periodic loop skips its turn if another process (another
worker, or an operator's `mountfs admin gc`) holds it.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from backend.db.engine import Database
from backend.services import gc, scrub, versions
from backend.settings import Settings
from backend.store.base import BlockStore

__all__ = ["MaintenanceLoop", "PassReport", "exclusive", "policy_of", "run_pass"]

log = logging.getLogger(__name__)

LOCK_FILE = "maintenance.lock"


@dataclass(frozen=True, slots=True)
class PassReport:
    retention: versions.RetentionReport
    gc: gc.GcReport


def policy_of(settings: Settings) -> versions.RetentionPolicy:
    return versions.RetentionPolicy(
        keep_all_days=settings.keep_all_versions_days,
        keep_daily_days=settings.keep_daily_versions_days,
        trash_days=settings.trash_days,
    )


def run_pass(
    db: Database,
    store: BlockStore,
    policy: versions.RetentionPolicy,
    grace: timedelta,
    now: datetime | None = None,
) -> PassReport:
    retention = versions.apply_retention(db, policy, now)
    return PassReport(retention=retention, gc=gc.collect(db, store, grace=grace, now=now))


@contextlib.contextmanager
def exclusive(data: Path, *, wait: bool) -> Iterator[bool]:
    """Hold the maintenance lock of a data directory; yields False if `wait` is False and
    another process holds it."""
    data.mkdir(parents=True, exist_ok=True)
    fd = os.open(data / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # releases the lock


class MaintenanceLoop:
    """A daemon thread running `run_pass` every `interval` seconds until `stop()`."""

    def __init__(self, db: Database, store: BlockStore, settings: Settings) -> None:
        self._db = db
        self._store = store
        self._settings = settings
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mountfs-maintenance", daemon=True)

    def start(self) -> None:
        if self._settings.maintenance_interval > 0:
            self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def _run(self) -> None:
        interval = self._settings.maintenance_interval
        last_scrub: float | None = None
        while not self._stopping.wait(interval):
            try:
                with exclusive(self._settings.data, wait=False) as mine:
                    if mine:
                        grace = timedelta(seconds=self._settings.gc_grace)
                        run_pass(self._db, self._store, policy_of(self._settings), grace)
                        if self._scrub_due(last_scrub):
                            last_scrub = time.monotonic()
                            self._scrub(grace)
            except Exception:
                log.exception("maintenance pass failed; the next one runs in %d s", interval)

    def _scrub_due(self, last: float | None) -> bool:
        every = self._settings.scrub_interval
        return every > 0 and (last is None or time.monotonic() - last >= every)

    def _scrub(self, grace: timedelta) -> None:
        """A read-only scrub (`--scrub-interval`): it feeds the `mountfs_scrub_*` metrics
        and says in the log what an operator should look at (`mountfs admin scrub
        --repair` decides what to do about it)."""
        report = scrub.scrub(self._db, self._store, repair=False, grace=grace)
        lost = len(report.missing) + len(report.corrupt) + len(report.bad_manifests)
        log.log(
            logging.WARNING if lost else logging.INFO,
            "scrub: %d objects checked; %d missing, %d corrupt, %d orphaned, %d bad manifests",
            report.objects_checked,
            len(report.missing),
            len(report.corrupt),
            len(report.orphaned),
            len(report.bad_manifests),
        )
