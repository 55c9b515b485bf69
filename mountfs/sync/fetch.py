"""Downloading the chunks that hold a byte range of a file into its cache file.

A read of bytes that are not in the cache asks `Fetcher.ensure_present`. It looks up the
chunks covering the range in the file's chunk map, gets presigned GET URLs for them in one
call, downloads them concurrently, verifies and decrypts them on worker threads (a bad
chunk is `ObjectMismatch` or `CorruptChunk`, logged as an error and never written), and
writes them into the cache file.

Writing never clobbers local writes: the bytes of a chunk are written only into the parts of
its range that are not yet *present* of a file that is not *complete* (a complete file's
cache file is its content, and its `present` extents are gone), and the check, the write
and the `present` update happen with no `await` in between, so no FUSE write can slip
between the check and the write (all FUSE handlers run on the trio thread). Concurrent
misses on the same chunk share one download (single flight).
"""

from __future__ import annotations

import functools
import logging
import os
import sqlite3
from typing import Protocol

import trio

from mountfs.cache.block_cache import BlockCache
from mountfs.chunks.pipeline import ChunkPipeline
from mountfs.errors import CorruptChunk
from mountfs.state import extents
from mountfs.state.db import StateDb
from mountfs.state.schema import EXTENT_PRESENT
from mountfs.sync import manifests
from mountfs.sync.tasks import run_all
from mountfs.sync.transfers import Transfers
from mountfs.transport.api import ApiClient, Presigned
from mountfs.transport.blocks import BlockClient, ObjectMismatch
from mountfs.transport.retry import RetryPolicy, with_retry
from mountfs.types import ChunkKey, ChunkRef, InodeNo

log = logging.getLogger(__name__)

READAHEAD = 8 << 20
"""Bytes fetched past a sequential read (see `Fetcher.ensure_present`)."""
FETCH_RETRY = RetryPolicy(attempts=4, base=0.2, cap=2.0)
"""Reads wait on the network: a few quick retries, then the caller gets an error (EIO)."""


class LocalChunks(Protocol):
    """Somewhere a chunk may already be on this machine (`mountfs.sync.carry.Carrier`)."""

    async def supply(self, ino: InodeNo, ref: ChunkRef) -> bool:
        """Put `ref`'s bytes into `ino`'s cache file from local data; False if it has none."""
        ...


class Fetcher:
    """Fills cache files from the block store on demand.

    A chunk that a pending carry will copy from the file's previous inode (its bytes are
    cached here already) is taken from there instead of being downloaded: a read that
    comes right after a remote edit, before the carry got to that chunk, would otherwise
    download bytes this device has (`use_local`).

    Attributes:
        downloaded_bytes: ciphertext bytes fetched since start (for status and benchmarks).
    """

    def __init__(
        self,
        db: StateDb,
        cache: BlockCache,
        api: ApiClient,
        blocks: BlockClient,
        pipeline: ChunkPipeline,
        parallel: int = 8,
        transfers: Transfers | None = None,
    ) -> None:
        self._db = db
        self._cache = cache
        self._api = api
        self._blocks = blocks
        self._pipeline = pipeline
        self._limiter = trio.CapacityLimiter(parallel)
        self._in_flight: dict[tuple[int, int], trio.Event] = {}
        self.downloaded_bytes = 0
        self._local: LocalChunks | None = None
        self._next_read: dict[int, int] = {}
        self._down = transfers.down if transfers is not None else None
        """The download bandwidth limit (`--bwlimit`); reads are never paused (see
        `mountfs.sync.transfers`)."""

    def use_local(self, local: LocalChunks) -> None:
        """Ask `local` for each chunk before downloading it (the `Carrier` registers itself)."""
        self._local = local

    async def ensure_present(self, ino: InodeNo, start: int, end: int) -> None:
        """Return once every byte of [start, end) that the head revision has is cached.

        Raises:
            Offline / ApiError: the backend or the store could not deliver (after retries).
            CorruptChunk / ObjectMismatch: a chunk failed verification.
        Cancellation: chunks already written stay written; nothing is half-written.

        A read that starts where the previous one of the file ended (sequential: `cp`, a
        media player, a checksum) also fetches the next `READAHEAD` bytes, concurrently:
        otherwise each kernel read of 128 KiB waits for one chunk's round trip in turn.
        """
        sequential = self._next_read.get(ino) == start
        self._next_read[ino] = end
        if sequential:
            end += READAHEAD
        while True:
            wanted, waiting = self._plan(ino, start, end)
            if not wanted and not waiting:
                return
            for event in waiting:
                await event.wait()
            if wanted:
                await self._download(ino, wanted)

    def _plan(
        self, ino: InodeNo, start: int, end: int
    ) -> tuple[list[tuple[ChunkRef, ChunkKey]], list[trio.Event]]:
        """Chunks to download now, and events of downloads already under way."""
        wanted: list[tuple[ChunkRef, ChunkKey]] = []
        waiting: list[trio.Event] = []
        conn = self._db.conn
        if _complete(conn, ino):
            return wanted, waiting  # every byte is here (a concurrent read finished the file)
        for ref, key in manifests.covering(conn, ino, start, end):
            if not extents.gaps(conn, ino, EXTENT_PRESENT, ref.offset, ref.end):
                continue
            event = self._in_flight.get((ino, ref.offset))
            if event is not None:
                waiting.append(event)
            else:
                wanted.append((ref, key))
        return wanted, waiting

    async def _download(self, ino: InodeNo, wanted: list[tuple[ChunkRef, ChunkKey]]) -> None:
        events = {ref.offset: trio.Event() for ref, _ in wanted}
        for offset, event in events.items():
            self._in_flight[(ino, offset)] = event
        self._cache.pin(ino)  # nothing fetched may be evicted before it is recorded
        try:
            if self._local is not None:
                wanted = [(r, k) for r, k in wanted if not await self._local.supply(ino, r)]
                if not wanted:
                    return
            if log.isEnabledFor(logging.DEBUG):
                log.debug("inode %d: downloading %s", ino, [(r.offset, r.size) for r, _ in wanted])
            objects = sorted({ref.object for ref, _ in wanted})
            urls = await with_retry(lambda: self._api.read_urls(objects), FETCH_RETRY, "read-urls")
            by_object = {u.object: u for u in urls}
            await run_all(
                functools.partial(self._fetch_one, ino, ref, key, by_object[ref.object])
                for ref, key in wanted
            )
        finally:
            self._cache.unpin(ino)
            for offset, event in events.items():
                del self._in_flight[(ino, offset)]
                event.set()

    async def _fetch_one(self, ino: InodeNo, ref: ChunkRef, key: ChunkKey, url: Presigned) -> None:
        try:
            async with self._limiter:
                ciphertext = await with_retry(
                    lambda: self._blocks.get(url, limit=self._down), FETCH_RETRY, "chunk GET"
                )
            self.downloaded_bytes += len(ciphertext)
            plaintext = await self._pipeline.open(ciphertext, key, ref)
        except (ObjectMismatch, CorruptChunk) as exc:
            # Damage in the store (or on the way): never hand out these bytes, say so loudly.
            log.error("inode %d: chunk at %d failed verification: %s", ino, ref.offset, exc)
            raise
        self._store(ino, ref, plaintext)

    def _store(self, ino: InodeNo, ref: ChunkRef, plaintext: bytes) -> None:
        """Write the chunk's bytes into the parts of its range not present yet (no await)."""
        with self._db.transaction() as conn:
            row = conn.execute("SELECT size, complete FROM nodes WHERE ino = ?", (ino,)).fetchone()
            if row is None or row[1]:
                # Gone while we downloaded, or complete: then the cache file is the content
                # (it has no `present` extents any more) and may hold newer local writes.
                return
            end = min(ref.end, int(row[0]))  # a truncation may have cut the chunk short
            holes = extents.gaps(conn, ino, EXTENT_PRESENT, ref.offset, end)
            if not holes:
                return
            self._cache.make_room(sum(e - s for s, e in holes))
            fd = os.open(self._cache.path(ino), os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                view = memoryview(plaintext)
                for hole_start, hole_end in holes:
                    piece = view[hole_start - ref.offset : hole_end - ref.offset]
                    os.pwrite(fd, piece, hole_start)
            finally:
                os.close(fd)
            for hole_start, hole_end in holes:
                extents.add(conn, ino, EXTENT_PRESENT, hole_start, hole_end)
        self._cache.refresh(ino)

    def store(self, ino: InodeNo, ref: ChunkRef, plaintext: bytes) -> None:
        """`_store` for a chunk's bytes that came from the local cache instead of the store
        (`mountfs.sync.carry`), under the same never-overwrite rule."""
        self._store(ino, ref, plaintext)

    async def chunk_plaintext(self, ref: ChunkRef, key: ChunkKey) -> bytes:
        """One chunk's verified plaintext, for content that has no inode of its own (an
        old version read under `.versions`, `mountfs.vfs.versions`): the same URLs,
        limits, retries and verification as a read of a file; nothing is cached here.

        Raises:
            Offline / ApiError, ObjectMismatch / CorruptChunk (as `ensure_present`).
        """
        (url,) = await with_retry(
            lambda: self._api.read_urls([ref.object]), FETCH_RETRY, "read-urls"
        )
        try:
            async with self._limiter:
                ciphertext = await with_retry(
                    lambda: self._blocks.get(url, limit=self._down), FETCH_RETRY, "chunk GET"
                )
            self.downloaded_bytes += len(ciphertext)
            return await self._pipeline.open(ciphertext, key, ref)
        except (ObjectMismatch, CorruptChunk) as exc:
            log.error("chunk %s failed verification: %s", ref.object, exc)
            raise


def _complete(conn: sqlite3.Connection, ino: int) -> bool:
    """True if the file's cache file holds all of its content (or the file is gone)."""
    row = conn.execute("SELECT complete FROM nodes WHERE ino = ?", (ino,)).fetchone()
    return row is None or bool(row[0])
