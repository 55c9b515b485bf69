"""Group commit of the state database: savepoints inside one open transaction, the
committer's timing, and what another connection (a crash) sees before and after."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
import trio

from mountfs.state.db import StateDb, open_state
from mountfs.state.grouping import MAX_AGE_S, GroupCommitter


def _meta_elsewhere(path: Path, key: str) -> str | None:
    """What a second connection -- the state a `kill -9` would leave -- holds for `key`."""
    with sqlite3.connect(path) as other:
        row = other.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return None if row is None else str(row[0])


def test_grouped_transactions_are_committed_together(db: StateDb) -> None:
    db.grouping = True
    commits = db.commits
    with db.transaction():
        db.set_meta("a", "1")
    with db.transaction():
        db.set_meta("b", "2")
    assert db.group_open
    assert db.get_meta("b") == "2"  # visible here at once
    assert _meta_elsewhere(db.path, "a") is None  # not committed yet
    db.commit_group()
    assert not db.group_open
    assert db.commits == commits + 1
    assert _meta_elsewhere(db.path, "a") == "1"
    assert _meta_elsewhere(db.path, "b") == "2"


def test_a_failing_transaction_undoes_only_itself(db: StateDb) -> None:
    db.grouping = True
    with db.transaction():
        db.set_meta("kept", "1")

    def failing_op() -> None:
        with db.transaction():
            db.set_meta("undone", "1")
            with db.transaction():  # nested: a savepoint inside the group's savepoint
                db.set_meta("inner", "1")
            raise RuntimeError("the op failed")

    with pytest.raises(RuntimeError):
        failing_op()
    db.commit_group()
    assert _meta_elsewhere(db.path, "kept") == "1"
    assert _meta_elsewhere(db.path, "undone") is None
    assert _meta_elsewhere(db.path, "inner") is None


def test_commit_group_refuses_inside_a_transaction(db: StateDb) -> None:
    db.grouping = True
    with db.transaction():
        db.set_meta("x", "1")
        with pytest.raises(AssertionError):
            db.commit_group()


def test_close_commits_the_open_group(tmp_path: Path) -> None:
    db = open_state(tmp_path / "state.db")
    db.grouping = True
    with db.transaction():
        db.set_meta("last", "words")
    db.close()
    assert _meta_elsewhere(db.path, "last") == "words"


def test_without_grouping_each_transaction_commits(db: StateDb) -> None:
    with db.transaction():
        db.set_meta("a", "1")
    assert not db.group_open
    assert _meta_elsewhere(db.path, "a") == "1"


@pytest.mark.trio
async def test_the_committer_commits_a_lone_change_at_once(db: StateDb) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(GroupCommitter(db, lambda: 0.0).run)
        assert db.grouping
        with db.transaction():
            db.set_meta("a", "1")
        await trio.sleep(0.05)
        assert not db.group_open
        assert _meta_elsewhere(db.path, "a") == "1"
        nursery.cancel_scope.cancel()
    assert not db.grouping


@pytest.mark.trio
async def test_a_burst_is_committed_within_the_max_age(db: StateDb) -> None:
    """Requests that never pause still see their group committed after MAX_AGE_S."""
    async with trio.open_nursery() as nursery:
        await nursery.start(GroupCommitter(db, time.monotonic).run)  # always busy
        with db.transaction():
            db.set_meta("a", "1")
        started = time.monotonic()
        while db.group_open and time.monotonic() - started < 5:
            await trio.sleep(0.001)
        assert not db.group_open
        assert time.monotonic() - started >= MAX_AGE_S * 0.5
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_cancelling_the_committer_commits_what_is_open(db: StateDb) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(GroupCommitter(db, time.monotonic).run)
        with db.transaction():
            db.set_meta("a", "1")
        nursery.cancel_scope.cancel()
    assert _meta_elsewhere(db.path, "a") == "1"


def test_the_wal_is_overgrown_past_its_size_limit(
    db: StateDb, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checkpointer's bound during a burst is the WAL's size, not a count of commits."""
    assert not db.wal_overgrown()
    monkeypatch.setattr("mountfs.state.db._WAL_LIMIT", 64 * 1024)
    db.grouping = True
    with db.transaction():
        for i in range(200):
            db.set_meta(f"key{i}", "x" * 1000)
    db.commit_group()
    assert db.wal_overgrown()
