"""AES-256-GCM sealing of framed chunk payloads under convergent keys.

The key K of a chunk is HMAC-SHA256(convergence secret, SHA-256(plaintext)); the backend holds
the secret and hands K out (`POST /chunks/prepare`). The client never derives K. Everything
else is fixed by the format (`docs/chunk-format.md`, version 1):

    nonce  = SHA-256(b"mountfs-nonce-v1" || K || framed payload)[:12]
    AAD    = b"mountfs-chunk-v1"
    object = nonce || AES-256-GCM(K, nonce, framed payload, AAD)   # 12 + payload + 16-byte tag

The nonce is a function of the key *and* the exact bytes encrypted. Nothing random is
involved, so identical plaintext framed identically gives an identical object on every
client and the store dedups it. But if two clients frame one plaintext differently (another
zstd build may compress the same input to other bytes), the two payloads get different
nonces: one (key, nonce) pair never encrypts two different messages, which is what GCM's
security rests on. The nonce is stored in front of the ciphertext for the reader.
"""

from __future__ import annotations

import hashlib

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mountfs.errors import CorruptChunk
from mountfs.types import KEY_SIZE, Buffer

__all__ = ["AAD", "NONCE_DOMAIN", "NONCE_SIZE", "TAG_SIZE", "derive_nonce", "open", "seal"]

NONCE_DOMAIN = b"mountfs-nonce-v1"
"""Prefix hashed with K to make the nonce; a new format version gets a new prefix."""

AAD = b"mountfs-chunk-v1"
"""Associated data of every chunk: a ciphertext of another format version never verifies."""

NONCE_SIZE = 12
TAG_SIZE = 16


def derive_nonce(key: bytes, framed_payload: Buffer) -> bytes:
    """The 96-bit GCM nonce for encrypting `framed_payload` under `key`."""
    digest = hashlib.sha256(NONCE_DOMAIN)
    digest.update(key)
    digest.update(framed_payload)
    return digest.digest()[:NONCE_SIZE]


def seal(key: bytes, framed_payload: Buffer) -> bytes:
    """Encrypt and authenticate one framed payload; `len(result) == 12 + len(payload) + 16`.

    The caller must make sure `key` was issued for this payload's plaintext (see
    `mountfs.chunks.pipeline.seal_chunk`, which checks).

    Raises:
        ValueError: `key` is not 32 bytes.
    """
    nonce = derive_nonce(_checked(key), framed_payload)
    return nonce + AESGCM(key).encrypt(nonce, framed_payload, AAD)


def open(key: bytes, ciphertext: Buffer) -> bytes:
    """Verify and decrypt one chunk object, returning the framed payload.

    Named after the operation (seal/open) it pairs with; call it as `crypto.open`.

    Raises:
        CorruptChunk: the tag does not verify (wrong key, any flipped bit, truncation).
        ValueError: `key` is not 32 bytes.
    """
    view = memoryview(ciphertext)
    if view.nbytes < NONCE_SIZE + TAG_SIZE:
        raise CorruptChunk(f"chunk object of {view.nbytes} bytes is too short")
    try:
        return AESGCM(_checked(key)).decrypt(view[:NONCE_SIZE], view[NONCE_SIZE:], AAD)
    except InvalidTag:
        raise CorruptChunk("chunk ciphertext fails authentication (wrong key or damaged)") from None


def _checked(key: bytes) -> bytes:
    # AESGCM also accepts 16- and 24-byte keys; the format only allows AES-256.
    if len(key) != KEY_SIZE:
        raise ValueError(f"chunk key must be {KEY_SIZE} bytes, got {len(key)}")
    return key
