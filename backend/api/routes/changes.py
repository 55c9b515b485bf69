"""Batched changes: many tree ops and commits in one request (protocol.md § Batched).

Each op is applied exactly like the single route it mirrors, in its own transaction, and
answered on its own; a refused op does not stop the next, unless the batch asks for
`stop_at_refusal` (what the sync engine sends: its ops depend on each other in order, so
"delete z" must not run ahead of a refused "move x into z" that will be retried). An
applied op's result is stored under (device, op_id) in that same transaction, so a
replayed batch is answered from storage and nothing is applied twice. Refused ops are not
stored: a retry (e.g. after uploading the missing chunks) is evaluated afresh.

The stored result holds the node and the revision *id*, never chunk keys (keys are derived
on every answer, never persisted); a replay re-reads the revision to answer it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import Connection

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
from backend.db.engine import Database
from backend.security import Keyring
from backend.services import applied_ops, revisions, tree
from backend.services.errors import ServiceError
from backend.services.types import NodeId, Outcome, Principal, Revision, RevisionId, RevisionKind
from backend.store.base import BlockStore, StoreError

__all__ = ["router"]

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
    results: list[dict[str, Any]] = []
    for op in body.ops:
        if body.stop_at_refusal and results and results[-1]["status"] >= 300:
            results.append(dict(NOT_ATTEMPTED))
            continue
        results.append(_apply(batch, op))
    return JSONResponse({"results": results})


NOT_ATTEMPTED: dict[str, Any] = {
    "status": 424,
    "error": "not_attempted",
    "detail": "an earlier op of this batch was not applied (stop_at_refusal)",
}


def _apply(batch: _Batch, op: AnyOp) -> dict[str, Any]:
    """One op: its stored result if it was applied before, else apply it now."""
    try:
        if isinstance(op, CommitOp):
            new = op.to_new()
            revisions.confirm_uploads(batch.db, batch.store, batch.who, new, batch.max_file_bytes)
        with batch.db.write() as conn:
            stored = applied_ops.find(conn, batch.who.device_id, op.op_id)
            if stored is not None:
                return _replayed(conn, batch, json.loads(stored))
            status, outcome = _run(conn, batch, op)
            applied_ops.remember(
                conn, batch.who.device_id, op.op_id, json.dumps(_memo(status, outcome))
            )
        return _answer(batch, status, outcome)
    except (ServiceError, StoreError) as error:
        code, body = error_body(error)
        return {"status": code, **compact(body)}


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


def _replayed(conn: Connection, batch: _Batch, memo: dict[str, Any]) -> dict[str, Any]:
    answer: dict[str, Any] = {"status": memo["status"], "node": memo["node"]}
    if memo.get("revision_id"):
        rev = revisions.get_revision(conn, batch.who, RevisionId(memo["revision_id"]))
        answer["revision"] = RevisionOut.keyed(rev, batch.keys).model_dump(mode="json")
    if memo.get("cursor") is not None:
        answer["cursor"] = memo["cursor"]
    return answer
