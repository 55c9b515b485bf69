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

import io
import logging
import os
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import BinaryIO, cast

import trio

from mountfs.cache.block_cache import BlockCache
from mountfs.chunks import cdc
from mountfs.chunks.pipeline import ChunkPipeline
from mountfs.ids import uuid7
from mountfs.state import extents, nodes, outbox
from mountfs.state.db import StateDb
from mountfs.state.schema import EXTENT_DIRTY, EXTENT_PRESENT
from mountfs.sync import manifests
from mountfs.sync.conflicts import CommitConflict
from mountfs.sync.fetch import Fetcher
from mountfs.sync.sender import ChunkSender, SendStats
from mountfs.sync.transfers import Transfer, Transfers
from mountfs.transport.api import ApiClient, ApiError
from mountfs.transport.blocks import BlockClient
from mountfs.transport.retry import with_retry
from mountfs.types import ChunkHash, ChunkKey, ChunkRef, InodeNo, Manifest

log = logging.getLogger(__name__)

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


UploadStats = SendStats
"""Counters for status and benchmarks (shared with the chunk sender)."""


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
        transfers: Transfers | None = None,
    ) -> None:
        self._db = db
        self._cache = cache
        self._api = api
        self._blocks = blocks
        self._pipeline = pipeline
        self._fetcher = fetcher
        self.transfers = transfers if transfers is not None else Transfers()
        self.stats = UploadStats()
        self._sender = ChunkSender(api, blocks, pipeline, self.transfers, self.stats)
        self._running: dict[InodeNo, trio.CancelScope] = {}
        self._committing: set[InodeNo] = set()

    def committing(self, ino: InodeNo) -> bool:
        """True while the file's commit request is on its way (too late to cancel)."""
        return ino in self._committing

    def cancel(self, ino: InodeNo) -> bool:
        """Abandon the upload of `ino` now, if one runs (`mountfs cancel`); True if it did.
        Chunks already uploaded stay held by the backend (they cost nothing to keep)."""
        self.transfers.progress.unpark(path_of(self._db.conn, ino))
        scope = self._running.get(ino)
        if scope is None:
            return False
        scope.cancel()
        return True

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
        path = path_of(self._db.conn, ino)
        # Filled when the upload ran to its end; left empty by a cancel or a pause (the
        # scope swallows its own cancellation).
        done: list[tuple[list[ChunkRef], dict[ChunkHash, ChunkKey]]] = []
        try:
            # A pause stops the upload (it starts over, resuming from the held chunks, after
            # the resume), so the sync engine is free for namespace changes meanwhile.
            with (
                self.transfers.gate.cancelled_by_pause() as scope,
                self.transfers.progress.track(path, "upload", snap.size) as transfer,
            ):
                self._running[ino] = scope
                spans, fresh = await self._plan(snap, fd)
                done.append(await self._upload_fresh(snap, fd, spans, fresh, transfer))
            if not done and self.transfers.gate.paused:
                self.transfers.progress.park(transfer)
        finally:
            self._running.pop(ino, None)
            os.close(fd)
            self._cache.unpin(ino)
        if not done:
            log.info(
                "upload of %s %s", path, "paused" if self.transfers.gate.paused else "cancelled"
            )
            return False
        refs, keys = done[0]
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
        self._committing.add(ino)
        try:
            await self._send_commit(snap, manifest, keys)
        finally:
            self._committing.discard(ino)
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
        self,
        snap: _Snapshot,
        fd: int,
        spans: Sequence[cdc.Span],
        fresh: set[int],
        transfer: Transfer,
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
                transfer.add(ref.size)

        async def read(span: cdc.Span) -> bytes:
            await self._fetcher.ensure_present(snap.ino, span.offset, span.end)
            return await trio.to_thread.run_sync(read_exact, fd, span.offset, span.length)

        sent = await self._sender.send([(i, spans[i]) for i in sorted(fresh)], read, transfer)
        for index, (ref, key) in sent.items():
            refs[index] = ref
            keys[ref.hash] = key
        return [ref for ref in refs if ref is not None], keys

    async def _send_commit(
        self, snap: _Snapshot, manifest: Manifest, keys: dict[ChunkHash, ChunkKey]
    ) -> None:
        revision_id = uuid7()
        self._db.commit_group()  # the backend must never hold a change this device may lose
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
                raise CommitConflict(
                    current,
                    snap.base_revision,
                    manifest,
                    Manifest(sum(r.size for r, _ in snap.old), tuple(r for r, _ in snap.old)),
                ) from exc
            if exc.status < 500:
                raise CommitRefused(exc) from exc
            raise
        node = answer["node"]
        self._record(snap, manifest, keys, str(node["head_revision"]), int(node["version"]))

    async def _is_own_head(self, current: dict[str, object], manifest: Manifest) -> bool:
        """True if the head already has exactly this content (our own earlier commit replayed)."""
        head = current.get("head_revision")
        if current.get("deleted"):
            return False  # a tombstone is nobody's content: the resolver restores the file
        if not isinstance(head, str):
            return manifest.size == 0 and current.get("size") == 0
        revision = await self._api.revision(head)
        theirs = Manifest.from_wire(revision)
        return [(r.hash, r.size) for r in theirs.chunks] == [
            (r.hash, r.size) for r in manifest.chunks
        ]

    async def content_equals(self, ino: InodeNo, manifest: Manifest) -> bool:
        """True if the file's local bytes are exactly `manifest`'s (for the resolver).

        Hashes the local bytes of each of the manifest's chunk ranges (bytes not cached
        are fetched from the file's own chunk map: they are ours too) and compares them
        with the chunk hashes, so no remote byte is downloaded.
        """
        node = nodes.get(self._db.conn, ino)
        if node is None or node.size != manifest.size:
            return False
        if not manifest.chunks:
            return True
        self._cache.pin(ino)
        fd = os.open(self._cache.path(ino), os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            for ref in manifest.chunks:
                await self._fetcher.ensure_present(ino, ref.offset, min(ref.end, node.remote_size))
                data = await trio.to_thread.run_sync(read_exact, fd, ref.offset, ref.size)
                if await self._pipeline.hash(data) != ref.hash:
                    return False
            return True
        finally:
            os.close(fd)
            self._cache.unpin(ino)

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
            # The answer's version also counts changes of other devices since our last
            # pull (a rename, say): jumping to it would make the pull skip them. Only our
            # own bump is taken; the pull brings the rest (and skips our commit by head).
            conn.execute(
                "UPDATE nodes SET remote_version = ? WHERE ino = ? AND (remote_version IS NULL "
                "OR remote_version + 1 >= ?)",
                (version, snap.ino, version),
            )
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


def path_of(conn: sqlite3.Connection, ino: int) -> str:
    """The node's path below the mount root ("a/b.txt"), for progress and logs."""
    names: list[str] = []
    current: int | None = ino
    for _ in range(4096):  # deeper than any real tree; a cycle cannot hang us
        row = conn.execute(
            "SELECT parent_ino, name FROM nodes WHERE ino = ?", (current,)
        ).fetchone()
        if row is None or row[0] is None:
            break
        names.append(str(row[1]))
        current = int(row[0])
    return "/".join(reversed(names))
