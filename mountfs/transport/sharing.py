"""Wire shapes of shares and public links (docs/protocol.md § Shares, § Public links) as
the client sees them; `ApiClient` (mountfs.transport.api) makes the calls."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Followed", "Members", "RemoteLink", "RemoteShare"]


@dataclass(frozen=True, slots=True)
class RemoteShare:
    """A share offered to or by this account.

    Attributes:
        node_id, namespace_id: the shared folder or file (the root of its namespace).
        state: "pending", "accepted" or "revoked".
        mount_parent_id, mount_name: where the recipient placed it in its own tree.
    """

    id: str
    node_id: str
    namespace_id: str
    name: str
    kind: str
    owner: str
    recipient: str
    role: str
    state: str
    created_at: str
    accepted_at: str | None
    revoked_at: str | None
    changed_at: str
    mount_parent_id: str | None
    mount_name: str | None

    @classmethod
    def from_wire(cls, body: dict[str, Any]) -> RemoteShare:
        return cls(**{field: body[field] for field in cls.__dataclass_fields__})


@dataclass(frozen=True, slots=True)
class Members:
    """Who has access to a shared folder: its owner and the live shares."""

    owner: str
    shares: list[RemoteShare]


@dataclass(frozen=True, slots=True)
class RemoteLink:
    """A public link; `url` only in the answer that made it (the server keeps a hash)."""

    id: str
    node_id: str
    name: str
    kind: str
    url: str | None
    state: str
    created_at: str
    expires_at: str | None
    has_password: bool
    max_downloads: int | None
    downloads: int
    revoked_at: str | None

    @classmethod
    def from_wire(cls, body: dict[str, Any]) -> RemoteLink:
        fields: dict[str, Any] = {field: body.get(field) for field in cls.__dataclass_fields__}
        return cls(**fields)


@dataclass(frozen=True, slots=True)
class Followed:
    """A namespace that this account's devices follow besides its own tree: a folder or
    file it shared (role "owner"), or a share it accepted (placed at `mount_parent_id` /
    `mount_name` in its tree)."""

    namespace_id: str
    root_id: str
    role: str
    share_id: str | None
    mount_parent_id: str | None
    mount_name: str | None

    @classmethod
    def from_wire(cls, body: dict[str, Any]) -> Followed:
        return cls(**{field: body[field] for field in cls.__dataclass_fields__})
