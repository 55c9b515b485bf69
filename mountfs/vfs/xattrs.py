"""`user.*` extended attributes, stored locally in the `xattrs` table.

Only the `user.` namespace is offered. Others answer EOPNOTSUPP, which is what ext4 answers
for a namespace it does not know: `security.*`, `trusted.*` and `system.*` mean something to
the kernel (labels, privileged data, ACLs) that this filesystem cannot honour, and pretending
to store them would mislead `cp -a` and friends. POSIX ACLs never reach us (pyfuse3 does not
request FUSE_POSIX_ACL, so the kernel refuses them itself).

Extended attributes are not synced: the backend has no place for them. They survive
remounts and renames on this device, and are lost when a file is replaced from another
device. The kernel enforces the sizes (name <= 255 bytes, value <= 64 KiB) and refuses
`user.*` on symlinks and special files before we are asked.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from mountfs.state import nodes
from mountfs.state.db import StateDb
from mountfs.vfs.errors import NoAttribute, NotFound, NotSupported

__all__ = ["USER_PREFIX", "Xattrs"]

USER_PREFIX = b"user."


def _check_namespace(name: bytes) -> None:
    if not name.startswith(USER_PREFIX) or name == USER_PREFIX:
        raise NotSupported(f"extended attribute namespace of {name!r}")


class Xattrs:
    """get/set/list/remove over the `xattrs` table."""

    def __init__(self, db: StateDb, clock: Callable[[], int] = time.time_ns) -> None:
        self._db = db
        self._clock = clock

    def _node_exists(self, ino: int) -> None:
        if nodes.get(self._db.conn, ino) is None:
            raise NotFound(f"no inode {ino}")

    def get(self, ino: int, name: bytes) -> bytes:
        _check_namespace(name)
        row = self._db.conn.execute(
            "SELECT value FROM xattrs WHERE ino = ? AND name = ?", (ino, name)
        ).fetchone()
        if row is None:
            self._node_exists(ino)
            raise NoAttribute(f"no attribute {name!r} on inode {ino}")
        return bytes(row[0])

    def set(self, ino: int, name: bytes, value: bytes) -> None:
        _check_namespace(name)
        with self._db.transaction() as conn:
            self._node_exists(ino)
            conn.execute(
                "INSERT INTO xattrs (ino, name, value) VALUES (?, ?, ?) "
                "ON CONFLICT (ino, name) DO UPDATE SET value = excluded.value",
                (ino, name, value),
            )
            nodes.set_fields(conn, ino, {"ctime_ns": self._clock()})

    def list(self, ino: int) -> list[bytes]:
        self._node_exists(ino)
        rows = self._db.conn.execute(
            "SELECT name FROM xattrs WHERE ino = ? ORDER BY name", (ino,)
        ).fetchall()
        return [bytes(r[0]) for r in rows]

    def remove(self, ino: int, name: bytes) -> None:
        _check_namespace(name)
        with self._db.transaction() as conn:
            self._node_exists(ino)
            cur = conn.execute("DELETE FROM xattrs WHERE ino = ? AND name = ?", (ino, name))
            if not cur.rowcount:
                raise NoAttribute(f"no attribute {name!r} on inode {ino}")
            nodes.set_fields(conn, ino, {"ctime_ns": self._clock()})
