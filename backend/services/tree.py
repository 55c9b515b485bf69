"""Tree operations: create, get, list, move/rename/setattr (with replace), delete.

Each change function runs inside a write transaction opened by its caller
(`Database.write()`), locks the namespace first (`journal.lock_namespace`), checks its
precondition against the locked state, applies, and appends its journal entry — so a
change and its journal entry commit together or not at all. Any refusal raises a
`ServiceError` and the caller's transaction rolls back.

Who may do what is decided by `backend.services.access` (owner, editor, viewer): a node the
caller has no role on is simply "not found", which is how the API avoids revealing that it
exists; a viewer's change is 403. A change locks and journals the namespace of the node it
changes (the caller's own tree, or a shared folder); moves never cross namespaces
(409 `cross_share`), except that the owner moves or renames a share's root node inside its
own tree, which is journalled in the tree that holds it.

The statements run on every request are built once, at import, with `bindparam`s, and
executed with parameter dicts: building a SQLAlchemy statement and computing its cache key
cost more CPU than SQLite spends running it.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from dataclasses import dataclass, replace

from sqlalchemy import Connection, bindparam, false, insert, literal, select, update

from backend.db.tables import account, namespace, node, revision
from backend.services import access, journal, shares, usage
from backend.services.clock import utcnow
from backend.services.errors import (
    BadRequest,
    Conflict,
    CrossShare,
    Cycle,
    Forbidden,
    IdTaken,
    NameTaken,
    NotADirectory,
    NotEmpty,
    NotFound,
)
from backend.services.rows import node_from_row
from backend.services.types import (
    JournalOp,
    NamespaceId,
    Node,
    NodeId,
    NodeKind,
    Outcome,
    Page,
    Principal,
    Revision,
    RevisionId,
    RevisionKind,
)
from backend.services.validation import check_mode, check_name, check_target

__all__ = [
    "MAX_PAGE_SIZE",
    "NewNode",
    "NodeChange",
    "add_used_bytes",
    "write_node",
    "create_node",
    "delete_node",
    "get_node",
    "list_children",
    "restore_node",
    "update_node",
]

MAX_PAGE_SIZE = 1000

_NODE_IN_NAMESPACE = select(node).where(
    node.c.id == bindparam("b_id"), node.c.namespace_id == bindparam("b_namespace")
)
_NODE_ANYWHERE = select(node).where(node.c.id == bindparam("b_id"))
_LIVE_CHILD = select(node).where(
    node.c.parent_id == bindparam("b_parent"),
    node.c.name == bindparam("b_name"),
    node.c.deleted == false(),
)
_LIVE_CHILDREN = select(node).where(
    node.c.parent_id == bindparam("b_parent"), node.c.deleted == false()
)
_CHILDREN_PAGE = _LIVE_CHILDREN.order_by(node.c.name).limit(bindparam("b_limit"))
_CHILDREN_PAGE_AFTER = (
    _LIVE_CHILDREN.where(node.c.name > bindparam("b_after"))
    .order_by(node.c.name)
    .limit(bindparam("b_limit"))
)
_HAS_LIVE_CHILDREN = (
    select(literal(1))
    .where(node.c.parent_id == bindparam("b_parent"), node.c.deleted == false())
    .limit(1)
)
_INSERT_NODE = insert(node)
_ADD_USED_BYTES = (
    update(account)
    .where(
        account.c.id
        == select(namespace.c.owner_account_id)
        .where(namespace.c.id == bindparam("b_namespace"))
        .scalar_subquery()
    )
    .values(used_bytes=account.c.used_bytes + bindparam("b_delta"))
)
_WRITE_NODE = update(node).where(
    node.c.id == bindparam("b_id"), node.c.version == bindparam("b_version")
)


@dataclass(frozen=True, slots=True)
class NewNode:
    id: NodeId
    parent_id: NodeId
    name: str
    kind: NodeKind
    mode: int
    mtime_ns: int
    target: str | None = None


@dataclass(frozen=True, slots=True)
class NodeChange:
    """A PATCH: `None` leaves a field as it is. `replace_id` names the live node at the
    destination that this move atomically deletes (`rename()` over an existing entry)."""

    base_version: int
    parent_id: NodeId | None = None
    name: str | None = None
    mode: int | None = None
    mtime_ns: int | None = None
    replace_id: NodeId | None = None
    replace_version: int | None = None


# ---- reads -------------------------------------------------------------------------------


def get_node(conn: Connection, namespace_id: NamespaceId, node_id: NodeId) -> Node:
    """The node `node_id` of this namespace (deleted ones included); NotFound otherwise."""
    row = conn.execute(_NODE_IN_NAMESPACE, {"b_id": node_id, "b_namespace": namespace_id}).first()
    if row is None:
        raise NotFound("no such node")
    return node_from_row(row)


def list_children(
    conn: Connection, who: Principal, node_id: NodeId, page_size: int, cursor: str | None
) -> Page:
    """Live children of a directory, in byte order of their names, one keyset page.

    The cursor is the last name returned (opaque to clients): entries inserted before it
    during a walk are not seen, entries after it are, none is repeated or skipped.
    """
    parent, _ = access.node_for_read(conn, who, node_id)
    if parent.kind is not NodeKind.DIR:
        raise NotADirectory("not a directory", current=parent)
    page_size = max(1, min(page_size, MAX_PAGE_SIZE))
    params: dict[str, object] = {"b_parent": node_id, "b_limit": page_size + 1}
    query = _CHILDREN_PAGE
    if cursor is not None:
        query, params["b_after"] = _CHILDREN_PAGE_AFTER, _decode_cursor(cursor)
    rows = conn.execute(query, params).all()
    items = tuple(node_from_row(r) for r in rows[:page_size])
    next_cursor = _encode_cursor(items[-1].name) if len(rows) > page_size else None
    return Page(items=items, next_cursor=next_cursor)


def _encode_cursor(name: str) -> str:
    return base64.urlsafe_b64encode(b"n:" + name.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> str:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        if not raw.startswith(b"n:") or b"\0" in raw:  # no name holds NUL (nor can PG's text)
            raise ValueError(cursor)
        return raw[2:].decode()
    except (ValueError, binascii.Error) as exc:
        raise BadRequest("cursor: not a cursor from this listing") from exc


def _live_child(conn: Connection, parent_id: NodeId, name: str) -> Node | None:
    row = conn.execute(_LIVE_CHILD, {"b_parent": parent_id, "b_name": name}).first()
    return node_from_row(row) if row is not None else None


def _has_live_children(conn: Connection, node_id: NodeId) -> bool:
    return conn.execute(_HAS_LIVE_CHILDREN, {"b_parent": node_id}).first() is not None


def _is_within(conn: Connection, candidate: NodeId, ancestor: NodeId) -> bool:
    """True if `candidate` is `ancestor` or lies below it (one recursive query)."""
    chain = select(node.c.id, node.c.parent_id).where(node.c.id == candidate)
    walk = chain.cte("walk", recursive=True)
    walk = walk.union_all(
        select(node.c.id, node.c.parent_id).join(walk, node.c.id == walk.c.parent_id)
    )
    found = conn.execute(select(walk.c.id).where(walk.c.id == ancestor).limit(1)).first()
    return found is not None


def _live_dir(conn: Connection, namespace_id: NamespaceId, node_id: NodeId) -> Node:
    parent = get_node(conn, namespace_id, node_id)
    if parent.kind is not NodeKind.DIR or parent.deleted:
        raise NotADirectory("the parent is not a live directory", current=parent)
    return parent


# ---- changes -----------------------------------------------------------------------------


def create_node(conn: Connection, who: Principal, new: NewNode) -> Outcome:
    """Create a node; a replay (same id, parent, name and kind) returns it unchanged."""
    check_name(new.name)
    check_mode(new.mode)
    check_target(new.kind, new.target)
    namespace_id = access.node_for_write(conn, who, new.parent_id).namespace_id
    journal.lock_namespace(conn, namespace_id)
    existing = conn.execute(_NODE_ANYWHERE, {"b_id": new.id}).first()
    if existing is not None:
        found = node_from_row(existing)
        same = (found.namespace_id, found.parent_id, found.name, found.kind) == (
            namespace_id,
            new.parent_id,
            new.name,
            new.kind,
        )
        if not same:
            raise IdTaken("a node with this id already exists")
        return Outcome(node=found, created=False)
    _live_dir(conn, namespace_id, new.parent_id)
    sibling = _live_child(conn, new.parent_id, new.name)
    if sibling is not None:
        raise NameTaken("the name is taken", current=sibling)
    created = Node(
        id=new.id,
        namespace_id=namespace_id,
        parent_id=new.parent_id,
        name=new.name,
        kind=new.kind,
        mode=new.mode,
        mtime_ns=new.mtime_ns,
        size=0,
        version=1,
        head_revision=None,
        target=new.target,
        deleted=False,
    )
    conn.execute(
        _INSERT_NODE,
        {
            "id": created.id,
            "namespace_id": created.namespace_id,
            "parent_id": created.parent_id,
            "name": created.name,
            "kind": created.kind.value,
            "mode": created.mode,
            "mtime_ns": created.mtime_ns,
            "size": 0,
            "version": 1,
            "target": created.target,
            "deleted": False,
            "created_at": utcnow(),
        },
    )
    if created.kind is NodeKind.FILE:
        usage.add(conn, created.parent_id, 0, 1)  # folder sizes (services/usage.py)
    seq = journal.next_seq(conn, namespace_id)
    journal.record(conn, seq, JournalOp.CREATE, created, who.device_id)
    return Outcome(node=created, cursor=seq)


def update_node(conn: Connection, who: Principal, node_id: NodeId, change: NodeChange) -> Outcome:
    """Move, rename and/or set attributes, with `base_version` as the precondition.

    With `replace_id`, the live node at the destination (which must be exactly that node,
    at `replace_version` if given) is deleted in the same transaction: two journal entries,
    the delete first.
    """
    if change.mode is not None:
        check_mode(change.mode)
    found = access.node_for_write(conn, who, node_id)
    moving = (change.parent_id or found.parent_id, change.name or found.name) != (
        found.parent_id,
        found.name,
    )
    # The journal that records the change: the node's namespace, except for moving a
    # share's root, which changes the owner's tree that holds it (docs/backend.md).
    feed = _share_root_tree(conn, who, found) if moving else None
    ns = feed or found.namespace_id
    journal.lock_namespace(conn, ns)
    current = get_node(conn, found.namespace_id, node_id)
    if current.deleted or current.version != change.base_version:
        raise Conflict("base_version is not the node's current version", current=current)
    parent_id = change.parent_id if change.parent_id is not None else current.parent_id
    name = change.name if change.name is not None else current.name
    moving = (parent_id, name) != (current.parent_id, current.name)  # == before: same version
    if change.replace_id is not None and not moving:
        raise BadRequest("replace_id is only meaningful with a move or rename")
    if change.replace_version is not None and change.replace_id is None:
        raise BadRequest("replace_version needs replace_id")
    if moving:
        if current.parent_id is None or parent_id is None:
            raise Forbidden("the root cannot be moved or renamed")
        check_name(name)
        _check_destination(conn, who, ns, current, parent_id)
        _clear_destination(conn, who, ns, current, parent_id, name, change)
    updated = replace(
        current,
        parent_id=parent_id,
        name=name,
        mode=change.mode if change.mode is not None else current.mode,
        mtime_ns=change.mtime_ns if change.mtime_ns is not None else current.mtime_ns,
        version=current.version + 1,
    )
    usage.moved(conn, current, current.parent_id, parent_id)  # folder sizes
    write_node(conn, current, updated)
    seq = journal.next_seq(conn, ns)
    journal.record(conn, seq, JournalOp.UPDATE, updated, who.device_id, into=ns)
    return Outcome(node=updated, cursor=seq)


def _share_root_tree(conn: Connection, who: Principal, moved: Node) -> NamespaceId | None:
    """For the root of a share: the namespace of the tree holding it (its parent's), which
    only that tree's owner may change (recipients place a share with the share API);
    None for any other node."""
    info = access.namespace_info(conn, moved.namespace_id)
    if info.root_id != moved.id or moved.parent_id is None:
        return None
    holder = access.find_node(conn, moved.parent_id).namespace_id
    if access.namespace_info(conn, holder).owner != who.account_id:
        raise Forbidden("only the owner moves or renames a shared folder in their tree")
    return holder


def _check_destination(
    conn: Connection, who: Principal, ns: NamespaceId, moved: Node, parent_id: NodeId
) -> None:
    """The new parent is a live directory of the same namespace, not the moved node nor
    below it. A parent in another namespace the caller can see is 409 `cross_share`."""
    target, _ = access.node_for_read(conn, who, parent_id)
    if target.namespace_id != ns:
        raise CrossShare("a move cannot cross into or out of a shared folder", current=moved)
    parent = _live_dir(conn, ns, parent_id)
    if moved.kind is NodeKind.DIR and _is_within(conn, parent.id, moved.id):
        raise Cycle("a directory cannot be moved inside itself", current=moved)


def _clear_destination(
    conn: Connection,
    who: Principal,
    ns: NamespaceId,
    moved: Node,
    parent_id: NodeId,
    name: str,
    change: NodeChange,
) -> None:
    """Make sure (parent_id, name) is free for `moved`, deleting `replace_id` if asked."""
    occupant = _live_child(conn, parent_id, name)
    if change.replace_id is None:
        if occupant is not None:
            raise NameTaken("the name is taken", current=occupant)
        return
    if change.replace_id == moved.id:
        raise BadRequest("a node cannot replace itself")
    replaced = get_node(conn, ns, change.replace_id)
    if occupant is None or occupant.id != replaced.id:
        if occupant is not None:
            raise NameTaken("replace_id is not the node at the destination", current=occupant)
        raise Conflict("replace_id is no longer at the destination", current=replaced)
    if change.replace_version is not None and replaced.version != change.replace_version:
        raise Conflict("replace_version is not the replaced node's version", current=replaced)
    if replaced.kind is NodeKind.DIR and _has_live_children(conn, replaced.id):
        raise NotEmpty("the replaced directory is not empty", current=replaced)
    _tombstone(conn, who, replaced, ns)


def delete_node(conn: Connection, who: Principal, node_id: NodeId, base_version: int) -> Outcome:
    """Delete (tombstone) a node; a directory must have no live children.

    Deleting a share's root (its owner only) is journalled in the owner's tree that holds
    it, and ends every share of it (`shares.end_namespace`)."""
    found = access.node_for_write(conn, who, node_id)
    feed = _share_root_tree(conn, who, found)
    ns = feed or found.namespace_id
    journal.lock_namespace(conn, ns)
    current = get_node(conn, found.namespace_id, node_id)
    if current.parent_id is None:
        raise Forbidden("the root cannot be deleted")
    if current.deleted or current.version != base_version:
        raise Conflict("base_version is not the node's current version", current=current)
    if current.kind is NodeKind.DIR and _has_live_children(conn, current.id):
        raise NotEmpty("the directory is not empty", current=current)
    if feed is not None:
        shares.end_namespace(conn, current.namespace_id, who.device_id)
    return _tombstone(conn, who, current, ns)


def _tombstone(conn: Connection, who: Principal, victim: Node, ns: NamespaceId) -> Outcome:
    """Mark `victim` deleted; a file also gets a tombstone revision as its new head.

    The file's bytes leave the account's `used_bytes` here (quota counts live heads only);
    chunk refcounts stay, since history still references them.
    """
    seq = journal.next_seq(conn, ns)
    tomb: Revision | None = None
    deleted = replace(victim, deleted=True, version=victim.version + 1)
    if victim.kind is NodeKind.FILE:
        tomb = _add_tombstone(conn, who, victim, seq)
        add_used_bytes(conn, victim.namespace_id, -victim.size)
        usage.add(conn, victim.parent_id, -victim.size, -1)  # folder sizes
        deleted = replace(deleted, head_revision=tomb.id, size=0)
    write_node(conn, victim, deleted)
    # The trash's record of it (backend/services/versions.py): when, and from which device.
    conn.execute(
        update(node)
        .where(node.c.id == victim.id)
        .values(deleted_at=utcnow(), deleted_by=who.device_id)
    )
    journal.record(
        conn, seq, JournalOp.DELETE, deleted, who.device_id, tomb.id if tomb else None, into=ns
    )
    return Outcome(node=deleted, revision=tomb, cursor=seq)


def _add_tombstone(conn: Connection, who: Principal, victim: Node, seq: int) -> Revision:
    tomb = Revision(
        id=RevisionId(str(uuid.uuid4())),
        node_id=victim.id,
        base_revision=victim.head_revision,
        device_id=who.device_id,
        kind=RevisionKind.TOMBSTONE,
        size=0,
        mtime_ns=victim.mtime_ns,
        created_at=utcnow(),
        chunks=(),
    )
    conn.execute(
        insert(revision).values(
            id=tomb.id,
            node_id=tomb.node_id,
            seq=seq,
            base_revision_id=tomb.base_revision,
            device_id=tomb.device_id,
            kind=tomb.kind.value,
            size=0,
            mtime_ns=tomb.mtime_ns,
            manifest="[]",
            created_at=tomb.created_at,
        )
    )
    return tomb


def write_node(conn: Connection, before: Node, after: Node) -> None:
    """Write `after` over `before`, guarded by the version read under the lock.

    The one writer of existing node rows (tree changes and commits both use it)."""
    result = conn.execute(
        _WRITE_NODE,
        {
            "b_id": before.id,
            "b_version": before.version,
            "parent_id": after.parent_id,
            "name": after.name,
            "mode": after.mode,
            "mtime_ns": after.mtime_ns,
            "size": after.size,
            "version": after.version,
            "head_revision": after.head_revision,
            "deleted": after.deleted,
        },
    )
    if result.rowcount != 1:  # cannot happen under the namespace lock; never write blindly
        raise Conflict("the node changed concurrently", current=before)


def add_used_bytes(conn: Connection, namespace_id: NamespaceId, delta: int) -> None:
    """Adjust the quota usage of the account owning the namespace (same transaction): a
    shared folder's bytes count against its owner, whoever writes them."""
    if delta:
        conn.execute(_ADD_USED_BYTES, {"b_namespace": namespace_id, "b_delta": delta})


def restore_node(
    conn: Connection, who: Principal, node_id: NodeId, name: str | None = None
) -> Outcome:
    """Bring a deleted node back where it was, for a device whose change must survive a
    concurrent delete (docs/sync.md, "Conflicts"): an edit of a deleted file, or a create or
    move into a deleted folder.

    The node keeps its id, so every change the device still has queued for it (or below
    it) applies as it is. A file's head goes back to the content revision its tombstone
    replaced (the same revision id: a device that edited from it commits on top without a
    conflict). Refusals tell the device what to do first: a deleted parent is 409
    `not_a_directory` with `current` = that parent (restore it first); a live sibling on
    the name is 409 `name_taken` with `current` = the sibling (ask again with `name`). A
    live node is answered as it is, with no change and no journal entry, so a replay or a
    race with another restore is harmless. The restore is journalled as a `create` of the
    node (with the head revision's manifest for a file). Quota is not checked: the bytes
    were the account's a moment ago, and refusing would lose the device's work.
    """
    found = access.node_for_write(conn, who, node_id)
    journal.lock_namespace(conn, found.namespace_id)
    current = get_node(conn, found.namespace_id, node_id)
    if current.parent_id is None:
        raise Forbidden("the root cannot be restored")
    if name is not None:
        check_name(name)
    if not current.deleted:
        return Outcome(node=current, created=False)
    parent = get_node(conn, found.namespace_id, current.parent_id)
    if parent.kind is not NodeKind.DIR or parent.deleted:
        raise NotADirectory("the parent is deleted: restore it first", current=parent)
    target = name if name is not None else current.name
    occupant = _live_child(conn, parent.id, target)
    if occupant is not None:
        raise NameTaken("the name is taken", current=occupant)
    head: RevisionId | None = None
    size = 0
    if current.kind is NodeKind.FILE and current.head_revision is not None:
        row = conn.execute(
            select(revision.c.base_revision_id).where(revision.c.id == current.head_revision)
        ).first()
        base = row.base_revision_id if row is not None else None
        if base is not None:
            kept = conn.execute(
                select(revision.c.size).where(
                    revision.c.id == base, revision.c.kind == RevisionKind.CONTENT.value
                )
            ).first()
            if kept is not None:
                head, size = RevisionId(base), int(kept.size)
    restored = replace(
        current,
        name=target,
        deleted=False,
        head_revision=head if current.kind is NodeKind.FILE else current.head_revision,
        size=size,
        version=current.version + 1,
    )
    write_node(conn, current, restored)
    conn.execute(
        update(node).where(node.c.id == current.id).values(deleted_at=None, deleted_by=None)
    )
    add_used_bytes(conn, current.namespace_id, size)
    if current.kind is NodeKind.FILE:
        usage.add(conn, current.parent_id, size, 1)  # folder sizes
    seq = journal.next_seq(conn, current.namespace_id)
    journal.record(
        conn, seq, JournalOp.CREATE, restored, who.device_id, head, into=current.namespace_id
    )
    return Outcome(node=restored, cursor=seq)
