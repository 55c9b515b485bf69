"""Interval sets of byte ranges per file, kept in the `extents` table.

Two sets per file inode: *present* (bytes valid in the cache file) and *dirty* (bytes
changed locally since the head revision). Intervals are half-open, disjoint and never
adjacent, so a set of n intervals has exactly n rows and every operation touches only the
O(k) rows it overlaps, found through the (ino, kind, start) primary key: the predecessor is
"the last row starting before x", everything else starts inside the range.

Functions take the connection of an open transaction and never commit on their own.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

__all__ = ["Interval", "add", "clear", "clip", "gaps", "intervals", "subtract", "total"]

Interval = tuple[int, int]
"""A half-open byte range [start, end)."""

_PRED = (
    "SELECT start, end FROM extents WHERE ino = ? AND kind = ? AND start < ? "
    "ORDER BY start DESC LIMIT 1"
)
_INSIDE = (
    "SELECT start, end FROM extents WHERE ino = ? AND kind = ? AND start >= ? AND start <= ? "
    "ORDER BY start"
)


def add(conn: sqlite3.Connection, ino: int, kind: int, start: int, end: int) -> None:
    """Add [start, end) to the set, merging overlapping and adjacent intervals."""
    if end <= start:
        return
    pred = conn.execute(_PRED, (ino, kind, start)).fetchone()
    merge_pred = pred is not None and pred[1] >= start
    if merge_pred and pred[1] >= end:
        return  # already covered
    # Rows starting inside [start, end] overlap or touch the new range (pred starts before).
    inside = conn.execute(_INSIDE, (ino, kind, start, end)).fetchall()
    if inside:
        end = max(end, inside[-1][1])
        conn.execute(
            "DELETE FROM extents WHERE ino = ? AND kind = ? AND start >= ? AND start <= ?",
            (ino, kind, start, inside[-1][0]),
        )
    if merge_pred:
        conn.execute(
            "UPDATE extents SET end = ? WHERE ino = ? AND kind = ? AND start = ?",
            (end, ino, kind, pred[0]),
        )
    else:
        conn.execute("INSERT INTO extents VALUES (?, ?, ?, ?)", (ino, kind, start, end))


def subtract(conn: sqlite3.Connection, ino: int, kind: int, start: int, end: int) -> None:
    """Remove [start, end) from the set, splitting intervals that straddle its ends."""
    if end <= start:
        return
    pred = conn.execute(_PRED, (ino, kind, start)).fetchone()
    if pred is not None and pred[1] > start:
        conn.execute(
            "UPDATE extents SET end = ? WHERE ino = ? AND kind = ? AND start = ?",
            (start, ino, kind, pred[0]),
        )
        if pred[1] > end:
            conn.execute("INSERT INTO extents VALUES (?, ?, ?, ?)", (ino, kind, end, pred[1]))
            return
    inside = conn.execute(_INSIDE, (ino, kind, start, end - 1)).fetchall()
    if not inside:
        return
    conn.execute(
        "DELETE FROM extents WHERE ino = ? AND kind = ? AND start >= ? AND start < ?",
        (ino, kind, start, end),
    )
    last_end = inside[-1][1]
    if last_end > end:
        conn.execute("INSERT INTO extents VALUES (?, ?, ?, ?)", (ino, kind, end, last_end))


def clip(conn: sqlite3.Connection, ino: int, kind: int, size: int) -> None:
    """Drop everything at or beyond `size` (a truncation)."""
    pred = conn.execute(_PRED, (ino, kind, size)).fetchone()
    if pred is not None and pred[1] > size:
        conn.execute(
            "UPDATE extents SET end = ? WHERE ino = ? AND kind = ? AND start = ?",
            (size, ino, kind, pred[0]),
        )
    conn.execute("DELETE FROM extents WHERE ino = ? AND kind = ? AND start >= ?", (ino, kind, size))


def clear(conn: sqlite3.Connection, ino: int, kind: int) -> None:
    """Empty the set."""
    conn.execute("DELETE FROM extents WHERE ino = ? AND kind = ?", (ino, kind))


def intervals(conn: sqlite3.Connection, ino: int, kind: int) -> list[Interval]:
    """The whole set, in order."""
    rows = conn.execute(
        "SELECT start, end FROM extents WHERE ino = ? AND kind = ? ORDER BY start", (ino, kind)
    ).fetchall()
    return [(int(s), int(e)) for s, e in rows]


def gaps(conn: sqlite3.Connection, ino: int, kind: int, start: int, end: int) -> list[Interval]:
    """The parts of [start, end) that the set does NOT cover, in order."""
    if end <= start:
        return []
    covering: list[Interval] = []
    pred = conn.execute(_PRED, (ino, kind, start)).fetchone()
    if pred is not None and pred[1] > start:
        covering.append((int(pred[0]), int(pred[1])))
    covering.extend((int(s), int(e)) for s, e in conn.execute(_INSIDE, (ino, kind, start, end - 1)))
    return _complement(covering, start, end)


def _complement(covering: Sequence[Interval], start: int, end: int) -> list[Interval]:
    result: list[Interval] = []
    cursor = start
    for s, e in covering:
        if s > cursor:
            result.append((cursor, min(s, end)))
        cursor = max(cursor, e)
        if cursor >= end:
            break
    if cursor < end:
        result.append((cursor, end))
    return result


def total(conn: sqlite3.Connection, ino: int, kind: int) -> int:
    """Bytes covered by the set."""
    row = conn.execute(
        "SELECT coalesce(sum(end - start), 0) FROM extents WHERE ino = ? AND kind = ?",
        (ino, kind),
    ).fetchone()
    return int(row[0])
