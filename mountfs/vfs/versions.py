"""`.versions` at the mount root: every old state of every file, one path away.

Layout: `.versions/` mirrors the account's tree as the backend knows it, deleted nodes
included (purged ones are gone). Every name of a folder at some path becomes a folder at
the same path under `.versions/`; a file's folder holds one read-only file per version,
named so that it sorts by time and says which device made it:

    .versions/docs/report.pdf/2026-11-24T10-15-02Z (laptop) report.pdf

Several nodes may have had one name in one folder (a file deleted and made again, a
folder replaced by a file): their histories are merged under that name. Delete markers
(tombstones) and damaged versions are not listed. Two versions of one second from one
device are told apart by `-2`, `-3` after the time.

Nothing of this is kept in the state database: listings ask the backend (they are not on
the hot path; each is reused for `LISTING_TTL_S` so that `ls -l` does not ask once per
name) and fail with ENETUNREACH when it cannot be reached. Reading a version downloads
its chunks through the sync engine's fetcher (same URLs, limits and verification as any
read: a damaged chunk is EIO, never wrong bytes) and keeps the last few decrypted chunks
in memory.

Inode numbers: virtual inodes live at `VIRTUAL_BASE` and above, far beyond the rowids
SQLite hands out to real nodes, and they are handed out by a counter that never goes back
(PYFUSE3-NOTES §3): a path or a revision keeps its number for the life of the mount, and
no number is ever reused. Virtual handles are numbered from `VIRTUAL_BASE` too, so they
never collide with the vfs's handles. Nothing here changes anything: every write is
`ReadOnly` (EROFS).
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from mountfs.transport.api import ApiError, Offline
from mountfs.transport.versions import HistoryChild, RemoteVersion
from mountfs.types import ChunkHash, ChunkKey, ChunkRef, Manifest, keys_from_wire
from mountfs.vfs.errors import ContentUnavailable, NotADirectory, NotFound, Unreachable

__all__ = [
    "LISTING_TTL_S",
    "VERSIONS_NAME",
    "VIRTUAL_BASE",
    "VersionsApi",
    "VersionsView",
    "VirtualNode",
    "named_versions",
    "version_name",
]

log = logging.getLogger(__name__)

VERSIONS_NAME = ".versions"
VIRTUAL_BASE = 1 << 62
"""First virtual inode (and handle) number; real inode numbers are SQLite rowids."""
LISTING_TTL_S = 2.0
"""How long a folder listing from the backend is reused."""
_CHUNK_CACHE = 32  # decrypted chunks kept (about 32 MiB at the 1 MiB average)
_MANIFEST_CACHE = 256  # manifests of versions read lately
_NAME_MAX = 255


class VersionsApi(Protocol):
    """What the view needs from the backend and the fetcher."""

    async def all_children(self, node_id: str) -> list[HistoryChild]: ...

    async def versions(self, node_id: str) -> list[RemoteVersion]: ...

    async def revision(self, revision_id: str) -> dict[str, object]: ...


@dataclass(slots=True)
class VirtualNode:
    """One virtual inode: a folder (`dir_ids`: backend folders at this path, `file_ids`:
    files that had this name) or a version (`version` of node `node_id`)."""

    ino: int
    path: tuple[str, ...]
    kind: str  # "dir" | "file"
    dir_ids: tuple[str, ...] = ()
    file_ids: tuple[str, ...] = ()
    version: RemoteVersion | None = None
    mtime_ns: int = 0
    size: int = 0


@dataclass(slots=True)
class _Listing:
    at: float
    entries: dict[str, VirtualNode] = field(default_factory=dict)


def _stamp(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H-%M-%SZ")


def version_name(when: datetime, device: str, name: str, n: int = 1) -> str:
    """`2026-11-24T10-15-02Z (laptop) report.pdf` (`-n` after the time when n > 1), cut
    to 255 bytes by shortening the device label, then the start of the file name."""
    label = device.replace("/", "_").replace("\x00", "_") or "?"
    prefix = _stamp(when) + (f"-{n}" if n > 1 else "")
    while True:
        candidate = f"{prefix} ({label}) {name}"
        if len(candidate.encode()) <= _NAME_MAX:
            return candidate
        if len(label) > 8:
            label = label[: max(8, len(label) - 16)]
            continue
        stem, dot, ext = name.rpartition(".")
        keep = stem if dot else name
        name = keep[: max(1, len(keep) - 16)] + ("." + ext if dot else "")


class VersionsView:
    """The `.versions` tree over the backend; see the module docstring.

    Attributes:
        root: the virtual inode of `.versions` itself.
    """

    def __init__(
        self,
        api: VersionsApi,
        root_node_id: str,
        chunk_plaintext: Callable[[ChunkRef, ChunkKey], Awaitable[bytes]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._api = api
        self._chunk_plaintext = chunk_plaintext
        self._clock = clock
        self._numbers = itertools.count(VIRTUAL_BASE)
        self._handles = itertools.count(VIRTUAL_BASE)
        self._by_ino: dict[int, VirtualNode] = {}
        self._by_key: dict[tuple[str, ...], int] = {}
        self._listings: dict[int, _Listing] = {}
        self._manifests: dict[str, tuple[Manifest, dict[ChunkHash, ChunkKey]]] = {}
        self._chunks: OrderedDict[str, bytes] = OrderedDict()
        self._open: dict[int, int] = {}  # handle -> ino
        self.root = self._node(("d",), (), "dir", dir_ids=(root_node_id,))

    # --- inode table -------------------------------------------------------------------

    @staticmethod
    def is_virtual(ino: int) -> bool:
        return ino >= VIRTUAL_BASE

    def get(self, ino: int) -> VirtualNode:
        found = self._by_ino.get(ino)
        if found is None:
            raise NotFound(f"no virtual inode {ino}")
        return found

    def _node(
        self, key: tuple[str, ...], path: tuple[str, ...], kind: str, **fields: object
    ) -> VirtualNode:
        ino = self._by_key.get(key)
        if ino is None:
            ino = next(self._numbers)
            self._by_key[key] = ino
            self._by_ino[ino] = VirtualNode(ino=ino, path=path, kind=kind)
        node = self._by_ino[ino]
        for name, value in fields.items():
            setattr(node, name, value)
        return node

    # --- listing -----------------------------------------------------------------------

    async def lookup(self, parent_ino: int, name: str) -> VirtualNode:
        entries = await self.list(parent_ino)
        found = entries.get(name)
        if found is None:
            raise NotFound(f"no {name!r} in {VERSIONS_NAME}/{'/'.join(self.get(parent_ino).path)}")
        return found

    async def list(self, ino: int) -> dict[str, VirtualNode]:
        """A virtual folder's entries by name (from the backend, or a recent listing)."""
        folder = self.get(ino)
        if folder.kind != "dir":
            raise NotADirectory(f"{VERSIONS_NAME}/{'/'.join(folder.path)} is a version")
        cached = self._listings.get(ino)
        if cached is not None and self._clock() - cached.at < LISTING_TTL_S:
            return cached.entries
        try:
            entries = await self._fetch_listing(folder)
        except Offline as exc:
            raise Unreachable(f"{VERSIONS_NAME} needs the backend: {exc}") from exc
        except ApiError as exc:
            if exc.status == 404:  # the node was purged meanwhile
                entries = {}
            else:
                raise Unreachable(f"{VERSIONS_NAME}: the backend answered {exc}") from exc
        self._listings[ino] = _Listing(self._clock(), entries)
        return entries

    async def _fetch_listing(self, folder: VirtualNode) -> dict[str, VirtualNode]:
        by_name: dict[str, tuple[list[str], list[str], int]] = {}
        for dir_id in folder.dir_ids:
            for child in await self._api.all_children(dir_id):
                dirs, files, _ = by_name.setdefault(child.name, ([], [], 0))
                if child.kind == "dir":
                    dirs.append(child.id)
                elif child.kind == "file":
                    files.append(child.id)
        entries: dict[str, VirtualNode] = {}
        for name, (dirs, files, _) in sorted(by_name.items()):
            if not dirs and not files:
                continue  # symlinks have no versions
            path = (*folder.path, name)
            entries[name] = self._node(
                ("d", *path), path, "dir", dir_ids=tuple(dirs), file_ids=tuple(files)
            )
        if folder.file_ids:
            file_name = folder.path[-1]
            versions: list[RemoteVersion] = []
            for file_id in folder.file_ids:
                versions += [
                    v
                    for v in await self._api.versions(file_id)
                    if v.kind == "content" and not v.damaged
                ]
            for name, v in named_versions(versions, file_name):
                entries[name] = self._node(
                    ("r", v.revision_id),
                    (*folder.path, name),
                    "file",
                    version=v,
                    size=v.size,
                    mtime_ns=int(v.created_at.timestamp() * 1e9),
                )
        return dict(sorted(entries.items()))

    # --- reading -----------------------------------------------------------------------

    def folder_at(self, path: tuple[str, ...]) -> VirtualNode:
        """The virtual folder at `path` (listed already: its children were reached)."""
        ino = self._by_key.get(("d", *path))
        if ino is None:
            raise NotFound(f"{VERSIONS_NAME}/{'/'.join(path)} was never listed")
        return self._by_ino[ino]

    def new_handle(self) -> int:
        """A handle number for a virtual file or folder (never one the vfs hands out)."""
        return next(self._handles)

    def open(self, ino: int) -> int:
        node = self.get(ino)
        if node.kind != "file":
            raise NotFound(f"virtual inode {ino} is not a version")
        fh = self.new_handle()
        self._open[fh] = ino
        return fh

    def owns_handle(self, fh: int) -> bool:
        return fh >= VIRTUAL_BASE

    def release(self, fh: int) -> None:
        self._open.pop(fh, None)

    async def read(self, fh: int, offset: int, size: int) -> bytes:
        """Bytes of a version, downloading the chunks that hold them."""
        node = self.get(self._open[fh])
        assert node.version is not None
        end = min(offset + size, node.size)
        if end <= offset:
            return b""
        manifest, keys = await self._manifest(node.version.revision_id)
        pieces = []
        for ref in manifest.chunks:
            if ref.offset + ref.size <= offset or ref.offset >= end:
                continue
            plain = await self._plaintext(ref, keys[ref.hash])
            start = max(offset, ref.offset) - ref.offset
            stop = min(end, ref.offset + ref.size) - ref.offset
            pieces.append(plain[start:stop])
        return b"".join(pieces)

    async def _manifest(self, revision_id: str) -> tuple[Manifest, dict[ChunkHash, ChunkKey]]:
        cached = self._manifests.get(revision_id)
        if cached is not None:
            return cached
        try:
            body = await self._api.revision(revision_id)
        except Offline as exc:
            raise Unreachable(f"reading a version needs the backend: {exc}") from exc
        except ApiError as exc:
            raise ContentUnavailable(f"version {revision_id}: {exc}") from exc
        chunks = body.get("chunks")
        loaded = (
            Manifest.from_wire(body),
            dict(keys_from_wire(chunks if isinstance(chunks, list) else [])),
        )
        self._manifests[revision_id] = loaded
        while len(self._manifests) > _MANIFEST_CACHE:
            del self._manifests[next(iter(self._manifests))]  # the oldest loaded
        return loaded

    async def _plaintext(self, ref: ChunkRef, key: ChunkKey) -> bytes:
        cached = self._chunks.get(ref.object)
        if cached is not None:
            self._chunks.move_to_end(ref.object)
            return cached
        try:
            plain = await self._chunk_plaintext(ref, key)
        except Offline as exc:
            raise Unreachable(f"reading a version needs the backend: {exc}") from exc
        except Exception as exc:
            raise ContentUnavailable(f"chunk {ref.object} of a version: {exc}") from exc
        self._chunks[ref.object] = plain
        while len(self._chunks) > _CHUNK_CACHE:
            self._chunks.popitem(last=False)
        return plain


def named_versions(
    versions: Sequence[RemoteVersion], file_name: str
) -> list[tuple[str, RemoteVersion]]:
    """The `.versions` file name of each content version (oldest first): versions of one
    second and one device are numbered 1, 2, … in time order. `mountfs restore` uses it
    too, to find the exact version a `.versions` path names."""
    seen: dict[tuple[str, str], int] = {}
    out = []
    for v in sorted(versions, key=lambda v: v.created_at):
        if v.kind != "content" or v.damaged:
            continue
        key = (_stamp(v.created_at), v.device_label)
        seen[key] = seen.get(key, 0) + 1
        out.append((version_name(v.created_at, v.device_label, file_name, seen[key]), v))
    return out
