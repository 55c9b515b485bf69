"""Public links: an unguessable URL to a file or folder, optionally expiring, protected by
a password and limited in downloads (docs/backend.md "Public links").

- The token is 192 random bits (url-safe base64, 32 characters); the database keeps only
  its SHA-256, so a copy of the database does not reveal working links, and the URL is
  shown once, when the link is made.
- Who may make one: anyone who may write the node (its owner, or an editor of the share it
  is in). The link keeps working only while its maker still may: a link made by an editor
  stops when the share is revoked, and every link of a deleted account is revoked.
- `resolve` turns a token into what it reaches, or says why not: unknown and revoked
  tokens (and deleted content) are the same `NotFound` (so tokens cannot be probed for
  ever having existed), an expired link is `LinkExpired`, a used-up one `LinkExhausted`.
- A link reaches its node and, for a folder, everything below it, never anything else
  (`node_in_link`).
- Downloads are counted with a conditional UPDATE, so concurrent ones cannot exceed the
  limit. With a limit, every download request counts (resumes too: ranges that skip byte
  0 must not get around it); without one, only requests that start at byte 0 are counted
  (`api/routes/web.py`).
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import Connection, or_, select, update

from backend.db.tables import link, namespace, node, revision, share
from backend.services import access
from backend.services.clock import as_utc, utcnow
from backend.services.errors import BadRequest, Conflict, NotFound, ServiceError
from backend.services.rows import manifest_from_json, node_from_row
from backend.services.types import AccountId, ChunkRef, Node, NodeId, NodeKind, Principal

__all__ = [
    "MAX_LISTING",
    "Link",
    "LinkExhausted",
    "LinkExpired",
    "LinkState",
    "ListedFile",
    "count_download",
    "create",
    "file_chunks",
    "folder_files",
    "mine",
    "node_in_link",
    "resolve",
    "revoke",
    "token_digest",
]

TOKEN_BYTES = 24  # 192 bits
MAX_LISTING = 10_000
"""Files shown on a folder link's page and put in its zip (a bound on one request's work)."""


class LinkState(StrEnum):
    ACTIVE = "active"
    EXPIRED = "expired"
    EXHAUSTED = "exhausted"
    REVOKED = "revoked"


class LinkExpired(ServiceError):
    pass


class LinkExhausted(ServiceError):
    pass


@dataclass(frozen=True, slots=True)
class Link:
    id: str
    node_id: NodeId
    name: str
    kind: NodeKind
    created_by: AccountId
    created_at: datetime
    expires_at: datetime | None
    password_hash: str | None
    max_downloads: int | None
    downloads: int
    revoked_at: datetime | None

    @property
    def has_password(self) -> bool:
        return self.password_hash is not None

    @property
    def state(self) -> LinkState:
        if self.revoked_at is not None:
            return LinkState.REVOKED
        if self.expires_at is not None and self.expires_at <= utcnow():
            return LinkState.EXPIRED
        if self.max_downloads is not None and self.downloads >= self.max_downloads:
            return LinkState.EXHAUSTED
        return LinkState.ACTIVE


_LINKS = select(link, node.c.name.label("node_name"), node.c.kind.label("node_kind")).join(
    node, node.c.id == link.c.node_id
)


def _from_row(row: object) -> Link:
    m = row._mapping  # type: ignore[attr-defined]
    return Link(
        id=m["id"],
        node_id=NodeId(m["node_id"]),
        name=m["node_name"],
        kind=NodeKind(m["node_kind"]),
        created_by=AccountId(m["created_by"]),
        created_at=as_utc(m["created_at"]),
        expires_at=as_utc(m["expires_at"]) if m["expires_at"] else None,
        password_hash=m["password_hash"],
        max_downloads=m["max_downloads"],
        downloads=int(m["downloads"]),
        revoked_at=as_utc(m["revoked_at"]) if m["revoked_at"] else None,
    )


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def create(
    conn: Connection,
    who: Principal,
    node_id: NodeId,
    expires_in: int | None,
    password_hash: str | None,
    max_downloads: int | None,
) -> tuple[Link, str]:
    """Make a link to a file or folder the caller may write; returns it and its token."""
    target = access.node_for_write(conn, who, node_id)
    if target.deleted:
        raise Conflict("a deleted node cannot be linked", current=target)
    if target.kind is NodeKind.SYMLINK:
        raise BadRequest("a symlink cannot be linked; link a file or a folder")
    token = new_token()
    now = utcnow()
    link_id = str(uuid.uuid4())
    conn.execute(
        link.insert().values(
            id=link_id,
            node_id=target.id,
            token_hash=token_digest(token),
            password_hash=password_hash,
            created_by=who.account_id,
            created_at=now,
            expires_at=now + timedelta(seconds=expires_in) if expires_in else None,
            max_downloads=max_downloads,
            downloads=0,
        )
    )
    return _load(conn, link_id), token


def _load(conn: Connection, link_id: str) -> Link:
    row = conn.execute(_LINKS.where(link.c.id == link_id)).first()
    if row is None:
        raise NotFound("no such link")
    return _from_row(row)


def mine(conn: Connection, who: Principal) -> list[Link]:
    """Links the caller made, oldest first (revoked and expired ones included)."""
    rows = conn.execute(
        _LINKS.where(link.c.created_by == who.account_id).order_by(link.c.created_at, link.c.id)
    ).all()
    return [_from_row(r) for r in rows]


def revoke(conn: Connection, who: Principal, link_id: str) -> Link:
    """Revoke a link made by the caller, or any link to a node the caller owns."""
    found = _load(conn, link_id)
    if found.created_by != who.account_id:
        ns = conn.execute(select(node.c.namespace_id).where(node.c.id == found.node_id)).scalar()
        owner = conn.execute(
            select(namespace.c.owner_account_id).where(namespace.c.id == ns)
        ).scalar()
        if owner != who.account_id:
            raise NotFound("no such link")
    if found.revoked_at is None:
        conn.execute(update(link).where(link.c.id == link_id).values(revoked_at=utcnow()))
    return _load(conn, link_id)


def resolve(conn: Connection, token: str) -> tuple[Link, Node]:
    """The link named by `token` and its node, if it may be used now (module docstring)."""
    row = conn.execute(_LINKS.where(link.c.token_hash == token_digest(token))).first()
    if row is None:
        raise NotFound("this link does not exist or was revoked")
    found = _from_row(row)
    target = node_from_row(conn.execute(select(node).where(node.c.id == found.node_id)).one())
    if found.revoked_at is not None or target.deleted or not _maker_may(conn, found, target):
        raise NotFound("this link does not exist or was revoked")
    if found.state is LinkState.EXPIRED:
        raise LinkExpired("this link has expired")
    return found, target


def _maker_may(conn: Connection, found: Link, target: Node) -> bool:
    """The maker still owns the node's namespace, or still holds an accepted editor share
    of it."""
    owner = conn.execute(
        select(namespace.c.owner_account_id).where(namespace.c.id == target.namespace_id)
    ).scalar()
    if owner == found.created_by:
        return True
    role = conn.execute(
        select(share.c.role).where(
            share.c.namespace_id == target.namespace_id,
            share.c.account_id == found.created_by,
            share.c.revoked_at.is_(None),
            share.c.accepted_at.is_not(None),
        )
    ).scalar()
    return role == access.Role.EDITOR.value


def count_download(conn: Connection, found: Link) -> None:
    """Count one download; `LinkExhausted` if the limit is reached (atomic)."""
    result = conn.execute(
        update(link)
        .where(
            link.c.id == found.id,
            or_(link.c.max_downloads.is_(None), link.c.downloads < link.c.max_downloads),
        )
        .values(downloads=link.c.downloads + 1)
    )
    if result.rowcount != 1:
        raise LinkExhausted("this link has reached its download limit")


def check_not_exhausted(found: Link) -> None:
    if found.state is LinkState.EXHAUSTED:
        raise LinkExhausted("this link has reached its download limit")


def node_in_link(conn: Connection, found: Link, node_id: NodeId) -> Node:
    """A live node at or below the link's node; NotFound for anything else."""
    row = conn.execute(select(node).where(node.c.id == node_id)).first()
    if row is None:
        raise NotFound("no such file in this link")
    item = node_from_row(row)
    cursor: Node | None = item
    for _ in range(10_000):  # a path is far shorter; bounds a corrupt cycle
        if cursor is None or cursor.deleted:
            break
        if cursor.id == found.node_id:
            return item
        if cursor.parent_id is None:
            break
        parent = conn.execute(select(node).where(node.c.id == cursor.parent_id)).first()
        cursor = node_from_row(parent) if parent is not None else None
    raise NotFound("no such file in this link")


def file_chunks(conn: Connection, item: Node) -> tuple[ChunkRef, ...]:
    """The manifest of a file's head revision (empty for an empty file)."""
    if item.kind is not NodeKind.FILE:
        raise BadRequest("not a file")
    if item.head_revision is None:
        return ()
    text = conn.execute(
        select(revision.c.manifest).where(revision.c.id == item.head_revision)
    ).scalar_one()
    return manifest_from_json(text)


@dataclass(frozen=True, slots=True)
class ListedFile:
    """A file below a folder link: its path relative to the folder, e.g. `a/b.txt`."""

    path: str
    node: Node


def folder_files(conn: Connection, root: Node) -> list[ListedFile]:
    """Every live file below `root` with its relative path, sorted by path; at most
    `MAX_LISTING` (a folder with more is answered with its first ones)."""
    found: list[ListedFile] = []
    pending: list[tuple[str, NodeId]] = [("", root.id)]
    while pending and len(found) < MAX_LISTING:
        prefix, parent = pending.pop()
        rows = conn.execute(
            select(node)
            .where(node.c.parent_id == parent, node.c.deleted.is_(False))
            .order_by(node.c.name)
        ).all()
        for r in rows:
            child = node_from_row(r)
            path = f"{prefix}{child.name}"
            if child.kind is NodeKind.DIR:
                pending.append((path + "/", child.id))
            elif child.kind is NodeKind.FILE:
                found.append(ListedFile(path, child))
    found.sort(key=lambda f: f.path)
    return found[:MAX_LISTING]
