"""Draining the outbox: namespace changes, in order, with their preconditions.

The outbox rows carry null preconditions; they are filled here from `nodes.remote_version`,
simulating the batch so that ops on the same node chain (a create answers version 1, every
applied change adds one). If an op fails, every later op of the batch is released and sent
again next round with fresh versions: an op that did apply is answered from the backend's
record of its `op_id`, never applied twice. The batch is sent with `stop_at_refusal`, so the
backend leaves every op after a refusal untouched (424 `not_attempted`): ops depend on each
other in order, and a later `delete z` must not run ahead of a refused move into `z`.

Answers:
- 2xx: the node's `remote_version` becomes the answer's version; the row is done.
- 409 (`conflict`, `name_taken`, `cycle`, `not_a_directory`, `not_empty`): another device
  changed something first. The op stays claimed while the conflict resolver
  (`mountfs.sync.conflicts`) decides: send it again (a stale version refreshed, a name
  changed to a conflicted-copy name, a deleted folder restored first) or take it as done
  (a delete that lost to an edit, a move that would close a cycle). Metadata changes
  rebase: the last one wins, which is what users expect of a rename or a chmod.
- other 4xx: the backend will never take this op; it is dropped and logged as an error.
- 5xx or no answer: the batch stops; it is sent again after a backoff.
An op that is still refused after `MAX_REBASES` resolutions is left queued and the round
fails with an error (logged by the engine, retried after its backoff): nothing is dropped
for being hard to place.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mountfs.state import outbox
from mountfs.state.db import StateDb
from mountfs.state.outbox import OutboxOp
from mountfs.sync.conflicts import Resolver, Verdict
from mountfs.transport.api import ApiClient, OpResult
from mountfs.transport.retry import TEMPORARY_STATUSES
from mountfs.types import NodeId

log = logging.getLogger(__name__)

BATCH_OPS = 500
MAX_REBASES = 8
RESOLVABLE = frozenset({"conflict", "name_taken", "cycle", "not_a_directory", "not_empty"})


class StuckOp(RuntimeError):
    """An op was refused again and again although each refusal was resolved."""


@dataclass(slots=True)
class PushStats:
    applied: int = 0
    rebased: int = 0
    dropped: int = 0
    resolved: int = 0


class Pusher:
    """Sends the outbox to the backend.

    Args:
        on_deleted: called (on the trio thread, inside no transaction) with the id of every
            node whose deletion the backend acknowledged, so the tree can purge its
            tombstone once nothing local uses it.
        resolver: decides about ops refused with a 409 (without one, a stale version is
            rebased and every other refusal dropped).
    """

    def __init__(
        self,
        db: StateDb,
        api: ApiClient,
        on_deleted: Callable[[NodeId], None],
        resolver: Resolver | None = None,
    ) -> None:
        self._db = db
        self._api = api
        self._on_deleted = on_deleted
        self._resolver = resolver
        self._rebases: dict[str, int] = {}
        self.stats = PushStats()

    def pending(self) -> int:
        return int(self._db.conn.execute("SELECT count(*) FROM outbox").fetchone()[0])

    async def push(self) -> bool:
        """Send one batch; True if anything was sent (call again until it returns False).

        Raises:
            Offline / ApiError: the batch could not be sent; its rows are released.
        """
        batch, ops = self._prepare()
        if not batch:
            return False
        self._db.commit_group()  # the backend must never hold a change this device may lose
        try:
            results = await self._api.push_changes(ops)
        except BaseException:
            self._release([op.seq for op in batch])
            raise
        refused = self._apply(batch, results)
        if refused is not None:
            op, result = refused
            try:
                await self._resolve(op, result)
            finally:
                self._release([op.seq])  # a no-op if the resolver completed it
        return True

    async def _resolve(self, op: OutboxOp, result: OpResult) -> None:
        """Ask the resolver about a refused op (still claimed: nothing merges into it)."""
        assert self._resolver is not None
        tries = self._rebases.get(op.op_id, 0) + 1
        if tries > MAX_REBASES:
            raise StuckOp(f"{op.op} of {op.node_id} refused {tries - 1} times: {result.body}")
        self._rebases[op.op_id] = tries
        verdict = await self._resolver.refused(op, result)
        self.stats.resolved += 1
        if verdict is Verdict.DONE:
            self._rebases.pop(op.op_id, None)
            if op.op == "delete":
                self._on_deleted(op.node_id)
        elif verdict is Verdict.GIVE_UP:
            with self._db.transaction() as conn:
                self._drop(conn, op, result)

    def _prepare(self) -> tuple[list[OutboxOp], list[dict[str, Any]]]:
        """Claim a prefix of the queue and fill its preconditions (no await: atomic)."""
        with self._db.transaction() as conn:
            queued = outbox.pending(conn, BATCH_OPS)
            versions: dict[str, int | None] = {}
            batch: list[OutboxOp] = []
            ops: list[dict[str, Any]] = []
            for op in queued:
                body = dict(op.body)
                if op.op == "create":
                    versions[op.node_id] = 1
                else:
                    base = self._version(conn, versions, op.node_id)
                    if base is None:
                        break  # its create is not acknowledged yet: later
                    body["base_version"] = base
                    replace_id = body.get("replace_id")
                    if replace_id:
                        replaced = self._version(conn, versions, replace_id)
                        if replaced is None:
                            break
                        body["replace_version"] = replaced
                        versions[replace_id] = replaced + 1
                    versions[op.node_id] = base + 1
                batch.append(op)
                ops.append(body)
            outbox.claim(conn, [op.seq for op in batch])
        return batch, ops

    @staticmethod
    def _version(conn: Any, versions: dict[str, int | None], node_id: str) -> int | None:
        if node_id not in versions:
            row = conn.execute(
                "SELECT remote_version FROM nodes WHERE node_id = ?", (node_id,)
            ).fetchone()
            versions[node_id] = None if row is None or row[0] is None else int(row[0])
        return versions[node_id]

    def _release(self, seqs: list[int]) -> None:
        with self._db.transaction() as conn:
            conn.executemany("UPDATE outbox SET claimed = 0 WHERE seq = ?", [(s,) for s in seqs])

    def _apply(
        self, batch: list[OutboxOp], results: list[OpResult]
    ) -> tuple[OutboxOp, OpResult] | None:
        """Record the results in order up to the first refusal; return it if the resolver
        must look at it (then it stays claimed and everything after it is released)."""
        deleted: list[NodeId] = []
        refused: tuple[OutboxOp, OpResult] | None = None
        with self._db.transaction() as conn:
            for index, (op, result) in enumerate(zip(batch, results, strict=True)):
                if result.ok:
                    self._applied(conn, op, result, deleted)
                    continue
                if result.status in TEMPORARY_STATUSES:
                    self._release_rest(conn, batch[index:])
                    break
                error = result.body.get("error")
                if self._resolver is not None and error in RESOLVABLE:
                    refused = (op, result)
                    self._release_rest(conn, batch[index + 1 :])
                    break
                if error == "conflict" and self._rebase(conn, op, result):
                    self._release_rest(conn, batch[index:])
                    break
                self._drop(conn, op, result)
                self._release_rest(conn, batch[index + 1 :])
                break
        for node_id in deleted:
            self._on_deleted(node_id)
        return refused

    def _applied(self, conn: Any, op: OutboxOp, result: OpResult, deleted: list[NodeId]) -> None:
        node = result.body.get("node") or {}
        if "version" in node:
            conn.execute(
                "UPDATE nodes SET remote_version = ? WHERE node_id = ?",
                (int(node["version"]), op.node_id),
            )
        replace_id = op.body.get("replace_id")
        if replace_id:
            deleted.append(NodeId(replace_id))
        if op.op == "delete":
            deleted.append(op.node_id)
        outbox.complete(conn, op.seq)
        self._rebases.pop(op.op_id, None)
        self.stats.applied += 1

    def _rebase(self, conn: Any, op: OutboxOp, result: OpResult) -> bool:
        """Adopt the backend's current version so the op can be sent again; False = give up."""
        current = result.body.get("current") or {}
        tries = self._rebases.get(op.op_id, 0) + 1
        if tries > MAX_REBASES or "version" not in current:
            return False
        self._rebases[op.op_id] = tries
        if op.op == "delete" and current.get("deleted"):
            conn.execute(
                "UPDATE nodes SET remote_version = ? WHERE node_id = ?",
                (int(current["version"]), op.node_id),
            )
            outbox.complete(conn, op.seq)
            return True
        node_id = current.get("id", op.node_id)
        conn.execute(
            "UPDATE nodes SET remote_version = ? WHERE node_id = ?",
            (int(current["version"]), node_id),
        )
        self.stats.rebased += 1
        return True

    def _drop(self, conn: Any, op: OutboxOp, result: OpResult) -> None:
        log.error(
            "backend refused %s of node %s: %s (%s); dropping it",
            op.op,
            op.node_id,
            result.body.get("detail"),
            result.body.get("error"),
        )
        outbox.complete(conn, op.seq)
        self._rebases.pop(op.op_id, None)
        self.stats.dropped += 1

    @staticmethod
    def _release_rest(conn: Any, rest: list[OutboxOp]) -> None:
        conn.executemany("UPDATE outbox SET claimed = 0 WHERE seq = ?", [(o.seq,) for o in rest])
