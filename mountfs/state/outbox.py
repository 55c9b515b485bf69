"""The durable queue of namespace changes the backend has not acknowledged yet.

Each row is one op of `POST /api/v1/changes` (docs/protocol.md), appended in the same SQLite
transaction as the local change it describes, so the tree and the queue can never disagree
after a crash. Preconditions are left as `null` placeholders (`base_version`,
`replace_version`): the sync engine fills them at push time from `nodes.remote_version`,
which it updates from each result, so ops queued back to back on one node chain correctly.

Coalescing (only ever on rows the sync engine has not claimed, and never reordering one
node's ops against another's):
- attribute-only updates (`mode`, `mtime_ns`) merge into the node's latest queued create or
  update;
- a move merges into the node's latest create/update when that row is the queue's tail and
  carries no `replace_id`;
- deleting a node whose create is still queued cancels all its rows, unless another queued
  op names it (as parent or replaced node) or one of its own ops replaced another node --
  then a plain delete is queued.

How the sync engine consumes the queue is described in `docs/client.md` ("Outbox").
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from mountfs.ids import uuid7
from mountfs.types import NodeId

__all__ = [
    "ATTR_FIELDS",
    "MOVE_FIELDS",
    "OpKind",
    "OutboxOp",
    "append_create",
    "append_delete",
    "append_update",
    "cancel_unsent",
    "claim",
    "complete",
    "pending",
    "references",
    "release_claims",
]

OpKind = Literal["create", "update", "delete"]

ATTR_FIELDS = frozenset({"mode", "mtime_ns"})
"""Update fields that commute with every other node's ops (safe to merge backwards)."""

MOVE_FIELDS = frozenset({"parent_id", "name", "replace_id"})


@dataclass(frozen=True, slots=True)
class OutboxOp:
    """One queued op.

    Attributes:
        seq: position in the queue (push in increasing order).
        op_id: idempotency key sent with the op (also `body["op_id"]`).
        op: create | update | delete.
        node_id: the node the op changes.
        body: the wire op with null preconditions.
        claimed: the sync engine has it in flight.
    """

    seq: int
    op_id: str
    op: OpKind
    node_id: NodeId
    body: dict[str, Any]
    claimed: bool


def _insert(
    conn: sqlite3.Connection,
    op: OpKind,
    node_id: str,
    body: dict[str, Any],
    parent_id: str | None = None,
    replace_id: str | None = None,
) -> None:
    op_id = uuid7()
    body = {"op": op, "op_id": op_id, **body}
    conn.execute(
        "INSERT INTO outbox (op_id, op, node_id, parent_id, replace_id, body, created_ns) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (op_id, op, node_id, parent_id, replace_id, _dump(body), time.time_ns()),
    )


def _dump(body: Mapping[str, Any]) -> str:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False)


def append_create(
    conn: sqlite3.Connection,
    *,
    node_id: str,
    parent_id: str,
    name: str,
    kind: str,
    mode: int,
    mtime_ns: int,
    target: str | None,
) -> None:
    """Queue the creation of a node (its content, if any, is committed separately)."""
    body = {
        "id": node_id,
        "parent_id": parent_id,
        "name": name,
        "kind": kind,
        "mode": mode,
        "mtime_ns": mtime_ns,
        "target": target,
    }
    _insert(conn, "create", node_id, body, parent_id=parent_id)


def _latest(conn: sqlite3.Connection, node_id: str) -> tuple[int, str, str, int, str | None] | None:
    row = conn.execute(
        "SELECT seq, op, body, claimed, replace_id FROM outbox WHERE node_id = ? "
        "ORDER BY seq DESC LIMIT 1",
        (node_id,),
    ).fetchone()
    return None if row is None else (int(row[0]), str(row[1]), str(row[2]), int(row[3]), row[4])


def _tail_seq(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT coalesce(max(seq), 0) FROM outbox").fetchone()[0])


def append_update(conn: sqlite3.Connection, node_id: str, fields: Mapping[str, Any]) -> None:
    """Queue a move/rename and/or setattr of a node, merging into a queued op when safe.

    Args:
        fields: any of `parent_id`, `name`, `mode`, `mtime_ns`, `replace_id` (the node a
            rename overwrites; its `replace_version` is filled at push time).
    """
    unknown = set(fields) - ATTR_FIELDS - MOVE_FIELDS
    if unknown:
        raise ValueError(f"not an update field: {sorted(unknown)}")
    if not fields:
        return
    latest = _latest(conn, node_id)
    if latest is not None and _can_merge(conn, latest, fields):
        seq, _, body_text, _, _ = latest
        merged = json.loads(body_text)
        merged.update(fields)
        conn.execute(
            "UPDATE outbox SET body = ?, parent_id = ? WHERE seq = ?",
            (_dump(merged), merged.get("parent_id"), seq),
        )
        return
    body: dict[str, Any] = {"id": node_id, "base_version": None, **fields}
    if "replace_id" in fields:
        body["replace_version"] = None
    _insert(
        conn,
        "update",
        node_id,
        body,
        parent_id=fields.get("parent_id"),
        replace_id=fields.get("replace_id"),
    )


def _can_merge(
    conn: sqlite3.Connection,
    latest: tuple[int, str, str, int, str | None],
    fields: Mapping[str, Any],
) -> bool:
    seq, op, _, claimed, replace_id = latest
    if claimed or op not in ("create", "update"):
        return False
    if set(fields) <= ATTR_FIELDS:
        return True
    # A move may only merge at the tail (nothing queued after it can depend on the old
    # name) and never with a rename-over, on either side.
    return "replace_id" not in fields and replace_id is None and seq == _tail_seq(conn)


def references(conn: sqlite3.Connection, node_id: str) -> bool:
    """True if any queued op changes `node_id` or names it as a parent or replaced node."""
    row = conn.execute(
        "SELECT 1 FROM outbox WHERE node_id = ? OR parent_id = ? OR replace_id = ? LIMIT 1",
        (node_id, node_id, node_id),
    ).fetchone()
    return row is not None


def append_delete(conn: sqlite3.Connection, node_id: str) -> bool:
    """Queue the deletion of a node, or cancel its queued history if it never left.

    Returns:
        True if the node's create was still queued and every row of it was dropped
        instead (the backend will never hear of it); False if a delete was queued.
    """
    if cancel_unsent(conn, node_id):
        return True
    _insert(conn, "delete", node_id, {"id": node_id, "base_version": None})
    return False


def cancel_unsent(conn: sqlite3.Connection, node_id: str) -> bool:
    """Drop every queued op of a node the backend never heard of, if that is safe.

    Safe when its create is still queued and unclaimed, no other queued op names it (as
    parent or replaced node), and none of its own ops replaced another node (that delete
    must still happen). Used by unlink/rmdir and by a rename that overwrites the node.

    Returns:
        True if the rows were dropped.
    """
    if not _cancellable(conn, node_id):
        return False
    conn.execute("DELETE FROM outbox WHERE node_id = ?", (node_id,))
    return True


def _cancellable(conn: sqlite3.Connection, node_id: str) -> bool:
    create = conn.execute(
        "SELECT claimed FROM outbox WHERE node_id = ? AND op = 'create'", (node_id,)
    ).fetchone()
    if create is None or create[0]:
        return False
    # Three indexed probes (one OR-query over them would scan the whole queue).
    probes = (
        "SELECT 1 FROM outbox WHERE node_id = ? AND (claimed = 1 OR replace_id IS NOT NULL)",
        "SELECT 1 FROM outbox WHERE parent_id = ? AND node_id != ?",
        "SELECT 1 FROM outbox WHERE replace_id = ? AND node_id != ?",
    )
    for sql, args in zip(probes, ((node_id,), (node_id, node_id), (node_id, node_id)), strict=True):
        if conn.execute(sql + " LIMIT 1", args).fetchone() is not None:
            return False
    return True


def pending(
    conn: sqlite3.Connection, limit: int = 1000, *, unclaimed_only: bool = True
) -> list[OutboxOp]:
    """The oldest queued ops, in push order."""
    where = "WHERE claimed = 0 " if unclaimed_only else ""
    rows = conn.execute(
        f"SELECT seq, op_id, op, node_id, body, claimed FROM outbox {where}ORDER BY seq LIMIT ?",
        (limit,),
    ).fetchall()
    return [
        OutboxOp(
            seq=int(seq),
            op_id=str(op_id),
            op=op,
            node_id=NodeId(str(node_id)),
            body=json.loads(body),
            claimed=bool(claimed),
        )
        for seq, op_id, op, node_id, body, claimed in rows
    ]


def claim(conn: sqlite3.Connection, seqs: list[int]) -> None:
    """Mark ops as in flight (claims must be a prefix of the queue, in order)."""
    conn.executemany("UPDATE outbox SET claimed = 1 WHERE seq = ?", [(s,) for s in seqs])


def complete(conn: sqlite3.Connection, seq: int) -> None:
    """Drop an op the backend has answered (applied, or refused for good)."""
    conn.execute("DELETE FROM outbox WHERE seq = ?", (seq,))


def release_claims(conn: sqlite3.Connection) -> int:
    """Un-claim every op (start-up: whatever was in flight is pushed again, by op_id)."""
    return conn.execute("UPDATE outbox SET claimed = 0 WHERE claimed = 1").rowcount
