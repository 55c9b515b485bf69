"""Queries on `pins`: what the user keeps downloaded for offline use (`mountfs pin`).

A pin names a node by `node_id`, so it follows the node through renames, moves and the new
inode numbers that remote content brings (`nodes.renumber`). A pinned directory covers
every file below it, whenever it arrived there. Like `mountfs.state.nodes`, every function
takes the connection and never commits on its own.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

from mountfs.state.schema import EXTENT_PRESENT, ROOT_INO
from mountfs.types import InodeNo

__all__ = [
    "PinnedFile",
    "Totals",
    "add",
    "any_pins",
    "covered",
    "files",
    "node_ids",
    "remove",
    "totals",
]

# The linked nodes that pins name (the root counts as linked), then all below them.
_PINNED_TREE = f"""
WITH RECURSIVE down(ino) AS (
    SELECT n.ino FROM pins p JOIN nodes n ON n.node_id = p.node_id
    WHERE n.parent_ino IS NOT NULL OR n.ino = {ROOT_INO}
    UNION
    SELECT c.ino FROM nodes c JOIN down d ON c.parent_ino = d.ino
)
"""


@dataclass(frozen=True, slots=True)
class PinnedFile:
    """A file that a pin covers, and how much of it is cached.

    Attributes:
        missing: bytes of [0, size) not in the cache (0 for a complete file).
    """

    ino: InodeNo
    size: int
    remote_size: int
    complete: bool
    missing: int


@dataclass(frozen=True, slots=True)
class Totals:
    """What the pins cover: for `mountfs status` and `mountfs pin`."""

    pins: int
    files: int
    bytes: int
    missing_bytes: int

    @property
    def downloaded(self) -> bool:
        return self.missing_bytes == 0


def add(conn: sqlite3.Connection, node_id: str, now_ns: int) -> bool:
    """Pin a node; False if it already was."""
    cur = conn.execute(
        "INSERT INTO pins (node_id, created_ns) VALUES (?, ?) ON CONFLICT(node_id) DO NOTHING",
        (node_id, now_ns),
    )
    return cur.rowcount > 0


def remove(conn: sqlite3.Connection, node_id: str) -> bool:
    """Unpin a node; False if it was not pinned."""
    return conn.execute("DELETE FROM pins WHERE node_id = ?", (node_id,)).rowcount > 0


def node_ids(conn: sqlite3.Connection) -> list[str]:
    """Every pinned node id, oldest pin first."""
    rows = conn.execute("SELECT node_id FROM pins ORDER BY created_ns, node_id").fetchall()
    return [str(r[0]) for r in rows]


def any_pins(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1 FROM pins LIMIT 1").fetchone() is not None


def covered(conn: sqlite3.Connection, inos: Sequence[int]) -> set[int]:
    """Which of `inos` a pin covers (the node itself or one of its ancestors is pinned).

    One recursive query for the whole batch, so eviction can ask about a window of its LRU
    list at once; nothing at all is asked when no pin exists.
    """
    if not inos or not any_pins(conn):
        return set()
    marks = ", ".join("?" * len(inos))
    rows = conn.execute(
        "WITH RECURSIVE up(ino, anc) AS ("
        f"  SELECT ino, ino FROM nodes WHERE ino IN ({marks})"
        "  UNION"
        "  SELECT up.ino, n.parent_ino FROM up JOIN nodes n ON n.ino = up.anc"
        "  WHERE n.parent_ino IS NOT NULL"
        ") SELECT DISTINCT up.ino FROM up JOIN nodes a ON a.ino = up.anc"
        " JOIN pins p ON p.node_id = a.node_id",
        tuple(inos),
    ).fetchall()
    return {int(r[0]) for r in rows}


def files(conn: sqlite3.Connection, *, only_missing: bool = False) -> list[PinnedFile]:
    """The linked files that pins cover, in inode order (`only_missing`: incomplete ones)."""
    return _select(conn, _PINNED_TREE, (), " AND n.complete = 0" if only_missing else "")


def totals(conn: sqlite3.Connection, node_id: str | None = None) -> Totals:
    """Files and bytes under all pins (or under the one pin of `node_id`)."""
    if node_id is None:
        pinned = files(conn)
        count = int(conn.execute("SELECT count(*) FROM pins").fetchone()[0])
    else:
        pinned = _select(conn, _ONE_TREE, (node_id,), "")
        count = 1
    return Totals(
        pins=count,
        files=len(pinned),
        bytes=sum(f.size for f in pinned),
        missing_bytes=sum(f.missing for f in pinned),
    )


_ONE_TREE = """
WITH RECURSIVE down(ino) AS (
    SELECT ino FROM nodes WHERE node_id = ?
    UNION
    SELECT c.ino FROM nodes c JOIN down d ON c.parent_ino = d.ino
)
"""

_FILES_OF_TREE = f"""
SELECT n.ino, n.size, n.remote_size, n.complete,
       CASE WHEN n.complete THEN 0 ELSE n.size - coalesce(
           (SELECT sum(e.end - e.start) FROM extents e
            WHERE e.ino = n.ino AND e.kind = {EXTENT_PRESENT}), 0) END
FROM down JOIN nodes n ON n.ino = down.ino WHERE n.kind = 'file'
"""


def _select(
    conn: sqlite3.Connection, tree: str, params: tuple[str, ...], condition: str
) -> list[PinnedFile]:
    rows = conn.execute(tree + _FILES_OF_TREE + condition + " ORDER BY n.ino", params).fetchall()
    return [
        PinnedFile(InodeNo(int(ino)), int(size), int(rsize), bool(complete), max(0, int(missing)))
        for ino, size, rsize, complete, missing in rows
    ]
