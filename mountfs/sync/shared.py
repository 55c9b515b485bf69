"""Following shared folders: the journals a device pulls besides its account's own.

A folder or file that is shared lives in a namespace of its own (docs/protocol.md
§ Shares), with its own journal. The devices of its owner and of every member that
accepted it follow that journal too, each with a cursor of its own (state meta
`cursor:<namespace>`), applying its entries to the same local tree as the account's own
(nodes are identified by id everywhere, so the applier needs nothing else):

- the owner's devices already have the shared nodes: the share's journal starts with a
  `create` per node, at the versions they have, which the applier skips as old news;
- a member's device first sees the *attachment entry* in its own journal (the share's root
  as a folder at the place the member chose), then the share's entries fill it in (the
  root's own entry names the owner's parent, unknown here, and is skipped).

Which namespaces to follow comes from `GET /namespaces`, asked at start and again whenever
the account's journal carries a node of another namespace (the attachment, move or
detachment of a share) or a followed journal answers 404 (access ended). A namespace that
is no longer listed is dropped with its cursor, so accepting it again pulls it from 0.

A viewer's share is read-only in the mount: `read_only_roots` feeds the guard of
`mountfs.fuse.shares`, which answers EROFS to every change below them.

When a member's share ends (revoked, left, its owner deleted), the next refresh finds it
missing and takes its nodes out of the mount (`_detach`): a delete per node, children
first, through the applier, so its usual rule keeps any node with unsynced local changes.
What is kept that way (edited files, files and folders made here and not yet pushed, and
the folders around them) can no longer reach the share, so it becomes the member's own
(`_rehome`): the share's folder is renamed `<name> (unshared edits)` (`… (unshared edits
2)`, … if taken) where it was, and every kept node gets a new id and a queued `create` in
the account's own tree, each kept file its whole local content as a new file; whatever
was queued for the share is dropped. The edits then sync up like any new files of the
account. Bytes this device never had (a file edited in part and not fully cached) cannot
be kept: such a file is committed once its bytes are readable, which they no longer are.

The push channel announces the followed namespaces' journals too (one stream,
`followed=true`, `sync.listen`); while it is up `announced` is True, the engine only
polls as a slow safety net, and a pull asks only for the journals announced past their
cursor (`announce`; each journal at least every `SAFETY_PULL_S` anyway), so news of one
share costs one request, not one per followed share. Without it, every followed journal
is pulled every `POLL_PULL`.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time

from mountfs.ids import uuid7
from mountfs.state import nodes, outbox
from mountfs.state.db import StateDb
from mountfs.sync.apply import RemoteApplier
from mountfs.transport.api import ApiClient, ApiError, JournalEntry, RemoteNode
from mountfs.transport.sharing import Followed

__all__ = ["UNSHARED_SUFFIX", "SharedNamespaces", "cursor_key"]

log = logging.getLogger(__name__)

FOLLOWED_META = "followed_namespaces"
SAFETY_PULL_S = 60.0
"""Even with the push channel up, a followed journal is pulled at least this often."""
UNSHARED_SUFFIX = "(unshared edits)"
"""Appended to the folder name that keeps a member's unsynced edits of an ended share."""


def _subtree(conn: sqlite3.Connection, root: nodes.Node) -> list[nodes.Node]:
    """`root` and every linked node below it, parents before children."""
    found = [root]
    at = 0
    while at < len(found):
        node = found[at]
        at += 1
        after = 0
        while node.kind == "dir":
            page = nodes.children(conn, node.ino, after, 1000)
            if not page:
                break
            found.extend(page)
            after = page[-1].ino
    return found


def _free_name(conn: sqlite3.Connection, parent_ino: int, wanted: str) -> str:
    """`wanted`, else `wanted` with ` 2`, ` 3`, … inside its last parenthesis."""
    candidate = wanted
    n = 1
    while nodes.by_name(conn, parent_ino, candidate) is not None:
        n += 1
        candidate = f"{wanted[:-1]} {n})" if wanted.endswith(")") else f"{wanted} {n}"
    return candidate


def cursor_key(namespace_id: str) -> str:
    """The state meta key of a followed namespace's cursor."""
    return f"cursor:{namespace_id}"


class SharedNamespaces:
    """The followed namespaces of one device and their pulls; see the module docstring."""

    def __init__(
        self, db: StateDb, api: ApiClient, applier: RemoteApplier, home_namespace: str
    ) -> None:
        self._db = db
        self._api = api
        self._applier = applier
        self._home = home_namespace
        self._followed: list[Followed] = []
        self._stale = True
        saved = json.loads(db.get_meta(FOLLOWED_META) or "{}")
        items = list(saved.values()) if isinstance(saved, dict) else []
        self._read_only = frozenset(i["root"] for i in items if i.get("role") == "viewer")
        self._roots = frozenset(i["root"] for i in items)
        self._members = frozenset(i["root"] for i in items if i.get("role") != "owner")
        self.rehomed: list[str] = []
        """Names of the folders `_rehome` made, in order (for status and tests)."""
        self._announced = False
        self._heads: dict[str, int] = {}
        self._pulled_at: dict[str, float] = {}

    def share_roots(self) -> frozenset[str]:
        """The root node ids of every followed namespace (own shared folders and accepted
        shares): a rename across them is refused in the mount (EXDEV, `mv` copies)."""
        return self._roots

    def member_roots(self) -> frozenset[str]:
        """The root node ids of the shares accepted from others: their folder in the
        mount cannot be renamed or moved (the placement is `mountfs shares accept`)."""
        return self._members

    def read_only_roots(self) -> frozenset[str]:
        """The root node ids of the shares this account may only read (viewer): the mount
        refuses every change below them (`mountfs.fuse.shares`). Known from the last
        refresh, kept in the state across restarts."""
        return self._read_only

    @property
    def following(self) -> bool:
        """True while at least one shared namespace is followed."""
        return bool(self._followed)

    @property
    def announced(self) -> bool:
        """True while the push channel announces the followed namespaces' journals too
        (`sync.listen`, `followed=true`); then they need no fast polling, and a pull only
        asks for the journals with news (`announce`)."""
        return self._announced

    @announced.setter
    def announced(self, up: bool) -> None:
        if up != self._announced:
            self._heads.clear()  # what happened while it was down is unknown
        self._announced = up

    def announce(self, namespace_id: str, position: int) -> None:
        """The push channel says `namespace_id`'s journal reached `position`."""
        self._heads[namespace_id] = max(position, self._heads.get(namespace_id, 0))

    def _quiet(self, namespace_id: str, cursor: int) -> bool:
        """Whether a pull may skip this journal: the push channel is up, announced
        nothing past our cursor since we last pulled it, and that pull is recent (the
        channel is a latency aid; a slow pull of everything stays the safety net)."""
        if not self._announced or namespace_id not in self._heads:
            return False
        recent = time.monotonic() - self._pulled_at.get(namespace_id, 0.0) < SAFETY_PULL_S
        return self._heads[namespace_id] <= cursor and recent

    def poll_every(self, interval: float, fast: float) -> float:
        """The engine's seconds between polls: `interval` (long while the push channel is
        up), or `fast` while shares are followed that the push channel does not announce."""
        return fast if self._followed and not self.announced else interval

    def note(self, entries: list[JournalEntry]) -> None:
        """Look at entries applied from the account's own journal: one about a node of
        another namespace (a share attached, moved or detached) means "ask again"."""
        if any(e.node.namespace_id != self._home for e in entries):
            self._stale = True

    async def pull(self) -> list[JournalEntry]:
        """Apply every new entry of every followed namespace; return them."""
        if self._stale:
            await self._refresh()
        applied: list[JournalEntry] = []
        for item in list(self._followed):
            if item.role != "owner" and not self._attached(item.root_id):
                # Accepted after our last page of the account's journal: its entries would
                # find no parent here and be lost. The attachment entry is news of its own
                # (the push channel announces it), and pulling it brings us back here.
                self._stale = True
                continue
            key = cursor_key(item.namespace_id)
            if self._quiet(item.namespace_id, int(self._db.get_meta(key) or 0)):
                continue
            self._pulled_at[item.namespace_id] = time.monotonic()
            while True:
                cursor = int(self._db.get_meta(key) or 0)
                try:
                    page = await self._api.journal(item.namespace_id, cursor)
                except ApiError as exc:
                    if exc.status != 404:
                        raise
                    log.info("share %s is gone (access ended)", item.namespace_id)
                    self._stale = True
                    break
                self._applier.apply_page(page.entries, cursor_key=key)
                applied.extend(page.entries)
                if not page.has_more:
                    self.announce(item.namespace_id, page.cursor)  # known up to here
                    break
        return applied

    def _attached(self, root_id: str) -> bool:
        """Whether a share's root is in the local tree (its attachment entry applied)."""
        root = nodes.by_node_id(self._db.conn, root_id)
        return root is not None and root.linked

    def _detach(self, namespace_id: str, root_id: str) -> None:
        """Take a share that ended out of the local tree: a delete per node, children
        first, through the applier, whose rules keep what has unsynced changes here (an
        edit beats a delete), so nothing written here is lost; the rest disappears."""
        conn = self._db.conn
        root = nodes.by_node_id(conn, root_id)
        if root is None or not root.linked:
            return
        order: list[nodes.Node] = []
        stack: list[tuple[nodes.Node, bool]] = [(root, False)]
        while stack:
            node, expanded = stack.pop()
            if expanded:
                order.append(node)
                continue
            stack.append((node, True))
            after = 0
            while node.kind == "dir":
                page = nodes.children(conn, node.ino, after, 1000)
                if not page:
                    break
                stack.extend((child, False) for child in page)
                after = page[-1].ino
        for node in order:
            parent = nodes.get(conn, node.parent_ino) if node.parent_ino is not None else None
            gone = RemoteNode(
                id=node.node_id,
                # Any id but None: None would mean "the account root" to the applier.
                parent_id=parent.node_id if parent is not None else root_id,
                name=node.name or "",
                kind=node.kind,
                mode=node.mode,
                mtime_ns=node.mtime_ns,
                size=0,
                version=(node.remote_version or 0) + 1,
                head_revision=None,
                target=node.target,
                deleted=True,
                namespace_id=namespace_id,
            )
            entry = JournalEntry(0, "delete", gone, None, None, "")
            self._applier.apply(entry, cursor_key=cursor_key(namespace_id))
        log.info("share %s ended: %d node(s) taken out of the mount", namespace_id, len(order))
        self._rehome(root_id)

    def _rehome(self, root_id: str) -> None:
        """Make what `_detach` kept of an ended share the account's own (module docstring)."""
        conn = self._db.conn
        root = nodes.by_node_id(conn, root_id)
        if root is None or root.parent_ino is None or root.name is None:
            return  # nothing was kept
        parent = nodes.get(conn, root.parent_ino)
        if parent is None:
            return
        kept = _subtree(conn, root)
        old_name = root.name
        with self._db.transaction():
            new_name = _free_name(conn, root.parent_ino, f"{old_name} {UNSHARED_SUFFIX}")
            new_ids: dict[int, str] = {}
            old_ids = [n.node_id for n in kept]
            for start in range(0, len(old_ids), 500):
                batch = old_ids[start : start + 500]
                marks = ",".join("?" * len(batch))
                conn.execute(
                    f"DELETE FROM outbox WHERE node_id IN ({marks}) OR parent_id IN ({marks}) "
                    f"OR replace_id IN ({marks})",
                    (*batch, *batch, *batch),
                )
            for node in kept:  # parents first
                new_id = uuid7()
                new_ids[node.ino] = new_id
                is_root = node.ino == root.ino
                parent_id = parent.node_id if is_root else new_ids[node.parent_ino or 0]
                name = new_name if is_root else (node.name or "")
                conn.execute(
                    "UPDATE nodes SET node_id = ?, name = ?, remote_version = NULL, "
                    "remote_head_revision = NULL, remote_size = 0 WHERE ino = ?",
                    (new_id, name, node.ino),
                )
                if node.kind == "file":
                    # All of it is new to the account: cut and upload it whole.
                    conn.execute("DELETE FROM chunk_map WHERE ino = ?", (node.ino,))
                    conn.execute("UPDATE nodes SET dirty = 1 WHERE ino = ?", (node.ino,))
                    if not node.complete:
                        log.warning(
                            "%s was not fully on this device when its share ended; "
                            "the missing bytes cannot be kept",
                            name,
                        )
                outbox.append_create(
                    conn,
                    node_id=new_id,
                    parent_id=parent_id,
                    name=name,
                    kind=node.kind,
                    mode=node.mode,
                    mtime_ns=node.mtime_ns,
                    target=node.target,
                )
        self._applier.changed([(root.parent_ino, old_name), (root.parent_ino, new_name)], [])
        self.rehomed.append(new_name)
        log.warning(
            "a share ended with unsynced changes here: kept as your own in %r (%d item(s))",
            new_name,
            len(kept),
        )

    async def _refresh(self) -> None:
        followed = await self._api.namespaces()
        kept = {f.namespace_id for f in followed}
        saved = json.loads(self._db.get_meta(FOLLOWED_META) or "{}")
        before = set(saved) if isinstance(saved, dict) else set()
        for gone in before - kept:
            if saved[gone].get("role") != "owner":
                self._detach(gone, str(saved[gone]["root"]))
            self._db.set_meta(cursor_key(gone), "0")  # accepting it again pulls it from 0
        now = {f.namespace_id: {"root": f.root_id, "role": f.role} for f in followed}
        self._db.set_meta(FOLLOWED_META, json.dumps(now, sort_keys=True))
        self._read_only = frozenset(f.root_id for f in followed if f.role == "viewer")
        self._roots = frozenset(f.root_id for f in followed)
        self._members = frozenset(f.root_id for f in followed if f.role != "owner")
        self._followed = followed
        self._stale = False
        if followed:
            log.debug("following %d shared namespace(s)", len(followed))
