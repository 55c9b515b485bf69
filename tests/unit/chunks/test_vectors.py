"""The pinned format: any change of hashing, framing, encryption or chunking fails here.

If a failure here is an intended format change, see `vectors.py` for how to regenerate —
and remember that every stored chunk and every other client still uses the old format.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
import zstandard
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mountfs.chunks import cdc
from mountfs.chunks.pipeline import open_chunk, seal_chunk
from mountfs.types import ChunkHash, ChunkRef, ObjectName
from tests.unit.chunks.vectors import build_input, chunk_vector, load

VECTORS = load()
CHUNKS: list[dict[str, Any]] = VECTORS["chunks"]
CDC: list[dict[str, Any]] = VECTORS["cdc"]


def test_vectors_cover_every_case() -> None:
    assert {v["codec"] for v in CHUNKS} == {0, 1}
    assert any("ciphertext" in v and v["codec"] == 1 for v in CHUNKS)
    assert any(v["size"] == 0 for v in CHUNKS)
    assert any(v["size"] == cdc.MAX_STORED_CHUNK_SIZE for v in CHUNKS)  # a v1 max-size chunk


@pytest.mark.parametrize("vector", CHUNKS, ids=[v["name"] for v in CHUNKS])
def test_chunk_vector(vector: dict[str, Any]) -> None:
    data = build_input(vector["input"])
    key = bytes.fromhex(vector["key"])
    sealed = seal_chunk(data, key)
    assert len(data) == vector["size"]
    assert sealed.hash == vector["hash"]
    assert sealed.object == vector["object"]
    assert sealed.stored_size == vector["stored_size"]
    if "ciphertext" in vector:
        assert sealed.ciphertext.hex() == vector["ciphertext"]
    ref = ChunkRef(
        0, len(data), ChunkHash(vector["hash"]), ObjectName(vector["object"]), sealed.stored_size
    )
    assert open_chunk(sealed.ciphertext, key, ref) == data
    assert chunk_vector(vector["name"], vector["input"]) == vector


@pytest.mark.parametrize(
    "vector", [v for v in CHUNKS if "ciphertext" in v], ids=lambda v: str(v["name"])
)
def test_pinned_ciphertext_decrypts_by_the_written_spec(vector: dict[str, Any]) -> None:
    """Independent of `mountfs.chunks`: what docs/chunk-format.md says, done by hand."""
    key = bytes.fromhex(vector["key"])
    ciphertext = bytes.fromhex(vector["ciphertext"])
    assert hashlib.sha256(ciphertext).hexdigest() == vector["object"]
    nonce = ciphertext[:12]
    framed = AESGCM(key).decrypt(nonce, ciphertext[12:], b"mountfs-chunk-v1")
    assert nonce == hashlib.sha256(b"mountfs-nonce-v1" + key + framed).digest()[:12]
    assert framed[0] == vector["codec"]
    body = framed[1:]
    plaintext = zstandard.ZstdDecompressor().decompress(body) if framed[0] == 1 else body
    assert plaintext == build_input(vector["input"])
    assert hashlib.sha256(plaintext).hexdigest() == vector["hash"]


@pytest.mark.parametrize("vector", CDC, ids=[v["name"] for v in CDC])
def test_cdc_vector(vector: dict[str, Any]) -> None:
    spans = cdc.cut(build_input(vector["input"]), _params(vector))
    assert [[s.offset, s.length] for s in spans] == vector["spans"]


def _params(vector: dict[str, Any]) -> cdc.CdcParams:
    params = dict(vector["params"])
    level = params.pop("normalization_level")
    return cdc.CdcParams(**params, normalization=level)


def test_default_cdc_vector_uses_the_default_params() -> None:
    assert _params(CDC[0]) == cdc.DEFAULT_PARAMS
    assert (_params(CDC[0]).normalization, cdc.NORMALIZATION_LEVEL) == (2, 2)


def test_v1_boundaries_stay_pinned() -> None:
    """v1 is what files written before v2 hold; the vector says exactly what that was."""
    v1 = next(v for v in CDC if v["name"] == "v1-8MiB-random")
    assert _params(v1) == cdc.V1_PARAMS == cdc.CdcParams(256 << 10, 1 << 20, 4 << 20, 1)
