"""Kernel lookup counts, and the purge of inodes that nothing refers to any more.

The kernel holds an inode as long as its lookup count is above zero; each successful
lookup, create, mkdir, symlink, mknod and readdirplus entry adds one, `forget()` takes them
away. pyfuse3 keeps no count for us. Counts live in memory only: after a restart the kernel
knows none of our inodes.

An inode is *purged* (its cache file deleted, its content rows dropped) once three things
hold: lookup count 0, no open handle, and no name refers to it. Unlink, rmdir and
rename-over only remove the *name*; `maybe_purge` is called after each of them and after
every forget and release, so the last of the three events does the work. If a queued
outbox op still names the node, its row stays as a content-less *tombstone* until the sync
engine has pushed that op and calls `maybe_purge` again (its `remote_version` is the
precondition of the delete).

A fourth use: a *hold* (`hold`/`release`) that the sync engine takes on the retired inode of
a file that got new remote content under a new number (`nodes.renumber`), while it copies
the chunks both revisions share from the old cache file into the new one
(`mountfs.sync.carry`).
"""

from __future__ import annotations

import logging

from mountfs.cache.block_cache import BlockCache
from mountfs.state import nodes, outbox
from mountfs.state.db import StateDb
from mountfs.state.schema import ROOT_INO
from mountfs.vfs.handles import Handles

__all__ = ["Inodes"]

log = logging.getLogger(__name__)


class Inodes:
    """Lookup counts per inode, and purging.

    Attributes:
        lookups: inode -> kernel lookup count (absent = 0).
    """

    def __init__(self, db: StateDb, cache: BlockCache, handles: Handles) -> None:
        self._db = db
        self._cache = cache
        self._handles = handles
        self.lookups: dict[int, int] = {}
        self._holds: dict[int, int] = {}

    def remember(self, ino: int, n: int = 1) -> None:
        """The kernel took `n` more references (a reply that creates a dentry)."""
        self.lookups[ino] = self.lookups.get(ino, 0) + n

    def forget(self, ino: int, n: int) -> None:
        """The kernel dropped `n` references; purge if that was the last use."""
        left = self.lookups.get(ino, 0) - n
        if left > 0:
            self.lookups[ino] = left
            return
        if left < 0:
            log.warning("forget(%d, %d) below zero (count was %d)", ino, n, left + n)
        self.lookups.pop(ino, None)
        self.maybe_purge(ino)

    def in_use(self, ino: int) -> bool:
        """True while the kernel, an open handle or a hold references `ino`."""
        return ino in self.lookups or ino in self._holds or self._handles.open_count(ino) > 0

    def hold(self, ino: int) -> None:
        """Keep `ino` (and its cache file) from being purged until `release`."""
        self._holds[ino] = self._holds.get(ino, 0) + 1

    def release(self, ino: int) -> None:
        """Undo one `hold`; purge if that was the last use."""
        left = self._holds.get(ino, 0) - 1
        if left > 0:
            self._holds[ino] = left
            return
        self._holds.pop(ino, None)
        self.maybe_purge(ino)

    def maybe_purge(self, ino: int) -> bool:
        """Purge `ino` if no lookup, no handle and no name refers to it.

        Returns True if something was purged (a row deleted or made a tombstone).
        """
        if ino == ROOT_INO or self.in_use(ino):
            return False
        node = nodes.get(self._db.conn, ino)  # the common case, a linked node: no transaction
        if node is None or node.linked:
            return False
        with self._db.transaction() as conn:
            if outbox.references(conn, node.node_id):
                for table in ("extents", "chunk_map", "xattrs"):
                    conn.execute(f"DELETE FROM {table} WHERE ino = ?", (ino,))
                if node.kind == "file":
                    nodes.set_fields(conn, ino, {"complete": 0, "dirty": 0})
            else:
                nodes.delete(conn, ino)
        self._cache.drop(ino)
        log.debug("purged inode %d (%s)", ino, node.node_id)
        return True

    def forget_all(self) -> int:
        """Drop every remaining count (after `pyfuse3.main()` returned) and purge.

        Returns the number of inodes purged.
        """
        inos = list(self.lookups) + list(self._holds)
        self.lookups.clear()
        self._holds.clear()
        return sum(self.maybe_purge(ino) for ino in inos)
