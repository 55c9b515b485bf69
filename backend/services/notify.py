"""Fan-out of "the journal of namespace N reached position P" to the push channel's waiters.

The journal (`backend.services.journal`) is the truth; a notification only cuts the time a
device waits before it pulls. So the contract is deliberately small and lossy:

- `publish(namespace_id, position)` is called after the transaction that appended the
  journal entries up to `position` has committed (never before: a device woken by it must
  find the entries). Publishing a position that is not newer than one already published
  is a no-op, so callers never need to order their publishes.
  No route calls it by hand: `journal.record` notes every entry it appends on the
  connection (`note_appended`), and `on_commit` hands those positions over once the
  transaction has committed, or drops them when it rolls back. Every change that writes
  the journal, through any route present or future, is therefore published.
- `wait_past(namespace_id, position, timeout)` returns the newest known position once it
  is greater than `position`, or None when `timeout` seconds pass first.
- `run()` does the implementation's background work until cancelled; the app's lifespan
  runs it for as long as the app serves.

`LocalNotifier` is the in-process implementation (the default). Its publishes reach only
the waiters of its own process, so `run()` also re-reads, about once a second, the journal
head (`namespace.last_seq`) of every namespace that somebody waits on, in one query for all
of them, and wakes the waiters of those that moved. That covers changes committed by
another worker process (`mountfs server --workers N` shares one SQLite file) or by another
backend instance: they arrive within about `RECHECK_S`, never later, and never get lost.
A PostgreSQL implementation (LISTEN/NOTIFY between instances) fits behind the same
protocol; it should keep the periodic re-check as its safety net for a dropped listener.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import anyio
from sqlalchemy import Connection, Engine, event, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import ConnectionPoolEntry

from backend.db.engine import Database
from backend.db.tables import device, namespace
from backend.services import access
from backend.services.errors import NotFound
from backend.services.types import NamespaceId, Principal

log = logging.getLogger(__name__)

__all__ = [
    "RECHECK_S",
    "LocalNotifier",
    "Notifier",
    "may_still_watch",
    "note_appended",
    "on_commit",
    "read_heads",
    "watched_head",
]

RECHECK_S = 1.0
"""How often `LocalNotifier` re-reads the journal heads of the namespaces it watches."""

_HEADS_PER_QUERY = 500
"""Namespaces per re-check query (SQLite allows a limited number of bound parameters)."""


class Notifier(Protocol):
    """News of journal positions, per namespace; see the module docstring for the contract."""

    async def publish(self, namespace_id: NamespaceId, position: int) -> None:
        """The journal of `namespace_id` has committed entries up to `position`."""

    async def wait_past(
        self,
        namespace_id: NamespaceId,
        position: int,
        timeout: float,  # noqa: ASYNC109  (running out is an answer, None, not an error)
    ) -> int | None:
        """The newest known position once it is past `position`; None after `timeout` s."""

    async def run(self) -> None:
        """Background work (re-checking the journal, listening) until cancelled."""


_APPENDED = "mountfs.journal_appended"
"""Key in a connection's `info` of {namespace: last seq appended} by its transaction."""


def note_appended(conn: Connection, namespace_id: str, seq: int) -> None:
    """Remember, on the connection, that this transaction appended `seq` to the journal
    of `namespace_id` (called by `journal.record`)."""
    appended: dict[str, int] = conn.info.setdefault(_APPENDED, {})
    appended[namespace_id] = max(seq, appended.get(namespace_id, 0))


def on_commit(engine: Engine, deliver: Callable[[Mapping[str, int]], None]) -> None:
    """Call `deliver({namespace: position})` after each transaction of `engine` that
    appended journal entries has committed, on the thread that committed it.

    The positions noted by `note_appended` are dropped by a rollback and handed over when
    the connection goes back to the pool, which `Database.write()` does right after the
    commit. (A commit that fails inside the driver after SQLAlchemy's `commit` event
    would still be delivered: a device would pull and find nothing, which is harmless.)
    """

    @event.listens_for(engine, "rollback")
    def _rolled_back(conn: Connection) -> None:
        if not conn.invalidated:  # a lost connection's info cannot be reached (or matter)
            conn.info.pop(_APPENDED, None)

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi: Any, record: ConnectionPoolEntry | None) -> None:
        appended = record.info.pop(_APPENDED, None) if record is not None else None
        if appended:
            deliver(appended)


def watched_head(conn: Connection, who: Principal, namespace_id: NamespaceId) -> int:
    """The journal head of a namespace the caller may read (NotFound for any other)."""
    try:
        access.role_in(conn, who, namespace_id)
    except NotFound:
        raise NotFound("no such namespace") from None
    heads = read_heads(conn, [namespace_id])
    if namespace_id not in heads:
        raise NotFound("no such namespace")
    return heads[namespace_id]


def may_still_watch(conn: Connection, who: Principal, namespace_id: NamespaceId) -> bool:
    """Whether an open watch may go on: the device is not revoked and the namespace is
    still readable (re-checked at each heartbeat, since a stream outlives its auth)."""
    revoked = conn.execute(select(device.c.revoked_at).where(device.c.id == who.device_id)).first()
    if revoked is None or revoked.revoked_at is not None:
        return False
    try:
        access.role_in(conn, who, namespace_id)
    except NotFound:
        return False
    return True


def read_heads(conn: Connection, namespace_ids: Sequence[str]) -> dict[str, int]:
    """`namespace.last_seq` of each existing namespace among `namespace_ids`."""
    heads: dict[str, int] = {}
    for start in range(0, len(namespace_ids), _HEADS_PER_QUERY):
        batch = list(namespace_ids[start : start + _HEADS_PER_QUERY])
        query = select(namespace.c.id, namespace.c.last_seq).where(namespace.c.id.in_(batch))
        heads.update({row.id: int(row.last_seq) for row in conn.execute(query)})
    return heads


class LocalNotifier:
    """In-process fan-out plus a periodic re-check of the journal (see the module docstring).

    Runs on the server's event loop: `publish` and `wait_past` must be awaited there (a
    route running in a worker thread goes through `anyio.from_thread.run`).

    Args:
        db: where the re-check reads the journal heads.
        recheck: seconds between two re-checks.
    """

    def __init__(self, db: Database, recheck: float = RECHECK_S) -> None:
        self._db = db
        self._recheck = recheck
        self._heads: dict[str, int] = {}
        self._moved: dict[str, anyio.Event] = {}
        self._waiting: Counter[str] = Counter()

    async def publish(self, namespace_id: NamespaceId, position: int) -> None:
        if position <= self._heads.get(namespace_id, -1):
            return
        self._heads[namespace_id] = position
        moved = self._moved.pop(namespace_id, None)
        if moved is not None:
            moved.set()

    async def wait_past(
        self,
        namespace_id: NamespaceId,
        position: int,
        timeout: float,  # noqa: ASYNC109  (running out is an answer, None, not an error)
    ) -> int | None:
        self._waiting[namespace_id] += 1
        try:
            with anyio.move_on_after(timeout):
                while True:
                    known = self._heads.get(namespace_id)
                    if known is not None and known > position:
                        return known
                    moved = self._moved.get(namespace_id)
                    if moved is None:
                        moved = self._moved[namespace_id] = anyio.Event()
                    await moved.wait()
            return None
        finally:
            self._waiting[namespace_id] -= 1
            if self._waiting[namespace_id] <= 0:
                del self._waiting[namespace_id]

    async def run(self) -> None:
        while True:
            await anyio.sleep(self._recheck)
            try:
                await self.recheck()
            except SQLAlchemyError as exc:
                # The database is down or restarting: the next re-check catches up. An
                # exception here would end the server's lifespan, i.e. the instance.
                log.warning("journal re-check failed (%s); trying again", exc.__class__.__name__)

    async def recheck(self) -> None:
        """Re-read the heads of the watched namespaces now; wake those that moved.

        Also forgets the heads of namespaces nobody waits on, so memory follows the
        number of open watches, not the number of accounts that ever changed something.
        """
        watched = list(self._waiting)
        self._heads = {ns: pos for ns, pos in self._heads.items() if ns in self._waiting}
        if not watched:
            return
        heads = await anyio.to_thread.run_sync(self._read_heads, watched)
        for namespace_id, head in heads.items():
            await self.publish(NamespaceId(namespace_id), head)

    def _read_heads(self, namespace_ids: list[str]) -> dict[str, int]:
        with self._db.read() as conn:
            return read_heads(conn, namespace_ids)
