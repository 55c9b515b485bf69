"""Plaintext chunk ⇄ stored object: hash, compress, frame, encrypt, name — and back, verified.

Sealing (upload path):

    hash   = SHA-256(plaintext)                  -> ChunkHash; the backend derives K from it
    framed = compress.frame(plaintext)           -> codec tag + zstd frame or raw bytes
    ct     = crypto.seal(K, framed)              -> AES-256-GCM, nonce derived from K
    object = SHA-256(ct)                         -> ObjectName; the store verifies the upload

Opening (download path) checks everything the ref promises, cheapest first, so that a damaged
or forged object is refused with a message that says which check failed: the length, the object
name, the GCM tag, the (bounded) decompressed size, the plaintext hash.

The functions are synchronous CPU work (hashlib, zstd and AES-GCM release the GIL on large
buffers). `ChunkPipeline` runs them on worker threads under its own `trio.CapacityLimiter`, so
the trio thread (FUSE requests, the sync engine) never stalls on them and they use every core.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from typing import final

import trio

from mountfs.chunks import compress, crypto
from mountfs.chunks.cdc import MAX_STORED_CHUNK_SIZE
from mountfs.errors import CorruptChunk, StaleChunk
from mountfs.types import Buffer, ChunkHash, ChunkRef, ObjectName

__all__ = [
    "ChunkPipeline",
    "SealedChunk",
    "default_thread_count",
    "object_name",
    "open_chunk",
    "plain_hash",
    "seal_chunk",
]


@dataclass(frozen=True, slots=True)
class SealedChunk:
    """One chunk, ready to upload.

    Attributes:
        hash: SHA-256 of the plaintext.
        object: SHA-256 of `ciphertext`, the object's name in the store.
        ciphertext: the bytes to PUT.
        stored_size: `len(ciphertext)`.
        size: plaintext length.
    """

    hash: ChunkHash
    object: ObjectName
    ciphertext: bytes = field(repr=False)
    stored_size: int
    size: int

    def ref(self, offset: int) -> ChunkRef:
        """The manifest entry for this chunk placed at `offset` in a file."""
        return ChunkRef(offset, self.size, self.hash, self.object, self.stored_size)


def plain_hash(data: Buffer) -> ChunkHash:
    """SHA-256 of a chunk's plaintext, lowercase hex: what `POST /chunks/prepare` takes."""
    return ChunkHash(hashlib.sha256(data).hexdigest())


def object_name(ciphertext: Buffer) -> ObjectName:
    """SHA-256 of a chunk's ciphertext, lowercase hex: its name in the block store."""
    return ObjectName(hashlib.sha256(ciphertext).hexdigest())


def seal_chunk(data: Buffer, key: bytes, *, expected_hash: ChunkHash | None = None) -> SealedChunk:
    """Compress, frame and encrypt one chunk under its convergent key.

    Args:
        data: the plaintext (a memoryview into a cache buffer is fine; it is not copied
            except as the framing requires, and must not change during the call).
        key: the 32-byte key the backend issued for this plaintext's hash.
        expected_hash: the hash the key was issued for. Give it whenever the data was read
            again after hashing (it usually is): if the file changed in between, sealing new
            bytes under the old key would reuse a key and nonce on a second plaintext.

    Raises:
        StaleChunk: `data` does not hash to `expected_hash`.
        ValueError: `key` is not 32 bytes.
    """
    digest = plain_hash(data)
    if expected_hash is not None and digest != expected_hash:
        raise StaleChunk(f"chunk changed since it was hashed: {expected_hash} is now {digest}")
    ciphertext = crypto.seal(key, compress.frame(data))
    return SealedChunk(
        hash=digest,
        object=object_name(ciphertext),
        ciphertext=ciphertext,
        stored_size=len(ciphertext),
        size=memoryview(data).nbytes,
    )


def open_chunk(ciphertext: Buffer, key: bytes, ref: ChunkRef) -> bytes:
    """Verify a downloaded chunk object against its ref and return the plaintext.

    Raises:
        CorruptChunk: with the object name and the check that failed — wrong length, object
            name mismatch, authentication failure (wrong key or damage), bad framing,
            decompressed size over the ref's size, or plaintext hash/size mismatch.
        ValueError: `key` is not 32 bytes.
    """
    stored = memoryview(ciphertext).nbytes
    if stored != ref.stored_size:
        raise CorruptChunk(f"object {ref.object}: {stored} bytes, ref says {ref.stored_size}")
    actual_name = object_name(ciphertext)
    if actual_name != ref.object:
        raise CorruptChunk(f"object {ref.object}: content hashes to {actual_name}")
    try:
        plaintext = compress.unframe(
            crypto.open(key, ciphertext), min(ref.size, MAX_STORED_CHUNK_SIZE)
        )
    except CorruptChunk as exc:
        raise CorruptChunk(f"object {ref.object}: {exc}") from exc
    if len(plaintext) != ref.size:
        raise CorruptChunk(f"object {ref.object}: {len(plaintext)} bytes, ref says {ref.size}")
    actual_hash = plain_hash(plaintext)
    if actual_hash != ref.hash:
        raise CorruptChunk(
            f"object {ref.object}: plaintext hashes to {actual_hash}, not {ref.hash}"
        )
    return plaintext


def default_thread_count() -> int:
    """CPUs this process may run on (respects affinity masks, unlike `os.cpu_count`)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@final
class ChunkPipeline:
    """Async façade over the chunk functions for trio code.

    Each call runs on a worker thread, at most `limiter.total_tokens` at a time. The limiter
    is this pipeline's own, so chunk work neither starves nor is starved by other threaded
    work (trio's default limiter is shared and allows 40 threads, far more than there are
    cores for CPU-bound work).

    Cancellation: a cancelled call waits for its thread to finish (a few milliseconds per
    chunk) and then raises `trio.Cancelled`; nothing is left half-done because the functions
    have no side effects. Buffers passed in must not be modified until the call returns.
    """

    def __init__(self, threads: int | None = None) -> None:
        """Args:
        threads: how many chunks may be processed at once; default: the CPU count.
        """
        self._limiter = trio.CapacityLimiter(default_thread_count() if threads is None else threads)

    @property
    def limiter(self) -> trio.CapacityLimiter:
        """The limiter the worker threads run under (for statistics and tuning)."""
        return self._limiter

    async def hash(self, data: Buffer) -> ChunkHash:
        """`plain_hash` on a worker thread."""
        return await trio.to_thread.run_sync(plain_hash, data, limiter=self._limiter)

    async def seal(
        self, data: Buffer, key: bytes, *, expected_hash: ChunkHash | None = None
    ) -> SealedChunk:
        """`seal_chunk` on a worker thread."""

        def work() -> SealedChunk:
            return seal_chunk(data, key, expected_hash=expected_hash)

        return await trio.to_thread.run_sync(work, limiter=self._limiter)

    async def open(self, ciphertext: Buffer, key: bytes, ref: ChunkRef) -> bytes:
        """`open_chunk` on a worker thread."""
        return await trio.to_thread.run_sync(
            open_chunk, ciphertext, key, ref, limiter=self._limiter
        )
