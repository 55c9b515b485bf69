"""`mountfs cp`: one file between a local path and the account, without a mount.

For machines and containers without FUSE, and for scripts. It moves content exactly as the
mount does: FastCDC chunks, `prepare` dedup, zstd + AES-GCM, presigned PUTs and GETs,
through the same `ChunkSender` (upload) and the same `BlockClient` and `ChunkPipeline`
(download), under the device's pause gate, bandwidth limits and transfers in flight.

Resuming:
- **upload**: every chunk PUT is held by the backend at once (`ChunkSender`), so running
  the same `mountfs cp` again after a cut sends only the chunks that had not arrived; the
  commit comes last, so the remote file changes only when all of it is stored.
- **download**: bytes land in `DST.mountfs-part`; run again, chunks of the part file that
  already hash to their ref are kept and only the rest is fetched. The part file is renamed
  to DST once complete (fsynced), so DST is never half-written.

Remote paths are `cloud:/dir/name` (`cloud:` alone or `cloud:/` is the account's root).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import stat as stat_mod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import trio

from mountfs.chunks import cdc
from mountfs.chunks.pipeline import ChunkPipeline
from mountfs.ids import uuid7
from mountfs.sync.sender import ChunkSender
from mountfs.sync.tasks import run_all
from mountfs.sync.transfers import Transfer, Transfers
from mountfs.transport.api import ApiClient, ApiError, Presigned, RemoteNode
from mountfs.transport.blocks import BlockClient
from mountfs.transport.retry import with_fresh_url, with_retry
from mountfs.types import ChunkKey, ChunkRef, Manifest, keys_from_wire

__all__ = [
    "PART_SUFFIX",
    "REMOTE_PREFIX",
    "CopyError",
    "Copied",
    "download",
    "is_remote",
    "remote_path",
    "upload",
]

log = logging.getLogger(__name__)

REMOTE_PREFIX = "cloud:"
PART_SUFFIX = ".mountfs-part"
READ_URL_BATCH = 64
_READ_PIECE = 8 << 20


class CopyError(Exception):
    """A copy that cannot be made as asked (the message says why)."""


@dataclass(frozen=True, slots=True)
class Copied:
    """What a copy did (`mountfs cp --json`).

    Attributes:
        source, target: as the user named them (the target resolved to a file).
        size: bytes of the file.
        sent_bytes: bytes that crossed the network (ciphertext) for this copy: less than
            `size` when chunks were deduplicated or already there from an earlier attempt.
        reused_chunks: chunks not moved (the account or the part file had them).
        chunks: chunks of the file.
    """

    source: str
    target: str
    size: int
    sent_bytes: int
    reused_chunks: int
    chunks: int


def is_remote(text: str) -> bool:
    return text.startswith(REMOTE_PREFIX)


def remote_path(text: str) -> list[str]:
    """`cloud:/a/b` → ["a", "b"]."""
    return [p for p in text[len(REMOTE_PREFIX) :].split("/") if p and p != "."]


async def _find(api: ApiClient, parent_id: str, name: str) -> RemoteNode | None:
    cursor: str | None = None
    while True:
        items, cursor = await with_retry(
            functools.partial(api.children, parent_id, cursor), what="list"
        )
        for item in items:
            if item.name == name:
                return item
        if not cursor:
            return None


async def _resolve(api: ApiClient, parts: Sequence[str]) -> RemoteNode | None:
    """The live node at `parts` below the root, or None if a component is missing."""
    me = await with_retry(api.me, what="me")
    node = await with_retry(lambda: api.node(me.root_id), what="root")
    for part in parts:
        if node.kind != "dir":
            raise CopyError(f"{REMOTE_PREFIX}/{'/'.join(parts)}: {node.name} is not a folder")
        found = await _find(api, node.id, part)
        if found is None:
            return None
        node = found
    return node


# --- upload -------------------------------------------------------------------------------


async def upload(
    api: ApiClient,
    blocks: BlockClient,
    pipeline: ChunkPipeline,
    transfers: Transfers,
    source: Path,
    target: str,
) -> Copied:
    """Copy the local file `source` to `target` (`cloud:/…`; a folder keeps the name)."""
    try:
        info = os.stat(source)
    except OSError as exc:
        raise CopyError(f"{source}: {exc.strerror}") from exc
    if not stat_mod.S_ISREG(info.st_mode):
        raise CopyError(f"{source}: only regular files are copied")
    parts = remote_path(target)
    existing = await _resolve(api, parts)
    if existing is not None and existing.kind == "dir":
        parts, existing = [*parts, source.name], await _find(api, existing.id, source.name)
    if not parts:
        raise CopyError(f"{target}: name a file or a folder")
    if existing is not None and existing.kind != "file":
        raise CopyError(f"{target}: exists and is a {existing.kind}")
    parent = await _resolve(api, parts[:-1])
    if parent is None or parent.kind != "dir":
        raise CopyError(f"{REMOTE_PREFIX}/{'/'.join(parts[:-1])}: no such folder")
    me = await with_retry(api.me, what="me")
    if info.st_size > me.max_file_bytes:
        raise CopyError(
            f"{source}: {info.st_size} bytes is above the largest file the server takes "
            f"({me.max_file_bytes} bytes)"
        )
    sender = ChunkSender(api, blocks, pipeline, transfers)
    shown = f"{source} → {REMOTE_PREFIX}/{'/'.join(parts)}"
    fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with transfers.progress.track(shown, "upload", info.st_size) as transfer:
            spans = await trio.to_thread.run_sync(_cut, fd, limiter=pipeline.limiter)

            async def read(span: cdc.Span) -> bytes:
                return await trio.to_thread.run_sync(_pread_exact, fd, span.offset, span.length)

            sent = await sender.send(list(enumerate(spans)), read, transfer)
    finally:
        os.close(fd)
    refs = [sent[i][0] for i in range(len(spans))]
    manifest = Manifest(info.st_size, tuple(refs))
    node_id = (
        existing.id
        if existing is not None
        else await _create(api, parent.id, parts[-1], info.st_mode & 0o7777)
    )
    base = existing.head_revision if existing is not None else None
    revision_id = uuid7()
    try:
        await with_retry(
            lambda: api.commit(node_id, revision_id, base, manifest.to_wire(), info.st_mtime_ns),
            what="commit",
        )
    except ApiError as exc:
        if exc.code == "conflict":
            raise CopyError(f"{target}: changed on the server meanwhile; copy again") from exc
        raise
    return Copied(
        str(source),
        f"{REMOTE_PREFIX}/{'/'.join(parts)}",
        info.st_size,
        sender.stats.bytes_uploaded,
        sender.stats.chunks_skipped,
        len(spans),
    )


def _cut(fd: int) -> list[cdc.Span]:
    with os.fdopen(os.dup(fd), "rb", buffering=_READ_PIECE) as f:
        return [cdc.Span(c.offset, c.length) for c in cdc.DEFAULT_PARAMS.fastcdc().cut_stream(f)]


def _pread_exact(fd: int, offset: int, length: int) -> bytes:
    data = os.pread(fd, length, offset)
    if len(data) != length:
        raise CopyError("the source file shrank while it was copied")
    return data


async def _create(api: ApiClient, parent_id: str, name: str, mode: int) -> str:
    node_id = uuid7()
    op = {
        "op": "create",
        "op_id": uuid7(),
        "id": node_id,
        "parent_id": parent_id,
        "name": name,
        "kind": "file",
        "mode": mode,
        "mtime_ns": 0,
    }
    (result,) = await with_retry(lambda: api.push_changes([op]), what="create")
    if not result.ok:
        detail = result.body.get("detail", result.body.get("error"))
        raise CopyError(f"cannot create {name}: {detail}")
    return node_id


# --- download -----------------------------------------------------------------------------


async def download(
    api: ApiClient,
    blocks: BlockClient,
    pipeline: ChunkPipeline,
    transfers: Transfers,
    source: str,
    target: Path,
) -> Copied:
    """Copy `source` (`cloud:/…`) to the local `target` (a folder keeps the name)."""
    parts = remote_path(source)
    node = await _resolve(api, parts)
    if node is None:
        raise CopyError(f"{source}: no such file")
    if node.kind != "file":
        raise CopyError(f"{source}: is a {node.kind}; cp copies one file")
    if await trio.to_thread.run_sync(os.path.isdir, target):
        target = target / node.name
    if node.head_revision is None:
        manifest, keys = Manifest(0, ()), {}
    else:
        revision = await with_retry(lambda: api.revision(str(node.head_revision)), what="rev")
        manifest, keys = Manifest.from_wire(revision), keys_from_wire(revision["chunks"])
    part = target.with_name(target.name + PART_SUFFIX)
    fd = os.open(part, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    sent = 0
    reused = 0
    try:
        with transfers.progress.track(f"{source} → {target}", "download", manifest.size) as t:
            have = await trio.to_thread.run_sync(_present, fd, manifest.chunks)
            reused = len(have)
            t.add(sum(manifest.chunks[i].size for i in have))
            os.ftruncate(fd, manifest.size)
            wanted = [ref for i, ref in enumerate(manifest.chunks) if i not in have]
            fetcher = _Getter(api, blocks, pipeline, transfers, fd, t)
            for start in range(0, len(wanted), READ_URL_BATCH):
                batch = wanted[start : start + READ_URL_BATCH]
                await fetcher.fetch([(ref, keys[ref.hash]) for ref in batch])
            sent = fetcher.bytes
            await trio.to_thread.run_sync(os.fsync, fd)
    finally:
        os.close(fd)
    os.utime(part, ns=(node.mtime_ns, node.mtime_ns))
    os.replace(part, target)
    _fsync_dir(target.parent)
    return Copied(source, str(target), manifest.size, sent, reused, len(manifest.chunks))


def _present(fd: int, refs: Sequence[ChunkRef]) -> set[int]:
    """Indexes of the chunks a part file from an earlier attempt already holds."""
    size = os.fstat(fd).st_size
    have = set()
    for i, ref in enumerate(refs):
        if ref.end > size:
            break
        data = os.pread(fd, ref.size, ref.offset)
        if hashlib.sha256(data).hexdigest() == ref.hash:
            have.add(i)
    return have


def _fsync_dir(path: Path) -> None:
    dfd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


class _Getter:
    """Fetches chunks into the part file; at most `2 × in_flight` chunks in memory."""

    def __init__(
        self,
        api: ApiClient,
        blocks: BlockClient,
        pipeline: ChunkPipeline,
        transfers: Transfers,
        fd: int,
        transfer: Transfer,
    ) -> None:
        self._api = api
        self._blocks = blocks
        self._pipeline = pipeline
        self._transfers = transfers
        self._fd = fd
        self._transfer = transfer
        self._memory = trio.CapacityLimiter(2 * transfers.in_flight)
        self.bytes = 0

    async def fetch(self, batch: list[tuple[ChunkRef, ChunkKey]]) -> None:
        objects = sorted({ref.object for ref, _ in batch})
        urls = await with_retry(lambda: self._api.read_urls(objects), what="read-urls")
        by_object = {u.object: u for u in urls}
        await run_all(
            functools.partial(self._one, ref, key, by_object[ref.object]) for ref, key in batch
        )

    async def _one(self, ref: ChunkRef, key: ChunkKey, url: Presigned) -> None:
        async def renew() -> Presigned:
            (fresh,) = await self._api.read_urls([ref.object])
            return fresh

        async def get_once(current: Presigned) -> bytes:
            async with self._transfers.slots:
                return await self._blocks.get(current, limit=self._transfers.down)

        async with self._memory:
            ciphertext = await self._transfers.gate.run(
                lambda: with_fresh_url(url, get_once, renew, what="chunk GET")
            )
            self.bytes += len(ciphertext)
            plaintext = await self._pipeline.open(ciphertext, key, ref)
            del ciphertext
            await trio.to_thread.run_sync(os.pwrite, self._fd, plaintext, ref.offset)
        self._transfer.add(ref.size)
