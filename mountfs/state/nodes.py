"""Queries on the local tree mirror (`nodes`): typed rows in, typed rows out.

Every function takes the connection and runs a handful of indexed statements; none commits
on its own. Callers that change several rows wrap them in `StateDb.transaction()`. POSIX
rules (who may rename what where) live in `mountfs.vfs.tree`, not here.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from mountfs.state import extents
from mountfs.state.schema import EXTENT_PRESENT, ROOT_INO
from mountfs.types import InodeNo, NodeId

__all__ = [
    "Kind",
    "NewNode",
    "Node",
    "ancestors_include",
    "by_name",
    "by_node_id",
    "children",
    "complete_if_whole",
    "count",
    "delete",
    "dirty_files",
    "every",
    "get",
    "has_children",
    "insert",
    "mark_clean",
    "renumber",
    "retired_id",
    "set_fields",
    "subdir_count",
    "unlinked",
]

Kind = Literal["file", "dir", "symlink"]

_COLUMNS = (
    "ino, node_id, parent_ino, name, kind, mode, uid, gid, size, atime_ns, mtime_ns, "
    "ctime_ns, target, remote_version, remote_head_revision, remote_size, complete, dirty, "
    "content_gen"
)
_SETTABLE = frozenset(
    {
        "parent_ino",
        "name",
        "mode",
        "uid",
        "gid",
        "size",
        "atime_ns",
        "mtime_ns",
        "ctime_ns",
        "remote_version",
        "remote_head_revision",
        "remote_size",
        "complete",
        "dirty",
        "content_gen",
    }
)


@dataclass(frozen=True, slots=True)
class Node:
    """One row of `nodes` (see `mountfs.state.schema` for what each field means)."""

    ino: InodeNo
    node_id: NodeId
    parent_ino: InodeNo | None
    name: str | None
    kind: Kind
    mode: int
    uid: int
    gid: int
    size: int
    atime_ns: int
    mtime_ns: int
    ctime_ns: int
    target: str | None
    remote_version: int | None
    remote_head_revision: str | None
    remote_size: int
    complete: bool
    dirty: bool
    content_gen: int

    @property
    def linked(self) -> bool:
        """True if a name refers to the node (the root always counts as linked)."""
        return self.parent_ino is not None or self.ino == ROOT_INO


@dataclass(frozen=True, slots=True)
class NewNode:
    """What a caller supplies to create a node; the rest takes schema defaults."""

    node_id: NodeId
    parent_ino: InodeNo | None
    name: str | None
    kind: Kind
    mode: int
    uid: int
    gid: int
    time_ns: int
    size: int = 0
    target: str | None = None
    remote_version: int | None = None
    ino: InodeNo | None = None  # only for the root, which is always ROOT_INO


def _row(row: tuple[Any, ...]) -> Node:
    (ino, node_id, parent, name, kind, mode, uid, gid, size, atime, mtime, ctime, target,
     rversion, rhead, rsize, complete, dirty, gen) = row  # fmt: skip
    return Node(
        ino=InodeNo(int(ino)),
        node_id=NodeId(str(node_id)),
        parent_ino=None if parent is None else InodeNo(int(parent)),
        name=None if name is None else str(name),
        kind=kind,  # the CHECK constraint guarantees one of the three literals
        mode=int(mode),
        uid=int(uid),
        gid=int(gid),
        size=int(size),
        atime_ns=int(atime),
        mtime_ns=int(mtime),
        ctime_ns=int(ctime),
        target=None if target is None else str(target),
        remote_version=None if rversion is None else int(rversion),
        remote_head_revision=None if rhead is None else str(rhead),
        remote_size=int(rsize),
        complete=bool(complete),
        dirty=bool(dirty),
        content_gen=int(gen),
    )


def every(conn: sqlite3.Connection) -> list[Node]:
    """All rows, in ino order (for consistency checks and tools, not for FUSE paths)."""
    return [_row(r) for r in conn.execute(f"SELECT {_COLUMNS} FROM nodes ORDER BY ino")]


def get(conn: sqlite3.Connection, ino: int) -> Node | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM nodes WHERE ino = ?", (ino,)).fetchone()
    return None if row is None else _row(row)


def by_name(conn: sqlite3.Connection, parent_ino: int, name: str) -> Node | None:
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM nodes WHERE parent_ino = ? AND name = ?", (parent_ino, name)
    ).fetchone()
    return None if row is None else _row(row)


def by_node_id(conn: sqlite3.Connection, node_id: str) -> Node | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM nodes WHERE node_id = ?", (node_id,)).fetchone()
    return None if row is None else _row(row)


def insert(conn: sqlite3.Connection, new: NewNode) -> Node:
    """Insert a node and return it with its (never reused) inode number."""
    cur = conn.execute(
        "INSERT INTO nodes (ino, node_id, parent_ino, name, kind, mode, uid, gid, size, "
        "atime_ns, mtime_ns, ctime_ns, target, remote_version) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            new.ino,
            new.node_id,
            new.parent_ino,
            new.name,
            new.kind,
            new.mode,
            new.uid,
            new.gid,
            new.size,
            new.time_ns,
            new.time_ns,
            new.time_ns,
            new.target,
            new.remote_version,
        ),
    )
    node = get(conn, cur.lastrowid or 0)
    assert node is not None
    return node


def set_fields(conn: sqlite3.Connection, ino: int, fields: Mapping[str, object]) -> None:
    """UPDATE the given columns of one node (names checked against a fixed list)."""
    if not fields:
        return
    unknown = set(fields) - _SETTABLE
    if unknown:
        raise ValueError(f"not settable: {sorted(unknown)}")
    names = list(fields)
    assignments = ", ".join(f"{name} = ?" for name in names)
    conn.execute(
        f"UPDATE nodes SET {assignments} WHERE ino = ?", (*(fields[n] for n in names), ino)
    )


def renumber(conn: sqlite3.Connection, ino: int) -> Node:
    """Give a linked file a fresh inode number; the old number stays as an unlinked row.

    Why: with the writeback cache the kernel owns the size and the pages of an inode it has
    cached, and a reused number finds that cached inode again (PYFUSE3-NOTES §2, §3). New
    remote content therefore arrives under a new number, as an atomic replace by rename
    would: the name points to the new inode, while descriptors opened before keep the old
    one and keep reading its bytes.

    The new row takes the node's identity (`node_id`, name, attributes, versions) and its
    xattrs. The old row keeps its content rows (`extents`, `chunk_map`) and its cache file,
    so open descriptors can still read (and fetch) the old revision; it loses its name and
    its `node_id` becomes `<node_id>~<ino>`, a *retired* id that no outbox op names, so it
    is purged (`Inodes.maybe_purge`) as soon as the kernel and the last handle let go.
    The caller gives the new row its content (chunk map, size, `complete`).

    Returns:
        The new row: incomplete with nothing cached (unless empty), no chunk map yet.
    """
    old = get(conn, ino)
    if old is None or old.kind != "file" or old.parent_ino is None:
        raise ValueError(f"inode {ino} is not a linked file")
    conn.execute(
        "UPDATE nodes SET node_id = ?, parent_ino = NULL, name = NULL WHERE ino = ?",
        (retired_id(old.node_id, ino), ino),
    )
    cur = conn.execute(
        "INSERT INTO nodes (node_id, parent_ino, name, kind, mode, uid, gid, size, atime_ns, "
        "mtime_ns, ctime_ns, target, remote_version, remote_head_revision, remote_size, "
        "complete, dirty, content_gen) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            old.node_id,
            old.parent_ino,
            old.name,
            old.kind,
            old.mode,
            old.uid,
            old.gid,
            old.size,
            old.atime_ns,
            old.mtime_ns,
            old.ctime_ns,
            old.target,
            old.remote_version,
            old.remote_head_revision,
            old.remote_size,
            int(old.size == 0),  # no byte is cached under the new number yet
            int(old.dirty),
            old.content_gen,
        ),
    )
    new_ino = int(cur.lastrowid or 0)
    conn.execute("UPDATE xattrs SET ino = ? WHERE ino = ?", (new_ino, ino))
    node = get(conn, new_ino)
    assert node is not None
    return node


def complete_if_whole(conn: sqlite3.Connection, ino: int) -> bool:
    """Mark an incomplete file complete if its `present` extents cover all of it.

    Then the cache file is the content and the extents are dropped (schema invariant).
    Returns True if the file is complete now.
    """
    node = get(conn, ino)
    if node is None:
        return False
    if node.complete:
        return True
    if extents.gaps(conn, ino, EXTENT_PRESENT, 0, node.size):
        return False
    set_fields(conn, ino, {"complete": 1})
    extents.clear(conn, ino, EXTENT_PRESENT)
    return True


def retired_id(node_id: str, ino: int) -> str:
    """The `node_id` of an inode number that `renumber` has taken out of service."""
    return f"{node_id}~{ino}"


def children(conn: sqlite3.Connection, parent_ino: int, after_ino: int, limit: int) -> list[Node]:
    """Up to `limit` children with ino > `after_ino`, in ino order (a stable readdir key)."""
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM nodes WHERE parent_ino = ? AND ino > ? ORDER BY ino LIMIT ?",
        (parent_ino, after_ino, limit),
    ).fetchall()
    return [_row(r) for r in rows]


def has_children(conn: sqlite3.Connection, ino: int) -> bool:
    return (
        conn.execute("SELECT 1 FROM nodes WHERE parent_ino = ? LIMIT 1", (ino,)).fetchone()
        is not None
    )


def subdir_count(conn: sqlite3.Connection, ino: int) -> int:
    row = conn.execute(
        "SELECT count(*) FROM nodes WHERE parent_ino = ? AND kind = 'dir'", (ino,)
    ).fetchone()
    return int(row[0])


def ancestors_include(conn: sqlite3.Connection, ino: int, candidate: int) -> bool:
    """True if `candidate` is `ino` or one of its ancestors (the move-into-itself test)."""
    if ino == candidate:
        return True
    row = conn.execute(
        "WITH RECURSIVE up(ino) AS ("
        "  SELECT parent_ino FROM nodes WHERE ino = ?"
        "  UNION ALL"
        "  SELECT n.parent_ino FROM nodes n JOIN up ON n.ino = up.ino"
        "  WHERE n.parent_ino IS NOT NULL"
        ") SELECT 1 FROM up WHERE ino = ? LIMIT 1",
        (ino, candidate),
    ).fetchone()
    return row is not None


def delete(conn: sqlite3.Connection, ino: int) -> None:
    """Delete the row; extents, chunk_map and xattrs go with it (ON DELETE CASCADE)."""
    conn.execute("DELETE FROM nodes WHERE ino = ?", (ino,))


def unlinked(conn: sqlite3.Connection) -> list[InodeNo]:
    """Inodes that no name refers to (excluding the root)."""
    rows = conn.execute(
        "SELECT ino FROM nodes WHERE parent_ino IS NULL AND ino != ?", (ROOT_INO,)
    ).fetchall()
    return [InodeNo(int(r[0])) for r in rows]


def count(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM nodes").fetchone()[0])


def dirty_files(conn: sqlite3.Connection, limit: int = 100) -> list[Node]:
    """Linked files whose content must be committed (the sync engine's commit queue).

    Unlinked files are left out: their content will never be committed (their delete is
    queued, or they were never pushed at all).
    """
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM nodes WHERE dirty = 1 AND parent_ino IS NOT NULL "
        "ORDER BY ino LIMIT ?",
        (limit,),
    ).fetchall()
    return [_row(r) for r in rows]


def mark_clean(
    conn: sqlite3.Connection, ino: int, content_gen: int, head_revision: str, size: int
) -> bool:
    """Record a committed revision; clear `dirty` only if no write happened since the snapshot.

    Args:
        content_gen: the `content_gen` the sync engine read before it read the content.
        head_revision / size: the revision the backend acknowledged.

    Returns:
        True if the node is now clean; False if a write raced with the upload (the node
        stays dirty, and its dirty extents stay a superset of what changed).
    """
    conn.execute(
        "UPDATE nodes SET remote_head_revision = ?, remote_size = ? WHERE ino = ?",
        (head_revision, size, ino),
    )
    cur = conn.execute(
        "UPDATE nodes SET dirty = 0 WHERE ino = ? AND content_gen = ?", (ino, content_gen)
    )
    if cur.rowcount:
        conn.execute("DELETE FROM extents WHERE ino = ? AND kind = 1", (ino,))
        return True
    return False
