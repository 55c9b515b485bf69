"""Interval sets in SQLite against a plain Python model of the same set."""

from __future__ import annotations

import random

import pytest

from mountfs.ids import uuid7
from mountfs.state import extents, nodes
from mountfs.state.db import StateDb
from mountfs.state.nodes import NewNode
from mountfs.types import NodeId

KIND = 1


def _file(db: StateDb) -> int:
    with db.transaction() as conn:
        node = nodes.insert(
            conn,
            NewNode(
                node_id=NodeId(uuid7()),
                parent_ino=None,
                name=None,
                kind="file",
                mode=0o644,
                uid=0,
                gid=0,
                time_ns=0,
                size=1 << 40,
            ),
        )
    return node.ino


def _model_intervals(bits: set[int]) -> list[tuple[int, int]]:
    result: list[tuple[int, int]] = []
    for b in sorted(bits):
        if result and result[-1][1] == b:
            result[-1] = (result[-1][0], b + 1)
        else:
            result.append((b, b + 1))
    return result


def test_add_merges_overlapping_and_adjacent(db: StateDb) -> None:
    ino = _file(db)
    with db.transaction() as conn:
        extents.add(conn, ino, KIND, 10, 20)
        extents.add(conn, ino, KIND, 30, 40)
        extents.add(conn, ino, KIND, 20, 30)  # touches both neighbours
        assert extents.intervals(conn, ino, KIND) == [(10, 40)]
        extents.add(conn, ino, KIND, 0, 5)
        extents.add(conn, ino, KIND, 12, 15)  # already covered
        assert extents.intervals(conn, ino, KIND) == [(0, 5), (10, 40)]
        assert extents.total(conn, ino, KIND) == 35


def test_subtract_splits_and_clip_truncates(db: StateDb) -> None:
    ino = _file(db)
    with db.transaction() as conn:
        extents.add(conn, ino, KIND, 0, 100)
        extents.subtract(conn, ino, KIND, 40, 60)
        assert extents.intervals(conn, ino, KIND) == [(0, 40), (60, 100)]
        extents.clip(conn, ino, KIND, 70)
        assert extents.intervals(conn, ino, KIND) == [(0, 40), (60, 70)]
        assert extents.gaps(conn, ino, KIND, 30, 80) == [(40, 60), (70, 80)]
        extents.clear(conn, ino, KIND)
        assert extents.intervals(conn, ino, KIND) == []


@pytest.mark.parametrize("seed", range(5))
def test_random_operations_match_a_model(db: StateDb, seed: int) -> None:
    rng = random.Random(seed)
    ino = _file(db)
    model: set[int] = set()
    with db.transaction() as conn:
        for _ in range(300):
            start = rng.randrange(0, 200)
            end = start + rng.randrange(0, 40)
            op = rng.choice(["add", "add", "subtract", "clip", "gaps"])
            if op == "add":
                extents.add(conn, ino, KIND, start, end)
                model |= set(range(start, end))
            elif op == "subtract":
                extents.subtract(conn, ino, KIND, start, end)
                model -= set(range(start, end))
            elif op == "clip":
                extents.clip(conn, ino, KIND, end)
                model = {b for b in model if b < end}
            else:
                wanted = set(range(start, end)) - model
                assert extents.gaps(conn, ino, KIND, start, end) == _model_intervals(wanted)
            assert extents.intervals(conn, ino, KIND) == _model_intervals(model), (op, start, end)
