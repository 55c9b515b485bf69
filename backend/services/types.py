"""Ids and frozen value objects that the services take and return.

The ids are `NewType`s over `str` (UUID strings in canonical lower-case form, or 64 hex
digits for hashes): free at run time, but mypy keeps a node id out of a revision id's
place. The dataclasses are what crosses the service boundary; pydantic wire models live
only in `backend.api.schemas`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import NewType

__all__ = [
    "Account",
    "AccountId",
    "ChunkRef",
    "Device",
    "DeviceId",
    "JournalEntry",
    "JournalOp",
    "JournalPage",
    "Me",
    "NamespaceId",
    "NewLogin",
    "Node",
    "NodeId",
    "NodeKind",
    "ObjectName",
    "Outcome",
    "Page",
    "PlainHash",
    "PreparedChunk",
    "Principal",
    "Revision",
    "RevisionId",
    "RevisionKind",
]

AccountId = NewType("AccountId", str)
DeviceId = NewType("DeviceId", str)
NamespaceId = NewType("NamespaceId", str)
NodeId = NewType("NodeId", str)
RevisionId = NewType("RevisionId", str)
PlainHash = NewType("PlainHash", str)
"""Lower-case hex SHA-256 of a chunk's plaintext (claimed by the client, never verified)."""
ObjectName = NewType("ObjectName", str)
"""Lower-case hex SHA-256 of a chunk's ciphertext: its name in the block store (verified)."""


class NodeKind(StrEnum):
    FILE = "file"
    DIR = "dir"
    SYMLINK = "symlink"


class RevisionKind(StrEnum):
    CONTENT = "content"
    TOMBSTONE = "tombstone"


class JournalOp(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    COMMIT = "commit"
    SHARE = "share"
    """A share offered to, changed for or taken from the journal's account (the entry's
    `share` says which; docs/protocol.md § Shares). Changes no node."""


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller: one device of one account, and what it may reach."""

    account_id: AccountId
    device_id: DeviceId
    namespace_id: NamespaceId
    root_id: NodeId


@dataclass(frozen=True, slots=True)
class Node:
    """A file, directory or symlink as it is now (or was, in a journal snapshot)."""

    id: NodeId
    namespace_id: NamespaceId
    parent_id: NodeId | None
    name: str
    kind: NodeKind
    mode: int
    mtime_ns: int
    size: int
    version: int
    head_revision: RevisionId | None
    target: str | None
    deleted: bool


@dataclass(frozen=True, slots=True)
class ChunkRef:
    """One manifest entry: plaintext [offset, offset+size) is stored in `object`."""

    offset: int
    size: int
    hash: PlainHash
    object: ObjectName
    stored_size: int


@dataclass(frozen=True, slots=True)
class Revision:
    """An immutable version of a file's content; `chunks` is None when not loaded."""

    id: RevisionId
    node_id: NodeId
    base_revision: RevisionId | None
    device_id: DeviceId
    kind: RevisionKind
    size: int
    mtime_ns: int
    created_at: datetime
    chunks: tuple[ChunkRef, ...] | None


@dataclass(frozen=True, slots=True)
class Outcome:
    """What an accepted change did.

    Attributes:
        node: the node after the change.
        revision: the revision the change made (commit; tombstone of a deleted file).
        created: False when the request was a replay answered from stored state.
        cursor: journal seq of the change's last entry (None for a replay).
    """

    node: Node
    revision: Revision | None = None
    created: bool = True
    cursor: int | None = None


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a directory listing; `next_cursor` is None on the last page."""

    items: tuple[Node, ...]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class Account:
    id: AccountId
    name: str


@dataclass(frozen=True, slots=True)
class NewLogin:
    """A freshly made device; `token` is shown this once and never stored."""

    account_id: AccountId
    device_id: DeviceId
    token: str


@dataclass(frozen=True, slots=True)
class Me:
    account_id: AccountId
    name: str
    device_id: DeviceId
    device_label: str
    root_id: NodeId
    namespace_id: NamespaceId
    quota_bytes: int | None
    used_bytes: int


@dataclass(frozen=True, slots=True)
class Device:
    id: DeviceId
    label: str
    created_at: datetime
    last_seen_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class PreparedChunk:
    """`object` (and its `stored_size`) are set iff a chunk with this plaintext is already
    readable by the account: enough to put it in a manifest without uploading."""

    hash: PlainHash
    object: ObjectName | None
    stored_size: int | None


@dataclass(frozen=True, slots=True)
class JournalEntry:
    seq: int
    op: JournalOp
    node: Node
    revision: Revision | None
    device_id: DeviceId | None  # None: made by the service (a restore), see tables.journal
    at: datetime
    share: dict[str, object] | None = None
    """For a `share` entry: the share as it was then (`id`, `owner`, `role`, `state`)."""


@dataclass(frozen=True, slots=True)
class JournalPage:
    entries: tuple[JournalEntry, ...]
    cursor: int
    has_more: bool
