"""Chunk framing: zstd compression, or the raw bytes when zstd does not shrink them.

Framed payload (what gets encrypted), see `docs/chunk-format.md`:

    byte 0      codec tag: 0 = raw, 1 = zstd
    bytes 1..   raw: the plaintext itself
                zstd: exactly one zstd frame that declares its content size

Compression must be deterministic: the same plaintext has to give the same framed payload
on every client, or convergent encryption would put two different payloads under one key
and nonce. So the compressor's settings are pinned here (level, no checksum, content size,
no dictionary, single-threaded) and `tests/unit/chunks/vectors.json` fails if a zstd upgrade
changes its output.

Unframing is bounded: a payload is refused (`CorruptChunk`) before any allocation if it would
produce more than `max_size` bytes, so a crafted chunk — encrypted under a key its author was
legitimately given — cannot exhaust memory before the plaintext hash check rejects it.

zstd contexts are expensive to create (~0.1 ms each, with a MiB-sized window) and must not be
shared between threads, so each thread keeps its own pair.
"""

from __future__ import annotations

import threading

import zstandard

from mountfs.chunks.cdc import MAX_STORED_CHUNK_SIZE
from mountfs.errors import CorruptChunk
from mountfs.types import Buffer

__all__ = ["CODEC_RAW", "CODEC_ZSTD", "ZSTD_LEVEL", "frame", "unframe"]

CODEC_RAW = 0
"""Tag of a payload stored as is (it did not compress)."""

CODEC_ZSTD = 1
"""Tag of a payload holding one zstd frame."""

ZSTD_LEVEL = 3
"""zstd's default. On 1 MiB chunks of source text (one core here): level 1 440 MB/s, ratio
0.233; level 3 310 MB/s, 0.215; level 6 107 MB/s, 0.192; level 9 70 MB/s, 0.187. Part of
the format: a different level gives different ciphertexts for the same plaintext."""

_RAW_TAG = bytes([CODEC_RAW])
_ZSTD_TAG = bytes([CODEC_ZSTD])


class _Contexts(threading.local):
    """One zstd compressor and decompressor per thread (they are not thread-safe)."""

    def __init__(self) -> None:
        self.compressor = zstandard.ZstdCompressor(
            level=ZSTD_LEVEL,
            write_checksum=False,  # GCM and the plaintext hash already cover integrity
            write_content_size=True,  # lets `unframe` check the size before allocating
            write_dict_id=False,
            threads=0,
        )
        self.decompressor = zstandard.ZstdDecompressor()


_contexts = _Contexts()


def frame(data: Buffer) -> bytes:
    """The framed payload of one chunk's plaintext: zstd if that is smaller, else raw.

    Costs one copy of the smaller form (to put the tag in front), because AES-GCM takes its
    input as one buffer.
    """
    compressed = _contexts.compressor.compress(data)
    if len(compressed) < memoryview(data).nbytes:
        return _ZSTD_TAG + compressed
    return _RAW_TAG + data


def unframe(payload: Buffer, max_size: int = MAX_STORED_CHUNK_SIZE) -> bytes:
    """The plaintext in a framed payload, refusing to produce more than `max_size` bytes.

    Raises:
        CorruptChunk: empty payload, unknown codec tag, output over `max_size`, a zstd frame
            without a content size, or a zstd frame that is malformed or followed by more data.
    """
    view = memoryview(payload)
    if not view:
        raise CorruptChunk("framed payload is empty (no codec tag)")
    codec, body = view[0], view[1:]
    if codec == CODEC_RAW:
        if body.nbytes > max_size:
            raise CorruptChunk(f"raw chunk of {body.nbytes} bytes exceeds {max_size}")
        return bytes(body)
    if codec == CODEC_ZSTD:
        return _decompress(body, max_size)
    raise CorruptChunk(f"unknown codec tag {codec}")


def _decompress(body: memoryview, max_size: int) -> bytes:
    try:
        declared = zstandard.frame_content_size(body)
    except zstandard.ZstdError as exc:
        raise CorruptChunk(f"bad zstd frame header: {exc}") from exc
    if declared < 0:
        raise CorruptChunk("zstd frame does not declare its content size")
    if declared > max_size:
        raise CorruptChunk(f"zstd frame declares {declared} bytes, more than {max_size}")
    try:
        # With a declared size, zstd allocates exactly that and fails if the frame disagrees.
        return _contexts.decompressor.decompress(body, allow_extra_data=False)
    except zstandard.ZstdError as exc:
        raise CorruptChunk(f"zstd frame does not decompress: {exc}") from exc
