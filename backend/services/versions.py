"""History a user can see and get back: versions, the trash, restores, purges, retention.

Vocabulary:
- A *version* is a revision of a file, listed with the label of the device that made it.
- The *trash* holds deleted nodes that are not purged. A node deleted together with its
  folder (a child deleted at most `GROUP_WINDOW` before its parent: `rm -r` deletes
  bottom-up, one node at a time) is part of the folder's trash item, not an item of its
  own; a file deleted earlier on its own stays a separate item.
- A *restore* never erases history: restoring a version of a live file commits a new head
  revision with the old manifest; restoring a deleted file brings the node back (its
  parents too, if they were deleted) with a new head revision; restoring a deleted folder
  brings back the folder and everything deleted with it. A restored node whose name is
  taken by a live sibling gets the first free `name (restored N).ext`.
- A *purge* (emptying the trash, or retention) deletes a node's revisions for good: their
  `revision_chunk` rows go and chunk refcounts drop in the same transaction (a chunk that
  reaches 0 gets `released_at`, from which the GC's grace period runs). The node row stays
  (`purged_at`) because the journal names it; journal entries lose the purged revision.

Restores write journal entries with no device (`device_id` NULL): a client skips its own
entries for nodes it no longer knows (those are nodes it made and purged locally), so an
undelete asked for by a device must not look like one of that device's own changes.

Retention (`apply_retention`, run by the maintenance loop and `mountfs admin gc`): every
revision younger than `keep_all_days` stays; older ones are thinned to the newest of each
UTC day until `keep_daily_days`, and none is kept beyond that; a node's head revision is
never removed. Deleted nodes are purged `trash_days` after their deletion.
"""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy import Connection, delete, false, or_, select, true, update

from backend.db.engine import Database
from backend.db.tables import chunk, device, journal, namespace, node, revision, revision_chunk
from backend.services import access, chunks, shares, usage
from backend.services import journal as feed
from backend.services.clock import as_utc, utcnow
from backend.services.errors import BadRequest, MissingChunks, NotFound
from backend.services.revisions import _check_quota, _insert_revision
from backend.services.rows import node_from_row, revision_from_row
from backend.services.tree import add_used_bytes, get_node, write_node
from backend.services.types import (
    DeviceId,
    JournalOp,
    NamespaceId,
    Node,
    NodeId,
    NodeKind,
    ObjectName,
    Principal,
    Revision,
    RevisionId,
    RevisionKind,
)
from backend.services.validation import check_name

__all__ = [
    "GROUP_WINDOW",
    "HistoryChild",
    "PurgeReport",
    "RestoreResult",
    "RetentionPolicy",
    "RetentionReport",
    "TrashItem",
    "Version",
    "apply_retention",
    "children_with_deleted",
    "list_trash",
    "list_versions",
    "purge",
    "resolve_path",
    "restore",
]

GROUP_WINDOW = timedelta(minutes=10)
"""How long before its folder's deletion a child may have been deleted and still count as
deleted *with* the folder (restored with it, not listed in the trash on its own)."""

_IN_BATCH = 500  # ids per IN (...) list: far below every database's parameter limit


@dataclass(frozen=True, slots=True)
class Version:
    """One revision of a file as a history listing shows it."""

    revision_id: RevisionId
    node_id: NodeId
    kind: RevisionKind
    size: int
    mtime_ns: int
    created_at: datetime
    device_id: DeviceId
    device_label: str
    head: bool
    damaged: bool


@dataclass(frozen=True, slots=True)
class HistoryChild:
    """A child of a folder, live or deleted (not purged), for `.versions` listings."""

    node: Node
    deleted_at: datetime | None


@dataclass(frozen=True, slots=True)
class TrashItem:
    """A deleted node that can be restored on its own (see the module docstring).

    Attributes:
        path: its path from the account root when it was deleted ('/'-separated).
        size: bytes it would bring back (a file's last content; a folder's files).
        files: files it would bring back (1 for a file).
    """

    node: Node
    path: str
    deleted_at: datetime | None
    device_id: DeviceId | None
    device_label: str | None
    size: int
    files: int


@dataclass(frozen=True, slots=True)
class RestoreResult:
    """What a restore did: the node now (live), the new head revision of a file, how many
    nodes came back from the trash, and the name it got if its old one was taken."""

    node: Node
    revision: Revision | None
    undeleted: int
    renamed_to: str | None
    cursor: int


@dataclass(frozen=True, slots=True)
class PurgeReport:
    nodes: int
    revisions: int
    chunks_released: int


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """Operator settings (`mountfs server --keep-all-versions-days ...`)."""

    keep_all_days: int = 30
    keep_daily_days: int = 365
    trash_days: int = 30


@dataclass(frozen=True, slots=True)
class RetentionReport:
    revisions_removed: int
    nodes_purged: int
    chunks_released: int


# ---- reading ------------------------------------------------------------------------------


def list_versions(conn: Connection, who: Principal, node_id: NodeId) -> tuple[Version, ...]:
    """The file's revisions, newest first, with device labels (tombstones included)."""
    current = _visible(conn, who, node_id)
    rows = conn.execute(
        select(revision, device.c.label)
        .join(device, device.c.id == revision.c.device_id)
        .where(revision.c.node_id == node_id)
        .order_by(revision.c.seq.desc())
    ).all()
    return tuple(
        Version(
            revision_id=RevisionId(r.id),
            node_id=node_id,
            kind=RevisionKind(r.kind),
            size=int(r.size),
            mtime_ns=int(r.mtime_ns),
            created_at=as_utc(r.created_at),
            device_id=DeviceId(r.device_id),
            device_label=r.label,
            head=r.id == current.head_revision,
            damaged=r.damaged_at is not None,
        )
        for r in rows
    )


def children_with_deleted(
    conn: Connection, who: Principal, node_id: NodeId
) -> tuple[HistoryChild, ...]:
    """Every child of a folder that is live or deleted but not purged, by name then id."""
    parent = _visible(conn, who, node_id)
    if parent.kind is not NodeKind.DIR:
        raise BadRequest("not a folder")
    rows = conn.execute(
        select(node)
        .where(node.c.parent_id == node_id, node.c.purged_at.is_(None))
        .order_by(node.c.name, node.c.id)
    ).all()
    return tuple(
        HistoryChild(node_from_row(r), as_utc(r.deleted_at) if r.deleted_at else None) for r in rows
    )


def resolve_path(conn: Connection, who: Principal, path: str) -> Node:
    """The node at `path` (from the account root), deleted ones included: at each step a
    live child wins, else the most recently deleted one with that name; a share the
    caller accepted is found at its placement (so trash paths of shares resolve)."""
    current = get_node(conn, who.namespace_id, who.root_id)
    placed = {
        (f.mount_parent_id, f.mount_name): f.root_id
        for f in shares.followed(conn, who)
        if f.share_id is not None
    }
    for part in [p for p in path.split("/") if p not in ("", ".")]:
        row = conn.execute(
            select(node)
            .where(node.c.parent_id == current.id, node.c.name == part, node.c.purged_at.is_(None))
            .order_by(node.c.deleted, node.c.deleted_at.desc())
            .limit(1)
        ).first()
        if row is None and (current.id, part) in placed:
            row = conn.execute(select(node).where(node.c.id == placed[(current.id, part)])).first()
        if row is None:
            raise NotFound(f"nothing at {path!r} (no {part!r})")
        current = node_from_row(row)
    return current


def _trash_scopes(conn: Connection, who: Principal) -> dict[NamespaceId, tuple[NodeId, str] | None]:
    """The namespaces whose trash the caller sees: its own tree, its shared folders, and
    the shares it may write to (editor; a viewer cannot restore, so sees none). Value:
    None for the caller's own (paths from its root, through its own tree), or, for a
    share it is a member of, the share's root and the path of its placement (paths then
    never name the owner's folders above the share)."""
    scopes: dict[NamespaceId, tuple[NodeId, str] | None] = {who.namespace_id: None}
    for item in shares.followed(conn, who):
        if item.role is access.Role.OWNER:
            scopes[item.namespace_id] = None
        elif item.role is access.Role.EDITOR and item.mount_parent_id is not None:
            parent = conn.execute(select(node).where(node.c.id == item.mount_parent_id)).first()
            above = _path(conn, node_from_row(parent)) if parent is not None else ""
            place = f"{above}/{item.mount_name}" if above else str(item.mount_name)
            scopes[item.namespace_id] = (item.root_id, place)
    return scopes


def _path_in(conn: Connection, start: Node, scope: tuple[NodeId, str] | None) -> str:
    """`_path`, or for a share the caller is a member of, from its placement."""
    if scope is None:
        return _path(conn, start)
    root_id, place = scope
    names = [start.name]
    parent_id = start.parent_id
    while parent_id is not None and parent_id != root_id:
        row = conn.execute(
            select(node.c.name, node.c.parent_id).where(node.c.id == parent_id)
        ).one()
        names.append(row.name)
        parent_id = row.parent_id
    return "/".join([place, *reversed(names)])


def list_trash(conn: Connection, who: Principal) -> tuple[TrashItem, ...]:
    """Deleted, unpurged nodes that are trash items of their own, newest deletion first:
    the caller's own tree's, and those of the shared folders it owns or edits
    (`_trash_scopes`), where anyone who may write deleted them."""
    scopes = _trash_scopes(conn, who)
    rows = conn.execute(
        select(node).where(
            node.c.namespace_id.in_(list(scopes)),
            node.c.deleted == true(),
            node.c.purged_at.is_(None),
        )
    ).all()
    by_id = {r.id: r for r in rows}
    labels = _device_labels(conn, {r.deleted_by for r in rows if r.deleted_by})
    items = []
    for r in rows:
        parent = by_id.get(r.parent_id)
        if parent is not None and _grouped(r.deleted_at, parent.deleted_at):
            continue  # deleted with its folder: restored with it
        found = node_from_row(r)
        size, files = _trash_size(conn, found)
        items.append(
            TrashItem(
                node=found,
                path=_path_in(conn, found, scopes[NamespaceId(r.namespace_id)]),
                deleted_at=as_utc(r.deleted_at) if r.deleted_at else None,
                device_id=DeviceId(r.deleted_by) if r.deleted_by else None,
                device_label=labels.get(r.deleted_by) if r.deleted_by else None,
                size=size,
                files=files,
            )
        )
    epoch = datetime.min.replace(tzinfo=as_utc(utcnow()).tzinfo)
    items.sort(key=lambda i: (i.deleted_at or epoch, i.path), reverse=True)
    return tuple(items)


def _acting_in(conn: Connection, who: Principal, node_id: NodeId) -> Principal:
    """The caller, acting in the namespace that holds the node: its own tree, or a shared
    folder it may write to (an editor's or the owner's), whose root then stands for the
    account root. NotFound without access; Forbidden for a viewer."""
    found = access.node_for_write(conn, who, node_id)
    if found.namespace_id == who.namespace_id:
        return who
    root = access.namespace_info(conn, found.namespace_id).root_id
    assert root is not None, "a namespace other than the account's own is a shared one"
    return replace(who, namespace_id=found.namespace_id, root_id=root)


def _visible(conn: Connection, who: Principal, node_id: NodeId) -> Node:
    """The node if the caller may read it (its tree or an accepted share) and it is not
    purged; NotFound otherwise."""
    found, _ = access.node_for_read(conn, who, node_id)
    purged = conn.execute(select(node.c.purged_at).where(node.c.id == node_id)).scalar_one()
    if purged is not None:
        raise NotFound("no such node (purged from the trash)")
    return found


def _grouped(child_deleted_at: datetime | None, parent_deleted_at: datetime | None) -> bool:
    """True if the child was deleted together with its (deleted) parent."""
    if parent_deleted_at is None:
        return False
    if child_deleted_at is None:
        return True
    return as_utc(child_deleted_at) >= as_utc(parent_deleted_at) - GROUP_WINDOW


def _device_labels(conn: Connection, ids: Iterable[str]) -> dict[str, str]:
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    rows = conn.execute(select(device.c.id, device.c.label).where(device.c.id.in_(wanted)))
    return {r.id: r.label for r in rows}


def _path(conn: Connection, start: Node) -> str:
    """The node's path from the root, following parents (deleted ones too)."""
    names = [start.name]
    parent_id = start.parent_id
    while parent_id is not None:
        row = conn.execute(
            select(node.c.name, node.c.parent_id).where(node.c.id == parent_id)
        ).one()
        if row.parent_id is None:
            break
        names.append(row.name)
        parent_id = row.parent_id
    return "/".join(reversed(names))


def _last_content(conn: Connection, node_id: NodeId) -> Revision | None:
    """The newest content revision of a file that is not damaged (what a restore brings)."""
    row = conn.execute(
        select(revision)
        .where(
            revision.c.node_id == node_id,
            revision.c.kind == RevisionKind.CONTENT.value,
            revision.c.damaged_at.is_(None),
        )
        .order_by(revision.c.seq.desc())
        .limit(1)
    ).first()
    return revision_from_row(row, with_manifest=True) if row is not None else None


def _trash_size(conn: Connection, item: Node) -> tuple[int, int]:
    if item.kind is NodeKind.FILE:
        last = _last_content(conn, item.id)
        return (last.size if last else 0), 1
    size = files = 0
    for child in _grouped_children(conn, item):
        if child.kind is NodeKind.FILE:
            last = _last_content(conn, child.id)
            size += last.size if last else 0
            files += 1
        elif child.kind is NodeKind.DIR:
            more_size, more_files = _trash_size(conn, child)
            size += more_size
            files += more_files
    return size, files


def _grouped_children(conn: Connection, folder: Node) -> list[Node]:
    """Deleted children of a deleted folder that were deleted with it, oldest first."""
    parent_at = conn.execute(select(node.c.deleted_at).where(node.c.id == folder.id)).scalar_one()
    rows = conn.execute(
        select(node)
        .where(
            node.c.parent_id == folder.id,
            node.c.deleted == true(),
            node.c.purged_at.is_(None),
        )
        .order_by(node.c.deleted_at, node.c.id)
    ).all()
    return [node_from_row(r) for r in rows if _grouped(r.deleted_at, parent_at)]


# ---- restoring ----------------------------------------------------------------------------


def restore(
    conn: Connection,
    who: Principal,
    node_id: NodeId,
    *,
    revision_id: RevisionId | None = None,
    at: datetime | None = None,
    max_file_bytes: int,
) -> RestoreResult:
    """Restore a version of a file (as a new head) or bring a deleted node back.

    Without `revision_id`/`at`: a deleted file comes back with its last content, a live
    file gets the revision before its head back ("undo the last change"), a deleted
    folder comes back with what was deleted with it.
    """
    who = _acting_in(conn, who, node_id)
    feed.lock_namespace(conn, who.namespace_id)
    current = _visible(conn, who, node_id)
    if current.parent_id is None or current.id == who.root_id:
        raise BadRequest("the root cannot be restored")
    if current.kind is not NodeKind.FILE:
        if revision_id is not None or at is not None:
            raise BadRequest(f"a {current.kind.value} has no versions to choose from")
        if not current.deleted:
            raise BadRequest(f"the {current.kind.value} is not deleted")
        return _undelete_tree(conn, who, current)
    if current.deleted and revision_id is None and at is None:
        target = _last_content(conn, current.id)  # None: an empty file comes back empty
    else:
        target = _pick_revision(conn, current, revision_id, at)
    if not current.deleted:
        assert target is not None
        if target.id == current.head_revision:
            raise BadRequest("that version is already the current one")
        return _new_head(conn, who, current, target, max_file_bytes)
    if target is not None:
        if target.size > max_file_bytes:
            raise BadRequest("the version is larger than this server accepts")
        _check_chunks(conn, who, target)
    undeleted, parent_id = _live_parent(conn, who, current)
    updated, made, seq = _revive_file(conn, who, current, target, parent_id)
    renamed = updated.name if updated.name != current.name else None
    return RestoreResult(updated, made, undeleted + 1, renamed, seq)


def _pick_revision(
    conn: Connection, file: Node, revision_id: RevisionId | None, at: datetime | None
) -> Revision:
    query = select(revision).where(
        revision.c.node_id == file.id, revision.c.kind == RevisionKind.CONTENT.value
    )
    if revision_id is not None:
        query = query.where(revision.c.id == revision_id)
    elif at is not None:
        query = query.where(revision.c.created_at <= at)
    elif not file.deleted:
        query = query.where(revision.c.id != file.head_revision)
    row = conn.execute(query.order_by(revision.c.seq.desc()).limit(1)).first()
    if row is None:
        if revision_id is not None:
            raise NotFound("no such version of this file")
        raise NotFound("no earlier version of this file" if at is None else f"no version at {at}")
    if row.damaged_at is not None:
        raise BadRequest("that version is damaged (a chunk of it is missing from the store)")
    return revision_from_row(row, with_manifest=True)


def _check_chunks(conn: Connection, who: Principal, target: Revision) -> None:
    """Every chunk must still be owned (it is, unless scrub found one gone)."""
    missing = _missing_chunks(conn, who, target)
    if missing:
        raise MissingChunks(missing)


def _missing_chunks(conn: Connection, who: Principal, target: Revision) -> list[ObjectName]:
    """The version's chunks that the account which committed it no longer owns.

    That account, not the caller: in a shared folder an editor restores versions that
    the owner (or another member) committed. Their bytes are readable by every member
    anyway, so re-referencing them reveals nothing (invariant 5 is about chunks the
    caller could not read)."""
    maker = conn.execute(
        select(device.c.account_id).where(device.c.id == target.device_id)
    ).scalar()
    account = maker if maker is not None else who.account_id
    return list(chunks.unowned(conn, account, [r.object for r in target.chunks or ()]))


def _new_revision(who: Principal, file: Node, target: Revision) -> Revision:
    return Revision(
        id=RevisionId(str(uuid.uuid4())),
        node_id=file.id,
        base_revision=file.head_revision,
        device_id=who.device_id,
        kind=RevisionKind.CONTENT,
        size=target.size,
        mtime_ns=_now_ns(),
        created_at=utcnow(),
        chunks=target.chunks,
    )


def _now_ns() -> int:
    """Now, as a file mtime: a restored file is new content to every tool (make, rsync)."""
    return int(utcnow().timestamp() * 1_000_000_000)


def _new_head(
    conn: Connection, who: Principal, file: Node, target: Revision, max_file_bytes: int
) -> RestoreResult:
    if target.size > max_file_bytes:
        raise BadRequest("the version is larger than this server accepts")
    _check_chunks(conn, who, target)
    _check_quota(conn, who, target.size - file.size)
    seq = feed.next_seq(conn, who.namespace_id)
    made = _new_revision(who, file, target)
    _insert_revision(conn, made, seq)
    add_used_bytes(conn, file.namespace_id, made.size - file.size)
    usage.add(conn, file.parent_id, made.size - file.size, 0)
    updated = replace(
        file,
        size=made.size,
        mtime_ns=made.mtime_ns,
        head_revision=made.id,
        version=file.version + 1,
    )
    write_node(conn, file, updated)
    feed.record(conn, seq, JournalOp.COMMIT, updated, None, made.id)
    return RestoreResult(updated, made, 0, None, seq)


def _revive_file(
    conn: Connection, who: Principal, file: Node, target: Revision | None, parent_id: NodeId
) -> tuple[Node, Revision | None, int]:
    """Bring a deleted file back into `parent_id` (live) with `target`'s content as a new
    head revision, or empty if it never had content."""
    name = _free_name(conn, parent_id, file.name)
    seq = feed.next_seq(conn, who.namespace_id)
    updated = replace(
        file, parent_id=parent_id, name=name, deleted=False, size=0, version=file.version + 1
    )
    made = None
    if target is not None:
        _check_quota(conn, who, target.size)
        made = _new_revision(who, file, target)
        _insert_revision(conn, made, seq)
        add_used_bytes(conn, file.namespace_id, made.size)
        updated = replace(updated, size=made.size, mtime_ns=made.mtime_ns, head_revision=made.id)
    usage.add(conn, parent_id, updated.size, 1)
    _revive(conn, file, updated)
    op = JournalOp.COMMIT if made is not None else JournalOp.CREATE
    feed.record(conn, seq, op, updated, None, made.id if made is not None else None)
    return updated, made, seq


def _undelete_tree(conn: Connection, who: Principal, folder: Node) -> RestoreResult:
    """Bring back a deleted folder and, top-down, everything deleted with it.

    Each folder's grouped children are read before the folder is revived (reviving clears
    its deletion time, which the grouping compares against)."""
    undeleted, parent_id = _live_parent(conn, who, folder)
    children = _grouped_children(conn, folder)
    top, cursor = _revive_dir(conn, who, folder, parent_id)
    renamed = top.name if top.name != folder.name else None
    count = undeleted + 1
    pending = [(top.id, children)]
    while pending:
        new_parent, kids = pending.pop()
        for child in kids:
            if child.kind is NodeKind.FILE:
                target = _last_content(conn, child.id)
                if target is not None and _unowned(conn, who, target):
                    continue  # its content is gone (scrub found it damaged): leave it
                _, _, cursor = _revive_file(conn, who, child, target, new_parent)
            elif child.kind is NodeKind.DIR:
                grandchildren = _grouped_children(conn, child)
                again, cursor = _revive_dir(conn, who, child, new_parent)
                pending.append((again.id, grandchildren))
            else:
                cursor = _revive_symlink(conn, who, child, new_parent)
            count += 1
    return RestoreResult(top, None, count, renamed, cursor)


def _unowned(conn: Connection, who: Principal, target: Revision) -> bool:
    return bool(_missing_chunks(conn, who, target))


def _revive_dir(
    conn: Connection, who: Principal, folder: Node, parent_id: NodeId
) -> tuple[Node, int]:
    name = _free_name(conn, parent_id, folder.name)
    seq = feed.next_seq(conn, who.namespace_id)
    updated = replace(
        folder, parent_id=parent_id, name=name, deleted=False, version=folder.version + 1
    )
    _revive(conn, folder, updated)
    feed.record(conn, seq, JournalOp.CREATE, updated, None)
    return updated, seq


def _revive_symlink(conn: Connection, who: Principal, link: Node, parent_id: NodeId) -> int:
    name = _free_name(conn, parent_id, link.name)
    seq = feed.next_seq(conn, who.namespace_id)
    updated = replace(link, parent_id=parent_id, name=name, deleted=False, version=link.version + 1)
    _revive(conn, link, updated)
    feed.record(conn, seq, JournalOp.CREATE, updated, None)
    return seq


def _revive(conn: Connection, before: Node, after: Node) -> None:
    write_node(conn, before, after)
    conn.execute(update(node).where(node.c.id == after.id).values(deleted_at=None, deleted_by=None))


def _live_parent(conn: Connection, who: Principal, item: Node) -> tuple[int, NodeId]:
    """The live folder `item` goes back into: its old parent, revived if it was deleted
    (with its own parents, but without its other contents); the root if that is gone."""
    assert item.parent_id is not None
    chain: list[Node] = []
    parent = get_node(conn, who.namespace_id, item.parent_id)
    while parent.deleted:
        chain.append(parent)
        if parent.parent_id is None:
            break
        parent = get_node(conn, who.namespace_id, parent.parent_id)
    live_id = parent.id
    for dead in reversed(chain):
        purged = conn.execute(select(node.c.purged_at).where(node.c.id == dead.id)).scalar_one()
        if purged is not None:  # cannot happen (purges take whole subtrees); be safe
            return len(chain), who.root_id
        revived, _ = _revive_dir(conn, who, dead, live_id)
        live_id = revived.id
    return len(chain), live_id


def _free_name(conn: Connection, parent_id: NodeId, name: str) -> str:
    """`name`, or the first `stem (restored N).ext` no live sibling has."""
    if not _taken(conn, parent_id, name):
        return name
    stem, dot, ext = name.rpartition(".")
    if not stem or not dot:  # no extension (or a dot file): suffix the whole name
        stem, ext = name, ""
    suffix = f".{ext}" if ext else ""
    for n in range(1, 10_000):
        label = "restored" if n == 1 else f"restored {n}"
        candidate = f"{stem} ({label}){suffix}"
        if len(candidate.encode()) > 255:
            candidate = f"{stem[:200]} ({label}){suffix}"
        check_name(candidate)
        if not _taken(conn, parent_id, candidate):
            return candidate
    raise BadRequest("no free name to restore into")


def _taken(conn: Connection, parent_id: NodeId, name: str) -> bool:
    found = conn.execute(
        select(node.c.id).where(
            node.c.parent_id == parent_id, node.c.name == name, node.c.deleted == false()
        )
    ).first()
    return found is not None


# ---- purging ------------------------------------------------------------------------------


def purge(
    conn: Connection, who: Principal, node_ids: Sequence[NodeId] | None, now: datetime | None = None
) -> PurgeReport:
    """Delete deleted nodes (all of the trash if `node_ids` is None) and everything deleted
    below them for good, in the caller's transaction."""
    feed.lock_namespace(conn, who.namespace_id)
    if node_ids is None:
        roots = [
            NodeId(r)
            for r in conn.execute(
                select(node.c.id).where(
                    node.c.namespace_id == who.namespace_id,
                    node.c.deleted == true(),
                    node.c.purged_at.is_(None),
                )
            ).scalars()
        ]
    else:
        roots = []
        for node_id in node_ids:
            found = _visible(conn, who, node_id)
            if not found.deleted:
                raise BadRequest("only deleted files and folders can be purged")
            roots.append(node_id)
    return _purge_nodes(conn, _with_deleted_descendants(conn, roots), now or utcnow())


def _with_deleted_descendants(conn: Connection, roots: Sequence[NodeId]) -> list[NodeId]:
    seen: dict[NodeId, None] = dict.fromkeys(roots)
    frontier = list(roots)
    while frontier:
        batch, frontier = frontier[:_IN_BATCH], frontier[_IN_BATCH:]
        for child in conn.execute(
            select(node.c.id).where(
                node.c.parent_id.in_(batch), node.c.deleted == true(), node.c.purged_at.is_(None)
            )
        ).scalars():
            if child not in seen:
                seen[NodeId(child)] = None
                frontier.append(NodeId(child))
    return list(seen)


def _purge_nodes(conn: Connection, ids: Sequence[NodeId], now: datetime) -> PurgeReport:
    revisions = 0
    released = 0
    for start in range(0, len(ids), _IN_BATCH):
        batch = list(ids[start : start + _IN_BATCH])
        conn.execute(
            update(node)
            .where(node.c.id.in_(batch))
            .values(head_revision=None, purged_at=now, size=0)
        )
        rev_ids = [
            RevisionId(r)
            for r in conn.execute(select(revision.c.id).where(revision.c.node_id.in_(batch)))
            .scalars()
            .all()
        ]
        gone, freed = _delete_revisions(conn, rev_ids, now)
        revisions += gone
        released += freed
    return PurgeReport(nodes=len(ids), revisions=revisions, chunks_released=released)


def _delete_revisions(
    conn: Connection, ids: Sequence[RevisionId], now: datetime
) -> tuple[int, int]:
    """Delete revisions (never a head: callers make sure) and their manifest rows, and
    lower the refcounts they held, all in the caller's transaction. Returns (revisions
    deleted, chunks whose refcount reached 0)."""
    released = 0
    for start in range(0, len(ids), _IN_BATCH):
        batch = list(ids[start : start + _IN_BATCH])
        counts = Counter(
            conn.execute(
                select(revision_chunk.c.object).where(revision_chunk.c.revision_id.in_(batch))
            ).scalars()
        )
        conn.execute(delete(revision_chunk).where(revision_chunk.c.revision_id.in_(batch)))
        # Sorted, one UPDATE per object, as commits do: no deadlock with them on PostgreSQL.
        for obj, count in sorted(counts.items()):
            conn.execute(
                update(chunk).where(chunk.c.object == obj).values(refcount=chunk.c.refcount - count)
            )
        objects = sorted(counts)
        for obj_start in range(0, len(objects), _IN_BATCH):
            released += conn.execute(
                update(chunk)
                .where(chunk.c.object.in_(objects[obj_start : obj_start + _IN_BATCH]))
                .where(chunk.c.refcount == 0)
                .values(released_at=now)
            ).rowcount
        conn.execute(
            update(journal).where(journal.c.revision_id.in_(batch)).values(revision_id=None)
        )
        conn.execute(
            update(revision)
            .where(revision.c.base_revision_id.in_(batch), revision.c.id.not_in(batch))
            .values(base_revision_id=None)
        )
        conn.execute(update(revision).where(revision.c.id.in_(batch)).values(base_revision_id=None))
        conn.execute(delete(revision).where(revision.c.id.in_(batch)))
    return len(ids), released


# ---- retention ----------------------------------------------------------------------------


def apply_retention(
    db: Database, policy: RetentionPolicy, now: datetime | None = None
) -> RetentionReport:
    """Thin old versions and purge expired trash in every namespace (one transaction per
    namespace, each holding that namespace's change lock)."""
    now = now or utcnow()
    with db.read() as conn:
        namespaces = [NamespaceId(n) for n in conn.execute(select(namespace.c.id)).scalars()]
    removed = purged = released = 0
    for namespace_id in namespaces:
        with db.write() as conn:
            feed.lock_namespace(conn, namespace_id)
            gone, freed = _thin(conn, namespace_id, policy, now)
            removed += gone
            released += freed
            expired = _expired_trash(conn, namespace_id, now - timedelta(days=policy.trash_days))
            if expired:
                report = _purge_nodes(conn, _with_deleted_descendants(conn, expired), now)
                purged += report.nodes
                removed += report.revisions
                released += report.chunks_released
    return RetentionReport(revisions_removed=removed, nodes_purged=purged, chunks_released=released)


def _expired_trash(conn: Connection, namespace_id: NamespaceId, cutoff: datetime) -> list[NodeId]:
    return [
        NodeId(r)
        for r in conn.execute(
            select(node.c.id).where(
                node.c.namespace_id == namespace_id,
                node.c.deleted == true(),
                node.c.purged_at.is_(None),
                or_(node.c.deleted_at.is_(None), node.c.deleted_at < cutoff),
            )
        ).scalars()
    ]


def thinning_victims(
    revisions: Sequence[tuple[RevisionId, datetime, bool]],
    policy: RetentionPolicy,
    now: datetime,
) -> list[RevisionId]:
    """Which of one file's revisions (id, created_at, is_head) retention removes.

    Kept: the head; everything younger than `keep_all_days`; of older ones, the newest of
    each UTC day while younger than `keep_daily_days`. The rest goes.
    """
    keep_all = now - timedelta(days=policy.keep_all_days)
    keep_daily = now - timedelta(days=policy.keep_daily_days)
    newest_of_day: dict[object, tuple[datetime, RevisionId]] = {}
    for rev_id, created, _head in revisions:
        day = as_utc(created).date()
        best = newest_of_day.get(day)
        if best is None or as_utc(created) >= best[0]:
            newest_of_day[day] = (as_utc(created), rev_id)
    daily_keepers = {rev_id for _, rev_id in newest_of_day.values()}
    victims = []
    for rev_id, created, head in revisions:
        at = as_utc(created)
        if head or at >= keep_all:
            continue
        if at >= keep_daily and rev_id in daily_keepers:
            continue
        victims.append(rev_id)
    return victims


def _thin(
    conn: Connection, namespace_id: NamespaceId, policy: RetentionPolicy, now: datetime
) -> tuple[int, int]:
    cutoff = now - timedelta(days=policy.keep_all_days)
    old_files = conn.execute(
        select(revision.c.node_id)
        .join(node, node.c.id == revision.c.node_id)
        .where(
            node.c.namespace_id == namespace_id,
            node.c.purged_at.is_(None),
            revision.c.created_at < cutoff,
            or_(node.c.head_revision.is_(None), revision.c.id != node.c.head_revision),
        )
        .distinct()
    ).scalars()
    per_file: dict[str, list[tuple[RevisionId, datetime, bool]]] = defaultdict(list)
    for file_id in list(old_files):
        rows = conn.execute(
            select(revision.c.id, revision.c.created_at, node.c.head_revision)
            .join(node, node.c.id == revision.c.node_id)
            .where(revision.c.node_id == file_id)
        ).all()
        per_file[file_id] = [
            (RevisionId(r.id), as_utc(r.created_at), r.id == r.head_revision) for r in rows
        ]
    victims: list[RevisionId] = []
    for revs in per_file.values():
        victims += thinning_victims(revs, policy, now)
    if not victims:
        return 0, 0
    return _delete_revisions(conn, victims, now)
