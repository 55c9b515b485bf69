"""The local copy of each file's head-revision manifest (`chunk_map`) and its keys.

The sync engine writes it when a revision is committed here or pulled from the journal; the
fetcher reads it to know which chunk objects hold a byte range. Functions take the
connection of an open transaction (or run one statement) and never commit on their own.
"""

from __future__ import annotations

import sqlite3

from mountfs.types import ChunkHash, ChunkKey, ChunkRef, Manifest, ObjectName

__all__ = ["covering", "keys", "load", "replace"]


def replace(
    conn: sqlite3.Connection, ino: int, manifest: Manifest, keys: dict[ChunkHash, ChunkKey]
) -> None:
    """Make `manifest` the file's chunk map (every ref must have its key in `keys`)."""
    conn.execute("DELETE FROM chunk_map WHERE ino = ?", (ino,))
    conn.executemany(
        "INSERT INTO chunk_map (ino, offset, size, hash, object, stored_size, key) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            (ino, r.offset, r.size, r.hash, r.object, r.stored_size, keys[r.hash])
            for r in manifest.chunks
        ],
    )


def _ref(row: tuple[int, int, str, str, int, bytes]) -> tuple[ChunkRef, ChunkKey]:
    offset, size, digest, obj, stored, key = row
    return ChunkRef(offset, size, ChunkHash(digest), ObjectName(obj), stored), ChunkKey(key)


_SELECT = "SELECT offset, size, hash, object, stored_size, key FROM chunk_map WHERE ino = ?"


def load(conn: sqlite3.Connection, ino: int) -> list[tuple[ChunkRef, ChunkKey]]:
    """The whole chunk map of a file, in offset order (empty if it has none)."""
    rows = conn.execute(_SELECT + " ORDER BY offset", (ino,)).fetchall()
    return [_ref(r) for r in rows]


def keys(conn: sqlite3.Connection, ino: int) -> dict[ChunkHash, ChunkKey]:
    """hash -> key for the file's current chunks (reused when re-committing old chunks)."""
    return {ref.hash: key for ref, key in load(conn, ino)}


def covering(
    conn: sqlite3.Connection, ino: int, start: int, end: int
) -> list[tuple[ChunkRef, ChunkKey]]:
    """The chunks that hold any byte of [start, end), in order.

    Two index range reads on (ino, offset): the chunk holding `start`, then those starting
    inside the range; a 10 GiB file's 10,000-row map is never scanned.
    """
    first = conn.execute(
        _SELECT + " AND offset <= ? ORDER BY offset DESC LIMIT 1", (ino, start)
    ).fetchall()
    rest = conn.execute(
        _SELECT + " AND offset > ? AND offset < ? ORDER BY offset", (ino, start, end)
    ).fetchall()
    refs = [_ref(r) for r in first + rest]
    return [(ref, key) for ref, key in refs if ref.offset + ref.size > start]
