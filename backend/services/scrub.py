"""Scrub: prove that every stored chunk is intact and that the metadata agrees with it.

No key is needed (DESIGN.md invariant 3): an object's name is the SHA-256 of its bytes, so
reading it back and hashing it verifies it. A scrub:

1. reads every object the store lists, hashes it, and compares with its name and with the
   `chunk` row's `stored_size`: a difference is **corrupt**;
2. reports every `chunk` row whose object the store does not have: **missing**;
3. reports every object that no `chunk` row and no hold names: **orphaned** (an upload
   that never got committed; the GC deletes those once older than its grace period);
4. checks every revision's manifest (the JSON a client gets) against its `revision_chunk`
   rows and the `chunk` table (same objects in the same order, the stored sizes the store
   observed, offsets that tile the file's size): a difference is a **bad manifest**.

`repair=True` (`mountfs admin scrub --repair`) then deletes orphans older than the grace
period (younger ones may be uploads on their way to a commit) and corrupt objects, and for
every corrupt or missing object marks the revisions that use it damaged (`damaged_at`:
listed as such, never restored) and withdraws every account's ownership of it, so that no
client is told to skip uploading those bytes again: the next upload of the same content
puts a sound object back under the same name.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Connection, delete, select, update

from backend import telemetry
from backend.db.engine import Database
from backend.db.tables import chunk, chunk_owner, held_upload, revision, revision_chunk
from backend.services.clock import utcnow
from backend.store.base import BlockStore, StoredObject

__all__ = ["RepairReport", "ScrubReport", "scrub"]

log = logging.getLogger(__name__)

_READERS = 4  # objects read and hashed at once (hashlib releases the GIL)
_PAGE = 1000  # revisions per manifest page


@dataclass(frozen=True, slots=True)
class RepairReport:
    orphans_deleted: int
    corrupt_deleted: int
    revisions_damaged: int
    ownerships_withdrawn: int


@dataclass(slots=True)
class ScrubReport:
    """What a scrub found; the lists hold object names (revision ids for manifests)."""

    objects_checked: int = 0
    bytes_checked: int = 0
    corrupt: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    orphaned: list[str] = field(default_factory=list)
    manifests_checked: int = 0
    bad_manifests: list[str] = field(default_factory=list)
    seconds: float = 0.0
    repair: RepairReport | None = None

    @property
    def clean(self) -> bool:
        return not (self.corrupt or self.missing or self.orphaned or self.bad_manifests)

    @property
    def mb_per_second(self) -> float:
        return self.bytes_checked / 1e6 / self.seconds if self.seconds > 0 else 0.0


def scrub(
    db: Database,
    store: BlockStore,
    *,
    repair: bool = False,
    grace: timedelta,
    now: datetime | None = None,
) -> ScrubReport:
    """Verify the store and the manifests (module docstring); repair if asked. Counted in
    the `mountfs_scrub_*` metrics (`backend.telemetry`) of the process that runs it."""
    try:
        report = _scrub(db, store, repair=repair, grace=grace, now=now)
    except Exception:
        telemetry.SCRUB_RUNS.labels("failed").inc()
        raise
    telemetry.SCRUB_RUNS.labels("ok").inc()
    telemetry.SCRUB_OBJECTS.inc(report.objects_checked)
    telemetry.SCRUB_BYTES.inc(report.bytes_checked)
    for kind, found in (
        ("missing", report.missing),
        ("corrupt", report.corrupt),
        ("orphaned", report.orphaned),
        ("bad_manifest", report.bad_manifests),
    ):
        telemetry.SCRUB_PROBLEMS.labels(kind).inc(len(found))
        telemetry.SCRUB_LAST_PROBLEMS.labels(kind).set(len(found))
    return report


def _scrub(
    db: Database,
    store: BlockStore,
    *,
    repair: bool,
    grace: timedelta,
    now: datetime | None,
) -> ScrubReport:
    started = time.monotonic()
    now = now or utcnow()
    report = ScrubReport()
    with db.read() as conn:
        sizes = {
            r.object: int(r.stored_size)
            for r in conn.execute(select(chunk.c.object, chunk.c.stored_size))
        }
        held = set(conn.execute(select(held_upload.c.object)).scalars())
    seen: set[str] = set()
    old_orphans: list[str] = []
    listing = list(store.list_objects())
    with ThreadPoolExecutor(_READERS) as pool:
        for stored, ok in zip(listing, pool.map(lambda s: _verify(store, s), listing), strict=True):
            seen.add(stored.name)
            report.objects_checked += 1
            report.bytes_checked += stored.size
            expected = sizes.get(stored.name)
            if not ok or (expected is not None and expected != stored.size):
                report.corrupt.append(stored.name)
            elif expected is None and stored.name not in held:
                report.orphaned.append(stored.name)
                if stored.modified < now - grace:
                    old_orphans.append(stored.name)
    report.missing = sorted(set(sizes) - seen)
    with db.read() as conn:
        for rev_id, problem in _check_manifests(conn, sizes, report):
            log.warning("scrub: revision %s: %s", rev_id, problem)
            report.bad_manifests.append(rev_id)
    if repair:
        report.repair = _repair(db, store, report, old_orphans, now)
    report.seconds = time.monotonic() - started
    log.info(
        "scrub: %d objects (%d bytes), %d corrupt, %d missing, %d orphaned, %d bad manifests",
        report.objects_checked,
        report.bytes_checked,
        len(report.corrupt),
        len(report.missing),
        len(report.orphaned),
        len(report.bad_manifests),
    )
    return report


def _verify(store: BlockStore, stored: StoredObject) -> bool:
    data = store.read_object(stored.name)
    return data is not None and hashlib.sha256(data).hexdigest() == stored.name


def _check_manifests(
    conn: Connection, sizes: dict[str, int], report: ScrubReport
) -> Iterator[tuple[str, str]]:
    after = ""
    while True:
        rows = conn.execute(
            select(revision.c.id, revision.c.size, revision.c.manifest)
            .where(revision.c.id > after)
            .order_by(revision.c.id)
            .limit(_PAGE)
        ).all()
        if not rows:
            return
        after = rows[-1].id
        ids = [r.id for r in rows]
        listed: dict[str, list[str]] = {i: [] for i in ids}
        for rc in conn.execute(
            select(revision_chunk.c.revision_id, revision_chunk.c.object)
            .where(revision_chunk.c.revision_id.in_(ids))
            .order_by(revision_chunk.c.revision_id, revision_chunk.c.seq)
        ):
            listed[rc.revision_id].append(rc.object)
        for r in rows:
            report.manifests_checked += 1
            problem = _manifest_problem(json.loads(r.manifest), int(r.size), listed[r.id], sizes)
            if problem is not None:
                yield r.id, problem


def _manifest_problem(
    refs: list[dict[str, object]], size: int, listed: list[str], sizes: dict[str, int]
) -> str | None:
    if [str(ref["object"]) for ref in refs] != listed:
        return "manifest and revision_chunk rows name different objects"
    offset = 0
    for i, ref in enumerate(refs):
        obj = str(ref["object"])
        if ref["offset"] != offset:
            return f"chunk {i} starts at {ref['offset']}, expected {offset}"
        if sizes.get(obj) != ref["stored_size"]:
            return f"chunk {i} stored_size {ref['stored_size']}, chunk table {sizes.get(obj)}"
        plain = ref["size"]
        offset += plain if isinstance(plain, int) else 0
    if offset != size:
        return f"chunks cover {offset} bytes of {size}"
    return None


def _repair(
    db: Database, store: BlockStore, report: ScrubReport, old_orphans: list[str], now: datetime
) -> RepairReport:
    for obj in old_orphans:
        store.delete(obj)
    for obj in report.corrupt:
        store.delete(obj)
    gone = sorted(set(report.corrupt) | set(report.missing))
    damaged = withdrawn = 0
    with db.write() as conn:
        for start in range(0, len(gone), 500):
            batch = gone[start : start + 500]
            users = select(revision_chunk.c.revision_id).where(revision_chunk.c.object.in_(batch))
            damaged += conn.execute(
                update(revision)
                .where(revision.c.id.in_(users), revision.c.damaged_at.is_(None))
                .values(damaged_at=now)
            ).rowcount
            withdrawn += conn.execute(
                delete(chunk_owner).where(chunk_owner.c.object.in_(batch))
            ).rowcount
            conn.execute(delete(held_upload).where(held_upload.c.object.in_(batch)))
    return RepairReport(
        orphans_deleted=len(old_orphans),
        corrupt_deleted=len(report.corrupt),
        revisions_damaged=damaged,
        ownerships_withdrawn=withdrawn,
    )
