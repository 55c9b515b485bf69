"""Committing the local content of one file as a new revision.

Only what changed moves. The file's dirty extents and the chunk map of its head revision give
`cdc.rechunk` an edit to cut around, so a 4 KiB write in a 1 GiB file reads a few MiB of the
cache file and hashes one or two chunks; every other chunk is reused from the chunk map with
its key. Fresh chunks are hashed, the backend says which of them this account can already
read (`prepare`), the rest are sealed (zstd + AES-GCM) and uploaded by presigned PUT, and
only then is the revision committed (invariant 6).

Racing writes: the node's `content_gen` is read before the content. If it moved by commit
time, the bytes read may mix two states, so the commit is skipped and tried again later;
after `MAX_TORN_SKIPS` skips in a row (a file written without pause) it is committed anyway,
since the node stays dirty and the next round commits the newer bytes. `mark_clean` clears
`dirty` only if `content_gen` did not move, so no write is ever lost. mtime travels with the
commit; one that changed meanwhile, or an older one still queued, is overridden by queueing
the current one (`_record`).

Missing bytes: a file whose content is only partly cached (`complete = 0`) may need bytes the
cut reads; `_CacheReader` raises `NeedBytes` for them, the fetcher brings them in, and the
cut runs again.
"""

from __future__ import annotations

import functools
import io
import logging
import os
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import BinaryIO, cast

import trio

from mountfs.cache.block_cache import BlockCache
from mountfs.chunks import cdc
from mountfs.chunks.pipeline import ChunkPipeline, SealedChunk
from mountfs.ids import uuid7
from mountfs.state import extents, nodes, outbox
from mountfs.state.db import StateDb
from mountfs.state.schema import EXTENT_DIRTY, EXTENT_PRESENT
from mountfs.sync import manifests
from mountfs.sync.fetch import Fetcher
from mountfs.sync.tasks import run_all
from mountfs.transport.api import ApiClient, ApiError, PreparedChunk
from mountfs.transport.blocks import BlockClient
from mountfs.transport.retry import with_retry
from mountfs.types import ChunkHash, ChunkKey, ChunkRef, InodeNo, Manifest, ObjectName

log = logging.getLogger(__name__)

BATCH_CHUNKS = 16
"""Fresh chunks read, hashed and prepared per round trip: bounds memory to ~16 average chunks."""

PUTS_IN_FLIGHT = 4
MAX_TORN_SKIPS = 3
MAX_NEED_ROUNDS = 64


class NeedBytes(Exception):
    """The cut wants bytes of [start, end) that are not in the cache yet."""

    def __init__(self, start: int, end: int) -> None:
        super().__init__(f"bytes [{start}, {end}) not cached")
        self.start = start
        self.end = end


class CommitRefused(Exception):
    """The backend refused the revision for good (quota, size limit, …): the file stays dirty."""

    def __init__(self, error: ApiError) -> None:
        super().__init__(str(error))
        self.error = error


class CommitConflict(Exception):
    """Another device committed first: the file's base revision is no longer the head."""

    def __init__(self, current: dict[str, object]) -> None:
        super().__init__("the file changed on another device")
        self.current = current


@dataclass(frozen=True, slots=True)
class _Snapshot:
    ino: InodeNo
    node_id: str
    gen: int
    size: int
    mtime_ns: int
    base_revision: str | None
    old: list[tuple[ChunkRef, ChunkKey]]
    dirty: list[tuple[int, int]]
    present: list[tuple[int, int]] | None  # None: the whole file is cached


@dataclass(slots=True)
class UploadStats:
    """Counters for status and benchmarks."""

    chunks_uploaded: int = 0
    bytes_uploaded: int = 0
    chunks_reused: int = 0
    revisions: int = 0
    torn_skips: dict[int, int] = field(default_factory=dict)


class _CacheReader(io.RawIOBase):
    """A seekable read-only view of a cache file that refuses bytes which are not present."""

    def __init__(self, fd: int, size: int, present: list[tuple[int, int]] | None) -> None:
        super().__init__()
        self._fd = fd
        self._size = size
        self._present = present
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = base + offset
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        end = min(self._size, self._pos + len(view))
        if end <= self._pos:
            return 0
        self._check(self._pos, end)
        data = read_exact(self._fd, self._pos, end - self._pos)
        view[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def _check(self, start: int, end: int) -> None:
        if self._present is None:
            return
        cursor = start
        for s, e in self._present:
            if e <= cursor:
                continue
            if s > cursor:
                break
            cursor = e
            if cursor >= end:
                return
        if cursor < end:
            raise NeedBytes(cursor, end)


def read_exact(fd: int, offset: int, length: int) -> bytes:
    """`length` bytes at `offset`; a sparse or short cache file reads as zeros past its end."""
    data = os.pread(fd, length, offset)
    return data if len(data) == length else data + bytes(length - len(data))


class Uploader:
    """Turns dirty files into committed revisions, one file at a time."""

    def __init__(
        self,
        db: StateDb,
        cache: BlockCache,
        api: ApiClient,
        blocks: BlockClient,
        pipeline: ChunkPipeline,
        fetcher: Fetcher,
    ) -> None:
        self._db = db
        self._cache = cache
        self._api = api
        self._blocks = blocks
        self._pipeline = pipeline
        self._fetcher = fetcher
        self._put_limiter = trio.CapacityLimiter(PUTS_IN_FLIGHT)
        self.stats = UploadStats()

    @property
    def fetched_bytes(self) -> int:
        """Bytes the fetcher downloaded (reads and uploads share it)."""
        return self._fetcher.downloaded_bytes

    def _snapshot(self, ino: InodeNo) -> _Snapshot | None:
        conn = self._db.conn
        node = nodes.get(conn, ino)
        if node is None or not node.dirty or node.kind != "file" or node.remote_version is None:
            return None
        present = None if node.complete else extents.intervals(conn, ino, EXTENT_PRESENT)
        return _Snapshot(
            ino=ino,
            node_id=node.node_id,
            gen=node.content_gen,
            size=node.size,
            mtime_ns=node.mtime_ns,
            base_revision=node.remote_head_revision,
            old=manifests.load(conn, ino),
            dirty=extents.intervals(conn, ino, EXTENT_DIRTY),
            present=present,
        )

    async def commit(self, ino: InodeNo) -> bool:
        """Commit the file's current content; True if a revision was recorded.

        Raises:
            Offline / ApiError (temporary): try again later; nothing was recorded.
            CommitConflict: another device's revision is the head now.
            CommitRefused: the backend will not take this content (quota, size limit).
        """
        snap = self._snapshot(ino)
        if snap is None:
            return False
        self._cache.pin(ino)  # the bytes being uploaded must not be evicted meanwhile
        fd = os.open(self._cache.path(ino), os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            spans, fresh = await self._plan(snap, fd)
            refs, keys = await self._upload_fresh(snap, fd, spans, fresh)
        finally:
            os.close(fd)
            self._cache.unpin(ino)
        if self._db.conn.execute(
            "SELECT content_gen FROM nodes WHERE ino = ?", (ino,)
        ).fetchone() != (snap.gen,):
            skips = self.stats.torn_skips.get(ino, 0) + 1
            self.stats.torn_skips[ino] = skips
            if skips <= MAX_TORN_SKIPS:
                log.debug("ino %d changed during upload; committing later", ino)
                return False
        self.stats.torn_skips.pop(ino, None)
        manifest = Manifest(snap.size, tuple(refs))
        await self._send_commit(snap, manifest, keys)
        return True

    async def _plan(self, snap: _Snapshot, fd: int) -> tuple[list[cdc.Span], set[int]]:
        """The spans of the new content and which of them are fresh (cut anew)."""
        for _ in range(MAX_NEED_ROUNDS):
            try:
                return await trio.to_thread.run_sync(
                    self._cut, snap, fd, limiter=self._pipeline.limiter
                )
            except NeedBytes as need:
                await self._fetcher.ensure_present(snap.ino, need.start, need.end)
        raise RuntimeError(f"ino {snap.ino}: cache kept missing bytes while cutting")

    @staticmethod
    def _cut(snap: _Snapshot, fd: int) -> tuple[list[cdc.Span], set[int]]:
        reader = _CacheReader(fd, snap.size, snap.present)
        old_spans = [cdc.Span(ref.offset, ref.size) for ref, _ in snap.old]
        old_size = sum(span.length for span in old_spans)
        if not old_spans or old_size == 0:
            spans = [
                cdc.Span(c.offset, c.length)
                for c in cdc.DEFAULT_PARAMS.fastcdc().cut_stream(reader)
            ]
            return spans, set(range(len(spans)))
        start = min((s for s, _ in snap.dirty), default=old_size)
        end = max((e for _, e in snap.dirty), default=start)
        edit = cdc.Edit.in_place(start, end, old_size, snap.size)
        result = cdc.rechunk(old_spans, cast("BinaryIO", reader), edit)
        return list(result.spans), set(result.fresh)

    async def _upload_fresh(
        self, snap: _Snapshot, fd: int, spans: Sequence[cdc.Span], fresh: set[int]
    ) -> tuple[list[ChunkRef], dict[ChunkHash, ChunkKey]]:
        old_by_offset = {ref.offset: (ref, key) for ref, key in snap.old}
        keys: dict[ChunkHash, ChunkKey] = {}
        refs: list[ChunkRef | None] = [None] * len(spans)
        for index, span in enumerate(spans):
            if index not in fresh:
                # In-place edits never shift the tail, so an old chunk keeps its offset.
                ref, key = old_by_offset[span.offset]
                refs[index] = ref
                keys[ref.hash] = key
                self.stats.chunks_reused += 1
        order = sorted(fresh)
        for batch_start in range(0, len(order), BATCH_CHUNKS):
            batch = order[batch_start : batch_start + BATCH_CHUNKS]
            for index, ref, key in await self._upload_batch(
                snap, fd, [(i, spans[i]) for i in batch]
            ):
                refs[index] = ref
                keys[ref.hash] = key
        return [ref for ref in refs if ref is not None], keys

    async def _upload_batch(
        self, snap: _Snapshot, fd: int, batch: list[tuple[int, cdc.Span]]
    ) -> list[tuple[int, ChunkRef, ChunkKey]]:
        datas: list[bytes] = []
        for _, span in batch:
            await self._fetcher.ensure_present(snap.ino, span.offset, span.end)
            datas.append(await trio.to_thread.run_sync(read_exact, fd, span.offset, span.length))
        hashes = [await self._pipeline.hash(data) for data in datas]
        prepared = await with_retry(
            lambda: self._api.prepare_chunks(sorted(set(hashes))), what="prepare"
        )
        by_hash = {p.hash: p for p in prepared}
        sealed: dict[ChunkHash, SealedChunk] = {}
        for data, digest in zip(datas, hashes, strict=True):
            answer = by_hash[digest]
            if not _can_skip(answer) and digest not in sealed:
                sealed[digest] = await self._pipeline.seal(data, answer.key, expected_hash=digest)
        await self._put_all(list(sealed.values()))
        result = []
        for (index, span), digest in zip(batch, hashes, strict=True):
            ref = _ref_for(span, digest, by_hash[digest], sealed.get(digest))
            result.append((index, ref, ChunkKey(by_hash[digest].key)))
        return result

    async def _put_all(self, chunks: list[SealedChunk]) -> None:
        if not chunks:
            return
        wanted = [(c.object, c.stored_size) for c in chunks]
        urls = await with_retry(lambda: self._api.upload_urls(wanted), what="upload-urls")
        by_object = {u.object: u for u in urls}

        async def put(chunk: SealedChunk) -> None:
            async with self._put_limiter:
                url = by_object[chunk.object]
                await with_retry(lambda: self._blocks.put(url, chunk.ciphertext), what="chunk PUT")
            self.stats.chunks_uploaded += 1
            self.stats.bytes_uploaded += chunk.stored_size

        await run_all(functools.partial(put, chunk) for chunk in chunks)

    async def _send_commit(
        self, snap: _Snapshot, manifest: Manifest, keys: dict[ChunkHash, ChunkKey]
    ) -> None:
        revision_id = uuid7()
        try:
            answer = await with_retry(
                lambda: self._api.commit(
                    snap.node_id, revision_id, snap.base_revision, manifest.to_wire(), snap.mtime_ns
                ),
                what="commit",
            )
        except ApiError as exc:
            if exc.code == "conflict":
                current = exc.body.get("current") or {}
                if await self._is_own_head(current, manifest):
                    self._record(
                        snap, manifest, keys, str(current["head_revision"]), int(current["version"])
                    )
                    return
                raise CommitConflict(current) from exc
            if exc.status < 500:
                raise CommitRefused(exc) from exc
            raise
        node = answer["node"]
        self._record(snap, manifest, keys, str(node["head_revision"]), int(node["version"]))

    async def _is_own_head(self, current: dict[str, object], manifest: Manifest) -> bool:
        """True if the head already has exactly this content (our own earlier commit replayed)."""
        head = current.get("head_revision")
        if not isinstance(head, str):
            return manifest.size == 0 and current.get("size") == 0
        revision = await self._api.revision(head)
        theirs = Manifest.from_wire(revision)
        return [(r.hash, r.size) for r in theirs.chunks] == [
            (r.hash, r.size) for r in manifest.chunks
        ]

    def _record(
        self,
        snap: _Snapshot,
        manifest: Manifest,
        keys: dict[ChunkHash, ChunkKey],
        head_revision: str,
        version: int,
    ) -> None:
        with self._db.transaction() as conn:
            node = nodes.get(conn, snap.ino)
            if node is None:
                return
            manifests.replace(conn, snap.ino, manifest, keys)
            conn.execute("UPDATE nodes SET remote_version = ? WHERE ino = ?", (version, snap.ino))
            clean = nodes.mark_clean(conn, snap.ino, snap.gen, head_revision, manifest.size)
            if not clean:
                # Changed since the snapshot, so it differs from what was committed. A
                # truncation to empty meanwhile saw no revision and marked the file clean:
                # it has a revision now, so it must be committed again.
                conn.execute("UPDATE nodes SET dirty = 1 WHERE ino = ?", (snap.ino,))
            elif node.linked and (node.mtime_ns != snap.mtime_ns or _queued_mtime(conn, node)):
                # The commit carried the snapshot's mtime. A newer one (the kernel set it
                # while the file was dirty, so the tree did not queue it) or an older one
                # still queued (set before the file was last written) would be lost or win:
                # queue the current one, which merges into the node's latest queued op.
                outbox.append_update(conn, node.node_id, {"mtime_ns": node.mtime_ns})
        self._cache.set_dirty(snap.ino, not clean)
        self.stats.revisions += 1


def _queued_mtime(conn: sqlite3.Connection, node: nodes.Node) -> bool:
    """True if an op still queued for the node would set its mtime."""
    row = conn.execute(
        "SELECT 1 FROM outbox WHERE node_id = ? AND json_extract(body, '$.mtime_ns') IS NOT NULL",
        (node.node_id,),
    ).fetchone()
    return row is not None


def _can_skip(answer: PreparedChunk) -> bool:
    """True if the chunk need not be uploaded: readable already, and named with its size.

    A `readable` answer that lacks the object or its `stored_size` cannot make a `ChunkRef`;
    the chunk is then sealed and uploaded like a new one (the store dedups the identical
    object), which costs bandwidth but never correctness.
    """
    return answer.readable and answer.object is not None and answer.stored_size is not None


def _ref_for(
    span: cdc.Span, digest: ChunkHash, answer: PreparedChunk, sealed: SealedChunk | None
) -> ChunkRef:
    if sealed is not None:
        return sealed.ref(span.offset)
    assert answer.object is not None  # see _can_skip
    assert answer.stored_size is not None
    return ChunkRef(span.offset, span.length, digest, ObjectName(answer.object), answer.stored_size)
