"""Batched changes: many tree ops and commits in one request (protocol.md § Batched).

Each op is applied exactly like the single route it mirrors and answered on its own; a
refused op does not stop the next, unless the batch asks for `stop_at_refusal` (what the
sync engine sends: its ops depend on each other in order, so "delete z" must not run ahead
of a refused "move x into z" that will be retried). An applied op's result is stored under
(device, op_id) together with the op, so a replayed batch is answered from storage and
nothing is applied twice. Refused ops are not stored: a retry (e.g. after uploading the
missing chunks) is evaluated afresh.

Groups: consecutive ops share one write transaction, each op in a SAVEPOINT of its own
(`engine.savepoint`), because a transaction per op (BEGIN IMMEDIATE, COMMIT, a connection
checkout, a journal announcement that every watching device answers with a pull) cost more
than most ops themselves. A refused op rolls back its savepoint only: the ops before it
stay applied, the next ones go on in the same transaction (or, with `stop_at_refusal`, the
group commits and the rest are `not_attempted`). The memo of an applied op is written in
its savepoint, so op and memo still commit or vanish together. Answers are built only
after the group has committed (an answer must never tell of a change that then rolled
back), and the journal's new head is announced once per group, when it commits.

- A group ends after `GROUP_MAX_OPS` ops or `GROUP_MAX_S` seconds, whichever comes first,
  so one request never holds the write lock (SQLite) or its row locks (PostgreSQL: the
  namespace row, the ops' advisory locks, all held to the group's end) for long.
- A commit op starts a new group: its uploads are confirmed first, outside any
  transaction (`revisions.confirm_uploads` talks to the store and runs its own
  transaction; the evidence is discarded only after that one committed, as for the single
  route), then the commit itself is the first op of the group.
- PostgreSQL: the row locks an op takes (its namespace's `FOR UPDATE`, the memo's
  advisory lock, the rows it changes, its folders' ancestors up the tree) are held to the
  group's end, so two groups could wait on each other where two single ops never do. A
  group therefore stays within one namespace (an op whose parent or node is in another
  one starts the next group; one indexed lookup per op, skipped on SQLite, where writers
  are serialised anyway). A deadlock that remains possible (e.g. two groups' commits and
  folder sizes meeting on the account row and a shared folder's ancestors) is broken by
  the database aborting one side.
- If the group's transaction fails on a database error (a deadlock's victim, a lost
  connection, a failed COMMIT), nothing of it was answered: its ops are applied again one
  transaction each, as every op ran before groups, each retried a few times if it is
  itself a deadlock's victim; so grouping never fails a batch. An op that did commit before
  the failure (an ambiguous COMMIT) is answered from its memo.

The stored result holds the node and the revision *id*, never chunk keys (keys are derived
on every answer, never persisted); a replay re-reads the revision to answer it.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import Connection, bindparam, select
from sqlalchemy.exc import DBAPIError

from backend.api.deps import CurrentDevice, CurrentSettings, Db, Keys, Store
from backend.api.errors import error_body, responses
from backend.api.schemas import (
    ChangesIn,
    ChangesOut,
    CommitOp,
    CreateOp,
    DeleteOp,
    NodeOut,
    RestoreOp,
    RevisionOut,
    UpdateOp,
    compact,
)
from backend.db.engine import Database, savepoint
from backend.db.tables import node
from backend.security import Keyring
from backend.services import applied_ops, revisions, tree
from backend.services.errors import ServiceError
from backend.services.types import NodeId, Outcome, Principal, Revision, RevisionId, RevisionKind
from backend.store.base import BlockStore, StoreError

__all__ = ["router"]

log = logging.getLogger(__name__)

router = APIRouter(tags=["changes"], responses=responses(400, 401, 413))

AnyOp = CreateOp | UpdateOp | DeleteOp | CommitOp | RestoreOp


@dataclass(frozen=True, slots=True)
class _Batch:
    """What every op of one request needs."""

    who: Principal
    db: Database
    store: BlockStore
    keys: Keyring
    max_file_bytes: int


@router.post("/changes", response_model=ChangesOut)
def push_changes(
    body: ChangesIn,
    who: CurrentDevice,
    db: Db,
    store: Store,
    keys: Keys,
    settings: CurrentSettings,
) -> JSONResponse:
    """Apply up to 1,000 ops in order; one result per op (fields that do not apply are
    absent)."""
    batch = _Batch(who, db, store, keys, settings.max_file_bytes)
    ops: list[AnyOp] = list(body.ops)
    results: list[dict[str, Any]] = []
    while len(results) < len(ops):
        results.extend(_apply_group(batch, ops[len(results) :], body.stop_at_refusal))
        if body.stop_at_refusal and _refused(results[-1]):
            break
    results.extend(dict(NOT_ATTEMPTED) for _ in range(len(ops) - len(results)))
    return JSONResponse({"results": results})


NOT_ATTEMPTED: dict[str, Any] = {
    "status": 424,
    "error": "not_attempted",
    "detail": "an earlier op of this batch was not applied (stop_at_refusal)",
}

GROUP_MAX_OPS = 100
"""Ops per transaction at most (see the module docstring)."""

GROUP_MAX_S = 0.05
"""Seconds after which a group commits at its next op (see the module docstring)."""


def _refused(result: dict[str, Any]) -> bool:
    status: int = result["status"]
    return status >= 300


@dataclass(frozen=True, slots=True)
class _Applied:
    """An op applied in the group's transaction, answered once that has committed."""

    status: int
    outcome: Outcome


@dataclass(frozen=True, slots=True)
class _Replayed:
    """An op applied before: its stored memo, and the revision that memo names."""

    memo: dict[str, Any]
    revision: Revision | None


_Done = _Applied | _Replayed | dict[str, Any]
"""What an op of a group left: applied, replayed, or its refusal's answer."""


def _apply_group(batch: _Batch, ops: list[AnyOp], stop_at_refusal: bool) -> list[dict[str, Any]]:
    """Apply a group from the start of `ops` (at least one op) in one transaction and
    answer each op it took; the caller goes on with the ops after those."""
    first = ops[0]
    if isinstance(first, CommitOp):
        try:
            _confirm_uploads(batch, first)
        except (ServiceError, StoreError) as error:
            return [_refusal(error)]
    done: list[_Done] = []
    attempted = 0
    try:
        with batch.db.write() as conn:
            began = time.monotonic()
            group_ns: str | None = None
            for op in ops[:GROUP_MAX_OPS]:
                if attempted and (
                    isinstance(op, CommitOp) or time.monotonic() - began >= GROUP_MAX_S
                ):
                    break  # a commit confirms its uploads outside any transaction first
                if not batch.db.is_sqlite:
                    op_ns = _namespace_of(conn, op)
                    if group_ns is not None and op_ns not in (None, group_ns):
                        break  # one namespace lock per group (module docstring)
                    group_ns = group_ns or op_ns
                attempted += 1
                done.append(_apply_in(conn, batch, op))
                if stop_at_refusal and isinstance(done[-1], dict):
                    break
    except DBAPIError as error:
        log.warning(
            "a group of %d batched ops failed (%s); applying them one transaction each",
            attempted,
            error.__class__.__name__,
        )
        return _one_by_one(batch, ops[: max(attempted, 1)], stop_at_refusal)
    return [_answer_done(batch, result) for result in done]


def _apply_in(conn: Connection, batch: _Batch, op: AnyOp) -> _Done:
    """One op in its own savepoint of the group's transaction."""
    try:
        with savepoint(conn):
            stored = applied_ops.find(conn, batch.who.device_id, op.op_id)
            if stored is not None:
                memo: dict[str, Any] = json.loads(stored)
                return _Replayed(memo, _memo_revision(conn, batch, memo))
            status, outcome = _run(conn, batch, op)
            applied_ops.remember(
                conn, batch.who.device_id, op.op_id, json.dumps(_memo(status, outcome))
            )
            return _Applied(status, outcome)
    except (ServiceError, StoreError) as error:
        return _refusal(error)


def _answer_done(batch: _Batch, done: _Done) -> dict[str, Any]:
    if isinstance(done, _Applied):
        return _answer(batch, done.status, done.outcome)
    if isinstance(done, _Replayed):
        return _replayed(batch, done.memo, done.revision)
    return done


_NAMESPACE_OF = select(node.c.namespace_id).where(node.c.id == bindparam("b_node"))


def _namespace_of(conn: Connection, op: AnyOp) -> str | None:
    """The namespace whose lock `op` takes (its parent's for a create, else its node's);
    None for a node that does not exist (the op will be refused without a lock)."""
    target = op.parent_id if isinstance(op, CreateOp) else op.id
    found: str | None = conn.execute(_NAMESPACE_OF, {"b_node": str(target)}).scalar()
    return found


def _one_by_one(batch: _Batch, ops: list[AnyOp], stop_at_refusal: bool) -> list[dict[str, Any]]:
    """The fallback for a failed group: each op in a transaction of its own."""
    results: list[dict[str, Any]] = []
    for op in ops:
        results.append(_apply_retrying(batch, op))
        if stop_at_refusal and _refused(results[-1]):
            break
    return results


def _apply_retrying(batch: _Batch, op: AnyOp) -> dict[str, Any]:
    """`_apply`, again when PostgreSQL chose its transaction as a deadlock's (or a
    serialization failure's) victim: that transaction changed nothing, and the other side
    is a group, which commits or is aborted in turn (single ops never deadlock each other:
    each takes one namespace's lock, then rows in a fixed order)."""
    failures = 0
    while True:
        try:
            return _apply(batch, op)
        except DBAPIError as error:
            failures += 1
            if _sqlstate(error) not in _RETRYABLE or failures > RETRIES_AFTER_DEADLOCK:
                raise
            log.warning("a batched op lost a deadlock (%s); trying again", _sqlstate(error))


RETRIES_AFTER_DEADLOCK = 3

_RETRYABLE = frozenset({"40P01", "40001"})
"""PostgreSQL's deadlock_detected and serialization_failure."""


def _sqlstate(error: DBAPIError) -> str | None:
    code = getattr(error.orig, "sqlstate", None)
    return code if isinstance(code, str) else None


def _confirm_uploads(batch: _Batch, op: CommitOp) -> None:
    """A commit's step 1 (store I/O and its own transaction; see the module docstring)."""
    revisions.confirm_uploads(batch.db, batch.store, batch.who, op.to_new(), batch.max_file_bytes)


def _refusal(error: ServiceError | StoreError) -> dict[str, Any]:
    code, body = error_body(error)
    return {"status": code, **compact(body)}


def _apply(batch: _Batch, op: AnyOp) -> dict[str, Any]:
    """One op in a transaction of its own: its stored result if it was applied before,
    else apply it now."""
    try:
        if isinstance(op, CommitOp):
            _confirm_uploads(batch, op)
        with batch.db.write() as conn:
            stored = applied_ops.find(conn, batch.who.device_id, op.op_id)
            if stored is not None:
                memo: dict[str, Any] = json.loads(stored)
                revision = _memo_revision(conn, batch, memo)
            else:
                status, outcome = _run(conn, batch, op)
                applied_ops.remember(
                    conn, batch.who.device_id, op.op_id, json.dumps(_memo(status, outcome))
                )
        if stored is not None:
            return _replayed(batch, memo, revision)
        return _answer(batch, status, outcome)
    except (ServiceError, StoreError) as error:
        return _refusal(error)


def _run(conn: Connection, batch: _Batch, op: AnyOp) -> tuple[int, Outcome]:
    who = batch.who
    if isinstance(op, CreateOp):
        outcome = tree.create_node(conn, who, op.to_new())
        return (201 if outcome.created else 200), outcome
    if isinstance(op, UpdateOp):
        return 200, tree.update_node(conn, who, NodeId(str(op.id)), op.to_change())
    if isinstance(op, DeleteOp):
        return 200, tree.delete_node(conn, who, NodeId(str(op.id)), op.base_version)
    if isinstance(op, RestoreOp):
        return 200, tree.restore_node(conn, who, NodeId(str(op.id)), op.name)
    outcome = revisions.commit(conn, who, NodeId(str(op.id)), op.to_new(), batch.max_file_bytes)
    return (201 if outcome.created else 200), outcome


def _committed(outcome: Outcome) -> Revision | None:
    """The revision a commit made (a delete's tombstone is not part of its answer)."""
    rev = outcome.revision
    return rev if rev is not None and rev.kind is RevisionKind.CONTENT else None


def _memo(status: int, outcome: Outcome) -> dict[str, Any]:
    """What is stored for a replay: no keys (see the module docstring)."""
    rev = _committed(outcome)
    return {
        "status": status,
        "node": NodeOut.of(outcome.node).model_dump(mode="json"),
        "revision_id": rev.id if rev is not None else None,
        "cursor": outcome.cursor,
    }


def _answer(batch: _Batch, status: int, outcome: Outcome) -> dict[str, Any]:
    node = NodeOut.of(outcome.node).model_dump(mode="json")
    answer: dict[str, Any] = {"status": status, "node": node}
    rev = _committed(outcome)
    if rev is not None:
        answer["revision"] = RevisionOut.keyed(rev, batch.keys).model_dump(mode="json")
    if outcome.cursor is not None:
        answer["cursor"] = outcome.cursor
    return answer


def _memo_revision(conn: Connection, batch: _Batch, memo: dict[str, Any]) -> Revision | None:
    """The revision a stored result names (read in the transaction, keyed after it)."""
    if not memo.get("revision_id"):
        return None
    return revisions.get_revision(conn, batch.who, RevisionId(memo["revision_id"]))


def _replayed(batch: _Batch, memo: dict[str, Any], revision: Revision | None) -> dict[str, Any]:
    answer: dict[str, Any] = {"status": memo["status"], "node": memo["node"]}
    if revision is not None:
        answer["revision"] = RevisionOut.keyed(revision, batch.keys).model_dump(mode="json")
    if memo.get("cursor") is not None:
        answer["cursor"] = memo["cursor"]
    return answer
