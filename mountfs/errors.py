"""The client's exception hierarchy.

Every exception that mountfs raises on purpose derives from `MountfsError`, so a caller (the
FUSE errno map, the sync engine, the CLI) can tell "a condition we understand" from a bug.
Each class names one meaning; where it comes from is in the message, not in the class.

    MountfsError
    ├── InvalidManifest (also ValueError)  a manifest or chunk ref breaks the format rules
    └── ChunkError                         something is wrong with one chunk
        ├── CorruptChunk                   stored bytes fail verification (name, tag, hash, size)
        └── StaleChunk                     plaintext changed since its key was issued

Later layers add their own branches (not found, conflict, offline, ...) under `MountfsError`.
"""

from __future__ import annotations

__all__ = [
    "ChunkError",
    "CorruptChunk",
    "InvalidManifest",
    "MountfsError",
    "StaleChunk",
]


class MountfsError(Exception):
    """Root of every exception that mountfs raises deliberately."""


class InvalidManifest(MountfsError, ValueError):
    """A chunk ref or manifest breaks the rules of `docs/chunk-format.md`.

    Raised both for values built locally (a bug) and for wire data from the backend (a protocol
    violation); it is a `ValueError` too, because that is what it is at the boundary.
    """


class ChunkError(MountfsError):
    """A problem with one chunk's content."""


class CorruptChunk(ChunkError):
    """The bytes of a chunk object do not verify.

    The object name does not match the ciphertext, the GCM tag is wrong (wrong key, tampering,
    truncation), the framing is malformed, decompression would exceed its bound, or the
    plaintext does not match the hash and size of its ref. Retrying the same bytes cannot help;
    fetching the object again might (the local copy may be damaged).
    """


class StaleChunk(ChunkError):
    """The plaintext no longer hashes to the value its convergent key was issued for.

    Sealing it anyway would encrypt a second plaintext under the same key and nonce, which
    AES-GCM forbids; the caller must re-read the data, re-hash and ask for a new key.
    """
