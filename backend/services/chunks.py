"""Chunk ownership and readability (DESIGN.md invariants 5 and 6).

- An account *owns* an object once the block store has confirmed that this account
  uploaded it (`record_uploads`, fed by `revisions.confirm_uploads`). Owning is what lets
  a client skip an upload (`prepare`) and what a commit requires (`unowned`).
- An account may *read* an object it owns, or one named by a revision of a namespace it
  can read (`check_readable`); nothing else, so presigned GETs never leak other accounts'
  chunks, and whether anyone else stored a chunk is never revealed.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, select

from backend.db.engine import upsert_ignore
from backend.db.tables import chunk, chunk_owner, node, revision, revision_chunk
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

__all__ = ["check_readable", "check_stored_sizes", "prepare", "record_uploads", "unowned"]


def prepare(conn: Connection, who: Principal, hashes: Sequence[PlainHash]) -> list[PreparedChunk]:
    """For each plaintext hash, the object this account already owns for it, if any."""
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
                .where(revision_chunk.c.object.in_(rest), node.c.namespace_id == who.namespace_id)
                .distinct()
            ).scalars()
        )
        rest -= named
    if rest:
        raise NotFound(f"{len(rest)} object(s) not readable by this account")
