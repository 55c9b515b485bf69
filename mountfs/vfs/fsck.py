"""Consistency of the local state: `repair()` at mount time, `check()` for tests and tools.

`repair()` runs before the filesystem is mounted, when no kernel reference and no handle
exists, and brings the database and the cache directory back in line after any crash
(the table of crash states and their repair is in `docs/client.md`). `check()` verifies
every invariant documented in `mountfs.state.schema` and returns the violations as
sentences; an empty list means consistent. Unit tests end with it.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path

from mountfs.cache.block_cache import BlockCache
from mountfs.state import extents, nodes, outbox
from mountfs.state.db import StateDb
from mountfs.state.nodes import NewNode, Node
from mountfs.state.schema import EXTENT_DIRTY, EXTENT_PRESENT, ROOT_INO
from mountfs.types import InodeNo, NodeId
from mountfs.vfs.handles import Handles
from mountfs.vfs.inodes import Inodes

__all__ = ["RepairReport", "StateCorrupt", "WrongAccount", "check", "repair"]

log = logging.getLogger(__name__)


class StateCorrupt(RuntimeError):
    """SQLite's own integrity check failed: the state cannot be trusted or repaired here."""


class WrongAccount(RuntimeError):
    """The state directory belongs to another account's tree."""


@dataclass(slots=True)
class RepairReport:
    """What `repair()` found and did (all zero/empty after a clean shutdown)."""

    created_root: bool = False
    released_claims: int = 0
    purged: int = 0
    stray_cache_files: int = 0
    resized_cache_files: int = 0
    clipped_extents: int = 0
    lost_content: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (
            self.released_claims
            or self.purged
            or self.stray_cache_files
            or self.resized_cache_files
            or self.clipped_extents
            or self.lost_content
        )


def repair(
    db: StateDb,
    cache: BlockCache,
    *,
    root_id: str,
    uid: int,
    gid: int,
    clock: Callable[[], int] = time.time_ns,
) -> RepairReport:
    """Bring state and cache into line; create the root on first use.

    Raises:
        StateCorrupt: SQLite's quick_check fails.
        WrongAccount: the state's root is not `root_id`.
    """
    result = db.conn.execute("PRAGMA quick_check").fetchall()
    if [tuple(r) for r in result] != [("ok",)]:
        raise StateCorrupt(f"{db.path}: {result[:5]}")
    report = RepairReport()
    report.created_root = _ensure_root(db, root_id, uid, gid, clock())
    with db.transaction() as conn:
        report.released_claims = outbox.release_claims(conn)
    sizes = cache.scan()
    for (ino,) in db.conn.execute("SELECT ino FROM nodes WHERE dirty = 1").fetchall():
        cache.set_dirty(ino, True)
    purger = Inodes(db, cache, Handles())
    for ino in nodes.unlinked(db.conn):
        report.purged += purger.maybe_purge(ino)
        sizes.pop(ino, None)
    for ino in list(sizes):
        node = nodes.get(db.conn, ino)
        if node is None or node.kind != "file":
            cache.drop(ino)
            del sizes[ino]
            report.stray_cache_files += 1
    report.clipped_extents = _clip_extents(db)
    _repair_files(db, cache, sizes, report)
    if not report.clean:
        log.warning("state repaired after an unclean stop: %s", report)
    return report


def _ensure_root(db: StateDb, root_id: str, uid: int, gid: int, now: int) -> bool:
    root = nodes.get(db.conn, ROOT_INO)
    if root is not None:
        if root.node_id != root_id:
            raise WrongAccount(
                f"{db.path} holds the tree of root {root.node_id}, not {root_id}: "
                "use another state directory for this account"
            )
        return False
    with db.transaction() as conn:
        nodes.insert(
            conn,
            NewNode(
                node_id=NodeId(root_id),
                parent_ino=None,
                name=None,
                kind="dir",
                mode=0o755,
                uid=uid,
                gid=gid,
                time_ns=now,
                ino=InodeNo(ROOT_INO),
            ),
        )
        db.set_meta("root_node_id", root_id)
    return True


def _clip_extents(db: StateDb) -> int:
    rows = db.conn.execute(
        "SELECT DISTINCT e.ino, e.kind, n.size FROM extents e JOIN nodes n USING (ino) "
        "WHERE e.end > n.size"
    ).fetchall()
    with db.transaction() as conn:
        for ino, kind, size in rows:
            extents.clip(conn, ino, kind, size)
    return len(rows)


def _repair_files(
    db: StateDb, cache: BlockCache, sizes: dict[int, int], report: RepairReport
) -> None:
    """Cache files must exist for cached bytes and have the file's size."""
    rows = db.conn.execute(
        "SELECT ino FROM nodes WHERE kind = 'file' AND (size > 0 OR ino IN "
        "(SELECT DISTINCT ino FROM extents))"
    ).fetchall()
    for (ino,) in rows:
        node = nodes.get(db.conn, ino)
        assert node is not None
        has_present = bool(extents.intervals(db.conn, ino, EXTENT_PRESENT))
        if ino not in sizes:
            if node.complete and node.size > 0:
                _lost(db, cache, node, report)
            elif has_present:
                with db.transaction() as conn:
                    extents.clear(conn, ino, EXTENT_PRESENT)
            continue
        if node.complete and sizes[ino] != node.size:
            log.warning(
                "cache file of %s has %d bytes, the file %d: resizing (bytes written "
                "without fsync before a power loss may read as zeros)",
                node.node_id,
                sizes[ino],
                node.size,
            )
            cache.truncate(ino, node.size)
            report.resized_cache_files += 1
        elif not node.complete and sizes[ino] > node.size:
            cache.truncate(ino, node.size)
            report.resized_cache_files += 1
        elif not node.complete:
            # Present bytes past the end of a short cache file are gone: fetch them again.
            with db.transaction() as conn:
                extents.clip(conn, ino, EXTENT_PRESENT, sizes[ino])


def _lost(db: StateDb, cache: BlockCache, node: Node, report: RepairReport) -> None:
    """The cache file of a complete file is gone: fall back to what the backend has."""
    log.error(
        "the local content of %s (%s) is gone from the cache%s",
        node.node_id,
        node.name,
        "; its unsent changes are lost" if node.dirty else "",
    )
    report.lost_content.append(node.node_id)
    with db.transaction() as conn:
        extents.clear(conn, node.ino, EXTENT_PRESENT)
        extents.clear(conn, node.ino, EXTENT_DIRTY)
        nodes.set_fields(
            conn,
            node.ino,
            {"complete": 0, "dirty": 0, "size": node.remote_size}
            if node.remote_head_revision is not None
            else {"complete": 1, "dirty": 0, "size": 0},
        )
    cache.set_dirty(node.ino, False)


# --- check ---------------------------------------------------------------------------------


def check(db: StateDb, cache_root: Path, *, in_use: Collection[int] = ()) -> list[str]:
    """Every violated invariant, as a sentence (empty: consistent).

    Args:
        in_use: inodes the kernel or an open handle still references (allowed to be
            unlinked and hold content); empty at rest.
    """
    problems: list[str] = []
    result = db.conn.execute("PRAGMA quick_check").fetchall()
    if [tuple(r) for r in result] != [("ok",)]:
        problems.append(f"quick_check: {result[:5]}")
    all_nodes: dict[int, Node] = {n.ino: n for n in nodes.every(db.conn)}
    problems += _check_tree(all_nodes)
    problems += _check_unlinked(db, all_nodes, cache_root, in_use)
    problems += _check_extents(db, all_nodes)
    problems += _check_outbox(db, all_nodes)
    problems += _check_cache(db, all_nodes, cache_root, in_use)
    seq = db.conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'nodes'").fetchone()
    if all_nodes and (seq is None or seq[0] < max(all_nodes)):
        problems.append("sqlite_sequence of nodes is below the highest inode number")
    return problems


def _name_problem(name: str) -> str | None:
    raw = name.encode("utf-8")
    if not raw or len(raw) > 255 or b"/" in raw or b"\0" in raw or name in (".", ".."):
        return f"invalid name {name!r}"
    return None


def _check_tree(all_nodes: dict[int, Node]) -> list[str]:
    problems: list[str] = []
    root = all_nodes.get(ROOT_INO)
    if root is None or root.kind != "dir" or root.parent_ino is not None:
        problems.append("the root (inode 1) is missing or not a parentless directory")
    for node in all_nodes.values():
        problems += _check_node(node, all_nodes)
    return problems


def _check_node(node: Node, all_nodes: dict[int, Node]) -> list[str]:
    problems: list[str] = []
    label = f"inode {node.ino}"
    if node.parent_ino is not None:
        parent = all_nodes.get(node.parent_ino)
        if parent is None or parent.kind != "dir":
            problems.append(f"{label}: parent {node.parent_ino} is not a directory")
        assert node.name is not None
        if (bad := _name_problem(node.name)) is not None:
            problems.append(f"{label}: {bad}")
        seen = {node.ino}
        cursor = parent
        while cursor is not None and cursor.parent_ino is not None:
            if cursor.ino in seen:
                problems.append(f"{label}: its ancestors form a cycle")
                break
            seen.add(cursor.ino)
            cursor = all_nodes.get(cursor.parent_ino)
        else:
            if cursor is None or cursor.ino != ROOT_INO:
                problems.append(f"{label}: not connected to the root")
    if node.kind == "symlink":
        if node.target is None or node.size != len(node.target.encode("utf-8")):
            problems.append(f"{label}: symlink without target or with a wrong size")
    elif node.target is not None:
        problems.append(f"{label}: a {node.kind} with a symlink target")
    if node.kind == "dir" and node.size != 0:
        problems.append(f"{label}: directory of size {node.size}")
    if node.kind != "file" and (node.dirty or not node.complete):
        problems.append(f"{label}: a {node.kind} marked dirty or incomplete")
    return problems


def _check_unlinked(
    db: StateDb, all_nodes: dict[int, Node], cache_root: Path, in_use: Collection[int]
) -> list[str]:
    problems: list[str] = []
    for node in all_nodes.values():
        if node.linked or node.ino in in_use:
            continue
        label = f"unlinked inode {node.ino}"
        if not outbox.references(db.conn, node.node_id):
            problems.append(f"{label}: unused and not needed by the outbox, yet not purged")
        for table in ("extents", "chunk_map", "xattrs"):
            row = db.conn.execute(f"SELECT 1 FROM {table} WHERE ino = ?", (node.ino,)).fetchone()
            if row is not None:
                problems.append(f"{label}: tombstone still has {table} rows")
        if (cache_root / str(node.ino)).exists():
            problems.append(f"{label}: tombstone still has a cache file")
    return problems


def _check_extents(db: StateDb, all_nodes: dict[int, Node]) -> list[str]:
    problems: list[str] = []
    rows = db.conn.execute("SELECT DISTINCT ino, kind FROM extents").fetchall()
    for ino, kind in rows:
        node = all_nodes.get(ino)
        label = f"inode {ino} {'dirty' if kind == EXTENT_DIRTY else 'present'} extents"
        if node is None or node.kind != "file":
            problems.append(f"{label}: not a file")
            continue
        if kind == EXTENT_PRESENT and node.complete:
            problems.append(f"{label}: file is complete, yet has present extents")
        if kind == EXTENT_DIRTY and not node.dirty:
            problems.append(f"{label}: file is clean, yet has dirty extents")
        previous_end = -1
        for start, end in extents.intervals(db.conn, ino, kind):
            if start <= previous_end:
                problems.append(f"{label}: [{start}, {end}) overlaps or touches its neighbour")
            if end > node.size:
                problems.append(f"{label}: [{start}, {end}) past the size {node.size}")
            previous_end = end
    return problems


def _check_outbox(db: StateDb, all_nodes: dict[int, Node]) -> list[str]:
    problems: list[str] = []
    by_id = {n.node_id: n for n in all_nodes.values()}
    creates: set[str] = set()
    for op in outbox.pending(db.conn, limit=-1, unclaimed_only=False):
        label = f"outbox #{op.seq} ({op.op} {op.node_id})"
        if op.node_id not in by_id:
            problems.append(f"{label}: no node row")
        if op.body.get("op") != op.op or op.body.get("op_id") != op.op_id:
            problems.append(f"{label}: body does not match its columns: {json.dumps(op.body)}")
        if op.claimed:
            problems.append(f"{label}: claimed at rest")
        if op.op == "create":
            if op.node_id in creates:
                problems.append(f"{label}: second create of the node")
            creates.add(op.node_id)
    for node in all_nodes.values():
        if node.ino != ROOT_INO and node.remote_version is None and node.node_id not in creates:
            problems.append(f"inode {node.ino}: unknown to the backend and no create queued")
    return problems


def _check_cache(
    db: StateDb, all_nodes: dict[int, Node], cache_root: Path, in_use: Collection[int]
) -> list[str]:
    problems: list[str] = []
    files = {int(p.name): p for p in cache_root.iterdir() if p.name.isdigit()}
    for ino in files:
        node = all_nodes.get(ino)
        if node is None or node.kind != "file":
            problems.append(f"cache file {ino}: no such file node")
    for node in all_nodes.values():
        if node.kind != "file" or not (node.linked or node.ino in in_use):
            continue
        holds_bytes = (node.complete and node.size > 0) or bool(
            extents.intervals(db.conn, node.ino, EXTENT_PRESENT)
        )
        path = files.get(node.ino)
        if holds_bytes and path is None:
            problems.append(f"inode {node.ino}: cached bytes recorded, but no cache file")
        elif path is not None and holds_bytes:
            size = os.stat(path).st_size
            present = extents.intervals(db.conn, node.ino, EXTENT_PRESENT)
            low = node.size if node.complete else present[-1][1] if present else 0
            if not low <= size <= node.size:
                problems.append(
                    f"inode {node.ino}: cache file has {size} bytes, the file {node.size}"
                    f" ({'complete' if node.complete else f'present up to {low}'})"
                )
    return problems
