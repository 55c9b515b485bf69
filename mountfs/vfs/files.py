"""File content: open, read, write, truncate, fsync, release -- through the block cache.

Content model: one sparse cache file per inode (`mountfs.cache.block_cache`) plus, in
SQLite, which byte ranges of it are *present* and which are *dirty* (`extents`), the
file's `size`, its `dirty` flag and its `content_gen`. Files created here are complete
from the start; files that came from the backend may be incomplete, and a read of a range
that is not present asks the `ContentFetcher` (the sync engine downloads the chunks of the
head revision) and fills only the bytes that are still missing when the answer arrives --
a local write that landed meanwhile is never overwritten by older remote bytes.

Every content change takes the inode's lock, writes the cache file, then records the
change in one transaction: size, dirty flag, `content_gen` + 1, extents. A write that
returned is therefore in the cache file (page cache) and in the state database (WAL);
`fsync` makes both durable before it returns.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Protocol

import trio

from mountfs.cache.block_cache import BlockCache
from mountfs.cache.locks import KeyedLock
from mountfs.state import extents, nodes
from mountfs.state.db import StateDb
from mountfs.state.nodes import Node
from mountfs.state.schema import EXTENT_DIRTY, EXTENT_PRESENT
from mountfs.types import InodeNo
from mountfs.vfs.errors import ContentUnavailable, FileTooLarge, InvalidArgument, IsADirectory
from mountfs.vfs.handles import FileHandle, Handles
from mountfs.vfs.inodes import Inodes
from mountfs.vfs.tree import AttrChange, Tree

MAX_FILE_META = "max_file_bytes"
"""`meta` key: the largest file the backend stores (the sync engine records it)."""
DEFAULT_MAX_FILE_BYTES = 10 << 30

__all__ = ["ContentFetcher", "Files", "NoFetcher"]

log = logging.getLogger(__name__)


class ContentFetcher(Protocol):
    """Where missing bytes of a file come from (the sync engine implements it)."""

    async def ensure_present(self, ino: InodeNo, start: int, end: int) -> None:
        """Return once every byte of [start, end) that the head revision has is cached.

        Contract, so that a local write is never overwritten by older remote bytes: the
        fetcher writes into the cache file (`BlockCache.path(ino)`) only where the
        `present` extents have gaps, and it checks the gaps, writes, and records the new
        `present` extents with no `await` in between (one SQLite transaction). The range
        never extends past `remote_size`. Concurrent calls for overlapping ranges should
        share downloads.

        Raises:
            any exception: the bytes cannot be had now (offline, corrupt chunk, ...);
            the read that needed them fails with EIO and a warning in the log.
        """
        ...


class NoFetcher:
    """The fetcher of a mount without a sync engine: nothing can be downloaded."""

    async def ensure_present(self, ino: InodeNo, start: int, end: int) -> None:
        raise ContentUnavailable(f"inode {ino}: content not cached and no sync engine")


class Files:
    """Content operations of open files."""

    def __init__(
        self,
        db: StateDb,
        cache: BlockCache,
        handles: Handles,
        inodes: Inodes,
        tree: Tree,
        fetcher: ContentFetcher,
        *,
        fsync_limiter: trio.CapacityLimiter | None = None,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self._db = db
        self._clock = clock
        self._cache = cache
        self._handles = handles
        self._inodes = inodes
        self._tree = tree
        self._fetcher = fetcher
        self._fsync = fsync_limiter or trio.CapacityLimiter(2)
        self._content_locks: KeyedLock[int] = KeyedLock()
        self.on_settled: Callable[[InodeNo], None] = lambda ino: None
        """Called after a handle is released or fsynced: the file's content may be ready
        to upload. The composition root points it at the sync engine's `kick()`, so a
        closed file goes up at once instead of at the engine's next poll."""

    # --- open and close ------------------------------------------------------------------

    async def open(self, ino: int, flags: int) -> FileHandle:
        """Open a file (the kernel has already checked permissions).

        O_TRUNC arrives here when the kernel uses atomic O_TRUNC (libfuse enables it by
        default): the kernel then truncates only its own page cache and sends no setattr,
        so the truncation must happen here, or the old bytes would come back later.
        """
        node = self._tree.get(ino)
        if node.kind == "dir":
            raise IsADirectory(f"inode {ino} is a directory")
        if node.kind != "file":
            raise InvalidArgument(f"inode {ino} is a {node.kind}")
        if flags & os.O_TRUNC and node.size:  # an empty file stays as it is (times too)
            await self.setattr(ino, AttrChange(), 0)
        self._cache.open(ino)
        return self._handles.open_file(InodeNo(ino), flags)

    def release(self, fh: int) -> None:
        handle = self._handles.close_file(fh)
        self._cache.close(handle.ino)
        if not self._inodes.maybe_purge(handle.ino) and handle.flags & os.O_ACCMODE:
            self.on_settled(handle.ino)

    # --- reading -------------------------------------------------------------------------

    async def read(self, fh: int, offset: int, size: int) -> bytes:
        """Up to `size` bytes at `offset`; short only at end of file.

        Works on write-only handles too: the kernel reads partial pages before writing.
        """
        ino = self._handles.file(fh).ino
        node = self._tree.get(ino)
        end = min(offset + size, node.size)
        if end <= offset:
            return b""
        if not node.complete:
            await self._make_present(ino, offset, end)
        data = await self._cache.read(ino, offset, end - offset)
        if len(data) != end - offset:
            raise RuntimeError(
                f"cache file of inode {ino} ends before {end} (has {offset + len(data)})"
            )
        return data

    async def _make_present(self, ino: int, start: int, end: int) -> None:
        """Have the fetcher fill the gaps of [start, end); mark the file complete if it is."""
        conn = self._db.conn
        node = self._tree.get(ino)
        fetch_end = min(end, node.remote_size)
        if extents.gaps(conn, ino, EXTENT_PRESENT, start, fetch_end):
            self._cache.make_room(fetch_end - start)
            self._cache.pin(ino)
            try:
                await self._fetcher.ensure_present(InodeNo(ino), start, fetch_end)
            except ContentUnavailable:
                raise
            except Exception as exc:
                raise ContentUnavailable(f"inode {ino}: fetching {start}-{end}: {exc}") from exc
            finally:
                self._cache.unpin(ino)
                self._cache.refresh(ino)
            if self._tree.get(ino).complete:
                return  # a concurrent read completed the file (its present extents are gone)
        if extents.gaps(conn, ino, EXTENT_PRESENT, start, end):
            raise ContentUnavailable(f"inode {ino}: bytes {start}-{end} are still missing")
        size = self._tree.get(ino).size
        if not extents.gaps(conn, ino, EXTENT_PRESENT, 0, size):
            with self._db.transaction():
                nodes.set_fields(conn, ino, {"complete": 1})
                extents.clear(conn, ino, EXTENT_PRESENT)

    # --- writing -------------------------------------------------------------------------

    async def write(self, fh: int, offset: int, data: bytes) -> int:
        """Write all of `data` at `offset` (the kernel may write past the size we know).

        If the cache write fails (a full disk), part of the range may still have been
        overwritten: that part is recorded as dirty before the error is raised, so the
        cache file and the record of what changed never disagree.
        """
        ino = self._handles.file(fh).ino
        end = offset + len(data)
        self._check_size(ino, end)
        async with self._content_locks.hold(ino):
            # An incomplete file may be filled by the fetcher at any await: write it
            # inline, so that the bytes and their `present` record land together.
            inline = not self._tree.get(ino).complete
            try:
                await self._cache.write(ino, offset, data, dirty=True, inline=inline)
            except OSError:
                self._record_write(ino, offset, end, whole=False)
                raise
            self._record_write(ino, offset, end, whole=True)
        return len(data)

    def _record_write(self, ino: int, offset: int, end: int, *, whole: bool) -> None:
        with self._db.transaction() as conn:
            node = self._tree.get(ino)
            if whole:
                start = min(offset, node.size)  # a gap past the old end reads as zeros
                if not node.complete:
                    extents.add(conn, ino, EXTENT_PRESENT, start, end)
            else:  # maybe partly written: only what lies inside the file can have changed
                start, end = offset, min(end, node.size)
                if end <= start:
                    return
            extents.add(conn, ino, EXTENT_DIRTY, start, end)
            conn.execute(
                "UPDATE nodes SET size = max(size, ?), dirty = 1, "
                "content_gen = content_gen + 1 WHERE ino = ?",
                (end, ino),
            )
        # The bytes are in the cache file already: their record may not wait for the group
        # (a crash would leave changed bytes that nothing marks as changed).
        self._db.commit_group()
        self._cache.set_dirty(ino, True)

    async def truncate(self, ino: int, size: int) -> None:
        """Set a file's size: shrinking drops bytes, growing adds zeros (both are changes)."""
        async with self._content_locks.hold(ino):
            node = self._tree.get(ino)
            if node.kind == "dir":
                raise IsADirectory(f"inode {ino} is a directory")
            if node.kind != "file":
                raise InvalidArgument(f"cannot truncate a {node.kind}")
            if size == node.size:
                return
            if size > node.size:
                self._check_size(ino, size)
            self._cache.truncate(ino, size)
            # A file the backend has never had content for is clean again when empty.
            dirty = not (size == 0 and node.remote_head_revision is None)
            with self._db.transaction() as conn:
                if size < node.size:
                    extents.clip(conn, ino, EXTENT_PRESENT, size)
                    extents.clip(conn, ino, EXTENT_DIRTY, size)
                else:
                    if not node.complete:
                        extents.add(conn, ino, EXTENT_PRESENT, node.size, size)
                    extents.add(conn, ino, EXTENT_DIRTY, node.size, size)
                if not dirty:
                    extents.clear(conn, ino, EXTENT_DIRTY)
                conn.execute(
                    "UPDATE nodes SET size = ?, dirty = ?, content_gen = content_gen + 1 "
                    "WHERE ino = ?",
                    (size, int(dirty), ino),
                )
            self._db.commit_group()  # the cache file is truncated already (as in `write`)
            self._cache.set_dirty(ino, dirty)

    def _check_size(self, ino: int, size: int) -> None:
        """Refuse to grow a file past what the backend stores (`max_file_bytes` in `meta`,
        learnt from the backend; the product's 10 GiB until then), instead of failing its
        upload half way."""
        limit = int(self._db.get_meta(MAX_FILE_META) or DEFAULT_MAX_FILE_BYTES)
        if size > limit:
            raise FileTooLarge(f"inode {ino}: {size} bytes is above the largest file ({limit})")

    def mark_clean(self, ino: int, content_gen: int, head_revision: str, size: int) -> bool:
        """The sync engine committed `head_revision` from a snapshot taken at `content_gen`.

        Records the revision and clears the dirty state unless a write came in since the
        snapshot (`nodes.mark_clean`), and tells the cache, which may now evict the bytes.
        Returns True if the file is clean.
        """
        with self._db.transaction() as conn:
            clean = nodes.mark_clean(conn, ino, content_gen, head_revision, size)
        if clean:
            self._cache.set_dirty(ino, False)
        return clean

    async def setattr(self, ino: int, change: AttrChange, size: int | None) -> Node:
        """setattr(2) as a whole: a new size through `truncate`, the rest through the tree.

        A size change also sets mtime and ctime (to now, unless the kernel sent them, which
        it does with the writeback cache).
        """
        if size is not None:
            await self.truncate(ino, size)
            now = self._clock()
            change = replace(
                change,
                mtime_ns=now if change.mtime_ns is None else change.mtime_ns,
                ctime_ns=now if change.ctime_ns is None else change.ctime_ns,
            )
        return self._tree.setattr(ino, change)

    # --- durability ----------------------------------------------------------------------

    async def fsync(self, fh: int) -> None:
        """Make the file's cache content and every state change so far durable.

        The kernel has written its dirty pages (as `write` calls) before it sends FSYNC.
        Order: cache file first, then the WAL, so that durable rows never describe bytes
        that were lost (docs/client.md, "Crash states").
        """
        ino = self._handles.file(fh).ino
        await self._cache.fsync(ino)
        await self.sync_state()
        self.on_settled(ino)

    async def sync_state(self) -> None:
        """Make every state change so far durable (fsyncdir, and the end of fsync)."""
        self._db.commit_group()
        await trio.to_thread.run_sync(self._db.sync_wal, limiter=self._fsync)
