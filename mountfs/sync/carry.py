"""Carrying cached bytes over to a file's new remote revision, so they are not downloaded again.

A remote edit of a file this device has cached usually shares most chunks with the old
revision (content-defined chunking: a 4 KiB edit of a 100 MiB file changes one or two).
The applier gives the new revision a new inode number (`nodes.renumber`), whose cache file
starts empty; the old inode's cache file still holds every byte it had. For each chunk of
the new manifest whose hash is a chunk of the old one that is cached, the `Carrier` copies
the bytes from the old cache file to the chunk's (possibly shifted) offset in the new one.

Rules it keeps:
- The old inode is *held* (`Inodes.hold`) from `submit` until the copy is done, so it is
  not purged under the copy; `release` purges it once nobody else uses it either.
- Bytes are read in a worker thread (the old cache file no longer changes: its inode has no
  name, and writes only reach it through handles opened for writing, which defer remote
  content instead), and written with `Fetcher.store`: only into gaps of the new file's
  `present` extents, with the check, the write and the record in one transaction, so a
  local write or a download that got there first is never overwritten.
- The bytes were verified when they were downloaded, and the manifests name them by the
  SHA-256 of their plaintext: equal hashes mean equal bytes.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass

import trio

from mountfs.cache.block_cache import BlockCache
from mountfs.state import extents, nodes
from mountfs.state.db import StateDb
from mountfs.state.schema import EXTENT_PRESENT
from mountfs.sync import manifests
from mountfs.sync.fetch import Fetcher
from mountfs.types import ChunkRef, InodeNo

__all__ = ["Carrier", "Carry"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Carry:
    """Copy cached chunks from the retired inode `src` to the file's new inode `dst`.

    Attributes:
        pieces: (offset in `src`, the chunk as the new manifest places it in `dst`).
    """

    src: InodeNo
    dst: InodeNo
    pieces: tuple[tuple[int, ChunkRef], ...]

    @property
    def size(self) -> int:
        return sum(ref.size for _, ref in self.pieces)


class Carrier:
    """One task that performs carries in order; see the module docstring.

    Args:
        hold / release: keep the source inode from being purged, and let it go
            (`Inodes.hold` / `Inodes.release`).
        on_done: called with the destination inode when its carry is over (the pinner
            then fetches what is still missing).

    Attributes:
        carried_bytes: bytes copied instead of downloaded since start.
    """

    def __init__(
        self,
        db: StateDb,
        cache: BlockCache,
        fetcher: Fetcher,
        hold: Callable[[InodeNo], object],
        release: Callable[[InodeNo], object],
        on_done: Callable[[InodeNo], object] = lambda ino: None,
    ) -> None:
        self._db = db
        self._cache = cache
        self._fetcher = fetcher
        self._hold = hold
        self._release = release
        self._on_done = on_done
        self._send, self._receive = trio.open_memory_channel[Carry](math.inf)
        self._limiter = trio.CapacityLimiter(1)
        self._submitted = 0
        self._finished = 0
        self._progress = trio.Event()
        self._pending: dict[InodeNo, list[tuple[InodeNo, dict[int, tuple[int, ChunkRef]]]]] = {}
        """dst → (src, chunk offset in dst → (offset in src, ref)) of each unfinished carry."""
        self.carried_bytes = 0
        fetcher.use_local(self)

    def submit(self, carry: Carry) -> None:
        """Queue a carry (trio thread; never blocks). Holds the source at once.

        Chained carries: when edits arrive faster than carries finish, `src` is itself still
        being filled by an earlier carry, and the applier planned this one from the chunks
        `src` had *so far*. The chunks that earlier carry will bring into `src` are added
        here (carries run in order, so they are in `src` when this one runs); without this
        every quick succession of edits would leave fewer chunks cached, to be downloaded.
        """
        self._hold(carry.src)
        pieces = {ref.offset: (src_offset, ref) for src_offset, ref in carry.pieces}
        incoming = {
            ref.hash: dst_offset
            for _, earlier in self._pending.get(carry.src, ())
            for dst_offset, (_, ref) in earlier.items()
        }
        if incoming:
            have = {ref.hash for _, ref in carry.pieces}
            chained = tuple(
                (incoming[ref.hash], ref)
                for ref, _ in manifests.load(self._db.conn, carry.dst)
                if ref.hash in incoming and ref.hash not in have
            )
            for piece in chained:
                pieces[piece[1].offset] = piece
            carry = Carry(carry.src, carry.dst, carry.pieces + chained)
        self._pending.setdefault(carry.dst, []).append((carry.src, pieces))
        self._send.send_nowait(carry)
        self._submitted += 1

    async def supply(self, ino: InodeNo, ref: ChunkRef) -> bool:
        """Copy the chunk `ref` of `ino` now if an unfinished carry into `ino` has it.

        The fetcher asks before it downloads: a read right after a remote edit would
        otherwise download chunks the carry is about to copy (the carry of a 100 MiB file
        takes a few hundred ms). The source is held until its carry is over, and the file
        is opened here before the first await, so it cannot be purged under the read. A
        chained piece not yet in its source is first supplied to the source the same way.
        """
        for src, pieces in list(self._pending.get(ino, ())):
            found = pieces.get(ref.offset)
            if found is None or found[1] != ref:
                continue
            src_offset = found[0]
            if not self._cached(src, src_offset, ref.size):
                earlier = self._incoming(src, src_offset, ref)
                if earlier is None or not await self.supply(src, earlier):
                    continue
            try:
                fd = os.open(self._cache.path(src), os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                # Not behind the carries' limiter: a reader is waiting for this chunk.
                copied = await self._copy_piece(fd, src, src_offset, ino, ref, limiter=None)
            finally:
                os.close(fd)
            if copied:
                self.carried_bytes += ref.size
                return True
        return False

    def _incoming(self, ino: InodeNo, offset: int, like: ChunkRef) -> ChunkRef | None:
        """The ref at `offset` of `ino` that an unfinished carry into `ino` brings, if it
        holds the same bytes as `like`."""
        for _, pieces in self._pending.get(ino, ()):
            found = pieces.get(offset)
            if found is not None and found[1].hash == like.hash and found[1].size == like.size:
                return found[1]
        return None

    def _cached(self, ino: InodeNo, offset: int, size: int) -> bool:
        """True if bytes [offset, offset + size) of `ino`'s cache file are its content (a
        hole of a sparse cache file reads as zeros, which must never be carried)."""
        conn = self._db.conn
        row = conn.execute("SELECT complete FROM nodes WHERE ino = ?", (ino,)).fetchone()
        if row is None:
            return False
        return bool(row[0]) or not extents.gaps(conn, ino, EXTENT_PRESENT, offset, offset + size)

    async def drained(self) -> None:
        """Return once every carry submitted before this call is over."""
        target = self._submitted
        while self._finished < target:
            await self._progress.wait()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Perform carries until cancelled (start it with `nursery.start`)."""
        task_status.started()
        async for carry in self._receive:
            try:
                await self._copy(carry)
            except Exception:
                log.exception("carrying cached bytes from inode %d failed", carry.src)
            finally:
                self._finish(carry)
                self._release(carry.src)
                self._finished += 1
                self._progress.set()
                self._progress = trio.Event()
            self._on_done(carry.dst)

    def _finish(self, carry: Carry) -> None:
        """Forget the carry's pieces: from now on its source may be purged."""
        pending = self._pending.get(carry.dst, [])
        pending[:] = [p for p in pending if p[0] != carry.src]
        if not pending:
            self._pending.pop(carry.dst, None)

    async def _copy_piece(
        self,
        fd: int,
        src: InodeNo,
        src_offset: int,
        dst: InodeNo,
        ref: ChunkRef,
        *,
        limiter: trio.CapacityLimiter | None,
    ) -> bool:
        """Copy chunk `ref` of `dst` from `src`'s cache file (open as `fd`) at `src_offset`.

        The checks come after the read, with no await before the store: the bytes must
        still be `src`'s content (not evicted meanwhile; a hole reads as zeros) and `dst`
        must still map `ref` (no newer content in place). False if either fails."""
        data = await trio.to_thread.run_sync(os.pread, fd, ref.size, src_offset, limiter=limiter)
        if (
            len(data) != ref.size
            or not self._cached(src, src_offset, ref.size)
            or not _still_maps(self._db, dst, ref)
        ):
            return False
        self._fetcher.store(dst, ref, data)  # no await since the check
        return True

    async def _copy(self, carry: Carry) -> None:
        try:
            fd = os.open(self._cache.path(carry.src), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return  # evicted or never cached after all: the new revision is fetched
        copied = 0
        self._cache.pin(carry.dst)
        try:
            for src_offset, ref in carry.pieces:
                if not self._cached(carry.src, src_offset, ref.size):
                    continue  # a chained piece its earlier carry could not bring
                if await self._copy_piece(
                    fd, carry.src, src_offset, carry.dst, ref, limiter=self._limiter
                ):
                    copied += ref.size
        finally:
            os.close(fd)
            self._cache.unpin(carry.dst)
        with self._db.transaction() as conn:
            nodes.complete_if_whole(conn, carry.dst)
        self.carried_bytes += copied
        log.debug("carried %d cached bytes from inode %d to %d", copied, carry.src, carry.dst)


def _still_maps(db: StateDb, ino: InodeNo, ref: ChunkRef) -> bool:
    """True if `ino`'s chunk map still has `ref` where the carry wants to put it (another
    remote revision may have replaced the content in place since the carry was planned)."""
    row = db.conn.execute(
        "SELECT 1 FROM chunk_map WHERE ino = ? AND offset = ? AND size = ? AND hash = ?",
        (ino, ref.offset, ref.size, ref.hash),
    ).fetchone()
    return row is not None
