"""The on-disk content cache: one sparse file per file inode, its space, and its eviction.

`STATE/cache/<ino>` holds the plaintext of file `<ino>` at the file's own offsets: a write is
one `pwrite` at disk speed, a read is one `pread`, a truncation is one `ftruncate`, and bytes
never fetched are holes that take no space. Which bytes are valid is recorded in the state
database (`extents`, `nodes.complete`), not here: this module owns only the files, the
accounting of their space, and eviction.

Space model (admission-time accounting):
- *used* = allocated bytes (`st_blocks * 512`) of all cache files, kept per inode in memory
  and updated with an `fstat` after every change; *dirty* = the part of it that belongs to
  inodes with unsent changes.
- Before a write may allocate space, the cache estimates the growth (`SEEK_HOLE`: an
  overwrite of allocated bytes costs nothing), then
  1. evicts clean content, least recently used first, while used + growth exceeds
     `cache_size` -- never dirty content, never an inode in use (open, being fetched or
     uploaded), and never a file the user pinned for offline use (`mountfs.state.pins`;
     pinned content counts towards `used`, so a cache full of pins evicts everything else);
  2. refuses with ENOSPC if dirty content would exceed `dirty_size`, or if the disk would
     keep less than `min_free` bytes free after evicting what it can.
  A refused write loses nothing: the application sees ENOSPC, as on a full local disk.
- Eviction deletes the cache file and, in the same SQLite transaction, marks the file
  incomplete with no present bytes: the next read fetches again.

Large reads and writes (> `INLINE_IO_MAX`) and every `fsync` run in worker threads under
their own `CapacityLimiter`s; small ones are cheaper inline than a thread hop.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import trio

from mountfs.state import extents, nodes, pins
from mountfs.state.db import StateDb
from mountfs.state.schema import EXTENT_PRESENT

__all__ = ["INLINE_IO_MAX", "BlockCache", "CacheLimits", "CacheStats"]

log = logging.getLogger(__name__)

CACHE_DIR = "cache"
"""The cache's directory inside a device's state directory (`STATE/cache/<ino>`)."""

INLINE_IO_MAX = 256 * 1024
"""Reads/writes up to this size run on the trio thread; bigger ones in a worker thread."""

_PAGE = 4096
_GiB = 1 << 30
_EVICT_WINDOW = 128  # LRU candidates checked against the user's pins in one query


@dataclass(frozen=True, slots=True)
class CacheLimits:
    """How much disk the cache may use.

    Attributes:
        cache_size: target for all cache files together; clean content beyond it is evicted.
        min_free: bytes that must stay free on the cache's disk (room for SQLite's WAL and
            for the rest of the system); a write that would eat into it gets ENOSPC.
        dirty_size: cap on content not yet uploaded, or None to let it use the disk down to
            `min_free` (it cannot be evicted, so the disk is its natural limit).
    """

    cache_size: int
    min_free: int
    dirty_size: int | None = None

    @classmethod
    def for_disk(cls, root: Path, cache_size: int | None, in_use: int = 0) -> CacheLimits:
        """Defaults for the disk holding `root`.

        `cache_size` None means half of what the cache could have now (free space plus what
        it already holds), at least 256 MiB and at most 100 GiB. The reserve is 2% of the
        disk, at most 1 GiB.
        """
        st = os.statvfs(root)
        disk = st.f_blocks * st.f_frsize
        free = st.f_bavail * st.f_frsize
        min_free = min(_GiB, disk // 50)
        if cache_size is None:
            cache_size = max(256 << 20, min(100 * _GiB, (free + in_use) // 2))
        return cls(cache_size=cache_size, min_free=min_free)


@dataclass(frozen=True, slots=True)
class CacheStats:
    """A snapshot of the accounting (for `statfs`, logs and tests)."""

    used: int
    dirty: int
    files: int
    limit: int


class BlockCache:
    """Cache files of one state directory.

    Attributes:
        root: the `cache/` directory.
        limits: the space policy.
    Invariants (in memory, rebuilt by `scan()` at start):
        `used == sum(alloc.values())`, `dirty_used == sum(alloc[i] for i in dirty)`;
        `lru` holds every inode with a cache file, least recently used first.
    """

    def __init__(
        self,
        root: Path,
        limits: CacheLimits,
        db: StateDb,
        *,
        io_limiter: trio.CapacityLimiter | None = None,
        fsync_limiter: trio.CapacityLimiter | None = None,
    ) -> None:
        self.root = root
        self.limits = limits
        self._db = db
        self._io = io_limiter or trio.CapacityLimiter(4)
        self._fsync = fsync_limiter or trio.CapacityLimiter(2)
        self._alloc: dict[int, int] = {}
        self._used = 0
        self._dirty: set[int] = set()
        self._dirty_used = 0
        self._pins: dict[int, int] = {}
        self._lru: OrderedDict[int, None] = OrderedDict()
        self._opens: dict[int, int] = {}  # ino -> open handles
        self._fds: dict[int, list[int]] = {}  # ino -> [fd, users]
        self._dir_unsynced = False
        root.mkdir(parents=True, exist_ok=True)

    # --- start-up ----------------------------------------------------------------------

    def scan(self) -> dict[int, int]:
        """Rebuild the accounting from the directory; return {ino: file size}.

        Files whose name is not an inode number (leftovers of an older layout, editors'
        junk) are deleted: nothing else writes here.
        """
        self._alloc.clear()
        self._lru.clear()
        self._used = 0
        found: list[tuple[float, int, int]] = []
        sizes: dict[int, int] = {}
        with os.scandir(self.root) as entries:
            for entry in entries:
                if not entry.name.isdigit() or not entry.is_file(follow_symlinks=False):
                    log.warning("removing stray entry %s from the cache", entry.path)
                    if entry.is_dir(follow_symlinks=False):
                        shutil.rmtree(entry.path)
                    else:
                        os.unlink(entry.path)
                    continue
                st = entry.stat(follow_symlinks=False)
                ino = int(entry.name)
                sizes[ino] = st.st_size
                found.append((st.st_atime, ino, st.st_blocks * 512))
        for _, ino, alloc in sorted(found):
            self._alloc[ino] = alloc
            self._used += alloc
            self._lru[ino] = None
        self._dirty_used = sum(self._alloc.get(i, 0) for i in self._dirty)
        return sizes

    # --- paths and descriptors -----------------------------------------------------------

    def path(self, ino: int) -> Path:
        return self.root / str(ino)

    def open(self, ino: int) -> None:
        """An open handle of `ino`: pin it; its descriptor is kept from first I/O to close.

        The cache file itself is created lazily, at the first write or truncation: a file
        that is only created and closed (`touch`, lock files) never costs a cache file.
        """
        self._opens[ino] = self._opens.get(ino, 0) + 1
        self._touch(ino)
        self.pin(ino)

    def close(self, ino: int) -> None:
        """Undo one `open`."""
        self.unpin(ino)
        left = self._opens[ino] - 1
        if left:
            self._opens[ino] = left
            return
        del self._opens[ino]
        if ino in self._fds:
            self._put_fd(ino)  # the reference held for the open handles

    def _put_fd(self, ino: int) -> None:
        slot = self._fds[ino]
        slot[1] -= 1
        if slot[1] == 0:
            del self._fds[ino]
            os.close(slot[0])

    @contextlib.contextmanager
    def _fd(self, ino: int) -> Iterator[int]:
        """A descriptor for one operation: the shared one, opened (and created) on demand."""
        slot = self._fds.get(ino)
        if slot is None:
            fd = os.open(self.path(ino), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            if ino not in self._alloc:
                self._dir_unsynced = True
                self._alloc[ino] = 0
            # While handles are open, keep the descriptor until the last one closes.
            slot = self._fds[ino] = [fd, 1 if ino in self._opens else 0]
        slot[1] += 1
        try:
            yield slot[0]
        finally:
            self._put_fd(ino)

    def is_open(self, ino: int) -> bool:
        return ino in self._fds or ino in self._opens

    # --- pins and dirtiness --------------------------------------------------------------

    def pin(self, ino: int) -> None:
        """Protect `ino`'s content from eviction (open file, fetch or upload in progress)."""
        self._pins[ino] = self._pins.get(ino, 0) + 1

    def is_pinned(self, ino: int) -> bool:
        """True while `ino` is open, being fetched or being uploaded (see `pin`)."""
        return ino in self._pins

    def unpin(self, ino: int) -> None:
        left = self._pins[ino] - 1
        if left:
            self._pins[ino] = left
        else:
            del self._pins[ino]

    def set_dirty(self, ino: int, dirty: bool) -> None:
        """Mirror `nodes.dirty` so that dirty bytes are counted and never evicted."""
        if dirty and ino not in self._dirty:
            self._dirty.add(ino)
            self._dirty_used += self._alloc.get(ino, 0)
        elif not dirty and ino in self._dirty:
            self._dirty.discard(ino)
            self._dirty_used -= self._alloc.get(ino, 0)

    # --- content -------------------------------------------------------------------------

    async def write(
        self, ino: int, offset: int, data: bytes | memoryview, *, dirty: bool, inline: bool = False
    ) -> None:
        """Write `data` at `offset` after admitting the space it may need.

        `inline` forces the write onto the calling (trio) thread whatever its size, for
        callers that must not let anything interleave before they record it.

        Raises:
            OSError(ENOSPC): the space policy refuses the write (nothing was written).
            OSError: the write itself failed (e.g. a real ENOSPC or EIO from the disk).
        """
        with self._fd(ino) as fd:
            self._admit(ino, fd, offset, len(data), dirty=dirty)
            if len(data) > INLINE_IO_MAX and not inline:
                await trio.to_thread.run_sync(_pwrite_all, fd, data, offset, limiter=self._io)
            else:
                _pwrite_all(fd, data, offset)
            self._account(ino, fd)
        self._touch(ino)

    async def read(self, ino: int, offset: int, size: int) -> bytes:
        """Up to `size` bytes at `offset` (short only at the cache file's end)."""
        with self._fd(ino) as fd:
            if size > INLINE_IO_MAX:
                data = await trio.to_thread.run_sync(os.pread, fd, size, offset, limiter=self._io)
            else:
                data = os.pread(fd, size, offset)
        self._touch(ino)
        return data

    def truncate(self, ino: int, size: int) -> None:
        """Set the cache file's size (growing makes a hole, shrinking frees blocks)."""
        with self._fd(ino) as fd:
            os.ftruncate(fd, size)
            self._account(ino, fd)

    async def fsync(self, ino: int) -> None:
        """Make the cache file (and the directory entry of a new one) durable."""
        with self._fd(ino) as fd:
            await trio.to_thread.run_sync(os.fsync, fd, limiter=self._fsync)
        if self._dir_unsynced:
            self._dir_unsynced = False
            await trio.to_thread.run_sync(_fsync_dir, self.root, limiter=self._fsync)

    def make_room(self, length: int) -> None:
        """Before bytes are fetched into the cache: evict clean content to keep the limit.

        Fetched content can always be evicted again, so this never refuses; a disk that is
        really full makes the fetcher's own write fail with ENOSPC.
        """
        if self._used + length > self.limits.cache_size:
            self.evict(self._used + length - self.limits.cache_size)

    def refresh(self, ino: int) -> None:
        """Re-read the allocation of `ino`'s cache file after someone else wrote it."""
        with self._fd(ino) as fd:
            self._account(ino, fd)
        self._touch(ino)

    def drop(self, ino: int) -> None:
        """Delete `ino`'s cache file and forget it (purge, or eviction)."""
        if self.is_open(ino):
            raise RuntimeError(f"cache file of inode {ino} is still open")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path(ino))
        self._used -= self._alloc.pop(ino, 0)
        self.set_dirty(ino, False)
        self._lru.pop(ino, None)

    # --- accounting and eviction ---------------------------------------------------------

    def stats(self) -> CacheStats:
        return CacheStats(
            used=self._used,
            dirty=self._dirty_used,
            files=len(self._alloc),
            limit=self.limits.cache_size,
        )

    def _touch(self, ino: int) -> None:
        self._lru[ino] = None
        self._lru.move_to_end(ino)

    def _account(self, ino: int, fd: int) -> None:
        alloc = os.fstat(fd).st_blocks * 512
        delta = alloc - self._alloc.get(ino, 0)
        self._alloc[ino] = alloc
        self._used += delta
        if ino in self._dirty:
            self._dirty_used += delta

    def _admit(self, ino: int, fd: int, offset: int, length: int, *, dirty: bool) -> None:
        growth = _growth(fd, offset, length)
        if growth == 0:
            return
        limits = self.limits
        if self._used + growth > limits.cache_size:
            self.evict(self._used + growth - limits.cache_size)
        if dirty and limits.dirty_size is not None:
            dirty_after = (
                self._dirty_used + growth + (0 if ino in self._dirty else self._alloc.get(ino, 0))
            )
            if dirty_after > limits.dirty_size:
                raise OSError(errno.ENOSPC, "unsent changes fill their budget (dirty_size)")
        shortfall = limits.min_free + growth - _free_bytes(self.root)
        if shortfall > 0 and self.evict(shortfall) < shortfall:
            raise OSError(errno.ENOSPC, "the cache's disk is full")

    def evict(self, need: int) -> int:
        """Delete clean, unpinned cache files, oldest use first, until `need` bytes are freed.

        Returns the bytes freed (less than `need` if nothing else may be evicted).
        """
        freed = 0
        window: list[int] = []
        for ino in list(self._lru):
            if freed >= need:
                break
            alloc = self._alloc.get(ino, 0)
            if alloc == 0 or ino in self._pins or ino in self._dirty or self.is_open(ino):
                continue
            window.append(ino)
            if len(window) == _EVICT_WINDOW:
                freed += self._evict_unpinned(window, need - freed)
                window = []
        if window and freed < need:
            freed += self._evict_unpinned(window, need - freed)
        if freed:
            log.debug("evicted %d bytes (asked for %d)", freed, need)
        return freed

    def _evict_unpinned(self, candidates: list[int], need: int) -> int:
        """Evict those of `candidates` (LRU order) that no user pin covers, up to `need`."""
        kept = pins.covered(self._db.conn, candidates)
        freed = 0
        for ino in candidates:
            if freed >= need:
                break
            if ino in kept:
                continue
            alloc = self._alloc.get(ino, 0)
            if self._forget_content(ino):
                if not self._db.in_transaction:
                    # "Nothing cached" should outlive a crash that comes before the file goes.
                    # (Inside a transaction it cannot: a crash then leaves a clean file with
                    # no cache file, which `fsck.repair` refetches from its revision.)
                    self._db.commit_group()
                self.drop(ino)
                freed += alloc
        return freed

    def _forget_content(self, ino: int) -> bool:
        """Mark `ino` as having nothing cached, if its content can be fetched again."""
        with self._db.transaction() as conn:
            node = nodes.get(conn, ino)
            if node is None:
                return True  # an orphan file: nothing refers to it
            if node.dirty or (node.remote_head_revision is None and node.size > 0):
                return False  # the only copy of this content is here
            nodes.set_fields(conn, ino, {"complete": 0})
            extents.clear(conn, ino, EXTENT_PRESENT)
        return True


def _growth(fd: int, offset: int, length: int) -> int:
    """Upper bound of the bytes a write of [offset, offset+length) may newly allocate."""
    if length == 0:
        return 0
    try:
        hole = os.lseek(fd, offset, os.SEEK_HOLE)
    except OSError as exc:
        if exc.errno != errno.ENXIO:  # ENXIO: offset at or past the end of the file
            raise
        hole = offset
    end = offset + length
    if hole >= end:
        return 0
    return end - hole + _PAGE


def _free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def _pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
