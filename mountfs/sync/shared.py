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
first, through the applier, so its usual rule keeps any node with unsynced local changes
(they stay where they were, with their folders; the backend no longer accepts them).

Not done here (see docs/sync.md "Shares"): moving such unsynced leftovers into the
member's own tree as a copy that syncs, and one push channel per followed namespace (while
shares are followed, the engine polls every `POLL_PULL` seconds instead of waiting for the
account's push channel).
"""

from __future__ import annotations

import json
import logging

from mountfs.state import nodes
from mountfs.state.db import StateDb
from mountfs.sync.apply import RemoteApplier
from mountfs.transport.api import ApiClient, ApiError, JournalEntry, RemoteNode
from mountfs.transport.sharing import Followed

__all__ = ["SharedNamespaces", "cursor_key"]

log = logging.getLogger(__name__)

FOLLOWED_META = "followed_namespaces"


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
            key = cursor_key(item.namespace_id)
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
                for entry in page.entries:
                    self._applier.apply(entry, cursor_key=key)
                applied.extend(page.entries)
                if not page.has_more:
                    break
        return applied

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
