"""Wire models of shares, public links and account preferences (docs/protocol.md
§ Shares, § Public links). Kept apart from `backend.api.schemas` so that sharing stays one
feature in a few files; the base classes and field types are the same."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from backend.api.schemas import INT64, AccountName, Model, NodeName, Out, Password, Text
from backend.services.links import Link, LinkState
from backend.services.shares import Followed, Share, ShareState
from backend.services.types import NodeId, NodeKind

__all__ = [
    "AccountDeleteIn",
    "FollowedOut",
    "FollowedListOut",
    "LinkIn",
    "LinkOut",
    "LinksOut",
    "MembersOut",
    "PreferencesIn",
    "PreferencesOut",
    "ShareAcceptIn",
    "ShareIn",
    "ShareOut",
    "SharesOut",
]


class ShareIn(Model):
    """`POST /nodes/{id}/shares`: offer the node to another account (or change its role)."""

    account: AccountName
    role: Literal["viewer", "editor"]


class ShareAcceptIn(Model):
    """`POST /shares/{id}/accept`: where the share appears in the recipient's own tree."""

    parent_id: uuid.UUID | None = None
    name: NodeName | None = None

    def parent(self) -> NodeId | None:
        return NodeId(str(self.parent_id)) if self.parent_id else None


class ShareOut(Out):
    id: str
    node_id: str
    namespace_id: str
    name: str
    kind: NodeKind
    owner: str
    recipient: str
    role: Literal["viewer", "editor"]
    state: ShareState
    created_at: datetime
    accepted_at: datetime | None
    revoked_at: datetime | None
    changed_at: datetime
    mount_parent_id: str | None
    mount_name: str | None

    @classmethod
    def of(cls, share: Share) -> ShareOut:
        return cls(
            id=share.id,
            node_id=share.node_id,
            namespace_id=share.namespace_id,
            name=share.name,
            kind=share.kind,
            owner=share.owner,
            recipient=share.recipient,
            role="editor" if share.role.value == "editor" else "viewer",
            state=share.state,
            created_at=share.created_at,
            accepted_at=share.accepted_at,
            revoked_at=share.revoked_at,
            changed_at=share.changed_at,
            mount_parent_id=share.mount_parent_id,
            mount_name=share.mount_name,
        )


class MembersOut(Out):
    """`GET /nodes/{id}/shares`: the owner and the live shares of the shared folder."""

    owner: str
    shares: list[ShareOut]


class SharesOut(Out):
    """`GET /shares`: shares offered to the caller (revoked ones included) and the live
    shares of the caller's own folders."""

    incoming: list[ShareOut]
    outgoing: list[ShareOut]


class FollowedOut(Out):
    namespace_id: str
    root_id: str
    role: Literal["owner", "editor", "viewer"]
    share_id: str | None
    mount_parent_id: str | None
    mount_name: str | None

    @classmethod
    def of(cls, item: Followed) -> FollowedOut:
        role: Literal["owner", "editor", "viewer"] = (
            "owner"
            if item.role.value == "owner"
            else "editor"
            if item.role.value == "editor"
            else "viewer"
        )
        return cls(
            namespace_id=item.namespace_id,
            root_id=item.root_id,
            role=role,
            share_id=item.share_id,
            mount_parent_id=item.mount_parent_id,
            mount_name=item.mount_name,
        )


class FollowedListOut(Out):
    """`GET /namespaces`: the namespaces a device follows besides the account's own."""

    namespaces: list[FollowedOut]


class PreferencesIn(Model):
    auto_accept_shares: bool


class PreferencesOut(Out):
    auto_accept_shares: bool


class AccountDeleteIn(Model):
    password: Annotated[Text, StringConstraints(max_length=1024)]


class LinkIn(Model):
    """`POST /nodes/{id}/links`. `expires_in` seconds from now (absent: never);
    `max_downloads` (absent: unlimited)."""

    expires_in: Annotated[int, Field(ge=1, le=10 * 365 * 24 * 3600)] | None = None
    password: Password | None = None
    max_downloads: Annotated[int, Field(ge=1, le=INT64)] | None = None


class LinkOut(Out):
    """A public link. `url` (with the token) only in the answer that created it: the
    server keeps only the token's hash."""

    id: str
    node_id: str
    name: str
    kind: NodeKind
    url: str | None = None
    state: LinkState
    created_at: datetime
    expires_at: datetime | None
    has_password: bool
    max_downloads: int | None
    downloads: int
    revoked_at: datetime | None

    @classmethod
    def of(cls, link: Link, url: str | None = None) -> LinkOut:
        return cls(
            id=link.id,
            node_id=link.node_id,
            name=link.name,
            kind=link.kind,
            url=url,
            state=link.state,
            created_at=link.created_at,
            expires_at=link.expires_at,
            has_password=link.has_password,
            max_downloads=link.max_downloads,
            downloads=link.downloads,
            revoked_at=link.revoked_at,
        )


class LinksOut(Out):
    links: list[LinkOut]
