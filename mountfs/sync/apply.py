"""Applying the backend's journal to the local tree.

Each entry carries the node as it is after the change (and, for a commit, the revision's
manifest with keys). Applying it makes the local mirror agree, in one SQLite transaction per
entry, then tells the kernel what it must forget (`Invalidator`), after the commit (a lookup
racing with the apply must never re-cache the old state).

Local work always wins locally until the backend has decided:
- an entry for a node whose local `remote_version` is already at or past it is our own
  change (or one already applied) and is skipped;
- an entry this device made for a node it no longer has is skipped: the node was deleted
  here and purged once the backend acknowledged the delete, and the pull, which lags
  behind the push, must not resurrect it (or push a conflicted-copy rename of whatever
  took its name since);
- a node with queued metadata ops keeps its local name and attributes: the pusher rebases
  those ops on the new version and the last writer wins;
- a file with unsent content keeps it: its commit will meet the remote head as a conflict,
  which the uploader resolves by keeping both (a conflicted copy);
- a local node that was never pushed and sits on a name that a remote node takes gets the
  remote name's conflict-free neighbour name, so both stay visible.
Remote content is not downloaded here: the file's chunk map is replaced and its bytes are
fetched on first read (`Fetcher`).
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from mountfs.cache.block_cache import BlockCache
from mountfs.state import extents, nodes, outbox
from mountfs.state.db import StateDb
from mountfs.state.schema import EXTENT_PRESENT, ROOT_INO
from mountfs.sync import manifests
from mountfs.sync.conflicts import conflicted_name
from mountfs.transport.api import JournalEntry, RemoteNode
from mountfs.types import InodeNo, Manifest, keys_from_wire

log = logging.getLogger(__name__)


class Invalidator(Protocol):
    """What the kernel must be told after local state changed under it."""

    def entry(self, parent: InodeNo, name: str) -> None:
        """A name in `parent` appeared, vanished or now points elsewhere."""

    def inode(self, ino: InodeNo, data: bool) -> None:
        """The attributes (and, if `data`, the cached content) of `ino` are stale."""


@dataclass(slots=True)
class _Pending:
    entries: list[tuple[InodeNo, str]] = field(default_factory=list)
    inodes: list[tuple[InodeNo, bool]] = field(default_factory=list)
    unlinked: list[InodeNo] = field(default_factory=list)


class RemoteApplier:
    """Applies journal entries to the state; see the module docstring for the rules.

    Args:
        owner: uid/gid that remote nodes get locally (the mounting user).
        device_label: this device's label, for conflicted-copy names.
        device_id: this device's id: its own entries for nodes it no longer has are skipped.
        purge_if_unused: called with an unlinked inode; the tree drops it if the kernel and
            no open handle still use it.
    """

    def __init__(
        self,
        db: StateDb,
        cache: BlockCache,
        invalidator: Invalidator,
        purge_if_unused: Callable[[InodeNo], object],
        owner: tuple[int, int],
        device_label: str,
        device_id: str,
    ) -> None:
        self._db = db
        self._cache = cache
        self._invalidator = invalidator
        self._purge_if_unused = purge_if_unused
        self._owner = owner
        self._device_label = device_label
        self._device_id = device_id

    def apply(self, entry: JournalEntry) -> None:
        """Apply one entry and advance the cursor, atomically; then notify the kernel."""
        pending = _Pending()
        with self._db.transaction() as conn:
            self._apply(conn, entry, pending)
            self._db.set_meta("cursor", str(entry.seq))
        for parent, name in pending.entries:
            self._invalidator.entry(parent, name)
        for ino, data in pending.inodes:
            self._invalidator.inode(ino, data)
        for ino in pending.unlinked:
            self._purge_if_unused(ino)

    def _apply(self, conn: sqlite3.Connection, entry: JournalEntry, pending: _Pending) -> None:
        remote = entry.node
        local = nodes.by_node_id(conn, remote.id)
        if remote.parent_id is None:  # the account root
            if local is not None:
                conn.execute(
                    "UPDATE nodes SET remote_version = ? WHERE ino = ?", (remote.version, local.ino)
                )
            return
        if local is not None and (local.remote_version or 0) >= remote.version:
            return
        if local is None and entry.device_id == self._device_id:
            return  # made here, then deleted here and purged: never bring it back
        if remote.deleted:
            if local is not None:
                self._delete(conn, local, remote, pending)
            return
        if local is not None and _has_own_ops(conn, remote.id):
            # Our queued ops decide its place and attributes (they may have moved it out of
            # a folder deleted since): only the version is news.
            conn.execute(
                "UPDATE nodes SET remote_version = ? WHERE ino = ?", (remote.version, local.ino)
            )
        else:
            parent = nodes.by_node_id(conn, remote.parent_id)
            if parent is None or (parent.parent_ino is None and parent.ino != ROOT_INO):
                # Our own entries are old news about a place we have left since.
                level = logging.DEBUG if entry.device_id == self._device_id else logging.WARNING
                log.log(level, "journal %d: parent of %s unknown; skipped", entry.seq, remote.id)
                return
            if local is None:
                local = self._create(conn, remote, parent.ino, pending)
            else:
                self._update(conn, local, remote, parent.ino, pending)
        if entry.revision is not None and local is not None:
            self._content(conn, local, remote, entry.revision, pending)

    def _free_name(
        self, conn: sqlite3.Connection, parent_ino: InodeNo, name: str, pending: _Pending
    ) -> None:
        """Make `name` free in `parent_ino` for a remote node by renaming its local holder.

        The holder is either a node never pushed (two devices created the same name) or one
        whose own move or delete is further down the journal or still queued here; either
        way it moves to a conflicted-copy name, and the backend hears of the rename.
        """
        holder = nodes.by_name(conn, parent_ino, name)
        if holder is None:
            return
        new_name = self._unused_name(conn, parent_ino, name)
        nodes.set_fields(conn, holder.ino, {"name": new_name})
        outbox.append_update(conn, holder.node_id, {"name": new_name})
        pending.entries += [(parent_ino, name), (parent_ino, new_name)]
        log.info("name clash on %r: local node renamed to %r", name, new_name)

    def _unused_name(self, conn: sqlite3.Connection, parent_ino: InodeNo, name: str) -> str:
        day = time.strftime("%Y-%m-%d", time.gmtime())
        for n in range(1, 1000):
            candidate = conflicted_name(name, self._device_label, day, n)
            if nodes.by_name(conn, parent_ino, candidate) is None:
                return candidate
        raise RuntimeError(f"no free conflicted-copy name for {name!r}")

    def _create(
        self, conn: sqlite3.Connection, remote: RemoteNode, parent_ino: InodeNo, pending: _Pending
    ) -> nodes.Node:
        self._free_name(conn, parent_ino, remote.name, pending)
        uid, gid = self._owner
        node = nodes.insert(
            conn,
            nodes.NewNode(
                node_id=remote.id,  # type: ignore[arg-type]
                parent_ino=parent_ino,
                name=remote.name,
                kind=remote.kind,  # type: ignore[arg-type]
                mode=remote.mode,
                uid=uid,
                gid=gid,
                time_ns=remote.mtime_ns,
                size=len(remote.target.encode()) if remote.target else 0,
                target=remote.target,
                remote_version=remote.version,
            ),
        )
        pending.entries.append((parent_ino, remote.name))
        return node

    def _update(
        self,
        conn: sqlite3.Connection,
        local: nodes.Node,
        remote: RemoteNode,
        parent_ino: InodeNo,
        pending: _Pending,
    ) -> None:
        fields: dict[str, object] = {"remote_version": remote.version}
        moved = local.parent_ino != parent_ino or local.name != remote.name
        if moved and local.parent_ino is not None and local.name is not None:
            self._free_name(conn, parent_ino, remote.name, pending)
            pending.entries += [(local.parent_ino, local.name), (parent_ino, remote.name)]
            fields.update(parent_ino=parent_ino, name=remote.name)
        if local.mode != remote.mode:
            fields["mode"] = remote.mode
        if local.mtime_ns != remote.mtime_ns and not local.dirty:
            fields["mtime_ns"] = remote.mtime_ns  # a dirty file's commit will carry its own
        nodes.set_fields(conn, local.ino, fields)
        pending.inodes.append((local.ino, False))

    def _delete(
        self, conn: sqlite3.Connection, local: nodes.Node, remote: RemoteNode, pending: _Pending
    ) -> None:
        if local.dirty or outbox.references(conn, local.node_id):
            # An edit (or a local change still queued) beats a remote delete: keep the node;
            # the pusher's ops or the uploader's commit bring it back on the backend.
            nodes.set_fields(conn, local.ino, {"remote_version": remote.version})
            log.info("remote delete of %s ignored: it has local changes", local.node_id)
            return
        if local.kind == "dir" and nodes.has_children(conn, local.ino):
            log.warning("remote delete of non-empty dir %s deferred", local.node_id)
            return
        if local.parent_ino is not None and local.name is not None:
            pending.entries.append((local.parent_ino, local.name))
        nodes.set_fields(
            conn, local.ino, {"parent_ino": None, "name": None, "remote_version": remote.version}
        )
        pending.unlinked.append(local.ino)

    def _content(
        self,
        conn: sqlite3.Connection,
        local: nodes.Node,
        remote: RemoteNode,
        revision: dict[str, object],
        pending: _Pending,
    ) -> None:
        if local.dirty:
            return  # our commit will meet this head as a conflict (uploader keeps both)
        manifest = Manifest.from_wire(revision)
        chunks = revision.get("chunks")
        keys = keys_from_wire(chunks if isinstance(chunks, list) else [])
        manifests.replace(conn, local.ino, manifest, keys)
        extents.clear(conn, local.ino, EXTENT_PRESENT)
        self._cache.truncate(local.ino, 0)
        nodes.set_fields(
            conn,
            local.ino,
            {
                "size": manifest.size,
                "remote_size": manifest.size,
                "remote_head_revision": str(revision["id"]),
                "mtime_ns": remote.mtime_ns,
                "complete": manifest.size == 0,
            },
        )
        pending.inodes.append((local.ino, True))


def _has_own_ops(conn: sqlite3.Connection, node_id: str) -> bool:
    row = conn.execute("SELECT 1 FROM outbox WHERE node_id = ? LIMIT 1", (node_id,)).fetchone()
    return row is not None
