"""The state connection: schema, transactions, durability helpers, inode numbering."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from mountfs.ids import uuid7
from mountfs.state import nodes
from mountfs.state.db import SchemaError, StateDb, open_state
from mountfs.state.nodes import NewNode
from mountfs.state.schema import CURRENT_VERSION
from mountfs.types import NodeId


def _new(name: str | None = None) -> NewNode:
    return NewNode(
        node_id=NodeId(uuid7()),
        parent_ino=None,
        name=name,
        kind="file",
        mode=0o600,
        uid=0,
        gid=0,
        time_ns=1,
    )


def _insert_then_fail(db: StateDb) -> None:
    with db.transaction() as conn:
        nodes.insert(conn, _new())
        raise RuntimeError("boom")


def test_transaction_rolls_back_on_error(db: StateDb) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        _insert_then_fail(db)
    assert nodes.count(db.conn) == 0
    assert not db.in_transaction


def test_nested_transaction_is_a_savepoint(db: StateDb) -> None:
    with db.transaction() as conn:
        nodes.insert(conn, _new())
        with pytest.raises(RuntimeError, match="boom"):
            _insert_then_fail(db)
        assert nodes.count(conn) == 1
    assert nodes.count(db.conn) == 1


def test_inode_numbers_are_never_reused(db: StateDb) -> None:
    with db.transaction() as conn:
        first = nodes.insert(conn, _new())
        second = nodes.insert(conn, _new())
        nodes.delete(conn, second.ino)
        third = nodes.insert(conn, _new())
    assert third.ino > second.ino > first.ino


def test_state_survives_reopen_and_wal_sync(tmp_path: Path) -> None:
    db = open_state(tmp_path / "state.db")
    with db.transaction() as conn:
        node = nodes.insert(conn, _new())
    db.sync_wal()
    db.checkpoint()
    db.close()
    again = open_state(tmp_path / "state.db")
    try:
        assert nodes.get(again.conn, node.ino) == node
        assert again.get_meta("schema_version") == str(CURRENT_VERSION)
    finally:
        again.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    db = open_state(tmp_path / "state.db")
    db.set_meta("schema_version", str(CURRENT_VERSION + 1))
    db.close()
    with pytest.raises(SchemaError, match="upgrade mountfs"):
        open_state(tmp_path / "state.db")


def test_foreign_database_is_refused(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "other.db")
    conn.execute("CREATE TABLE something (x)")
    conn.commit()
    conn.close()
    with pytest.raises(SchemaError, match="not a mountfs state"):
        open_state(tmp_path / "other.db")
