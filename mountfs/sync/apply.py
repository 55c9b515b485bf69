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
- a node with queued metadata ops keeps what those ops set (its folder, its name, its
  attributes) and takes the rest from the backend: the pusher rebases the ops on the new
  version and the last writer wins field by field, so both sides end with the same place
  (a move sent with only a new folder keeps the backend's name there, and so must we);
- a file with unsent content keeps it: its commit will meet the remote head as a conflict,
  which the uploader resolves by keeping both (a conflicted copy); a clean file open for
  writing keeps it too, and the remote revision waits in `deferred_content` until the last
  writable handle is closed (`apply_deferred`);
- a local node that was never pushed and sits on a name that a remote node takes gets the
  remote name's conflict-free neighbour name, so both stay visible;
- a node removed here whose removal is still queued is left alone: the removal's
  precondition meets the remote change and the pusher decides (a delete loses to a
  concurrent edit, `mountfs.sync.conflicts`); a node removed here and acknowledged that
  comes back (another device restored it) gets a new inode number;
- a folder deleted remotely that still has children here (queued creates or moves into
  it) is kept: those ops restore it on the backend;
- a remote move that would put a folder inside its own subtree here (crossing moves: our
  queued move of the other folder is still unsent) first moves the folder of ours that
  closes the cycle back out, to where the moved one was; our queued move then fails with
  `cycle` and the resolver adopts the backend's place. That place is this device's alone,
  so the folder is noted (`stale_places`) and, once no queued op sets its place, the engine
  gives it the backend's (`SyncEngine._refresh_places`): the queued move may be accepted
  after all (the other device moved its folder back meanwhile), and a folder without a
  queued move got here by a move of ours the backend took before this pull.
`adopt` applies a node state the backend answered outside the journal (a refused op's
`current`, a folder listing), without moving the cursor; the conflict resolver uses it.
Remote content is not downloaded here: the file's chunk map is replaced and its bytes are
fetched on first read (`Fetcher`), or by the pinner for pinned files (`on_content`).
With the writeback cache the kernel owns the size and pages of a file it has cached, so a
file the kernel (or an open handle) still uses gets its new content under a new inode
number (`nodes.renumber`) and the kernel is told that the old inode's name is gone
(`entry(..., deleted=old)`): the next lookup builds a fresh inode, while descriptors opened
before keep reading the old revision, as after an atomic replace by rename.
"""

from __future__ import annotations

import bisect
import dataclasses
import json
import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from mountfs.cache.block_cache import BlockCache
from mountfs.state import extents, nodes, outbox
from mountfs.state.db import StateDb
from mountfs.state.schema import EXTENT_PRESENT, ROOT_INO
from mountfs.sync import manifests
from mountfs.sync.carry import Carry
from mountfs.sync.conflicts import PLACE as _PLACE
from mountfs.sync.conflicts import conflicted_name, removal_queued
from mountfs.sync.conflicts import queued_place as _queued_place
from mountfs.transport.api import JournalEntry, RemoteNode
from mountfs.types import ChunkRef, InodeNo, Manifest, keys_from_wire

log = logging.getLogger(__name__)

STALE_PLACES = "stale_places"
"""`meta` key: JSON list of node ids whose place here the backend never had (see
`RemoteApplier.stale_places`)."""


class Invalidator(Protocol):
    """What the kernel must be told after local state changed under it."""

    def entry(self, parent: InodeNo, name: str, deleted: int = 0) -> None:
        """A name in `parent` appeared, vanished or now points elsewhere.

        `deleted`: the inode the name referred to, which no name refers to any more.
        """

    def inode(self, ino: InodeNo, data: bool) -> None:
        """The attributes (and, if `data`, the cached content) of `ino` are stale."""


@dataclass(slots=True)
class _Pending:
    entries: list[tuple[InodeNo, str]] = field(default_factory=list)
    inodes: list[tuple[InodeNo, bool]] = field(default_factory=list)
    unlinked: list[InodeNo] = field(default_factory=list)
    replaced: list[tuple[InodeNo, str, InodeNo]] = field(default_factory=list)
    """(parent, name, old inode) of files whose content moved to a new inode number."""
    content: list[InodeNo] = field(default_factory=list)
    """Files whose remote content changed (the pinner downloads those it keeps)."""
    carries: list[Carry] = field(default_factory=list)
    """Cached chunks to copy from a retired inode to its successor."""

    @property
    def has_effects(self) -> bool:
        """More to do after the commit than telling the kernel (`RemoteApplier.apply_page`)."""
        return bool(self.unlinked or self.replaced or self.content or self.carries)


class RemoteApplier:
    """Applies journal entries to the state; see the module docstring for the rules.

    Args:
        owner: uid/gid that remote nodes get locally (the mounting user).
        device_label: this device's label, for conflicted-copy names.
        device_id: this device's id: its own entries for nodes it no longer has are skipped.
        purge_if_unused: called with an unlinked inode; the tree drops it if the kernel and
            no open handle still use it.
        in_use: True while the kernel or an open handle references the inode (its remote
            content then arrives under a new inode number).
        is_open_for_write: True while a writable handle of the inode is open (its remote
            content is deferred until it is closed).
        on_content: called with each file inode whose remote content changed, after the
            commit (the composition root points it at the pinner).
        carry: takes the cached chunks a new revision shares with the old one
            (`Carrier.submit`); None (no mount) drops the cached bytes instead.
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
        *,
        in_use: Callable[[InodeNo], bool] = lambda ino: False,
        is_open_for_write: Callable[[InodeNo], bool] = lambda ino: False,
        on_content: Callable[[InodeNo], object] = lambda ino: None,
        carry: Callable[[Carry], object] | None = None,
    ) -> None:
        self._db = db
        self._cache = cache
        self._invalidator = invalidator
        self._purge_if_unused = purge_if_unused
        self._owner = owner
        self._device_label = device_label
        self._device_id = device_id
        self._in_use = in_use
        self._is_open_for_write = is_open_for_write
        self._on_content = on_content
        self._carry = carry

    def apply(self, entry: JournalEntry, cursor_key: str = "cursor") -> None:
        """Apply one entry and advance the cursor, atomically; then notify the kernel.

        `cursor_key`: the meta key of the journal's cursor (`cursor` for the account's own
        journal, `cursor:<namespace>` for a followed share, `mountfs.sync.shared`)."""
        pending = _Pending()
        with self._db.transaction() as conn:
            self._apply(conn, entry, pending)
            self._db.set_meta(cursor_key, str(entry.seq))
        self._flush(pending)

    def apply_page(self, entries: Sequence[JournalEntry], cursor_key: str = "cursor") -> None:
        """`apply` each entry in order, many to a transaction.

        A page of news is mostly this device's own changes coming back (no-ops here), and
        a transaction each was most of the cost of pulling it: during `tar x` of 3,000
        files the pull thread committed 3,000 times. A transaction ends early after an
        entry whose effects go beyond telling the kernel (a purge, a renumbered or newly
        fetched content), so those run exactly when `apply` would run them. If an entry
        fails, the page is applied again one entry at a time, so everything before the
        failing entry still lands, as with `apply`.
        """
        done = 0
        while done < len(entries):
            pending = _Pending()
            start = done
            try:
                with self._db.transaction() as conn:
                    while done < len(entries):
                        self._apply(conn, entries[done], pending)
                        done += 1
                        if pending.has_effects:
                            break
                    self._db.set_meta(cursor_key, str(entries[done - 1].seq))
            except Exception:
                for entry in entries[start:]:
                    self.apply(entry, cursor_key)
                return
            self._flush(pending)

    def adopt(
        self,
        remote: RemoteNode,
        revision: dict[str, object] | None,
        prepare: Callable[[sqlite3.Connection], list[tuple[InodeNo, str]]] | None = None,
    ) -> bool:
        """Make the local node agree with `remote`, a state the backend answered.

        For the conflict resolver, after it gave up a local change (a refused delete, move
        or rename-over): the node goes where the backend has it, with the backend's
        attributes and, if `revision` (its head, with keys) is given, its content. A node
        with other queued moves keeps its place (those moves will set it). Newer news
        already applied from the journal wins. The cursor does not move. `prepare` runs
        first in the same transaction (the resolver's own change that must commit with it)
        and returns the names it changed.

        Returns:
            False if the node's parent is not known here (adopt the parent first).
        """
        pending = _Pending()
        with self._db.transaction() as conn:
            if prepare is not None:
                pending.entries += prepare(conn)
            done = self._adopt(conn, remote, revision, pending)
        self._flush(pending)
        return done

    def changed(self, entries: list[tuple[InodeNo, str]], unlinked: list[InodeNo]) -> None:
        """Tell the kernel about names the conflict resolver changed (after its commit)."""
        self._flush(_Pending(entries=entries, unlinked=unlinked))

    def _flush(self, pending: _Pending) -> None:
        """After a commit: tell the kernel what changed, purge what went, announce content."""
        for parent, name in pending.entries:
            self._invalidator.entry(parent, name)
        for ino, data in pending.inodes:
            self._invalidator.inode(ino, data)
        for ino in pending.unlinked:
            self._purge_if_unused(ino)
        self._notify_content(pending)

    def _adopt(
        self,
        conn: sqlite3.Connection,
        remote: RemoteNode,
        revision: dict[str, object] | None,
        pending: _Pending,
    ) -> bool:
        local = nodes.by_node_id(conn, remote.id)
        if remote.parent_id is None:
            return True
        if local is not None and (local.remote_version or 0) > remote.version:
            return True
        if remote.deleted:
            if local is not None:
                self._delete(conn, local, remote, pending)
            return True
        if local is not None and not local.linked and removal_queued(conn, remote.id):
            # Removed here, the removal still queued (the resolver restored a folder of
            # ours that another device deleted, to send a move into it that comes before
            # our own delete of it): it stays removed here and the removal goes out on the
            # fresh version. Brought back now, it would stay here after the delete landed.
            nodes.set_fields(conn, local.ino, {"remote_version": remote.version})
            return True
        own = _queued_place(conn, remote.id) if local is not None and local.linked else frozenset()
        if local is not None and own == _PLACE:
            nodes.set_fields(conn, local.ino, {"remote_version": remote.version})
        else:
            parent = _parent_for(conn, local, remote, own)
            if parent is None or not parent.linked:
                return False
            if local is None:
                local = self._create(conn, remote, parent.ino, pending)
            else:
                local = self._update(conn, local, _merged(local, remote, own), parent.ino, pending)
        if (
            revision is not None
            and local.kind == "file"
            and local.remote_head_revision != revision.get("id")
        ):
            self._content(conn, local, remote, revision, pending)
        return True

    def _notify_content(self, pending: _Pending) -> None:
        if self._carry is not None:
            for carry in pending.carries:
                self._carry(carry)  # holds the old inode before the purges below
        for parent, name, old in pending.replaced:
            self._invalidator.entry(parent, name, old)
            self._purge_if_unused(old)
        carried = {carry.dst for carry in pending.carries}
        for ino in pending.content:
            if ino not in carried:  # the carrier reports those when it is done
                self._on_content(ino)

    def apply_deferred(self) -> int:
        """Apply remote revisions that waited for a file's writers to close; return how many.

        A file that was written meanwhile keeps its content (its commit meets the remote
        head as a conflict); a file gone meanwhile drops its deferred revision.
        """
        rows = self._db.conn.execute("SELECT node_id, body FROM deferred_content").fetchall()
        applied = 0
        for node_id, body in rows:
            node = nodes.by_node_id(self._db.conn, node_id)
            if node is not None and node.linked and self._is_open_for_write(node.ino):
                continue
            pending = _Pending()
            with self._db.transaction() as conn:
                conn.execute("DELETE FROM deferred_content WHERE node_id = ?", (node_id,))
                if node is not None and node.linked and not node.dirty:
                    saved = json.loads(body)
                    self._replace_content(
                        conn, node.ino, saved["revision"], int(saved["mtime_ns"]), pending
                    )
                    applied += 1
            self._notify_content(pending)
        return applied

    def _apply(self, conn: sqlite3.Connection, entry: JournalEntry, pending: _Pending) -> None:
        if entry.op == "share":  # news of a share offer, no node change (mountfs.sync.shared)
            return
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
        if local is not None and not local.linked and outbox.references(conn, remote.id):
            # Removed here, the removal still queued: its precondition meets this change
            # and the pusher decides (an edit beats the delete). Not even the version is
            # taken, so that the removal is refused and looked at again.
            return
        if remote.deleted:
            if local is not None:
                self._delete(conn, local, remote, pending)
            return
        # A node's place is two fields, merged one by one: what our queued moves set stays
        # ours (they may have moved it out of a folder deleted since; the backend takes
        # them on top: last writer wins), the rest is the backend's. Taking nothing when a
        # queued op sets only one of them would leave this device's tree different from
        # the backend's once that op lands (it changes only its own field there).
        # Queued attribute changes alone keep the attributes, not the place (`_update`).
        own = _queued_place(conn, remote.id) if local is not None and local.linked else frozenset()
        if local is not None and own == _PLACE:
            conn.execute(
                "UPDATE nodes SET remote_version = ? WHERE ino = ?", (remote.version, local.ino)
            )
        else:
            parent = _parent_for(conn, local, remote, own)
            if parent is None or (parent.parent_ino is None and parent.ino != ROOT_INO):
                # Our own entries are old news about a place we have left since; another
                # device's, about a folder removed here: if our delete of it is refused
                # (not empty), the resolver lists the folder again and adopts what is in it.
                level = logging.DEBUG if entry.device_id == self._device_id else logging.INFO
                log.log(level, "journal %d: parent of %s unknown; skipped", entry.seq, remote.id)
                return
            if local is None:
                local = self._create(conn, remote, parent.ino, pending)
            else:
                local = self._update(conn, local, _merged(local, remote, own), parent.ino, pending)
        if (
            entry.revision is not None
            and local is not None
            and entry.revision.get("id") != local.remote_head_revision  # ours, recorded
        ):
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
    ) -> nodes.Node:
        """Move and set attributes of a known node; returns its row (maybe a new one)."""
        if not local.linked:
            # Removed here and acknowledged, back on the backend (restored): a new inode
            # number, since the kernel may still hold the old one as deleted.
            conn.execute(
                "UPDATE nodes SET node_id = ? WHERE ino = ?",
                (nodes.retired_id(local.node_id, local.ino), local.ino),
            )
            pending.unlinked.append(local.ino)
            return self._create(conn, remote, parent_ino, pending)
        fields: dict[str, object] = {"remote_version": remote.version}
        moved = local.parent_ino != parent_ino or local.name != remote.name
        if moved and local.kind == "dir" and nodes.ancestors_include(conn, parent_ino, local.ino):
            self._break_cycle(conn, local, parent_ino, pending)
        if moved and local.parent_ino is not None and local.name is not None:
            self._free_name(conn, parent_ino, remote.name, pending)
            pending.entries += [(local.parent_ino, local.name), (parent_ino, remote.name)]
            fields.update(parent_ino=parent_ino, name=remote.name)
        own_attrs = _has_own_ops(conn, local.node_id)  # queued: ours are sent after theirs
        if local.mode != remote.mode and not own_attrs:
            fields["mode"] = remote.mode
        if local.mtime_ns != remote.mtime_ns and not local.dirty and not own_attrs:
            fields["mtime_ns"] = remote.mtime_ns  # a dirty file's commit will carry its own
        nodes.set_fields(conn, local.ino, fields)
        pending.inodes.append((local.ino, False))
        updated = nodes.get(conn, local.ino)
        assert updated is not None
        return updated

    def _break_cycle(
        self, conn: sqlite3.Connection, moved: nodes.Node, parent_ino: InodeNo, pending: _Pending
    ) -> None:
        """`parent_ino` lies below `moved` here: move the folder that closes the loop out.

        Only a queued move of ours can have put it there (the backend never has a cycle),
        so the folder on the path that has a queued move goes back out, to the place
        `moved` leaves; that queued move will be refused (`cycle`) and the resolver then
        adopts the backend's place for it.
        """
        path: list[nodes.Node] = []
        cursor = nodes.get(conn, parent_ino)
        while cursor is not None and cursor.ino != moved.ino and len(path) < 4096:
            path.append(cursor)
            cursor = None if cursor.parent_ino is None else nodes.get(conn, cursor.parent_ino)
        if not path or moved.parent_ino is None:
            return
        culprit = next((n for n in reversed(path) if _queued_move(conn, n.node_id)), path[-1])
        assert culprit.name is not None
        assert culprit.parent_ino is not None
        name = culprit.name
        if nodes.by_name(conn, moved.parent_ino, name) is not None:
            name = self._unused_name(conn, moved.parent_ino, name)
        nodes.set_fields(conn, culprit.ino, {"parent_ino": moved.parent_ino, "name": name})
        pending.entries += [(culprit.parent_ino, culprit.name), (moved.parent_ino, name)]
        # That place is this device's alone: the culprit goes where the backend has it once
        # nothing queued here sets its place any more (`stale_places`). Without a queued
        # move its place here came from a later state of the backend than the entry being
        # applied (our move, accepted before this pull; nothing further down the journal
        # moves it back); with one, the move may still be accepted (the other device
        # undid its own meanwhile) and its answer only moves the version.
        self._note_stale(culprit.node_id)
        log.info("crossing moves: %s taken out of %s's subtree", culprit.node_id, moved.node_id)

    def _note_stale(self, node_id: str) -> None:
        stale = self.stale_places()
        if node_id not in stale:
            self._db.set_meta(STALE_PLACES, json.dumps([*stale, node_id]))

    def stale_places(self) -> list[str]:
        """Nodes whose place here was set without the backend (`_break_cycle`); the engine
        adopts the backend's place for each after a pull (`SyncEngine._refresh_places`).
        Kept in `meta`, in the same transaction as the move, so a crash cannot forget one."""
        raw = self._db.get_meta(STALE_PLACES)
        return [str(node_id) for node_id in json.loads(raw)] if raw else []

    def settled(self, node_id: str) -> None:
        """`node_id` has the backend's place again (or is gone): no longer stale."""
        with self._db.transaction():
            rest = [other for other in self.stale_places() if other != node_id]
            self._db.set_meta(STALE_PLACES, json.dumps(rest))

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
            # What is in it here was added (or moved in) here: those ops restore it.
            nodes.set_fields(conn, local.ino, {"remote_version": remote.version})
            log.info("remote delete of %s kept: it has children here", local.node_id)
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
        if self._is_open_for_write(local.ino):
            # A writer may still change it: never pull the content from under it. The
            # revision waits until the last writable handle is closed (apply_deferred).
            body = json.dumps({"revision": revision, "mtime_ns": remote.mtime_ns})
            conn.execute(
                "INSERT INTO deferred_content (node_id, body) VALUES (?, ?) "
                "ON CONFLICT(node_id) DO UPDATE SET body = excluded.body",
                (local.node_id, body),
            )
            log.info("remote content of %s waits until it is closed here", local.node_id)
            return
        self._replace_content(conn, local.ino, revision, remote.mtime_ns, pending)

    def _replace_content(
        self,
        conn: sqlite3.Connection,
        ino: InodeNo,
        revision: dict[str, object],
        mtime_ns: int,
        pending: _Pending,
    ) -> None:
        """Make a clean file's content the remote revision's (fetched on demand).

        A file the kernel or a handle still uses moves to a new inode number first (see the
        module docstring); the old inode keeps its bytes and chunk map for the descriptors
        that have it open and is purged once nobody uses it. So does a file whose cached
        chunks the new revision shares: the `Carrier` copies them to the new inode.
        """
        node = nodes.get(conn, ino)  # re-read: the entry may have renamed it already
        if node is None or node.kind != "file":
            return
        conn.execute("DELETE FROM deferred_content WHERE node_id = ?", (node.node_id,))
        manifest = Manifest.from_wire(revision)
        chunks = revision.get("chunks")
        keys = keys_from_wire(chunks if isinstance(chunks, list) else [])
        reuse = _reusable(conn, node, manifest) if self._carry is not None else ()
        # In place only if nothing can still write old bytes into the cache file: no kernel
        # reference or handle, and no fetch in flight (a download of the old revision would
        # land in the gaps of the new one).
        busy = self._in_use(ino) or self._cache.is_pinned(ino)
        if node.linked and (busy or reuse):
            new = nodes.renumber(conn, ino)
            assert new.parent_ino is not None
            assert new.name is not None
            pending.replaced.append((new.parent_ino, new.name, ino))
            target = new.ino
            if reuse:
                pending.carries.append(Carry(ino, target, reuse))
        else:
            extents.clear(conn, ino, EXTENT_PRESENT)
            self._cache.truncate(ino, 0)
            target = ino
        manifests.replace(conn, target, manifest, keys)
        nodes.set_fields(
            conn,
            target,
            {
                "size": manifest.size,
                "remote_size": manifest.size,
                "remote_head_revision": str(revision["id"]),
                "mtime_ns": mtime_ns,
                "complete": manifest.size == 0,
            },
        )
        pending.content.append(target)


def _queued_move(conn: sqlite3.Connection, node_id: str) -> bool:
    """True if a queued op of the node sets its place (its create, a move or a rename)."""
    row = conn.execute(
        "SELECT 1 FROM outbox WHERE node_id = ? AND (op = 'create' OR parent_id IS NOT NULL "
        "OR json_extract(body, '$.name') IS NOT NULL) LIMIT 1",
        (node_id,),
    ).fetchone()
    return row is not None


def _parent_for(
    conn: sqlite3.Connection, local: nodes.Node | None, remote: RemoteNode, own: frozenset[str]
) -> nodes.Node | None:
    """The folder a remote node goes into here: ours if our queued moves set it."""
    if local is not None and "parent" in own and local.parent_ino is not None:
        return nodes.get(conn, local.parent_ino)
    return None if remote.parent_id is None else nodes.by_node_id(conn, remote.parent_id)


def _merged(local: nodes.Node, remote: RemoteNode, own: frozenset[str]) -> RemoteNode:
    """`remote` with the name our queued ops set (if they do)."""
    if "name" in own and local.name is not None and local.name != remote.name:
        return dataclasses.replace(remote, name=local.name)
    return remote


def _reusable(
    conn: sqlite3.Connection, node: nodes.Node, manifest: Manifest
) -> tuple[tuple[int, ChunkRef], ...]:
    """Chunks of `manifest` whose bytes the clean file `node` has cached, with their offset
    in its cache file (content-defined chunks may have moved)."""
    present = [] if node.complete else extents.intervals(conn, node.ino, EXTENT_PRESENT)
    if node.size == 0 or not (node.complete or present):
        return ()
    starts = [start for start, _ in present]
    cached: dict[str, int] = {}
    for ref, _key in manifests.load(conn, node.ino):
        end = min(ref.offset + ref.size, node.size)
        if end - ref.offset != ref.size:
            continue
        if not node.complete:
            i = bisect.bisect_right(starts, ref.offset) - 1
            if i < 0 or present[i][1] < end:
                continue
        cached.setdefault(ref.hash, ref.offset)
    return tuple((cached[ref.hash], ref) for ref in manifest.chunks if ref.hash in cached)


def _has_own_ops(conn: sqlite3.Connection, node_id: str) -> bool:
    row = conn.execute("SELECT 1 FROM outbox WHERE node_id = ? LIMIT 1", (node_id,)).fetchone()
    return row is not None
