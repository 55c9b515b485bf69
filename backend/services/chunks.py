"""Chunk ownership and readability (DESIGN.md invariants 5 and 6).

- An account *owns* an object once the block store has confirmed that this account
  uploaded it (`record_uploads`, fed by `revisions.confirm_uploads`). Owning is what lets
  a client skip an upload (`prepare`) and what a commit requires (`unowned`).
- An account may *read* an object it owns, or one named by a revision of a namespace it
  can read (`check_readable`); nothing else, so presigned GETs never leak other accounts'
  chunks, and whether anyone else stored a chunk is never revealed.
- An account *holds* an object it uploaded that no commit has named yet (`hold_uploads`,
  the `held_upload` table): `prepare` answers it as present for that account alone, so an
  interrupted upload resumes with only the missing chunks; the first commit that names it
  turns the hold into ownership (`claim_held`). A hold never makes an object readable, and
  no other account can see or reference it.

Both ownership and holds are recorded from the block store's evidence of an upload
(`BlockStore.finish_upload`, which does not consume it) in a write transaction with the
account locked; the evidence is removed only after that transaction has committed
(`discard_evidence`), so a transaction cut by a database restart or a killed instance
loses nothing: the retry finds the evidence still there. Evidence left behind by a
failed discard is harmless and the GC removes it after its grace period (gc.py).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, delete, select, update

from backend.db.engine import Database, upsert_ignore
from backend.db.tables import (
    account,
    chunk,
    chunk_owner,
    held_upload,
    node,
    revision,
    revision_chunk,
)
from backend.services import access
from backend.services.clock import utcnow
from backend.services.errors import BadRequest, NotFound
from backend.services.types import (
    AccountId,
    ChunkRef,
    ObjectName,
    PlainHash,
    PreparedChunk,
    Principal,
)
from backend.store.base import BlockStore

log = logging.getLogger(__name__)

__all__ = [
    "HeldChunk",
    "HoldResult",
    "check_readable",
    "check_stored_sizes",
    "claim_held",
    "discard_evidence",
    "hold_uploads",
    "prepare",
    "record_uploads",
    "unowned",
]


def prepare(conn: Connection, who: Principal, hashes: Sequence[PlainHash]) -> list[PreparedChunk]:
    """For each plaintext hash, the object this account already owns (or holds, see the
    module docstring) for it, if any."""
    wanted = sorted(set(hashes))
    owned: dict[str, tuple[ObjectName, int]] = {}
    if wanted:
        rows = conn.execute(
            select(chunk_owner.c.hash, chunk_owner.c.object, chunk.c.stored_size)
            .join(chunk, chunk.c.object == chunk_owner.c.object)
            .where(chunk_owner.c.account_id == who.account_id, chunk_owner.c.hash.in_(wanted))
            .order_by(chunk_owner.c.created_at, chunk_owner.c.object)
        ).all()
        for row in rows:
            owned.setdefault(row.hash, (ObjectName(row.object), int(row.stored_size)))
        rest = [h for h in wanted if h not in owned]
        if rest:  # uploaded by this account, not committed yet: resume without resending
            held = conn.execute(
                select(held_upload.c.hash, held_upload.c.object, held_upload.c.stored_size)
                .where(held_upload.c.account_id == who.account_id, held_upload.c.hash.in_(rest))
                .order_by(held_upload.c.held_at, held_upload.c.object)
            ).all()
            for row in held:
                owned.setdefault(row.hash, (ObjectName(row.object), int(row.stored_size)))
    prepared = []
    for h in hashes:
        found = owned.get(h)
        obj, size = found if found is not None else (None, None)
        prepared.append(PreparedChunk(hash=h, object=obj, stored_size=size))
    return prepared


def unowned(
    conn: Connection, account_id: AccountId, objects: Sequence[ObjectName]
) -> list[ObjectName]:
    """The objects (distinct, in first-seen order) that `account_id` does not own."""
    distinct = list(dict.fromkeys(objects))
    if not distinct:
        return []
    owned = set(
        conn.execute(
            select(chunk_owner.c.object).where(
                chunk_owner.c.account_id == account_id, chunk_owner.c.object.in_(distinct)
            )
        ).scalars()
    )
    return [o for o in distinct if o not in owned]


def record_uploads(
    conn: Connection, account_id: AccountId, confirmed: Sequence[tuple[ChunkRef, int]]
) -> None:
    """Record objects whose upload by `account_id` the store confirmed (with their
    observed stored size) as existing chunks owned by the account. Idempotent."""
    now = utcnow()
    upsert_ignore(
        conn,
        chunk,
        [
            {"object": ref.object, "stored_size": size, "refcount": 0, "created_at": now}
            for ref, size in sorted(confirmed, key=lambda c: c[0].object)
        ],
        ["object"],
    )
    upsert_ignore(
        conn,
        chunk_owner,
        [
            {
                "account_id": account_id,
                "object": ref.object,
                "hash": ref.hash,
                "plain_size": ref.size,
                "created_at": now,
            }
            for ref, _ in confirmed
        ],
        ["account_id", "object"],
    )


def check_stored_sizes(conn: Connection, refs: Sequence[ChunkRef]) -> None:
    """Each ref's `stored_size` must be the size the store observed for its object, so
    readers can trust the manifest (the client cannot misreport it)."""
    objects = sorted({r.object for r in refs})
    if not objects:
        return
    rows = conn.execute(
        select(chunk.c.object, chunk.c.stored_size).where(chunk.c.object.in_(objects))
    ).all()
    actual = {row.object: int(row.stored_size) for row in rows}
    for i, ref in enumerate(refs):
        if actual.get(ref.object) != ref.stored_size:
            raise BadRequest(
                f"chunks[{i}].stored_size is {ref.stored_size}, "
                f"the stored object has {actual.get(ref.object)} bytes"
            )


def check_readable(conn: Connection, who: Principal, objects: Sequence[ObjectName]) -> None:
    """Raise NotFound unless every object is readable by the caller (see module doc)."""
    distinct = set(objects)
    if not distinct:
        return
    owned = set(
        conn.execute(
            select(chunk_owner.c.object).where(
                chunk_owner.c.account_id == who.account_id, chunk_owner.c.object.in_(distinct)
            )
        ).scalars()
    )
    rest = distinct - owned
    if rest:
        named = set(
            conn.execute(
                select(revision_chunk.c.object)
                .join(revision, revision.c.id == revision_chunk.c.revision_id)
                .join(node, node.c.id == revision.c.node_id)
                .where(
                    revision_chunk.c.object.in_(rest),
                    node.c.namespace_id.in_(access.readable_namespaces(conn, who)),
                )
                .distinct()
            ).scalars()
        )
        rest -= named
    if rest:
        raise NotFound(f"{len(rest)} object(s) not readable by this account")


@dataclass(frozen=True, slots=True)
class HeldChunk:
    """A chunk the client says it has uploaded: its plaintext hash and size (a claim, as
    for `chunk_owner`) and its object name."""

    hash: PlainHash
    object: ObjectName
    plain_size: int


@dataclass(frozen=True, slots=True)
class HoldResult:
    """`held`: object → stored size, for every chunk now owned or held by the account;
    `missing`: objects whose upload by this account the store does not confirm."""

    held: dict[ObjectName, int]
    missing: list[ObjectName]


def hold_uploads(
    db: Database, store: BlockStore, who: Principal, wanted: Sequence[HeldChunk]
) -> HoldResult:
    """Record this account's completed uploads that no commit names yet (idempotent).

    One write transaction with the account row locked, like `revisions.confirm_uploads`:
    the store confirms each upload (`finish_upload`) inside it, so the GC sees the object
    either unconfirmed or held (gc.py), and the store's evidence is discarded only after
    the hold has committed (module docstring). A chunk already owned is answered as held;
    an existing hold is refreshed (`held_at`), which is what keeps a slow upload's early
    chunks younger than the GC grace period.
    """
    first: dict[ObjectName, HeldChunk] = {}
    for item in wanted:
        first.setdefault(item.object, item)
    objects = sorted(first)
    held: dict[ObjectName, int] = {}
    missing: list[ObjectName] = []
    if not objects:
        return HoldResult(held, missing)
    now = utcnow()
    with db.write() as conn:
        conn.execute(select(account.c.id).where(account.c.id == who.account_id).with_for_update())
        for row in conn.execute(
            select(chunk_owner.c.object, chunk.c.stored_size)
            .join(chunk, chunk.c.object == chunk_owner.c.object)
            .where(chunk_owner.c.account_id == who.account_id, chunk_owner.c.object.in_(objects))
        ):
            held[ObjectName(row.object)] = int(row.stored_size)
        already = {
            ObjectName(row.object): int(row.stored_size)
            for row in conn.execute(
                select(held_upload.c.object, held_upload.c.stored_size).where(
                    held_upload.c.account_id == who.account_id,
                    held_upload.c.object.in_([o for o in objects if o not in held]),
                )
            )
        }
        if already:
            conn.execute(
                update(held_upload)
                .where(
                    held_upload.c.account_id == who.account_id,
                    held_upload.c.object.in_(sorted(already)),
                )
                .values(held_at=now)
            )
            held.update(already)
        rows = []
        from_store: list[ObjectName] = []
        for obj in objects:
            if obj in held:
                continue
            stored_size = store.finish_upload(obj, who.account_id)
            if stored_size is None:
                missing.append(obj)
                continue
            held[obj] = stored_size
            from_store.append(obj)
            item = first[obj]
            rows.append(
                {
                    "account_id": who.account_id,
                    "object": obj,
                    "hash": item.hash,
                    "plain_size": item.plain_size,
                    "stored_size": stored_size,
                    "held_at": now,
                }
            )
        upsert_ignore(conn, held_upload, rows, ["account_id", "object"])
    # Committed: the hold is the proof now, so the store's evidence may go.
    discard_evidence(store, who.account_id, from_store)
    return HoldResult(held, missing)


def discard_evidence(
    store: BlockStore, account_id: AccountId, objects: Sequence[ObjectName]
) -> None:
    """Remove the store's evidence of these uploads by `account_id`, whose ownership or
    hold a transaction has just committed. Best effort: a failure (the store away) is
    logged and leaves the evidence for the GC, never fails the request that recorded it."""
    for obj in objects:
        try:
            store.discard_upload_evidence(obj, account_id)
        except Exception as error:  # the store's errors are its client's (botocore, OSError)
            log.warning("upload evidence of %s left for the GC: %s", obj, error)
            return  # the store is likely away: the rest go the same way, by the GC


def claim_held(
    conn: Connection, account_id: AccountId, refs: Sequence[ChunkRef]
) -> list[tuple[ChunkRef, int]]:
    """Consume this account's holds on the refs' objects (inside the caller's write
    transaction); return each held ref with the stored size the store confirmed, ready for
    `record_uploads`."""
    objects = sorted({r.object for r in refs})
    if not objects:
        return []
    sizes = {
        ObjectName(row.object): int(row.stored_size)
        for row in conn.execute(
            select(held_upload.c.object, held_upload.c.stored_size).where(
                held_upload.c.account_id == account_id, held_upload.c.object.in_(objects)
            )
        )
    }
    if not sizes:
        return []
    conn.execute(
        delete(held_upload).where(
            held_upload.c.account_id == account_id, held_upload.c.object.in_(sorted(sizes))
        )
    )
    first: dict[ObjectName, ChunkRef] = {}
    for ref in refs:
        if ref.object in sizes:
            first.setdefault(ref.object, ref)
    return [(ref, sizes[obj]) for obj, ref in first.items()]
