"""Sharing a folder or file with other accounts (docs/backend.md "Shares").

The model:

- The first share of a node moves it and everything below it (deleted nodes included, for
  history) into a namespace of its own, owned by the sharer, whose `root_id` is the node.
  The node keeps its parent in the owner's tree. From then on every change inside is
  journalled in that namespace, which the owner's and every member's devices follow with a
  cursor of their own. The move writes, in one transaction:
  - in the owner's tree: an `update` entry of the root with its new `namespace_id` (the
    owner's devices learn to follow the new namespace from it);
  - in the new namespace: a `create` entry per live node, parents first, a file's carrying
    its head revision, so a device that follows it from cursor 0 builds the whole tree.
  Further shares of the same node reuse the namespace; nothing ever moves back.
- A share row gives one account a role (viewer or editor). It grants nothing until the
  recipient accepts it (or at once, when the recipient chose `auto_accept_shares`).
  Accepting places the share in the recipient's own tree (a directory of theirs and a name,
  made unique there) and writes a *mount entry* into the recipient's journal: a `create` of
  the share's root node as it appears there (`parent_id`/`name` = the placement,
  `namespace_id` = the share's namespace). Moving it (accepting again with another place)
  writes an `update`; revoking or leaving writes a `delete`. An entry whose node belongs to
  another namespace than the journal's is thus always an attachment point, for both the
  owner (`update` at share time) and the members.
- Only the owner shares, changes roles and unshares; a member may leave (revoke its own
  share). Sharing inside a shared folder, or a folder that contains one, is refused
  (409 `nested_share`), as Dropbox does: one namespace per subtree keeps every node in one
  journal. An account's root cannot be shared.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from pathlib import PurePosixPath

from sqlalchemy import Connection, and_, insert, literal, select, update

from backend.db.tables import account, namespace, node, share
from backend.services import access, journal
from backend.services.clock import as_utc, utcnow
from backend.services.errors import BadRequest, Conflict, Forbidden, NestedShare, NotFound
from backend.services.rows import node_from_row
from backend.services.types import (
    AccountId,
    DeviceId,
    JournalOp,
    NamespaceId,
    Node,
    NodeId,
    NodeKind,
    Principal,
)
from backend.services.validation import check_name

__all__ = [
    "Followed",
    "Share",
    "ShareState",
    "accept",
    "end_namespace",
    "followed",
    "incoming",
    "members",
    "revoke",
    "share_node",
    "subtree",
]


class ShareState(StrEnum):
    PENDING = "pending"
    ACCEPTED = "accepted"
    REVOKED = "revoked"


@dataclass(frozen=True, slots=True)
class Share:
    """One share as its owner and its recipient see it.

    Attributes:
        node_id, namespace_id: the shared node (the namespace's root) and its namespace.
        name, kind: the shared node's current name and kind in the owner's tree.
        owner, recipient: account names.
        mount_parent_id, mount_name: where it appears in the recipient's tree (accepted).
    """

    id: str
    node_id: NodeId
    namespace_id: NamespaceId
    name: str
    kind: NodeKind
    owner: str
    recipient: str
    role: access.Role
    state: ShareState
    created_at: datetime
    accepted_at: datetime | None
    revoked_at: datetime | None
    changed_at: datetime
    mount_parent_id: NodeId | None
    mount_name: str | None


_owner = account.alias("owner")
_recipient = account.alias("recipient")
_SHARES = (
    select(
        share,
        node.c.name.label("node_name"),
        node.c.kind.label("node_kind"),
        _owner.c.name.label("owner_name"),
        _recipient.c.name.label("recipient_name"),
    )
    .join(node, node.c.id == share.c.node_id)
    .join(namespace, namespace.c.id == share.c.namespace_id)
    .join(_owner, _owner.c.id == namespace.c.owner_account_id)
    .join(_recipient, _recipient.c.id == share.c.account_id)
)


def _from_row(row: object) -> Share:
    m = row._mapping  # type: ignore[attr-defined]
    state = (
        ShareState.REVOKED
        if m["revoked_at"] is not None
        else ShareState.ACCEPTED
        if m["accepted_at"] is not None
        else ShareState.PENDING
    )
    return Share(
        id=m["id"],
        node_id=NodeId(m["node_id"]),
        namespace_id=NamespaceId(m["namespace_id"]),
        name=m["node_name"],
        kind=NodeKind(m["node_kind"]),
        owner=m["owner_name"],
        recipient=m["recipient_name"],
        role=access.Role(m["role"]),
        state=state,
        created_at=as_utc(m["created_at"]),
        accepted_at=as_utc(m["accepted_at"]) if m["accepted_at"] else None,
        revoked_at=as_utc(m["revoked_at"]) if m["revoked_at"] else None,
        changed_at=as_utc(m["changed_at"]),
        mount_parent_id=NodeId(m["mount_parent_id"]) if m["mount_parent_id"] else None,
        mount_name=m["mount_name"],
    )


def _load(conn: Connection, share_id: str) -> Share:
    row = conn.execute(_SHARES.where(share.c.id == share_id)).first()
    if row is None:
        raise NotFound("no such share")
    return _from_row(row)


# ---- sharing -----------------------------------------------------------------------------


def share_node(
    conn: Connection, who: Principal, node_id: NodeId, recipient_name: str, role: access.Role
) -> tuple[Share, bool]:
    """Share `node_id` with the account `recipient_name` (or change its role); returns the
    share and whether it was newly offered (False: an existing live share, role updated)."""
    if role is access.Role.OWNER:
        raise BadRequest("role: viewer or editor")
    target, my_role = access.node_for_read(conn, who, node_id)
    if my_role is not access.Role.OWNER:
        raise Forbidden("only the owner of a shared folder can share it")
    if target.parent_id is None:
        raise Forbidden("an account's root folder cannot be shared; share a folder in it")
    if target.kind is NodeKind.SYMLINK:
        raise BadRequest("a symlink cannot be shared; share a folder or a file")
    if target.deleted:
        raise Conflict("a deleted node cannot be shared", current=target)
    recipient = _account_named(conn, recipient_name)
    if recipient == who.account_id:
        raise BadRequest("a share needs another account than your own")
    # Both journals this may write (the node's, the recipient's), always in one order, so
    # that two accounts sharing with each other at once cannot deadlock (PostgreSQL).
    for locked in sorted({target.namespace_id, _home(conn, recipient).namespace_id}):
        journal.lock_namespace(conn, locked)
    ns = _namespace_for(conn, who, target)
    current = conn.execute(
        select(share).where(share.c.node_id == target.id, share.c.account_id == recipient)
    ).first()
    now = utcnow()
    if current is None:
        share_id = str(uuid.uuid4())
        conn.execute(
            insert(share).values(
                id=share_id,
                node_id=target.id,
                namespace_id=ns,
                account_id=recipient,
                role=role.value,
                created_by=who.account_id,
                created_at=now,
                changed_at=now,
            )
        )
        fresh = True
    else:
        share_id = current.id
        fresh = current.revoked_at is not None
        if not fresh and current.role == role.value:
            return _load(conn, share_id), False  # nothing changes: no news
        values: dict[str, object] = {"role": role.value, "changed_at": now}
        if fresh:  # offered again after a revocation: pending again
            values.update(revoked_at=None, accepted_at=None, created_at=now)
        conn.execute(update(share).where(share.c.id == share_id).values(**values))
    home = _home(conn, recipient)
    if fresh and _auto_accepts(conn, recipient):
        offered = replace(_load(conn, share_id), state=ShareState.ACCEPTED)
        _share_entry(conn, home.namespace_id, offered, "offered", offered.owner, who.device_id)
        return _accept(conn, recipient, home, _load(conn, share_id), who), True
    changed = _load(conn, share_id)
    change = "offered" if fresh else "role"
    _share_entry(conn, home.namespace_id, changed, change, changed.owner, who.device_id)
    return changed, fresh


def _account_named(conn: Connection, name: str) -> AccountId:
    found = conn.execute(
        select(account.c.id).where(account.c.name == name, account.c.deleted_at.is_(None))
    ).scalar()
    if found is None:
        raise NotFound("no such account")
    return AccountId(found)


def _auto_accepts(conn: Connection, account_id: AccountId) -> bool:
    value = conn.execute(
        select(account.c.auto_accept_shares).where(account.c.id == account_id)
    ).scalar()
    return bool(value)


@dataclass(frozen=True, slots=True)
class _Home:
    account_id: AccountId
    namespace_id: NamespaceId
    root_id: NodeId


def _home(conn: Connection, account_id: AccountId) -> _Home:
    row = conn.execute(
        select(account.c.namespace_id, account.c.root_id).where(account.c.id == account_id)
    ).one()
    return _Home(account_id, NamespaceId(row.namespace_id), NodeId(row.root_id))


def _namespace_for(conn: Connection, who: Principal, target: Node) -> NamespaceId:
    """The share namespace of `target`: the existing one, or a new one made by moving the
    subtree (module docstring). Refuses nested shares."""
    info = access.namespace_info(conn, target.namespace_id)
    if info.root_id == target.id:
        return info.id  # shared before
    if info.root_id is not None:
        raise NestedShare(
            "this is inside a shared folder; share that folder instead", current=target
        )
    journal.lock_namespace(conn, target.namespace_id)
    current = conn.execute(select(node).where(node.c.id == target.id)).one()
    target = node_from_row(current)
    if target.deleted:
        raise Conflict("a deleted node cannot be shared", current=target)
    ids = subtree(conn, target.id)
    inner = conn.execute(
        select(namespace.c.id).where(
            namespace.c.owner_account_id == who.account_id, namespace.c.root_id.in_(ids)
        )
    ).first()
    if inner is not None:
        raise NestedShare("this folder contains a shared folder; it cannot be shared too")
    ns = NamespaceId(str(uuid.uuid4()))
    conn.execute(
        insert(namespace).values(
            id=ns,
            owner_account_id=who.account_id,
            last_seq=0,
            created_at=utcnow(),
            root_id=target.id,
        )
    )
    journal.lock_namespace(conn, ns)
    for start in range(0, len(ids), 500):  # bound the bound parameters per statement
        conn.execute(
            update(node).where(node.c.id.in_(ids[start : start + 500])).values(namespace_id=ns)
        )
    moved = replace(target, namespace_id=ns)
    seq = journal.next_seq(conn, target.namespace_id)
    journal.record(conn, seq, JournalOp.UPDATE, moved, who.device_id, into=target.namespace_id)
    _seed_journal(conn, ns, ids, who.device_id)
    return ns


def subtree(conn: Connection, root: NodeId) -> list[NodeId]:
    """`root` and every node below it (deleted ones included), parents before children."""
    walk = (
        select(node.c.id, literal(0).label("depth"))
        .where(node.c.id == root)
        .cte("walk", recursive=True)
    )
    walk = walk.union_all(
        select(node.c.id, (walk.c.depth + 1).label("depth")).join(
            walk, node.c.parent_id == walk.c.id
        )
    )
    rows = conn.execute(select(walk.c.id).order_by(walk.c.depth, walk.c.id)).scalars().all()
    return [NodeId(r) for r in rows]


def _seed_journal(
    conn: Connection, ns: NamespaceId, ids: list[NodeId], device_id: DeviceId
) -> None:
    """A `create` entry per live node of a new share namespace, parents first; a file's
    entry names its head revision (with the manifest and keys a reader needs)."""
    order = {node_id: i for i, node_id in enumerate(ids)}
    found: list[Node] = []
    for start in range(0, len(ids), 500):
        chunk_ids = ids[start : start + 500]
        rows = conn.execute(
            select(node).where(node.c.id.in_(chunk_ids), node.c.deleted.is_(False))
        ).all()
        found.extend(node_from_row(r) for r in rows)
    for item in sorted(found, key=lambda n: order[n.id]):
        seq = journal.next_seq(conn, ns)
        head = item.head_revision if item.kind is NodeKind.FILE else None
        journal.record(conn, seq, JournalOp.CREATE, item, device_id, head)


# ---- listing -----------------------------------------------------------------------------


def members(conn: Connection, who: Principal, node_id: NodeId) -> tuple[str, list[Share]]:
    """Who has access to `node_id`: the owner's name and the live (pending or accepted)
    shares of the shared folder it is in or is; any member may ask."""
    target, _ = access.node_for_read(conn, who, node_id)
    info = access.namespace_info(conn, target.namespace_id)
    owner = conn.execute(select(account.c.name).where(account.c.id == info.owner)).scalar_one()
    if info.root_id is None:
        return owner, []
    rows = conn.execute(
        _SHARES.where(share.c.namespace_id == info.id, share.c.revoked_at.is_(None)).order_by(
            share.c.created_at, share.c.id
        )
    ).all()
    return owner, [_from_row(r) for r in rows]


def incoming(conn: Connection, who: Principal) -> list[Share]:
    """Shares offered to the caller, newest change last; revoked ones stay listed so that
    every device of the recipient learns of the removal."""
    rows = conn.execute(
        _SHARES.where(share.c.account_id == who.account_id).order_by(share.c.changed_at, share.c.id)
    ).all()
    return [_from_row(r) for r in rows]


def outgoing(conn: Connection, who: Principal) -> list[Share]:
    """Live shares of the caller's own folders and files."""
    rows = conn.execute(
        _SHARES.where(
            namespace.c.owner_account_id == who.account_id, share.c.revoked_at.is_(None)
        ).order_by(share.c.created_at, share.c.id)
    ).all()
    return [_from_row(r) for r in rows]


@dataclass(frozen=True, slots=True)
class Followed:
    """A namespace besides its own tree that a device of the caller follows: one the
    caller owns (a shared folder or file, shared now or before), or an accepted share."""

    namespace_id: NamespaceId
    root_id: NodeId
    role: access.Role
    share_id: str | None
    mount_parent_id: NodeId | None
    mount_name: str | None


def followed(conn: Connection, who: Principal) -> list[Followed]:
    """What the caller's devices follow besides its own tree (docs/protocol.md § Shares)."""
    owned = conn.execute(
        select(namespace.c.id, namespace.c.root_id)
        .where(namespace.c.owner_account_id == who.account_id, namespace.c.root_id.is_not(None))
        .order_by(namespace.c.created_at, namespace.c.id)
    ).all()
    found = [
        Followed(NamespaceId(r.id), NodeId(r.root_id), access.Role.OWNER, None, None, None)
        for r in owned
    ]
    shared = conn.execute(
        select(share)
        .where(
            share.c.account_id == who.account_id,
            share.c.revoked_at.is_(None),
            share.c.accepted_at.is_not(None),
        )
        .order_by(share.c.accepted_at, share.c.id)
    ).all()
    found += [
        Followed(
            NamespaceId(r.namespace_id),
            NodeId(r.node_id),
            access.Role(r.role),
            r.id,
            NodeId(r.mount_parent_id) if r.mount_parent_id else None,
            r.mount_name,
        )
        for r in shared
    ]
    return found


# ---- accepting, placing, revoking ----------------------------------------------------------


def accept(
    conn: Connection,
    who: Principal,
    share_id: str,
    parent_id: NodeId | None = None,
    name: str | None = None,
) -> Share:
    """Accept a share offered to the caller, or move an accepted one, to `parent_id`/`name`
    in the caller's own tree (default: its root, the shared node's name, made unique)."""
    found = _load(conn, share_id)
    row = conn.execute(select(share.c.account_id).where(share.c.id == share_id)).one()
    if row.account_id != who.account_id or found.state is ShareState.REVOKED:
        raise NotFound("no such share")
    home = _Home(who.account_id, who.namespace_id, who.root_id)
    return _accept(conn, who.account_id, home, found, who, parent_id, name)


def _accept(
    conn: Connection,
    recipient: AccountId,
    home: _Home,
    found: Share,
    actor: Principal,
    parent_id: NodeId | None = None,
    name: str | None = None,
) -> Share:
    journal.lock_namespace(conn, home.namespace_id)
    parent_id = parent_id or home.root_id
    parent = conn.execute(select(node).where(node.c.id == parent_id)).first()
    if parent is None or parent.namespace_id != home.namespace_id:
        if parent is not None and _readable(conn, actor, NamespaceId(parent.namespace_id)):
            raise NestedShare("a share is placed in your own tree, not inside another share")
        raise NotFound("no such folder")
    if parent.kind != NodeKind.DIR.value or parent.deleted:
        raise BadRequest("parent_id: not a live folder of yours")
    wanted = name or found.mount_name or found.name
    check_name(wanted)
    same_place = (found.mount_parent_id, found.mount_name) == (parent_id, wanted)
    final = wanted if same_place else _free_name(conn, recipient, parent_id, wanted)
    now = utcnow()
    was_accepted = found.state is ShareState.ACCEPTED
    conn.execute(
        update(share)
        .where(share.c.id == found.id)
        .values(
            accepted_at=found.accepted_at or now,
            mount_parent_id=parent_id,
            mount_name=final,
            changed_at=now,
        )
    )
    if not (was_accepted and same_place):
        op = JournalOp.UPDATE if was_accepted else JournalOp.CREATE
        _mount_entry(conn, home.namespace_id, found, parent_id, final, op, actor.device_id)
    return _load(conn, found.id)


def _readable(conn: Connection, who: Principal, ns: NamespaceId) -> bool:
    try:
        access.role_in(conn, who, ns)
    except NotFound:
        return False
    return True


def _free_name(conn: Connection, recipient: AccountId, parent_id: NodeId, wanted: str) -> str:
    """`wanted`, or `stem (2).ext`, `stem (3).ext`, … : the first name that no live node
    and no other accepted share of the recipient uses in that folder."""
    path = PurePosixPath(wanted)
    stem, suffix = (path.stem, path.suffix) if path.stem else (wanted, "")
    for n in range(1, 10_000):
        candidate = wanted if n == 1 else f"{stem} ({n}){suffix}"
        taken_node = conn.execute(
            select(node.c.id).where(
                node.c.parent_id == parent_id, node.c.name == candidate, node.c.deleted.is_(False)
            )
        ).first()
        taken_share = conn.execute(
            select(share.c.id).where(
                share.c.account_id == recipient,
                share.c.mount_parent_id == parent_id,
                share.c.mount_name == candidate,
                share.c.revoked_at.is_(None),
                share.c.accepted_at.is_not(None),
            )
        ).first()
        if taken_node is None and taken_share is None:
            return candidate
    raise Conflict("no free name for the share in that folder")


def _mount_entry(
    conn: Connection,
    home_ns: NamespaceId,
    found: Share,
    parent_id: NodeId | None,
    name: str | None,
    op: JournalOp,
    device_id: DeviceId,
) -> None:
    """The entry in the recipient's journal that attaches, moves or detaches the share."""
    root = node_from_row(conn.execute(select(node).where(node.c.id == found.node_id)).one())
    seen = replace(
        root,
        parent_id=parent_id,
        name=name or root.name,
        deleted=op is JournalOp.DELETE,
    )
    seq = journal.next_seq(conn, home_ns)
    journal.record(conn, seq, op, seen, device_id, into=home_ns)


def _share_entry(
    conn: Connection,
    home_ns: NamespaceId,
    found: Share,
    change: str,
    by: str,
    device_id: DeviceId | None,
) -> None:
    """The `share` entry in the recipient's journal: the share offered, its role changed,
    or the share ended. It changes no node; it exists so that the recipient's devices hear
    of it through the push channel at once (`mountfs events`, desktop notifications) and
    ask for their namespaces again (a viewer became an editor, or back).

    Its node is the shared node as the recipient sees it: the share's namespace, the
    recipient's placement if accepted (else no parent), and its `share` is a snapshot:
    `change` (offered, role, ended), `by` (the account that did it), `role`, `state`."""
    root = node_from_row(conn.execute(select(node).where(node.c.id == found.node_id)).one())
    seen = replace(
        root,
        parent_id=found.mount_parent_id,
        name=found.mount_name or root.name,
    )
    snapshot = {
        "id": found.id,
        "owner": found.owner,
        "by": by,
        "change": change,
        "role": found.role.value,
        "state": found.state.value,
    }
    journal.lock_namespace(conn, home_ns)
    seq = journal.next_seq(conn, home_ns)
    journal.record(conn, seq, JournalOp.SHARE, seen, device_id, into=home_ns, share=snapshot)


def revoke(conn: Connection, who: Principal, share_id: str) -> Share:
    """End a share: by the owner (unshare) or by the recipient (leave). Idempotent."""
    found = _load(conn, share_id)
    recipient = conn.execute(select(share.c.account_id).where(share.c.id == share_id)).scalar_one()
    owner = access.namespace_info(conn, found.namespace_id).owner
    if who.account_id not in (recipient, owner):
        raise NotFound("no such share")
    if found.state is not ShareState.REVOKED:
        by = found.owner if who.account_id == owner else found.recipient
        _end(conn, [(found, AccountId(recipient))], who.device_id, by)
    return _load(conn, share_id)


def end_namespace(conn: Connection, ns: NamespaceId, device_id: DeviceId) -> None:
    """Revoke every live share of a namespace (its root was deleted, or its owner's account)."""
    rows = conn.execute(
        _SHARES.where(share.c.namespace_id == ns, share.c.revoked_at.is_(None))
    ).all()
    ended = [(_from_row(r), AccountId(r.account_id)) for r in rows]
    _end(conn, ended, device_id, ended[0][0].owner if ended else "")


def end_received(conn: Connection, account_id: AccountId, device_id: DeviceId) -> None:
    """Revoke every live share offered to an account (it is being deleted)."""
    rows = conn.execute(
        _SHARES.where(share.c.account_id == account_id, share.c.revoked_at.is_(None))
    ).all()
    ended = [(_from_row(r), account_id) for r in rows]
    _end(conn, ended, device_id, ended[0][0].recipient if ended else "")


def _end(
    conn: Connection, ended: list[tuple[Share, AccountId]], device_id: DeviceId, by: str
) -> None:
    """Revoke `ended` (share, recipient); `by`: the account name that ended them."""
    now = utcnow()
    for found, recipient in ended:
        conn.execute(
            update(share)
            .where(and_(share.c.id == found.id, share.c.revoked_at.is_(None)))
            .values(revoked_at=now, changed_at=now)
        )
        home = _home(conn, recipient)
        ended_now = replace(found, state=ShareState.REVOKED, revoked_at=now, changed_at=now)
        _share_entry(conn, home.namespace_id, ended_now, "ended", by, device_id)
        if found.state is ShareState.ACCEPTED:
            _mount_entry(
                conn,
                home.namespace_id,
                found,
                found.mount_parent_id,
                found.mount_name,
                JournalOp.DELETE,
                device_id,
            )
