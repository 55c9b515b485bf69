"""Kernel cache invalidation, for changes that did not come through the kernel.

The mount answers with long entry/attr timeouts (`mountfs.fuse.attrs`), so the kernel
serves most stats itself; when the sync engine applies a remote change it must tell the
kernel. The notification calls can block on the very requests this process serves
(PYFUSE3-NOTES §1): entry invalidation takes the parent directory's lock, data invalidation
writes dirty pages back to us first. So they are never made on the trio thread:

1. the caller commits the new state to SQLite first (a lookup racing with the
   notification then already sees the new state and cannot re-cache the old one);
2. it queues a notice: `entry()` / `inode()` on the trio thread (never blocks), or
   `entry_from_thread()` / `inode_from_thread()` from a worker thread;
3. one notifier task (`run()`, started by the composition root) makes the pyfuse3 call in
   a worker thread of its own limiter, `abandon_on_cancel=True` so that a stuck call can
   never hang shutdown, and ignores ENOENT (the kernel did not have it cached: nothing to
   do). Other errors are logged; a failed invalidation only delays visibility until the
   timeout.

Rules for callers: never queue while holding a lock that a FUSE handler needs (the
notifier could then wait for that handler); for an open file prefer `attr_only=True`
(dropping pages waits on page locks); remote content changes get a new inode number
rather than a data invalidation (writeback cache: the kernel owns a cached file's size),
announced as `entry(parent, name, deleted=old_ino)`: the kernel drops the dentry, marks the
old inode unlinked (descriptors keep it, inotify watchers of it get IN_DELETE_SELF) and
the next lookup reaches us. If the dentry points elsewhere the kernel still drops it and
answers ENOENT, which is ignored. `deleted=` is only for inodes that no other name refers to
(we have no hard links), and a directory must be empty in the dentry cache.

`drained()` waits until every notice queued so far has been delivered: `mountfs sync`
answers only then, so a script that runs `mountfs sync` and then `cat` sees the new state.
"""

from __future__ import annotations

import errno
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import pyfuse3
import trio

__all__ = ["EntryNotice", "InodeNotice", "Invalidator"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class EntryNotice:
    """Forget the dentry `name` in directory `parent` (`deleted`: the inode it named)."""

    parent: int
    name: bytes
    deleted: int = 0


@dataclass(frozen=True, slots=True)
class InodeNotice:
    """Forget the attributes (and, unless `attr_only`, the cached pages) of `ino`."""

    ino: int
    attr_only: bool = False


Notice = EntryNotice | InodeNotice


class Invalidator:
    """One queue, one notifier task.

    Args:
        invalidate_entry / invalidate_inode: the kernel calls (pyfuse3's by default;
            tests pass recorders).
    """

    def __init__(
        self,
        invalidate_entry: Callable[[int, bytes, int], None] | None = None,
        invalidate_inode: Callable[[int, bool], None] | None = None,
    ) -> None:
        self._entry = invalidate_entry or _pyfuse3_entry
        self._inode = invalidate_inode or _pyfuse3_inode
        # Unbounded: queueing must never block or fail on the trio thread, and the queue
        # only grows while the kernel is slow to take notices.
        self._send, self._receive = trio.open_memory_channel[Notice](math.inf)
        self._limiter = trio.CapacityLimiter(1)
        self._token: trio.lowlevel.TrioToken | None = None
        self._queued = 0
        self._delivered = 0
        self._progress = trio.Event()

    def entry(self, parent: int, name: str | bytes, deleted: int = 0) -> None:
        """Queue: the kernel must forget the dentry `name` of `parent` (trio thread only)."""
        raw = name.encode("utf-8") if isinstance(name, str) else name
        self._queue(EntryNotice(parent, raw, deleted))

    def inode(self, ino: int, data: bool = False) -> None:
        """Queue: the kernel must forget `ino`'s attributes and, if `data`, its pages."""
        self._queue(InodeNotice(ino, attr_only=not data))

    def _queue(self, notice: Notice) -> None:
        self._send.send_nowait(notice)
        self._queued += 1

    async def drained(self) -> None:
        """Return once every notice queued before this call has been delivered.

        Callers bound the wait (`trio.move_on_after`): a kernel call may hang, and its
        notices still go out later.
        """
        target = self._queued
        while self._delivered < target:
            await self._progress.wait()

    def entry_from_thread(self, parent: int, name: str | bytes, deleted: int = 0) -> None:
        """`entry()` for callers on a worker thread."""
        trio.from_thread.run_sync(self.entry, parent, name, deleted, trio_token=self._token_())

    def inode_from_thread(self, ino: int, data: bool = False) -> None:
        """`inode()` for callers on a worker thread."""
        trio.from_thread.run_sync(self.inode, ino, data, trio_token=self._token_())

    def _token_(self) -> trio.lowlevel.TrioToken:
        if self._token is None:
            raise RuntimeError("the invalidator is not running")
        return self._token

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The notifier task: runs until cancelled (start it with `nursery.start`)."""
        self._token = trio.lowlevel.current_trio_token()
        task_status.started()
        async for notice in self._receive:
            await trio.to_thread.run_sync(
                self._deliver, notice, limiter=self._limiter, abandon_on_cancel=True
            )
            self._delivered += 1
            self._progress.set()
            self._progress = trio.Event()

    def _deliver(self, notice: Notice) -> None:
        try:
            if isinstance(notice, EntryNotice):
                self._entry(notice.parent, notice.name, notice.deleted)
            else:
                self._inode(notice.ino, notice.attr_only)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                log.warning("kernel invalidation %s failed: %s", notice, exc)


def _pyfuse3_entry(parent: int, name: bytes, deleted: int) -> None:
    pyfuse3.invalidate_entry(parent, name, deleted)


def _pyfuse3_inode(ino: int, attr_only: bool) -> None:
    pyfuse3.invalidate_inode(ino, attr_only)
