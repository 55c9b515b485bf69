"""The state database connection: WAL, transactions, and the durability hooks of `fsync`.

Atomicity model (S3QL's): every query runs synchronously on the trio thread, and every
function that opens a transaction is a plain `def`, so no `await` can fall inside one and no
other FUSE request can interleave with it. The connection is never handed to a thread.
`docs/client.md` has the checklist for anyone adding an `await`.

Durability: commits run with `synchronous=NORMAL`, so a commit costs a `write()` into the
WAL and no `fsync`: a process crash loses nothing, a power loss may lose the last commits.
Automatic checkpoints are off (they would `fsync` on the trio thread); `checkpoint()` runs
on a separate, short-lived connection in a worker thread instead, and `sync_wal()` makes
every commit so far durable by fsyncing the WAL file -- both are blocking and meant for
`trio.to_thread.run_sync`. A `fsync()` on the mount calls `sync_wal()` after the cache file's
own `fsync`, before it returns.

Group commit (`grouping`, switched on by the mount): top-level transactions become
savepoints of one open write transaction, which `commit_group()` commits. The mount's
`GroupCommitter` (mountfs.state.grouping) commits it once FUSE requests pause, within a few
milliseconds at most. Measured on `rm` of 3,000 files with the backend on the same disk, a
commit each cost 270 us (the WAL appends queue behind the backend's fsyncs in the ext4
journal) and was a third of the mount's time; grouped, unlink and create ran 2x and 1.2x
faster. What is given up: a `kill -9` may lose the metadata changes of the last few
milliseconds that nobody fsynced -- as a power loss does on ext4. Anything that lets state
leave the process calls `commit_group()` first: a push to the backend, a revision commit,
`fsync`, the record of a content write or truncate (their bytes are in the cache file
already), an eviction (before its cache file goes), a checkpoint, and `close()`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from mountfs.state.schema import CURRENT_VERSION, DDL

__all__ = ["DB_FILE", "SchemaError", "StateDb", "open_state"]

log = logging.getLogger(__name__)

DB_FILE = "state.db"
_WAL_LIMIT = 64 << 20  # journal_size_limit: the WAL file is truncated back to this after use


class SchemaError(RuntimeError):
    """The state file was written by a newer mountfs, or is not a mountfs state at all."""


class StateDb:
    """The one connection to `state.db`, used only from the thread that opened it.

    Attributes:
        path: the database file.
        conn: the sqlite3 connection in autocommit mode; transactions are explicit
            (`transaction()`), so a statement outside one commits on its own.
    """

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self.conn = conn
        self._depth = 0
        self.commits = 0  # top-level commits since open (drives the checkpointer)
        self.grouping = False
        """Top-level transactions join one open group (module docstring); off in tools."""
        self.group_open = False
        self.group_started = 0.0  # time.monotonic() when the open group began
        self.on_group_open: Callable[[], None] | None = None
        """Called when a group begins (the committer's wakeup)."""
        self._wal_fd: int | None = None
        self._wal_lock = threading.Lock()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """`BEGIN IMMEDIATE` ... `COMMIT`, or `ROLLBACK` if the block raises.

        Nested use is a SAVEPOINT, so a helper that opens its own transaction can be called
        inside a bigger one and an exception unwinds exactly what its block did. Never put
        an `await` inside: callers are plain functions by rule (see module docstring).
        """
        if self._depth:
            yield from self._savepoint()
            return
        if self.grouping:
            self._open_group()
            yield from self._savepoint()
            return
        self.conn.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        else:
            self.conn.execute("COMMIT")
            self.commits += 1
        finally:
            self._depth = 0

    def _savepoint(self) -> Iterator[sqlite3.Connection]:
        """A nested transaction (or a grouped top-level one): a SAVEPOINT that an exception
        rolls back alone."""
        name = f"sp{self._depth}"
        self.conn.execute(f"SAVEPOINT {name}")
        self._depth += 1
        try:
            yield self.conn
        except BaseException:
            self.conn.execute(f"ROLLBACK TO {name}")
            self.conn.execute(f"RELEASE {name}")
            raise
        else:
            self.conn.execute(f"RELEASE {name}")
        finally:
            self._depth -= 1

    def _open_group(self) -> None:
        """Begin the group's write transaction unless it is open (see `grouping`)."""
        if self.group_open and self.conn.in_transaction:
            return
        if self.group_open:  # SQLite rolled the group back by itself (an I/O error)
            log.error("the open state transaction was rolled back by SQLite")
        self.conn.execute("BEGIN IMMEDIATE")
        self.group_open = True
        self.group_started = time.monotonic()
        if self.on_group_open is not None:
            self.on_group_open()

    def commit_group(self) -> None:
        """Commit the open group, if any: from here on a crash of the process keeps it.

        Not inside a transaction. If the COMMIT fails (a full disk) the group stays open and
        the error goes to the caller; the next call tries again.
        """
        if not self.group_open:
            return
        assert self._depth == 0, "commit_group() inside a transaction"
        if self.conn.in_transaction:
            self.conn.execute("COMMIT")
            self.commits += 1
        else:
            log.error("the open state transaction was rolled back by SQLite")
        self.group_open = False

    @property
    def in_transaction(self) -> bool:
        return self._depth > 0

    def get_meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self.conn.execute(
            "INSERT INTO meta(key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    # --- blocking durability helpers: call them through trio.to_thread.run_sync ---------

    def sync_wal(self) -> None:
        """Make every commit so far durable by fsyncing the WAL file (blocking).

        Safe from a worker thread: it touches only a file descriptor of its own, never the
        connection. SQLite keeps the WAL file (same inode) while the connection is open and
        rewrites it in place after checkpoints, whose own syncs cover the database file.
        """
        with self._wal_lock:
            if self._wal_fd is None:
                try:
                    self._wal_fd = os.open(self._wal_path, os.O_RDONLY | os.O_CLOEXEC)
                except FileNotFoundError:
                    return  # nothing committed since the last truncating checkpoint
            os.fsync(self._wal_fd)

    @property
    def _wal_path(self) -> Path:
        return self.path.with_name(self.path.name + "-wal")

    def wal_overgrown(self) -> bool:
        """True once the WAL file is past `journal_size_limit`, which it only grows beyond
        between two restarts: the checkpointer's bound during a burst (a count of commits
        says little when one group commit writes hundreds of pages)."""
        try:
            return self._wal_path.stat().st_size > _WAL_LIMIT
        except FileNotFoundError:
            return False

    def checkpoint(self) -> None:
        """Copy the WAL into the database and let it start over (blocking, thread-safe).

        Runs on a separate, short-lived connection. First PASSIVE, which copies what it can
        and never blocks anyone; then RESTART, which waits for the writer lock (our
        transactions are short), copies the few frames committed meanwhile and makes the
        next commit rewrite the WAL from its start. Without the second step a steady stream
        of commits never lets the WAL restart and it grows without bound. The main
        connection's reads never wait; a commit may wait for the RESTART step only.
        SQLite syncs the WAL before and the database after each checkpoint.
        """
        conn = sqlite3.connect(self.path, timeout=0, check_same_thread=True)
        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            # No busy handler (its sleeps of 1-25 ms keep missing the gaps between our
            # short write transactions): poll for a gap instead, for at most a second.
            deadline = time.monotonic() + 1.0
            while conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()[0]:
                if time.monotonic() > deadline:
                    log.debug("WAL restart postponed: no gap between writes for 1s")
                    break
                time.sleep(0.0005)
        finally:
            conn.close()

    def close(self) -> None:
        """Checkpoint everything, shrink the WAL to nothing, and close (blocking, clean exit)."""
        try:
            self.commit_group()
            self.grouping = False
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        finally:
            self.conn.close()
            with self._wal_lock:
                if self._wal_fd is not None:
                    os.close(self._wal_fd)
                    self._wal_fd = None


def _configure(conn: sqlite3.Connection) -> None:
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise SchemaError(f"cannot switch the state database to WAL (got {mode})")
    for pragma in (
        "synchronous=NORMAL",
        "foreign_keys=ON",
        "wal_autocheckpoint=0",
        f"journal_size_limit={_WAL_LIMIT}",
        "temp_store=MEMORY",
        "cache_size=-65536",  # 64 MiB page cache: the tree of a big account stays in memory
    ):
        conn.execute(f"PRAGMA {pragma}")


def _check_version(db: StateDb) -> None:
    tables = {r[0] for r in db.conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if tables and "meta" not in tables:
        raise SchemaError(f"{db.path} is not a mountfs state database")
    version = db.get_meta("schema_version") if "meta" in tables else None
    if version is not None and int(version) > CURRENT_VERSION:
        raise SchemaError(
            f"{db.path} has schema version {version}; this mountfs understands up to "
            f"{CURRENT_VERSION}: upgrade mountfs"
        )


def open_state(path: Path) -> StateDb:
    """Open (creating if needed) the state database at `path` and bring its schema current.

    Raises:
        SchemaError: the file is not ours, or is newer than this code.
        sqlite3.DatabaseError: the file is corrupt.
    """
    conn = sqlite3.connect(path, isolation_level=None, cached_statements=512)
    try:
        _configure(conn)
        db = StateDb(path, conn)
        _check_version(db)
        with db.transaction():
            for statement in DDL.split(";"):
                if statement.strip():
                    conn.execute(statement)
            db.set_meta("schema_version", str(CURRENT_VERSION))
    except BaseException:
        conn.close()
        raise
    return db
