"""Rules on single values that every change must pass before it touches the database.

The wire schemas (`backend.api.schemas`) already reject wrong types and ranges; these checks
run again in the services so that no caller (batched ops, future internal callers) can
bypass them, and they own the rules that need more than a type: names, targets, manifests.
"""

from __future__ import annotations

from collections.abc import Sequence

from backend.services.errors import BadRequest, FileTooLarge, InvalidName
from backend.services.types import ChunkRef, NodeKind

__all__ = [
    "MAX_BLOCK_BYTES",
    "MAX_MODE",
    "MAX_NAME_BYTES",
    "MAX_TARGET_BYTES",
    "MIN_CHUNK_BYTES",
    "check_manifest",
    "check_mode",
    "check_name",
    "check_target",
    "max_refs",
]

MAX_NAME_BYTES = 255
MAX_TARGET_BYTES = 4096
MAX_MODE = 0o7777
MAX_BLOCK_BYTES = 16 * 1024 * 1024
"""Largest stored (ciphertext) object, and largest block PUT body."""
MIN_CHUNK_BYTES = 256 * 1024
"""Smallest chunk the client's CDC cuts (all but the last): bounds refs per byte of file."""


def check_name(name: str) -> None:
    """Refuse names a POSIX directory entry cannot hold (protocol.md: `invalid_name`)."""
    if name in ("", ".", ".."):
        raise InvalidName(f"{name!r} is not a valid name")
    if "/" in name or "\x00" in name:
        raise InvalidName("a name may not contain '/' or NUL")
    if _utf8_len(name) > MAX_NAME_BYTES:
        raise InvalidName(f"a name is at most {MAX_NAME_BYTES} bytes of UTF-8")


def check_mode(mode: int) -> None:
    if not 0 <= mode <= MAX_MODE:
        raise BadRequest("mode must be permission bits only (0..0o7777)")


def check_target(kind: NodeKind, target: str | None) -> None:
    """A symlink needs a target of 1..4096 bytes; other kinds must not have one."""
    if kind is not NodeKind.SYMLINK:
        if target is not None:
            raise BadRequest("only a symlink has a target")
        return
    if target is None or target == "":
        raise BadRequest("a symlink needs a non-empty target")
    if "\x00" in target:
        raise BadRequest("a symlink target may not contain NUL")
    if _utf8_len(target) > MAX_TARGET_BYTES:
        raise BadRequest(f"a symlink target is at most {MAX_TARGET_BYTES} bytes")


def max_refs(size: int) -> int:
    """Most refs a manifest of `size` bytes may have: one per MIN_CHUNK_BYTES, plus the tail.

    Keeps the rows a commit creates proportional to the bytes it counts against the quota.
    """
    return size // MIN_CHUNK_BYTES + 1


def check_manifest(size: int, refs: Sequence[ChunkRef], max_file_bytes: int) -> None:
    """Refuse a commit whose manifest cannot describe a file of `size` bytes.

    Refs must be contiguous from offset 0 and add up to `size`; stored objects are at most
    MAX_BLOCK_BYTES; there are at most `max_refs(size)` of them.
    """
    if size < 0:
        raise BadRequest("size must not be negative")
    if size > max_file_bytes:
        raise FileTooLarge(f"files are limited to {max_file_bytes} bytes")
    if len(refs) > max_refs(size):
        raise BadRequest(f"at most {max_refs(size)} chunk refs for {size} bytes")
    offset = 0
    for i, ref in enumerate(refs):
        if ref.offset != offset:
            raise BadRequest(f"chunks[{i}].offset is {ref.offset}, expected {offset}")
        if ref.size < 0:
            raise BadRequest(f"chunks[{i}].size must not be negative")
        if not 0 < ref.stored_size <= MAX_BLOCK_BYTES:
            raise BadRequest(f"chunks[{i}].stored_size must be 1..{MAX_BLOCK_BYTES}")
        offset += ref.size
    if offset != size:
        raise BadRequest(f"chunk sizes add up to {offset}, not to size {size}")


def _utf8_len(text: str) -> int:
    """Length in UTF-8 bytes; lone surrogates (possible via JSON escapes) count as too long."""
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError:
        return MAX_TARGET_BYTES + 1
