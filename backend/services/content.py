"""Plaintext of stored files, for public-link downloads only (docs/backend.md).

The backend holds the convergence secret, so it can derive every chunk's key from the
plaintext hash in a manifest (DESIGN.md threat model: the operator of the metadata service
is trusted to this extent). It decrypts here, in memory, one chunk at a time, only to
stream a link's bytes; nothing decrypted is written anywhere. Each chunk is checked exactly
as a client checks it (`mountfs.chunks.open_chunk`: object name, GCM tag, framing, size
and plaintext hash), so a damaged object becomes an error, never wrong bytes.

Memory: one chunk (≤ 4 MiB plaintext) per download at a time. The generators here are
synchronous; Starlette runs them in worker threads as the client reads.
"""

from __future__ import annotations

import time
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from backend.security import Keyring
from backend.services.errors import NotFound
from backend.services.types import ChunkRef
from backend.store.base import BlockStore
from mountfs.chunks.pipeline import open_chunk
from mountfs.types import ChunkHash, ObjectName
from mountfs.types import ChunkRef as ClientRef

__all__ = ["ZipEntry", "read_range", "zip_stream"]


def _plaintext(store: BlockStore, keys: Keyring, ref: ChunkRef) -> bytes:
    data = store.read_object(ref.object)
    if data is None:
        raise NotFound(f"chunk object {ref.object} is missing from the store")
    client_ref = ClientRef(
        offset=ref.offset,
        size=ref.size,
        hash=ChunkHash(ref.hash),
        object=ObjectName(ref.object),
        stored_size=ref.stored_size,
    )
    return open_chunk(data, keys.key(ref.hash), client_ref)


def read_range(
    store: BlockStore, keys: Keyring, refs: Sequence[ChunkRef], start: int, end: int
) -> Iterator[bytes]:
    """The plaintext bytes [start, end) of a file, chunk by chunk."""
    for ref in refs:
        lo, hi = ref.offset, ref.offset + ref.size
        if hi <= start or lo >= end or ref.size == 0:
            continue
        plain = _plaintext(store, keys, ref)
        yield plain[max(start, lo) - lo : min(end, hi) - lo]


@dataclass(frozen=True, slots=True)
class ZipEntry:
    path: str
    size: int
    mtime_ns: int
    refs: tuple[ChunkRef, ...]


class _Spool:
    """A write-only, non-seekable file for `zipfile` whose bytes are taken as they come."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def take(self) -> bytes:
        out = b"".join(self.parts)
        self.parts.clear()
        return out


def zip_stream(store: BlockStore, keys: Keyring, entries: Iterable[ZipEntry]) -> Iterator[bytes]:
    """A zip archive (stored, not compressed: the content is usually compressed already and
    the CPU is better spent elsewhere; ZIP64, so any size works) of `entries`, produced one
    chunk at a time without knowing the total in advance."""
    spool = _Spool()
    with zipfile.ZipFile(spool, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for entry in entries:
            stamp = time.gmtime(max(entry.mtime_ns // 1_000_000_000, 315532800))[:6]
            info = zipfile.ZipInfo(entry.path, date_time=stamp)
            info.external_attr = 0o644 << 16
            with zf.open(info, mode="w", force_zip64=True) as out:
                for piece in read_range(store, keys, entry.refs, 0, entry.size):
                    out.write(piece)
                    yield spool.take()
            yield spool.take()
    yield spool.take()
