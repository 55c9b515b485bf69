"""AES-256-GCM sealing: determinism, the nonce rule, and refusal of anything tampered."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mountfs.chunks import crypto
from mountfs.errors import CorruptChunk

KEY = hashlib.sha256(b"test-crypto-key").digest()
OTHER_KEY = hashlib.sha256(b"test-crypto-other-key").digest()
PAYLOAD = b"\x01" + b"framed payload " * 10


def test_nonce_is_the_documented_derivation() -> None:
    expected = hashlib.sha256(b"mountfs-nonce-v1" + KEY + PAYLOAD).digest()[:12]
    assert crypto.derive_nonce(KEY, PAYLOAD) == expected


def test_seal_is_nonce_then_plain_aes_gcm_with_derived_nonce_and_aad() -> None:
    ciphertext = crypto.seal(KEY, PAYLOAD)
    assert len(ciphertext) == crypto.NONCE_SIZE + len(PAYLOAD) + crypto.TAG_SIZE
    nonce = crypto.derive_nonce(KEY, PAYLOAD)
    direct = AESGCM(KEY).encrypt(nonce, PAYLOAD, b"mountfs-chunk-v1")
    assert ciphertext == nonce + direct


def test_two_payloads_under_one_key_never_share_a_nonce() -> None:
    """Compressor drift (other bytes for one plaintext) must not reuse a (key, nonce) pair."""
    other = b"\x01" + b"framed differently " * 10
    assert crypto.seal(KEY, PAYLOAD)[:12] != crypto.seal(KEY, other)[:12]


def test_seal_is_deterministic_and_open_inverts_it() -> None:
    ciphertext = crypto.seal(KEY, PAYLOAD)
    assert crypto.seal(KEY, memoryview(PAYLOAD)) == ciphertext
    assert crypto.open(KEY, ciphertext) == PAYLOAD


def test_wrong_key_is_refused() -> None:
    with pytest.raises(CorruptChunk, match="fails authentication"):
        crypto.open(OTHER_KEY, crypto.seal(KEY, PAYLOAD))


def test_every_flipped_byte_is_refused() -> None:
    ciphertext = crypto.seal(KEY, PAYLOAD)
    for index in range(len(ciphertext)):
        tampered = bytearray(ciphertext)
        tampered[index] ^= 0x01
        with pytest.raises(CorruptChunk):
            crypto.open(KEY, bytes(tampered))


@pytest.mark.parametrize("keep", [0, 1, 11, 12, 27, 28, 29, -1])
def test_truncated_or_extended_ciphertext_is_refused(keep: int) -> None:
    ciphertext = crypto.seal(KEY, PAYLOAD)
    with pytest.raises(CorruptChunk):
        crypto.open(KEY, ciphertext[:keep])
    with pytest.raises(CorruptChunk):
        crypto.open(KEY, ciphertext + b"\0")


def test_another_format_version_does_not_verify() -> None:
    nonce = crypto.derive_nonce(KEY, PAYLOAD)
    other_aad = nonce + AESGCM(KEY).encrypt(nonce, PAYLOAD, b"mountfs-chunk-v2")
    with pytest.raises(CorruptChunk):
        crypto.open(KEY, other_aad)


@pytest.mark.parametrize("size", [0, 16, 24, 31, 33])
def test_only_256_bit_keys_are_accepted(size: int) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        crypto.seal(bytes(size), PAYLOAD)
    with pytest.raises(ValueError, match="32 bytes"):
        crypto.open(bytes(size), b"\0" * 40)
