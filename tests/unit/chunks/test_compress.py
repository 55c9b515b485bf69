"""Framing: codec choice, round trips, and bounded, strict unframing."""

from __future__ import annotations

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from mountfs.chunks.cdc import MAX_STORED_CHUNK_SIZE
from mountfs.chunks.compress import CODEC_RAW, CODEC_ZSTD, ZSTD_LEVEL, frame, unframe
from mountfs.errors import CorruptChunk
from tests.unit.chunks.vectors import MiB, pseudo_random


def test_compressible_data_is_stored_as_zstd() -> None:
    data = b"mountfs " * 10_000
    framed = frame(data)
    assert framed[0] == CODEC_ZSTD
    assert len(framed) < len(data) // 10
    assert framed[1:] == zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(data)
    assert unframe(framed) == data


def test_incompressible_data_is_stored_raw() -> None:
    data = pseudo_random("raw", 100_000)
    framed = frame(data)
    assert framed == bytes([CODEC_RAW]) + data
    assert unframe(framed) == data


def test_empty_chunk_is_one_raw_tag() -> None:
    assert frame(b"") == bytes([CODEC_RAW])
    assert unframe(frame(b"")) == b""


def test_frame_accepts_memoryview_slices() -> None:
    data = b"abc" * 5000
    assert frame(memoryview(data)[3:]) == frame(data[3:])


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=20_000) | st.integers(0, 50_000).map(lambda n: b"z" * n))
def test_round_trip(data: bytes) -> None:
    framed = frame(data)
    assert framed[0] in (CODEC_RAW, CODEC_ZSTD)
    assert len(framed) <= len(data) + 1
    assert unframe(framed, max_size=len(data)) == data


def test_raw_payload_over_the_limit_is_refused() -> None:
    with pytest.raises(CorruptChunk, match="exceeds"):
        unframe(bytes([CODEC_RAW]) + bytes(101), max_size=100)


def test_zstd_bomb_is_refused_before_decompressing() -> None:
    # 64 MiB of zeros in ~2 KiB: the declared size is checked before anything is allocated.
    bomb = bytes([CODEC_ZSTD]) + zstandard.ZstdCompressor().compress(bytes(64 * MiB))
    with pytest.raises(CorruptChunk, match="declares 67108864 bytes"):
        unframe(bomb)
    small = bytes([CODEC_ZSTD]) + zstandard.ZstdCompressor().compress(bytes(1000))
    with pytest.raises(CorruptChunk, match="more than 999"):
        unframe(small, max_size=999)


def test_zstd_frame_without_content_size_is_refused() -> None:
    compressor = zstandard.ZstdCompressor(write_content_size=False)
    payload = bytes([CODEC_ZSTD]) + compressor.compress(bytes(MAX_STORED_CHUNK_SIZE * 4))
    with pytest.raises(CorruptChunk, match="does not declare its content size"):
        unframe(payload)


def test_zstd_frame_lying_about_its_size_is_refused() -> None:
    compressed = bytearray(zstandard.ZstdCompressor().compress(b"q" * 5000))
    header_size = zstandard.frame_header_size(bytes(compressed))
    # The content size field is the last 2 bytes of this header (5000 < 65536 + 256).
    compressed[header_size - 2 : header_size] = (300 - 256).to_bytes(2, "little")
    assert zstandard.frame_content_size(bytes(compressed)) == 300
    with pytest.raises(CorruptChunk, match="does not decompress"):
        unframe(bytes([CODEC_ZSTD]) + bytes(compressed))


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"", "empty"),
        (bytes([7]) + b"data", "unknown codec tag 7"),
        (bytes([CODEC_ZSTD]) + b"not zstd at all", "zstd frame"),
        (frame(b"x" * 10_000)[:-3], "does not decompress"),
        (frame(b"x" * 10_000) + b"trailing", "does not decompress"),
        (frame(b"x" * 10_000) + frame(b"y" * 10_000)[1:], "does not decompress"),
    ],
    ids=["empty", "unknown-tag", "garbage", "truncated", "trailing-bytes", "two-frames"],
)
def test_malformed_payloads_are_corrupt(payload: bytes, message: str) -> None:
    with pytest.raises(CorruptChunk, match=message):
        unframe(payload)
