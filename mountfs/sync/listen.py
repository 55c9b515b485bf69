"""The device's end of the push channel: hold the watch stream open, pull on news.

`Listener.run()` keeps one `GET /journal/{namespace}/watch` stream open (protocol.md,
"Push channel") for the life of the mount and calls `on_news()` -- the engine's
`kick_pull` -- whenever the backend announces a position past the device's cursor, and
once after every (re)connect, since anything may have happened while it was away. The
journal stays the truth: the listener never applies anything itself, so a lost event or a
dropped connection costs latency, never correctness.

A mount's listener also asks for the journals of the shares the account follows
(`followed=true`: the backend re-reads that set itself whenever a share is attached or
detached, so the stream never needs reopening for it); an announced position of one of
them is compared with that namespace's own cursor (`sync.shared.cursor_key`).

While the stream is up the engine's polling becomes a slow safety net (`on_connected`
gets True; the mount sets the pull interval to `CONNECTED_POLL_S`, shares included), and
back to the fast poll as soon as it drops.

Reconnects: a stream that ends after having been up for at least `HEALTHY_S` (the
backend's periodic end, a server restart) is reopened after a short random pause; one
that fails or ends quickly is retried with capped exponential backoff and full jitter
(`transport.retry.RetryPolicy`), so that a backend that comes back is not stampeded by
every device at once. A backend restart therefore recovers by itself: the stream ends,
reconnects fail while the server is down, and the first connect after it is back pulls.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

import trio

from mountfs.state.db import StateDb
from mountfs.sync.engine import POLL_PULL, SyncEngine
from mountfs.sync.shared import cursor_key
from mountfs.transport.api import ApiClient, ApiError, Offline
from mountfs.transport.retry import RetryPolicy

__all__ = ["CONNECTED_POLL_S", "HEALTHY_S", "Listener", "engine_listener"]

log = logging.getLogger(__name__)

BACKOFF = RetryPolicy(attempts=None, base=0.25, cap=10.0)
HEALTHY_S = 5.0
"""A stream that stayed up this long counts as healthy: its end restarts the backoff."""
QUICK_RECONNECT_S = 0.25
"""Longest random pause before reopening a stream that ended after a healthy life."""
CONNECTED_POLL_S = 60.0
"""The engine's pull interval while the push channel is up: only a safety net."""


class Listener:
    """Keeps the push channel of one namespace open; see the module docstring.

    Args:
        api: the device's API client.
        namespace_id: the journal to watch.
        cursor: the device's current cursor (the last journal position it applied).
        on_news: called when there may be something to pull (must not block).
        on_connected: told True when the stream is up, False when it is down.
        followed_cursor: if given, the stream also announces the followed shares'
            journals, and this gives the device's cursor in one of them.
        on_position: told every announced `(namespace, position)` (before `on_news`).
    """

    def __init__(
        self,
        api: ApiClient,
        namespace_id: str,
        cursor: Callable[[], int],
        on_news: Callable[[], None],
        on_connected: Callable[[bool], None] = lambda up: None,
        followed_cursor: Callable[[str], int] | None = None,
        on_position: Callable[[str, int], None] = lambda namespace, position: None,
    ) -> None:
        self._api = api
        self._namespace_id = namespace_id
        self._cursor = cursor
        self._followed_cursor = followed_cursor
        self._on_position = on_position
        self._on_news = on_news
        self._on_connected = on_connected
        self.connected = False
        self.connects = 0
        """Streams opened so far (for status and tests)."""

    async def run(self) -> None:
        """Listen until cancelled; never raises for a failure of the backend or the link."""
        failures = 0
        while True:
            opened = trio.current_time()
            try:
                await self._listen_once()
            except (Offline, ApiError) as exc:
                log.log(
                    logging.DEBUG if failures < 3 else logging.INFO,
                    "push channel: %s",
                    exc,
                )
            except Exception:  # a bug: the mount must go on, polling meanwhile
                log.exception("push channel failed")
            finally:
                self._set_connected(False)
            if trio.current_time() - opened >= HEALTHY_S:
                failures = 0
                await trio.sleep(random.uniform(0, QUICK_RECONNECT_S))
            else:
                failures += 1
                await trio.sleep(BACKOFF.delay(failures))

    async def _listen_once(self) -> None:
        """One stream, from connect to its end."""
        followed = self._followed_cursor is not None
        async with self._api.watch(
            self._namespace_id, self._cursor(), followed=followed
        ) as positions:
            self.connects += 1
            self._set_connected(True)
            self._on_news()  # whatever happened while we were away
            async for namespace_id, position in positions:
                self._on_position(namespace_id, position)
                if position > self._cursor_of(namespace_id):
                    self._on_news()
        log.debug("push channel: the backend ended the stream")

    def _cursor_of(self, namespace_id: str) -> int:
        if namespace_id == self._namespace_id or self._followed_cursor is None:
            return self._cursor()
        return self._followed_cursor(namespace_id)

    def _set_connected(self, up: bool) -> None:
        if up != self.connected:
            log.info("push channel %s", "connected" if up else "disconnected")
            self.connected = up
            self._on_connected(up)


def engine_listener(api: ApiClient, engine: SyncEngine, db: StateDb, namespace_id: str) -> Listener:
    """The listener of a mount: it kicks `engine`'s pull and, while connected, makes the
    engine's polling a slow safety net."""

    def connected(up: bool) -> None:
        engine.pull_interval = CONNECTED_POLL_S if up else POLL_PULL
        engine.shared.announced = up
        if not up:
            engine.kick_pull()  # back to polling now, not after the long interval

    return Listener(
        api,
        namespace_id,
        cursor=lambda: int(db.get_meta("cursor") or 0),
        on_news=engine.kick_pull,
        on_connected=connected,
        followed_cursor=lambda ns: int(db.get_meta(cursor_key(ns)) or 0),
        on_position=engine.shared.announce,
    )
