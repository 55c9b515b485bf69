"""Engines and transactions for SQLite (embedded default) and PostgreSQL.

`Database.read()` and `Database.write()` are the only ways services get a connection: each
yields a Connection inside one transaction that commits when the block ends normally and
rolls back on any exception. Routes are sync (`def`), so these run in FastAPI's threadpool.

SQLite (one process, the embedded default):
- WAL journal, so readers never block the writer nor each other.
- `synchronous=NORMAL`: in WAL mode a commit is durable against a *process* crash
  (SIGKILL, OOM) the moment it returns — the WAL is in the OS page cache. Only a power loss
  or kernel crash can roll back the last transactions, and never corrupts the database.
  That is the promise we make ("a killed server restarted on the same DIR has lost nothing
  it answered 2xx for"); `FULL` would add an fsync per commit for power-loss durability.
- `foreign_keys=ON` (off by default in SQLite) and a `busy_timeout` as a backstop for other
  processes (e.g. the sqlite3 shell) holding the lock.
- Write transactions start with `BEGIN IMMEDIATE`, taking the write lock up front: two
  deferred transactions that both read and then try to write would deadlock on the lock
  upgrade (one gets SQLITE_BUSY at once, whatever the timeout). Reads use plain `BEGIN`.
- Writers queue before that, so that SQLite's busy handler (sleep and retry, sleeps of up
  to 100 ms) is almost never what makes them wait: within the process on a
  `threading.Lock`, and between the server's worker processes on an exclusive `flock` of
  `<database>.writer` beside the file (blocking, woken at once when released; the kernel
  drops it when a process dies, even by SIGKILL). `BEGIN IMMEDIATE` stays the guarantee;
  the queue only saves the sleeps. The `busy_timeout` remains the backstop for anyone who
  does not take the flock (the sqlite3 shell, migrations).
- The pysqlite driver's own implicit transaction handling is switched off
  (`isolation_level=None`) so that our BEGIN is the one that counts.

PostgreSQL: default READ COMMITTED. Services serialise changes per namespace by locking the
namespace row first (`SELECT ... FOR UPDATE`), so every statement after it sees the state
left by the previous change, and journal seqs commit in order.
"""

from __future__ import annotations

import copy
import fcntl
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

from sqlalchemy import Connection, Engine, Table, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.pool import ConnectionPoolEntry

__all__ = ["Database", "make_engine", "savepoint", "upsert_ignore"]

SQLITE_BUSY_TIMEOUT_MS = 30_000
_WRITE_OPTION = "mountfs_write"


def make_engine(url: str, *, foreign_keys: bool = True) -> Engine:
    """An engine for `url`, with the SQLite set-up described in the module docstring.

    `foreign_keys=False` is for migrations only: Alembic's batch mode rebuilds SQLite tables,
    which must not cascade or fail half-way; the migration runner checks integrity after.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False},
        pool_size=8,
        max_overflow=8,
    )
    _configure_sqlite(engine, foreign_keys=foreign_keys)
    return engine


def _configure_sqlite(engine: Engine, *, foreign_keys: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: sqlite3.Connection, _record: ConnectionPoolEntry) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (see _on_begin)
        cursor = dbapi_conn.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute(f"PRAGMA foreign_keys={'ON' if foreign_keys else 'OFF'}")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get(_WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


class _WriterFlock:
    """The cross-process queue of SQLite writers: `flock(LOCK_EX)` on one file.

    The lock belongs to this open file description, so every thread of a process would
    share it; `Database` takes its thread lock first, so at most one thread here waits.
    """

    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def __enter__(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        os.close(self._fd)


class Database:
    """Transactions over one engine; see the module docstring for the guarantees."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.is_sqlite = engine.dialect.name == "sqlite"
        self._thread_lock = threading.Lock() if self.is_sqlite else None
        self._flock: _WriterFlock | None = None
        path = engine.url.database
        if self.is_sqlite and path and path != ":memory:" and not path.startswith("file:"):
            self._flock = _WriterFlock(f"{path}.writer")

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read-only transaction (a consistent snapshot on both databases)."""
        with self.engine.connect() as conn, conn.begin():
            yield conn

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction: commits at the end of the block, rolls back on exception."""
        thread_lock: AbstractContextManager[Any] = self._thread_lock or nullcontext()
        flock: AbstractContextManager[Any] = self._flock or nullcontext()
        with thread_lock, flock, self.engine.connect() as conn:
            conn.execution_options(**{_WRITE_OPTION: True})
            with conn.begin():
                yield conn

    def close(self) -> None:
        self.engine.dispose()
        if self._flock is not None:
            self._flock.close()


@contextmanager
def savepoint(conn: Connection) -> Iterator[None]:
    """A SAVEPOINT in `conn`'s open transaction: kept when the block ends normally, rolled
    back alone (the transaction goes on) when it raises.

    What listeners noted on the connection during the block (`conn.info`: the journal
    positions to announce once committed, `notify.note_appended`; the journal entries to
    count, `metrics`) is reset with it, as a full rollback drops those notes: an entry
    that was rolled back must never be announced (a device told about position N would
    then wait past N and miss the entry that later really gets N).
    """
    noted = {key: copy.copy(value) for key, value in conn.info.items()}
    try:
        with conn.begin_nested():
            yield
    except BaseException:
        if not conn.invalidated:
            conn.info.clear()
            conn.info.update(noted)
        raise


def upsert_ignore(
    conn: Connection, table: Table, rows: list[dict[str, Any]], keys: list[str]
) -> None:
    """INSERT rows, silently skipping those whose `keys` already exist (both dialects).

    Used where two transactions may race to create the same row (a chunk confirmed by two
    accounts at once on PostgreSQL); either insert wins and neither fails.
    """
    if not rows:
        return
    insert = sqlite.insert if conn.dialect.name == "sqlite" else postgresql.insert
    conn.execute(insert(table).on_conflict_do_nothing(index_elements=keys), rows)
