"""Garbage collection of chunk objects that nothing references (DESIGN.md invariant 7).

An object may be deleted from the block store only when all of these hold, checked again
inside the transaction that deletes it:

- no revision references it: its `chunk` row has `refcount` 0 (refcounts are exact, kept in
  the transactions of commits and purges), or it has no `chunk` row at all (an upload that
  was never committed);
- it has been unreferenced for longer than the grace period: `max(created_at,
  released_at)` of its `chunk` row, or, with no row, the store's own time of the object,
  is older than `now - grace`;
- no account holds it with a hold younger than the grace (`held_upload`: uploaded, not
  committed yet); older holds are abandoned uploads and are dropped with it.

The grace period must be longer than any upload in flight: longer than a presigned URL
lives (`url_ttl`) plus the time between a client's `prepare` ("skip this chunk, you have
it") and its commit. The default is a day.

Why a revision can never end up naming a deleted object, whatever runs concurrently: the
deleting transaction also deletes the object's ownership (`chunk_owner`), holds and `chunk`
row, and removes the object from the store *before it commits*. Every commit requires
ownership inside its own transaction, and every confirmation of an upload
(`revisions.confirm_uploads`, `chunks.hold_uploads`) asks the store (`finish_upload`) and
records what it confirms inside a write transaction holding the account's row lock. On
SQLite all write transactions are serialised, so each of those runs entirely before the
GC's (then the object is referenced or young, and kept) or entirely after it (then the
object is gone: the local store confirms nothing for a missing object and the commit is
refused `missing_chunks`, the client uploads again and the same bytes get the same name
back; S3 copies the object back into place from the account's staging copy, the same
verified bytes, and records it). On PostgreSQL the GC's transaction gets the same
serialisation by locking the namespace table against commits and every account row
against confirmations (`_serialise_with_confirmations`).

The store's evidence of an upload (local marker, S3 staging key) is removed by the
confirming request only *after* its transaction has committed, so a transaction cut by a
database restart or a killed instance leaves it for the retry (store/base.py). Evidence
left behind that way, by a failed removal, or by an upload never committed is discarded
here once it is older than the grace (`_discard_stale_evidence`), with the same reasoning
as for orphan objects: a commit comes within the grace of its upload or not at all (it is
then refused `missing_chunks` and uploads again, which renews the evidence). Removing it
needs no lock: a confirmation that verified it before has recorded, or will record, what
it proved, and one that looks after finds nothing; evidence of an object the account
already owns is never looked at again.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, delete, func, or_, select, text

from backend import telemetry
from backend.db.engine import Database
from backend.db.tables import account, chunk, chunk_owner, held_upload
from backend.services.clock import as_utc, utcnow
from backend.store.base import BlockStore

__all__ = ["DEFAULT_GRACE", "GcReport", "collect"]

log = logging.getLogger(__name__)

DEFAULT_GRACE = timedelta(days=1)
_BATCH = 200  # objects per deleting transaction


@dataclass(frozen=True, slots=True)
class GcReport:
    """What one pass did.

    Attributes:
        objects_deleted, bytes_deleted: removed from the store (and their rows).
        holds_dropped: abandoned uploads' holds older than the grace.
        evidence_discarded: store evidence of uploads (local markers, S3 staging keys)
            older than the grace, removed.
        kept_young: unreferenced objects kept because they are younger than the grace.
        objects_listed: objects the store listed (the pass looks at each once).
        seconds: wall time of the pass.
    """

    objects_deleted: int
    bytes_deleted: int
    holds_dropped: int
    evidence_discarded: int
    kept_young: int
    objects_listed: int
    seconds: float


def collect(
    db: Database, store: BlockStore, *, grace: timedelta, now: datetime | None = None
) -> GcReport:
    """One garbage collection pass (see the module docstring); safe to run at any time,
    next to a serving backend and to another pass. Counted in the `mountfs_gc_*` metrics
    (`backend.telemetry`) of the process that runs it."""
    try:
        report = _collect(db, store, grace=grace, now=now)
    except Exception:
        telemetry.GC_RUNS.labels("failed").inc()
        raise
    telemetry.GC_RUNS.labels("ok").inc()
    telemetry.GC_OBJECTS.inc(report.objects_deleted)
    telemetry.GC_BYTES.inc(report.bytes_deleted)
    return report


def _collect(
    db: Database, store: BlockStore, *, grace: timedelta, now: datetime | None
) -> GcReport:
    started = time.monotonic()
    now = now or utcnow()
    cutoff = now - grace
    with db.read() as conn:
        released = _unreferenced_rows(conn, cutoff)
        young_rows = int(
            conn.execute(
                select(func.count()).select_from(chunk).where(chunk.c.refcount == 0)
            ).scalar_one()
        ) - len(released)
    listed = 0
    orphans: dict[str, int] = {}
    young_orphans = 0
    known = _known_objects(db)
    for stored in store.list_objects():
        listed += 1
        if stored.name in known:
            continue
        if stored.modified < cutoff:
            orphans[stored.name] = stored.size
        else:
            young_orphans += 1
    holds_dropped = _drop_old_holds(db, cutoff)
    evidence_discarded = _discard_stale_evidence(store, cutoff)
    deleted = freed = kept = 0
    candidates = sorted({**orphans, **released}.items())
    for start in range(0, len(candidates), _BATCH):
        batch = candidates[start : start + _BATCH]
        with db.write() as conn:
            _serialise_with_confirmations(conn)
            for obj, size in batch:
                if _still_collectable(conn, obj, cutoff):
                    conn.execute(delete(held_upload).where(held_upload.c.object == obj))
                    conn.execute(delete(chunk_owner).where(chunk_owner.c.object == obj))
                    conn.execute(delete(chunk).where(chunk.c.object == obj))
                    store.delete(obj)  # before the commit: see the module docstring
                    deleted += 1
                    freed += size
                else:
                    kept += 1
    report = GcReport(
        objects_deleted=deleted,
        bytes_deleted=freed,
        holds_dropped=holds_dropped,
        evidence_discarded=evidence_discarded,
        kept_young=kept + young_orphans + max(young_rows, 0),
        objects_listed=listed,
        seconds=time.monotonic() - started,
    )
    log.info("gc: %s", report)
    return report


def _unreferenced_rows(conn: Connection, cutoff: datetime) -> dict[str, int]:
    """Chunk rows unreferenced since before `cutoff`: object -> stored size."""
    rows = conn.execute(
        select(chunk.c.object, chunk.c.stored_size).where(
            chunk.c.refcount == 0,
            chunk.c.created_at < cutoff,
            or_(chunk.c.released_at.is_(None), chunk.c.released_at < cutoff),
        )
    ).all()
    return {r.object: int(r.stored_size) for r in rows}


def _known_objects(db: Database) -> set[str]:
    """Objects with a `chunk` row or any hold: never orphans, whatever their age."""
    with db.read() as conn:
        rows = set(conn.execute(select(chunk.c.object)).scalars())
        rows |= set(conn.execute(select(held_upload.c.object)).scalars())
    return rows


def _drop_old_holds(db: Database, cutoff: datetime) -> int:
    with db.write() as conn:
        _serialise_with_confirmations(conn, commits=False)  # holds are never committed
        result = conn.execute(delete(held_upload).where(held_upload.c.held_at < cutoff))
    return int(result.rowcount)


def _discard_stale_evidence(store: BlockStore, cutoff: datetime) -> int:
    """Remove upload evidence older than `cutoff` (module docstring: no lock needed)."""
    stale = [e for e in store.list_upload_evidence() if e.modified < cutoff]
    for evidence in stale:
        store.discard_upload_evidence(evidence.object, evidence.account_id)
    return len(stale)


def _serialise_with_confirmations(conn: Connection, *, commits: bool = True) -> None:
    """PostgreSQL: serialise with every transaction that could make an object referenced
    (SQLite's write transactions are serialised already).

    - Commits and version restores lock their namespace row (`FOR UPDATE`, a ROW SHARE
      lock on the table) before they check ownership. `LOCK TABLE namespace IN EXCLUSIVE
      MODE` conflicts with exactly that (plain reads go on), so a commit either committed
      before this transaction (its chunks have refcount > 0: kept) or starts its checks
      after it (the ownership is gone: `missing_chunks`). Without it, a commit that had
      read the ownership a moment before the GC deleted it went on to insert its
      `revision_chunk` rows and failed their foreign key: a 500 (found by
      tests/cluster/test_api_gc.py). Taken first, before any row lock, so that a commit
      in progress (namespace, then chunk and account rows) finishes before the GC
      waits on anything it holds.
    - Upload confirmations lock their account's row: take every account's, in id order.

    The cost: commits everywhere wait while a batch's objects are deleted from the
    store (a batch is `_BATCH` objects; deletions are single requests of a few ms)."""
    if conn.dialect.name == "sqlite":
        return
    if commits:
        conn.execute(text("LOCK TABLE namespace IN EXCLUSIVE MODE"))
    conn.execute(select(account.c.id).order_by(account.c.id).with_for_update()).all()


def _still_collectable(conn: Connection, obj: str, cutoff: datetime) -> bool:
    """The module docstring's conditions, read again under the serialisation."""
    row = conn.execute(
        select(chunk.c.refcount, chunk.c.created_at, chunk.c.released_at)
        .where(chunk.c.object == obj)
        .with_for_update()
    ).first()
    if row is not None:
        if int(row.refcount) != 0 or as_utc(row.created_at) >= cutoff:
            return False
        if row.released_at is not None and as_utc(row.released_at) >= cutoff:
            return False
    young_hold = conn.execute(
        select(held_upload.c.object)
        .where(held_upload.c.object == obj, held_upload.c.held_at >= cutoff)
        .limit(1)
    ).first()
    return young_hold is None
