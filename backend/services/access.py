"""The one place that decides who may do what on a node: owner, editor, viewer or nobody.

Every node lives in exactly one namespace (an account's tree, or a shared folder or file,
see docs/backend.md "Shares"). What a caller may do is decided per namespace:

- **owner**: `namespace.owner_account_id` is the caller's account;
- **editor** / **viewer**: the caller's account holds an *accepted*, unrevoked share of
  that namespace with this role;
- anything else: the namespace does not exist for the caller (`NotFound`, never
  revealing that it exists for someone else).

Reads need any role; writes need owner or editor, and a viewer's write is `Forbidden`
(403), so a viewer learns nothing it could not already read. Public links are decided in
`backend.services.links` (a link reaches the subtree of its node and nothing else) and
presigned chunk URLs in `backend.services.chunks.check_readable`, which uses
`readable_namespaces` from here.

The services call these functions inside their own transactions, after locking the
namespace, so an unshare that commits first is seen by the change that follows it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import Connection, bindparam, select

from backend.db.tables import namespace, node, share
from backend.services.errors import Forbidden, NotFound
from backend.services.rows import node_from_row
from backend.services.types import AccountId, NamespaceId, Node, NodeId, Principal

__all__ = [
    "NamespaceInfo",
    "Role",
    "find_node",
    "namespace_info",
    "node_for_read",
    "node_for_write",
    "readable_namespaces",
    "require_write",
    "role_in",
]


class Role(StrEnum):
    OWNER = "owner"
    EDITOR = "editor"
    VIEWER = "viewer"

    @property
    def can_write(self) -> bool:
        return self is not Role.VIEWER


@dataclass(frozen=True, slots=True)
class NamespaceInfo:
    """Who owns a namespace, and its root when it is a shared folder or file."""

    id: NamespaceId
    owner: AccountId
    root_id: NodeId | None


_NAMESPACE = select(namespace.c.owner_account_id, namespace.c.root_id).where(
    namespace.c.id == bindparam("b_namespace")
)
_SHARED_ROLE = select(share.c.role).where(
    share.c.namespace_id == bindparam("b_namespace"),
    share.c.account_id == bindparam("b_account"),
    share.c.revoked_at.is_(None),
    share.c.accepted_at.is_not(None),
)
_NODE_ANYWHERE = select(node).where(node.c.id == bindparam("b_id"))
_OWNED = select(namespace.c.id).where(namespace.c.owner_account_id == bindparam("b_account"))
_SHARED = select(share.c.namespace_id).where(
    share.c.account_id == bindparam("b_account"),
    share.c.revoked_at.is_(None),
    share.c.accepted_at.is_not(None),
)


def namespace_info(conn: Connection, namespace_id: NamespaceId) -> NamespaceInfo:
    row = conn.execute(_NAMESPACE, {"b_namespace": namespace_id}).first()
    if row is None:
        raise NotFound("no such namespace")
    root = NodeId(row.root_id) if row.root_id is not None else None
    return NamespaceInfo(namespace_id, AccountId(row.owner_account_id), root)


def role_in(conn: Connection, who: Principal, namespace_id: NamespaceId) -> Role:
    """The caller's role in a namespace; NotFound if it has none."""
    if namespace_id == who.namespace_id:
        return Role.OWNER
    row = conn.execute(_NAMESPACE, {"b_namespace": namespace_id}).first()
    if row is None:
        raise NotFound("no such node")
    if row.owner_account_id == who.account_id:
        return Role.OWNER
    shared = conn.execute(
        _SHARED_ROLE, {"b_namespace": namespace_id, "b_account": who.account_id}
    ).scalar()
    if shared is None:
        raise NotFound("no such node")
    return Role(shared)


def require_write(role: Role) -> None:
    if not role.can_write:
        raise Forbidden("this share is read-only for you (viewer)")


def find_node(conn: Connection, node_id: NodeId) -> Node:
    """The node wherever it is, *without* an access decision: callers must decide."""
    row = conn.execute(_NODE_ANYWHERE, {"b_id": node_id}).first()
    if row is None:
        raise NotFound("no such node")
    return node_from_row(row)


def node_for_read(conn: Connection, who: Principal, node_id: NodeId) -> tuple[Node, Role]:
    """The node and the caller's role on it; NotFound unless the caller may read it."""
    found = find_node(conn, node_id)
    return found, role_in(conn, who, found.namespace_id)


def node_for_write(conn: Connection, who: Principal, node_id: NodeId) -> Node:
    """The node if the caller may change it; NotFound (no role) or Forbidden (viewer)."""
    found, role = node_for_read(conn, who, node_id)
    require_write(role)
    return found


def readable_namespaces(conn: Connection, who: Principal) -> list[NamespaceId]:
    """Every namespace the caller may read: its own ones and its accepted shares."""
    params = {"b_account": who.account_id}
    owned = conn.execute(_OWNED, params).scalars().all()
    shared = conn.execute(_SHARED, params).scalars().all()
    return [NamespaceId(n) for n in dict.fromkeys([*owned, *shared])]
