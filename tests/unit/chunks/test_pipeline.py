"""Sealing and opening whole chunks, the checks on the way back, and the trio façade."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest
import trio
import zstandard
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from mountfs.chunks.cdc import MAX_STORED_CHUNK_SIZE
from mountfs.chunks.compress import CODEC_ZSTD
from mountfs.chunks.crypto import derive_nonce, seal
from mountfs.chunks.pipeline import (
    ChunkPipeline,
    default_thread_count,
    object_name,
    open_chunk,
    plain_hash,
    seal_chunk,
)
from mountfs.errors import CorruptChunk, StaleChunk
from mountfs.types import ChunkHash, ChunkRef
from tests.unit.chunks.vectors import MiB, pseudo_random


def key_for(data: bytes) -> bytes:
    """Stand-in for the backend's HMAC(convergence secret, hash): one key per plaintext."""
    return hashlib.sha256(b"test-secret" + hashlib.sha256(data).digest()).digest()


def sealed_ref(data: bytes) -> tuple[bytes, bytes, ChunkRef]:
    key = key_for(data)
    sealed = seal_chunk(data, key)
    return sealed.ciphertext, key, sealed.ref(0)


chunk_contents = st.one_of(
    st.binary(max_size=10_000),
    st.tuples(st.text(max_size=4), st.integers(0, MAX_STORED_CHUNK_SIZE)).map(
        lambda t: pseudo_random(*t)
    ),
    st.tuples(st.binary(min_size=1, max_size=50), st.integers(0, 50_000)).map(
        lambda t: t[0] * t[1]
    ),
)


@settings(max_examples=60, deadline=None)
@given(chunk_contents)
def test_round_trip(data: bytes) -> None:
    key = key_for(data)
    sealed = seal_chunk(data, key)
    assert sealed.hash == hashlib.sha256(data).hexdigest()
    assert sealed.object == hashlib.sha256(sealed.ciphertext).hexdigest()
    assert sealed.stored_size == len(sealed.ciphertext)
    assert sealed.size == len(data)
    assert open_chunk(sealed.ciphertext, key, sealed.ref(0)) == data


def test_empty_and_incompressible_chunks_round_trip() -> None:
    """Up to the largest chunk any version wrote: a v1 file's 4 MiB chunks stay readable."""
    for data in (b"", pseudo_random("incompressible", MAX_STORED_CHUNK_SIZE)):
        ciphertext, key, ref = sealed_ref(data)
        assert ref.stored_size == 12 + len(data) + 1 + 16  # nonce + codec tag + GCM tag
        assert open_chunk(ciphertext, key, ref) == data


def test_identical_plaintext_gives_identical_object() -> None:
    data = b"the same bytes on two devices\n" * 1000
    first, second = seal_chunk(data, key_for(data)), seal_chunk(bytearray(data), key_for(data))
    assert first == second
    assert first.ciphertext == second.ciphertext


def test_different_plaintext_gives_different_objects() -> None:
    one, two = b"a" * 1000 + b"1", b"a" * 1000 + b"2"
    first, second = seal_chunk(one, key_for(one)), seal_chunk(two, key_for(two))
    assert first.hash != second.hash
    assert first.object != second.object
    assert first.ciphertext != second.ciphertext


def test_seal_chunk_is_compress_then_encrypt() -> None:
    data = b"compress me " * 1000
    key = key_for(data)
    ciphertext = seal_chunk(data, key).ciphertext
    assert len(ciphertext) < len(data) // 10
    # Decrypting by hand gives the codec tag, then the zstd frame of the plaintext.
    nonce, sealed = ciphertext[:12], ciphertext[12:]
    payload = AESGCM(key).decrypt(nonce, sealed, b"mountfs-chunk-v1")
    assert nonce == derive_nonce(key, payload)
    assert payload[0] == CODEC_ZSTD
    assert zstandard.ZstdDecompressor().decompress(payload[1:]) == data


def test_stale_plaintext_is_not_sealed_under_an_old_key() -> None:
    data = b"version one"
    expected = plain_hash(data)
    assert seal_chunk(data, key_for(data), expected_hash=expected).hash == expected
    with pytest.raises(StaleChunk, match="changed since it was hashed"):
        seal_chunk(b"version two", key_for(data), expected_hash=expected)


def test_sealed_chunk_repr_leaves_out_the_ciphertext() -> None:
    sealed = seal_chunk(b"x" * 100, key_for(b"x" * 100))
    assert sealed.ciphertext.hex() not in repr(sealed)


@pytest.mark.parametrize("index", [0, 1, 17, -17, -1])
def test_flipped_byte_is_refused_by_object_name(index: int) -> None:
    ciphertext, key, ref = sealed_ref(b"payload " * 500)
    tampered = bytearray(ciphertext)
    tampered[index] ^= 0x80
    with pytest.raises(CorruptChunk, match=f"object {ref.object}: content hashes to"):
        open_chunk(bytes(tampered), key, ref)


def test_flipped_byte_with_matching_name_is_refused_by_tag() -> None:
    # An attacker who can also rewrite the manifest's object name is stopped by GCM.
    ciphertext, key, ref = sealed_ref(b"payload " * 500)
    for index in range(len(ciphertext)):
        tampered = bytearray(ciphertext)
        tampered[index] ^= 0x01
        forged = dataclasses.replace(ref, object=object_name(tampered))
        with pytest.raises(CorruptChunk, match="fails authentication"):
            open_chunk(bytes(tampered), key, forged)


def test_truncated_object_is_refused() -> None:
    ciphertext, key, ref = sealed_ref(b"payload " * 500)
    with pytest.raises(CorruptChunk, match="bytes, ref says"):
        open_chunk(ciphertext[:-1], key, ref)
    truncated = ciphertext[:-1]
    forged = dataclasses.replace(ref, object=object_name(truncated), stored_size=len(truncated))
    with pytest.raises(CorruptChunk, match="fails authentication"):
        open_chunk(truncated, key, forged)


def test_wrong_key_is_refused() -> None:
    ciphertext, _, ref = sealed_ref(b"payload " * 500)
    with pytest.raises(CorruptChunk, match="fails authentication"):
        open_chunk(ciphertext, key_for(b"something else"), ref)


def test_ref_with_wrong_plaintext_hash_is_refused() -> None:
    ciphertext, key, ref = sealed_ref(b"payload " * 500)
    wrong = dataclasses.replace(ref, hash=ChunkHash("0" * 64))
    with pytest.raises(CorruptChunk, match="plaintext hashes to"):
        open_chunk(ciphertext, key, wrong)


def test_ref_with_wrong_size_is_refused() -> None:
    ciphertext, key, ref = sealed_ref(pseudo_random("size", 5000))
    with pytest.raises(CorruptChunk, match="5000 bytes, ref says 5001"):
        open_chunk(ciphertext, key, dataclasses.replace(ref, size=5001))
    # A smaller claimed size also bounds the decompression/raw output.
    with pytest.raises(CorruptChunk, match="exceeds 4999"):
        open_chunk(ciphertext, key, dataclasses.replace(ref, size=4999))


def test_crafted_bomb_under_a_valid_key_is_refused_before_inflating() -> None:
    """Someone who knows a plaintext gets its key and can encrypt anything under it; the
    size bound stops a decompression bomb before the plaintext hash check could."""
    target = b"a file the attacker knows"
    key = key_for(target)
    bomb = seal(key, bytes([CODEC_ZSTD]) + zstandard.ZstdCompressor().compress(bytes(64 * MiB)))
    ref = ChunkRef(0, len(target), plain_hash(target), object_name(bomb), len(bomb))
    with pytest.raises(CorruptChunk, match="declares 67108864 bytes, more than 25"):
        open_chunk(bomb, key, ref)


def test_default_thread_count_is_the_cpu_count() -> None:
    assert default_thread_count() >= 1
    assert ChunkPipeline().limiter.total_tokens == default_thread_count()


@pytest.mark.trio
async def test_async_pipeline_round_trips_off_the_trio_thread() -> None:
    pipeline = ChunkPipeline(threads=2)
    contents = [pseudo_random(f"async-{i}", 300_000 + i) for i in range(6)]
    contents += [b"text chunk " * (20_000 + i) for i in range(6)]
    results: dict[int, bytes] = {}
    peak = 0

    async def round_trip(index: int, data: bytes) -> None:
        key = key_for(data)
        digest = await pipeline.hash(data)
        sealed = await pipeline.seal(memoryview(data), key, expected_hash=digest)
        results[index] = await pipeline.open(sealed.ciphertext, key, sealed.ref(0))

    async def watch_limiter() -> None:
        nonlocal peak
        while True:
            peak = max(peak, pipeline.limiter.borrowed_tokens)
            await trio.sleep(0)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch_limiter)
        async with trio.open_nursery() as workers:
            for index, data in enumerate(contents):
                workers.start_soon(round_trip, index, data)
        nursery.cancel_scope.cancel()
    assert results == dict(enumerate(contents))
    assert 1 <= peak <= 2
    assert pipeline.limiter.borrowed_tokens == 0


@pytest.mark.trio
async def test_async_pipeline_raises_the_same_errors() -> None:
    pipeline = ChunkPipeline(threads=1)
    ciphertext, key, ref = sealed_ref(b"payload " * 500)
    with pytest.raises(CorruptChunk):
        await pipeline.open(ciphertext, key_for(b"other"), ref)
    with pytest.raises(StaleChunk):
        await pipeline.seal(b"new", key, expected_hash=ref.hash)
