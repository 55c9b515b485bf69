"""Push fan-out between backend instances through PostgreSQL LISTEN/NOTIFY.

`PgNotifier` is the `Notifier` (`backend.services.notify`) of a deployment with many
instances on one PostgreSQL. It keeps a `LocalNotifier` for its own waiters and adds:

- `publish` (after a commit on this instance): the local fan-out, then
  `pg_notify('mountfs_journal', '<namespace> <position>')` on a connection of its own
  (autocommit, reconnected when lost). Every instance listening hears it.
- `run`: the local notifier's periodic re-check of the journal heads, and a listener:
  one connection per instance with `LISTEN mountfs_journal`, whose notifications are
  published locally (a position not newer than a known one is a no-op, so an instance
  hearing its own notify changes nothing). When the listener's connection drops it
  reconnects with backoff and then re-checks at once, so the gap costs latency only.

The journal stays the truth: a notification lost anywhere (a dropped connection, a
restart, NOTIFY's queue) leaves the devices to the re-check, within about `RECHECK_S`;
nothing is ever delivered that is not committed, since `publish` runs after the commit.

`notifier_for(db)` picks the implementation: this one on PostgreSQL, `LocalNotifier`
otherwise.
"""

from __future__ import annotations

import contextlib
import logging
import time

import anyio
import psycopg
from sqlalchemy.engine import make_url

from backend.db.engine import Database
from backend.services.notify import RECHECK_S, LocalNotifier, Notifier
from backend.services.types import NamespaceId
from backend.telemetry import FANOUT_LAG

__all__ = ["CHANNEL", "PgNotifier", "notifier_for"]

log = logging.getLogger(__name__)

CHANNEL = "mountfs_journal"
_MAX_BACKOFF_S = 10.0


def notifier_for(db: Database) -> Notifier:
    """The notifier for `db`: LISTEN/NOTIFY between instances on PostgreSQL, else local."""
    if db.engine.dialect.name == "postgresql":
        return PgNotifier(db)
    return LocalNotifier(db)


def _conninfo(db: Database) -> str:
    """psycopg's connection string for the engine's URL (SQLAlchemy's `+psycopg` dropped)."""
    url = make_url(db.engine.url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


class PgNotifier:
    """See the module docstring. Runs on the server's asyncio event loop (psycopg's async
    connections need it, and uvicorn provides it)."""

    def __init__(self, db: Database, recheck: float = RECHECK_S) -> None:
        self._local = LocalNotifier(db, recheck)
        self._conninfo = _conninfo(db)
        self._sender: psycopg.AsyncConnection[object] | None = None
        self._send_lock = anyio.Lock()
        self.listening = anyio.Event()
        """Set once the listener has subscribed (tests and readiness use it)."""

    async def publish(self, namespace_id: NamespaceId, position: int) -> None:
        await self._local.publish(namespace_id, position)
        try:
            await self._notify(namespace_id, position)
        except (psycopg.Error, OSError) as exc:
            # Other instances find it at their next re-check: latency, not correctness.
            log.warning("NOTIFY failed (%s); other instances will re-check", exc)
            await self._drop_sender()

    async def _notify(self, namespace_id: NamespaceId, position: int) -> None:
        async with self._send_lock:
            if self._sender is None or self._sender.closed:
                self._sender = await psycopg.AsyncConnection.connect(
                    self._conninfo, autocommit=True
                )
            await self._sender.execute(  # the commit time feeds the fan-out lag metric
                "SELECT pg_notify(%s, %s)",
                (CHANNEL, f"{namespace_id} {position} {time.time():.6f}"),
            )

    async def _drop_sender(self) -> None:
        sender, self._sender = self._sender, None
        if sender is not None:
            with contextlib.suppress(psycopg.Error, OSError):
                await sender.close()

    async def wait_past(
        self,
        namespace_id: NamespaceId,
        position: int,
        timeout: float,  # noqa: ASYNC109  (the Notifier protocol's signature)
    ) -> int | None:
        return await self._local.wait_past(namespace_id, position, timeout)

    async def run(self) -> None:
        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(self._local.run)
                tasks.start_soon(self._listen_forever)
        finally:
            with anyio.CancelScope(shield=True):
                await self._drop_sender()

    async def _listen_forever(self) -> None:
        backoff = 0.5
        while True:
            try:
                await self._listen()
            except (psycopg.Error, OSError, ValueError) as exc:
                if self.listening.is_set():
                    backoff = 0.5  # it had worked: a fresh loss starts the backoff again
                log.warning("LISTEN %s lost (%s); again in %.1f s", CHANNEL, exc, backoff)
            self.listening = anyio.Event()
            await anyio.sleep(backoff)
            backoff = min(backoff * 2, _MAX_BACKOFF_S)

    async def _listen(self) -> None:
        conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
        async with conn:
            await conn.execute(f"LISTEN {CHANNEL}")
            self.listening.set()
            log.info("listening on PostgreSQL channel %s for other instances' commits", CHANNEL)
            await self._local.recheck()  # whatever was committed while nobody listened
            async for note in conn.notifies():
                namespace_id, position, *sent = note.payload.split(" ")
                await self._local.publish(NamespaceId(namespace_id), int(position))
                if sent:  # absent from instances of an older version
                    FANOUT_LAG.observe(max(0.0, time.time() - float(sent[0])))
