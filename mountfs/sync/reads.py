"""Reads of bytes that are not cached never hang on a dead or stalled backend.

The vfs asks its `ContentFetcher` for missing bytes and waits. The `Fetcher` retries a
refused connection a few times, but a backend that accepts connections and never answers
(a hung server, a half-open link) would keep a `cat` waiting for the HTTP timeouts, up
to minutes. `ReadFetcher` wraps it with a *patience*
(`mountfs mount --offline-read-timeout`, default `OFFLINE_READ_TIMEOUT` seconds): the fetch
is cancelled, and the read fails with EIO, once that much time passes without a chunk
arriving. A large read that keeps receiving chunks is never cut off, however long it takes.
While the sync engine knows the backend is unreachable (`meta.online` = 0), a miss gets one
quick attempt (at most `PROBE` seconds) instead of the fetcher's retries. After a read failed
for want of a backend, further misses fail at once for `patience` seconds unless something
was downloaded meanwhile: the kernel retries a failed readahead page by page, and a shell
globbing through a folder of cold files should not wait once per file.

Uploads and the pinner use the `Fetcher` itself: they are not bounded.
"""

from __future__ import annotations

import trio

from mountfs.state.db import StateDb
from mountfs.sync.fetch import Fetcher
from mountfs.transport.api import Offline
from mountfs.transport.retry import is_temp_failure
from mountfs.types import InodeNo

__all__ = ["OFFLINE_READ_TIMEOUT", "ReadFetcher"]

OFFLINE_READ_TIMEOUT = 5.0
"""Default seconds a read waits for the backend without progress before it fails."""

PROBE = 1.0
"""Longest attempt of a read while the backend is known to be unreachable."""


class ReadFetcher:
    """The `ContentFetcher` of the mount's vfs: the `Fetcher`, bounded by a patience.

    Args:
        patience: seconds without a downloaded chunk after which a read fails.
    """

    def __init__(
        self, fetcher: Fetcher, db: StateDb, patience: float = OFFLINE_READ_TIMEOUT
    ) -> None:
        self._fetcher = fetcher
        self._db = db
        self.patience = patience
        self._failing_until = -1.0
        self._failed_at_bytes = 0

    async def ensure_present(self, ino: InodeNo, start: int, end: int) -> None:
        """`Fetcher.ensure_present`, cancelled after `patience` seconds without progress.

        Raises:
            Offline: the backend is unreachable, or sent nothing in time.
            anything `Fetcher.ensure_present` raises.
        """
        if (
            trio.current_time() < self._failing_until
            and self._fetcher.downloaded_bytes == self._failed_at_bytes
        ):
            raise Offline(f"inode {ino}: the backend is unreachable (a read just failed)")
        try:
            await self._bounded(ino, start, end)
        except Exception as exc:
            if is_temp_failure(exc):
                self._failing_until = trio.current_time() + self.patience
                self._failed_at_bytes = self._fetcher.downloaded_bytes
            raise

    async def _bounded(self, ino: InodeNo, start: int, end: int) -> None:
        if self._db.get_meta("online") == "0":
            # One quick try: the backend may be back before the sync engine noticed.
            with trio.move_on_after(min(self.patience, PROBE)):
                await self._fetcher.ensure_present(ino, start, end)
                return
            raise Offline(f"inode {ino}: the backend is unreachable (offline)")
        timed_out = False
        error: Exception | None = None
        async with trio.open_nursery() as nursery:

            async def fetch() -> None:
                nonlocal error
                try:
                    await self._fetcher.ensure_present(ino, start, end)
                except Exception as exc:  # re-raised below as itself, not as a group
                    error = exc
                nursery.cancel_scope.cancel()

            async def watch() -> None:
                nonlocal timed_out
                seen = self._fetcher.downloaded_bytes
                while True:
                    await trio.sleep(self.patience)
                    now = self._fetcher.downloaded_bytes
                    if now == seen:  # nothing arrived (for any read) in a whole period
                        timed_out = True
                        nursery.cancel_scope.cancel()
                        return
                    seen = now

            nursery.start_soon(fetch)
            nursery.start_soon(watch)
        if error is not None:
            raise error
        if timed_out:
            raise Offline(f"inode {ino}: no answer from the backend within {self.patience:g}s")
