"""Passwords, device tokens, chunk keys and the backend's two secrets.

- Passwords are hashed with argon2id (argon2-cffi defaults, RFC 9106 "low memory").
- A device token is 256 random bits, url-safe base64. Only its SHA-256 (hex) is stored, so
  a copy of the database does not let anyone act as a device.
- A chunk key is K = HMAC-SHA256(convergence secret, SHA-256 of the plaintext) (DESIGN.md,
  invariant 2): identical plaintext gives an identical key on every account, which is what
  lets the store deduplicate ciphertext. The secret never leaves the backend.
- Secrets are 32 random bytes, stored as 64 hex digits in a 0600 file (created at first
  start) or given in the environment. Losing the convergence secret makes every stored
  chunk unreadable; changing it breaks dedup with everything stored before.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from backend.durable import fsync_dir, makedirs_durably

__all__ = [
    "SECRET_BYTES",
    "Keyring",
    "hash_password",
    "load_or_create_secret",
    "new_token",
    "parse_secret",
    "token_digest",
    "verify_password",
]

SECRET_BYTES = 32
TOKEN_BYTES = 32  # 256 bits


@functools.cache
def _hasher() -> PasswordHasher:
    """argon2id with the library's defaults; built lazily (no import-time work)."""
    return PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    return _hasher().hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    """An argon2id PHC string for `password` (slow on purpose: call outside transactions)."""
    return _hasher().hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    """True if `password` matches; with `stored_hash=None` (unknown account) it still
    spends the same time on a dummy hash, so login timing does not reveal which names exist."""
    try:
        return _hasher().verify(stored_hash or _dummy_hash(), password) and bool(stored_hash)
    except (VerificationError, InvalidHashError):
        return False


def new_token() -> str:
    """A fresh device token: 256 random bits, url-safe base64 without padding."""
    return base64.urlsafe_b64encode(secrets.token_bytes(TOKEN_BYTES)).rstrip(b"=").decode()


def token_digest(token: str) -> str:
    """SHA-256 (hex) of a token: the only form the database keeps.

    Lookups are by this digest through a unique index, so no constant-time comparison is
    needed: the timing of an index probe can at most leak bits of the *digest* of a guess,
    and knowing digest prefixes does not help to find a token whose digest matches
    (that would need a SHA-256 preimage).
    """
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True, slots=True)
class Keyring:
    """Derives convergent chunk keys from the convergence secret (never exposed itself)."""

    convergence_secret: bytes

    def key(self, plaintext_hash: str) -> bytes:
        """K = HMAC-SHA256(secret, raw SHA-256 digest of the plaintext) — 32 bytes."""
        return hmac.digest(self.convergence_secret, bytes.fromhex(plaintext_hash), "sha256")

    def key_b64(self, plaintext_hash: str) -> str:
        """The key as standard base64, the wire form (protocol.md § Chunks)."""
        return base64.b64encode(self.key(plaintext_hash)).decode("ascii")

    def __repr__(self) -> str:
        return "Keyring(<secret>)"


def parse_secret(text: str, origin: str) -> bytes:
    """Decode a secret given as 64 hex digits; raise ValueError naming `origin` otherwise."""
    try:
        raw = bytes.fromhex(text.strip())
    except ValueError:
        raw = b""
    if len(raw) != SECRET_BYTES:
        raise ValueError(f"{origin}: expected {SECRET_BYTES * 2} hex digits")
    return raw


def load_or_create_secret(path: Path) -> bytes:
    """Read the secret in `path`, creating it (0600, fsynced) with fresh random bytes if absent.

    Creation uses O_EXCL, so two processes starting at once on the same directory end up
    with the same secret: the loser of the race reads the winner's file.
    """
    try:
        return parse_secret(path.read_text(encoding="ascii"), str(path))
    except FileNotFoundError:
        pass
    makedirs_durably(path.parent)
    value = secrets.token_bytes(SECRET_BYTES)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, value.hex().encode("ascii") + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # atomic, never overwrites a secret created meanwhile
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    fsync_dir(path.parent)
    return parse_secret(path.read_text(encoding="ascii"), str(path))
