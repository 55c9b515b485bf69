"""The push channel's side of the app: one `News` per app, built and run by the lifespan.

It holds the notifier (`backend.services.notify`) and what the watch streams need to end
well:

- Every committed transaction that appended journal entries reaches `committed()`
  (`notify.on_commit`), in whatever thread committed it (routes run in worker threads).
  It only schedules the publish on the event loop (`call_soon_threadsafe`) and returns:
  a request never waits for the fan-out.
- uvicorn's graceful shutdown waits for every open response to finish before it even
  tells the app (up to `timeout_graceful_shutdown`, then it cancels them and logs an
  error). A watch stream never finishes by itself, so `running()` chains a handler onto
  SIGTERM/SIGINT that ends every stream at once: the devices see the stream close, and
  reconnect (with backoff) to whichever server answers next. Signal handlers can only be
  installed on the main thread, which is where uvicorn runs a server (one process or each
  of `--workers N`); a server run off the main thread (in-process tests) ends its streams
  when the lifespan shuts down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import signal
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from types import FrameType
from typing import Annotated, Any

import anyio
from fastapi import Depends

from backend.api.deps import State
from backend.db.engine import Database
from backend.services.notify import LocalNotifier, Notifier, on_commit
from backend.services.types import NamespaceId

__all__ = ["News", "NewsFeed"]

log = logging.getLogger(__name__)

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


class News:
    """The notifier, and the open watch streams that must end when the server stops."""

    def __init__(self, notifier: Notifier) -> None:
        self.notifier = notifier
        self.stopping = False
        self._streams: set[anyio.CancelScope] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._send, self._receive = anyio.create_memory_object_stream[tuple[str, int]](math.inf)

    @classmethod
    def local(cls, db: Database, notifier: Notifier | None = None) -> News:
        """Fed by `db`'s commits; the fan-out is `notifier` if given (PostgreSQL's
        LISTEN/NOTIFY between instances, `notify_pg.notifier_for`), else in-process."""
        news = cls(notifier or LocalNotifier(db))
        on_commit(db.engine, news.committed)
        return news

    def committed(self, positions: Mapping[str, int]) -> None:
        """From any thread: these journal positions are committed; publish them soon."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return  # not serving (yet, or any more): nobody waits
        items = list(positions.items())
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(self._enqueue, items)

    def _enqueue(self, items: list[tuple[str, int]]) -> None:
        for item in items:
            with contextlib.suppress(anyio.ClosedResourceError):
                self._send.send_nowait(item)

    async def _publish_queued(self) -> None:
        async with self._receive:
            async for namespace_id, position in self._receive:
                await self.notifier.publish(NamespaceId(namespace_id), position)

    @contextmanager
    def interruptible(self) -> Iterator[anyio.CancelScope]:
        """A cancel scope that `stop()` cancels: wrap a stream's waits (never a yield) in it."""
        scope = anyio.CancelScope()
        if self.stopping:
            scope.cancel()
        self._streams.add(scope)
        try:
            with scope:
                yield scope
        finally:
            self._streams.discard(scope)

    def stop(self) -> None:
        """End every open stream now, and every stream opened from now on at once."""
        if not self.stopping:
            log.info("server stopping: ending %d watch stream(s)", len(self._streams))
        self.stopping = True
        for scope in list(self._streams):
            scope.cancel()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Run the notifier and watch for the stop signals for the app's lifetime."""
        self._loop = asyncio.get_running_loop()
        restore = _chain_stop_signals(self.stop)
        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(self.notifier.run)
                tasks.start_soon(self._publish_queued)
                try:
                    yield
                finally:
                    self.stop()
                    tasks.cancel_scope.cancel()
        finally:
            self._loop = None
            self._send.close()
            restore()


def _chain_stop_signals(on_stop: Callable[[], None]) -> Callable[[], None]:
    """Call `on_stop` on the event loop when SIGTERM or SIGINT arrives, then whatever
    handler was there before (uvicorn's, which starts the graceful shutdown).

    Returns the function that puts the previous handlers back. Off the main thread it
    installs nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = asyncio.get_running_loop()
    previous: dict[int, _Handler] = {sig: signal.getsignal(sig) for sig in _STOP_SIGNALS}

    def handler(signum: int, frame: FrameType | None) -> None:
        loop.call_soon_threadsafe(on_stop)
        before = previous.get(signum)
        if callable(before):
            before(signum, frame)
        elif before == signal.SIG_DFL:
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)

    for sig in _STOP_SIGNALS:
        signal.signal(sig, handler)

    def restore() -> None:
        for sig, before in previous.items():
            if signal.getsignal(sig) is handler and before is not None:
                signal.signal(sig, before)

    return restore


async def get_news(state: State) -> News:
    return state.news


NewsFeed = Annotated[News, Depends(get_news)]
"""The app's `News`, for routes that publish or stream."""
