"""The change feed: ordering every change of a namespace, and reading it back.

Writing (inside a change's transaction, in this order):
1. `lock_namespace` first, before reading anything the change depends on. On PostgreSQL
   this is `SELECT ... FOR UPDATE` on the namespace row, which serialises all changes of
   one namespace; on SQLite `BEGIN IMMEDIATE` has already serialised every writer.
2. `next_seq` when the change is certain to apply: bumps `namespace.last_seq` and returns
   it. The bump rolls back with the transaction, so seqs have no gaps; and because the row
   stays locked until commit, seq N+1 cannot be handed out before N is committed — a reader
   can never see N+1 without N.
3. `record` the entry with the node's state after the change.

Reading: `read_feed` returns entries after a cursor, with the revisions they name (and
their manifests), oldest first.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from sqlalchemy import Connection, bindparam, insert, select, update

from backend.db.tables import journal, namespace, revision
from backend.services import access
from backend.services.clock import as_utc, utcnow
from backend.services.errors import NotFound
from backend.services.notify import note_appended
from backend.services.rows import node_from_json, node_to_json, revision_from_row
from backend.services.types import (
    DeviceId,
    JournalEntry,
    JournalOp,
    JournalPage,
    NamespaceId,
    Node,
    Principal,
    Revision,
    RevisionId,
)

__all__ = ["MAX_PAGE", "lock_namespace", "next_seq", "read_feed", "record"]

MAX_PAGE = 1000

# Built once (see backend.services.tree): these run in every change's transaction.
_LOCK = select(namespace.c.id).where(namespace.c.id == bindparam("b_namespace")).with_for_update()
_NEXT_SEQ = (
    update(namespace)
    .where(namespace.c.id == bindparam("b_namespace"))
    .values(last_seq=namespace.c.last_seq + 1)
    .returning(namespace.c.last_seq)
)
_INSERT_ENTRY = insert(journal)
_FEED_PAGE = (
    select(journal)
    .where(journal.c.namespace_id == bindparam("b_namespace"), journal.c.seq > bindparam("b_after"))
    .order_by(journal.c.seq)
    .limit(bindparam("b_limit"))
)


def lock_namespace(conn: Connection, namespace_id: NamespaceId) -> None:
    """Take the namespace's change lock for the rest of the transaction."""
    found = conn.execute(_LOCK, {"b_namespace": namespace_id}).first()
    if found is None:
        raise NotFound("no such namespace")


def next_seq(conn: Connection, namespace_id: NamespaceId) -> int:
    """Allocate the next journal seq of the (locked) namespace."""
    seq = conn.execute(_NEXT_SEQ, {"b_namespace": namespace_id}).scalar_one()
    return int(seq)


def record(
    conn: Connection,
    seq: int,
    op: JournalOp,
    node: Node,
    device_id: DeviceId | None,
    revision_id: RevisionId | None = None,
    *,
    into: NamespaceId | None = None,
    share: Mapping[str, object] | None = None,
) -> None:
    """Append the entry for `seq` (allocated by `next_seq` in this transaction) to the
    journal of `into`, by default the node's own namespace. (The root of a share is moved
    in its owner's tree: that entry goes to the tree's journal, see docs/backend.md.)
    `share`: the snapshot a `share` entry carries (backend.services.shares)."""
    conn.execute(
        _INSERT_ENTRY,
        {
            "namespace_id": into or node.namespace_id,
            "seq": seq,
            "op": op.value,
            "node_id": node.id,
            "node": node_to_json(node),
            "revision_id": revision_id,
            "device_id": device_id,
            "at": utcnow(),
            "share": json.dumps(dict(share), sort_keys=True) if share is not None else None,
        },
    )
    note_appended(conn, into or node.namespace_id, seq)  # published once committed


def read_feed(
    conn: Connection, who: Principal, namespace_id: NamespaceId, after: int, limit: int
) -> JournalPage:
    """Entries with seq > `after`, at most `limit`, oldest first.

    Raises NotFound for a namespace the caller cannot read (`access.role_in`).
    """
    try:
        access.role_in(conn, who, namespace_id)
    except NotFound:
        raise NotFound("no such namespace") from None
    limit = max(1, min(limit, MAX_PAGE))
    params = {"b_namespace": namespace_id, "b_after": after, "b_limit": limit + 1}
    rows = conn.execute(_FEED_PAGE, params).all()
    has_more = len(rows) > limit
    rows = rows[:limit]
    revisions = _revisions(conn, [r.revision_id for r in rows if r.revision_id is not None])
    entries = tuple(
        JournalEntry(
            seq=int(r.seq),
            op=JournalOp(r.op),
            node=node_from_json(r.node),
            revision=revisions.get(r.revision_id) if r.revision_id is not None else None,
            device_id=DeviceId(r.device_id) if r.device_id is not None else None,
            at=as_utc(r.at),
            share=json.loads(r.share) if r.share is not None else None,
        )
        for r in rows
    )
    cursor = entries[-1].seq if entries else after
    return JournalPage(entries=entries, cursor=cursor, has_more=has_more)


def _revisions(conn: Connection, ids: list[str]) -> dict[str, Revision]:
    if not ids:
        return {}
    rows = conn.execute(select(revision).where(revision.c.id.in_(ids))).all()
    return {r.id: revision_from_row(r, with_manifest=True) for r in rows}
