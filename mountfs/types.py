"""Ids and value objects shared by every layer of the client.

The ids are `NewType`s over `str`/`int`: free at run time, but mypy stops a node id from being
passed where a revision id or an inode number is expected. The value objects are frozen,
slotted dataclasses that check their invariants on construction, so a `Manifest` that exists
is a valid one, whoever built it.

Wire form (`docs/protocol.md`): a `ChunkRef` is `{offset, size, hash, object, stored_size}`; a
manifest is the `{size, chunks}` part of a commit body or a revision. Answers also give each
ref a `key` (base64 of 32 bytes). Keys are *not* part of `ChunkRef`: a key is a function of
the plaintext hash (K = HMAC(secret, hash)), so the client keeps them in a separate
`hash -> key` mapping (`keys_from_wire`), the natural shape for the local state too. A
`ChunkRef` can then be logged, compared and committed without carrying secret material.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NewType, TypeGuard

from mountfs.errors import InvalidManifest

__all__ = [
    "KEY_SIZE",
    "Buffer",
    "ChunkHash",
    "ChunkKey",
    "ChunkRef",
    "Cursor",
    "InodeNo",
    "Manifest",
    "NodeId",
    "ObjectName",
    "RevisionId",
    "WireDict",
    "keys_from_wire",
]

NodeId = NewType("NodeId", str)
"""A node's UUID (client-generated UUIDv7, see `mountfs.ids.uuid7`)."""

RevisionId = NewType("RevisionId", str)
"""A revision's UUID (client-generated)."""

ChunkHash = NewType("ChunkHash", str)
"""Lowercase hex SHA-256 of a chunk's plaintext."""

ObjectName = NewType("ObjectName", str)
"""Lowercase hex SHA-256 of a chunk's ciphertext: its name in the block store."""

ChunkKey = NewType("ChunkKey", bytes)
"""The 32-byte convergent AES-256 key of one chunk, issued by the backend."""

InodeNo = NewType("InodeNo", int)
"""A FUSE inode number (local to one mount)."""

Cursor = NewType("Cursor", int)
"""A position in a namespace's journal: the last `seq` applied."""

WireDict = Mapping[str, object]
"""A decoded JSON object as it comes off the wire, before validation."""

Buffer = bytes | bytearray | memoryview
"""Bytes-like input accepted without copying (Python 3.11 has no `collections.abc.Buffer`)."""

KEY_SIZE = 32
"""Bytes in a `ChunkKey` (AES-256)."""

_HEX_SHA256 = re.compile(r"[0-9a-f]{64}")


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise InvalidManifest(message)


def _is_int(value: object) -> TypeGuard[int]:
    # bool is an int subclass; JSON `true` must not pass as 1.
    return isinstance(value, int) and not isinstance(value, bool)


def _is_hex_sha256(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and _HEX_SHA256.fullmatch(value) is not None


def _field(data: WireDict, name: str) -> object:
    try:
        return data[name]
    except KeyError:
        raise InvalidManifest(f"chunk ref lacks field {name!r}") from None


def _int_field(data: WireDict, name: str) -> int:
    value = _field(data, name)
    if not _is_int(value):
        raise InvalidManifest(f"chunk ref {name} must be an integer, got {value!r}")
    return value


def _hex_field(data: WireDict, name: str) -> str:
    value = _field(data, name)
    if not _is_hex_sha256(value):
        raise InvalidManifest(f"chunk ref {name} must be 64 lowercase hex digits, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class ChunkRef:
    """One chunk of a file's content, as named by a manifest.

    Attributes:
        offset: plaintext offset of the chunk in the file.
        size: plaintext length in bytes (0 only outside manifests, see `Manifest`).
        hash: SHA-256 of the plaintext; what the key is derived from.
        object: SHA-256 of the ciphertext; the object's name in the store.
        stored_size: length of the ciphertext (what the store holds and bills).
    """

    offset: int
    size: int
    hash: ChunkHash
    object: ObjectName
    stored_size: int

    def __post_init__(self) -> None:
        _require(_is_int(self.offset) and self.offset >= 0, f"bad chunk offset {self.offset!r}")
        _require(_is_int(self.size) and self.size >= 0, f"bad chunk size {self.size!r}")
        _require(
            _is_int(self.stored_size) and self.stored_size >= 1,
            f"bad chunk stored_size {self.stored_size!r}",
        )
        _require(_is_hex_sha256(self.hash), f"bad chunk hash {self.hash!r}")
        _require(_is_hex_sha256(self.object), f"bad chunk object name {self.object!r}")

    @property
    def end(self) -> int:
        """Plaintext offset just past this chunk."""
        return self.offset + self.size

    def to_wire(self) -> dict[str, int | str]:
        """The JSON object of `docs/protocol.md` (without `key`)."""
        return {
            "offset": self.offset,
            "size": self.size,
            "hash": self.hash,
            "object": self.object,
            "stored_size": self.stored_size,
        }

    @classmethod
    def from_wire(cls, data: WireDict) -> ChunkRef:
        """Parse and validate a wire ref; extra fields (such as `key`) are ignored.

        Raises:
            InvalidManifest: a field is missing or has the wrong type or value.
        """
        return cls(
            offset=_int_field(data, "offset"),
            size=_int_field(data, "size"),
            hash=ChunkHash(_hex_field(data, "hash")),
            object=ObjectName(_hex_field(data, "object")),
            stored_size=_int_field(data, "stored_size"),
        )


@dataclass(frozen=True, slots=True)
class Manifest:
    """The content of one file revision: its size and its chunks in order.

    Invariants (checked on construction): the chunks are contiguous from offset 0, none is
    empty (chunking never makes one; an empty file has no chunks), and their sizes add up to
    `size`.
    """

    size: int
    chunks: tuple[ChunkRef, ...]

    def __post_init__(self) -> None:
        _require(_is_int(self.size) and self.size >= 0, f"bad manifest size {self.size!r}")
        _require(isinstance(self.chunks, tuple), "manifest chunks must be a tuple")
        expected = 0
        for index, ref in enumerate(self.chunks):
            _require(isinstance(ref, ChunkRef), f"manifest chunk {index} is not a ChunkRef")
            _require(
                ref.offset == expected,
                f"manifest chunk {index} starts at {ref.offset}, expected {expected}",
            )
            _require(ref.size > 0, f"manifest chunk {index} is empty")
            expected = ref.end
        _require(
            expected == self.size,
            f"manifest chunks cover {expected} bytes but size is {self.size}",
        )

    def chunk_at(self, offset: int) -> int:
        """Index of the chunk that holds byte `offset` (binary search).

        Raises:
            IndexError: `offset` is outside `[0, size)`.
        """
        if not 0 <= offset < self.size:
            raise IndexError(f"offset {offset} outside file of {self.size} bytes")
        return bisect.bisect_right(self.chunks, offset, key=lambda ref: ref.offset) - 1

    def to_wire(self) -> dict[str, object]:
        """`{"size": …, "chunks": […]}`, ready to merge into a commit body."""
        return {"size": self.size, "chunks": [ref.to_wire() for ref in self.chunks]}

    @classmethod
    def from_wire(cls, data: WireDict) -> Manifest:
        """Parse the `size` and `chunks` of a commit body or revision; other fields are ignored.

        Raises:
            InvalidManifest: malformed or inconsistent.
        """
        size, chunks = data.get("size"), data.get("chunks")
        if not _is_int(size):
            raise InvalidManifest(f"manifest size must be an integer, got {size!r}")
        if not isinstance(chunks, list):
            raise InvalidManifest("manifest chunks must be a list")
        return cls(size, tuple(ChunkRef.from_wire(_as_object(item)) for item in chunks))


def _as_object(item: object) -> WireDict:
    if not isinstance(item, Mapping):
        raise InvalidManifest(f"chunk ref must be a JSON object, got {type(item).__name__}")
    return item


def keys_from_wire(chunks: Sequence[object]) -> dict[ChunkHash, ChunkKey]:
    """The `hash -> key` mapping carried by the refs of a revision answer.

    Args:
        chunks: the `chunks` list of a revision or journal entry, each ref with `key`.

    Raises:
        InvalidManifest: a key is missing, not base64, not 32 bytes, or two refs with the
            same hash carry different keys.
    """
    keys: dict[ChunkHash, ChunkKey] = {}
    for item in chunks:
        ref = _as_object(item)
        hash_, encoded = _hex_field(ref, "hash"), ref.get("key")
        if not isinstance(encoded, str):
            raise InvalidManifest(f"chunk {hash_} has no key")
        try:
            key = ChunkKey(base64.b64decode(encoded, validate=True))
        except binascii.Error:
            raise InvalidManifest(f"key of chunk {hash_} is not base64") from None
        _require(len(key) == KEY_SIZE, f"key of chunk {hash_} has {len(key)} bytes")
        _require(keys.setdefault(ChunkHash(hash_), key) == key, f"two keys for chunk {hash_}")
    return keys
