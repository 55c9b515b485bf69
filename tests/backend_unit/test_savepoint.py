"""`engine.savepoint`: an op rolled back alone inside a longer transaction (how batched
changes are grouped, backend/api/routes/changes.py) leaves no trace, not even in what the
connection noted for after the commit: the journal positions to announce."""

from __future__ import annotations

import uuid
from collections.abc import Mapping

import pytest
from sqlalchemy import Connection, select

from backend.db.engine import Database, savepoint
from backend.db.tables import journal
from backend.services import tree
from backend.services.errors import NameTaken
from backend.services.notify import on_commit
from backend.services.tree import NewNode
from backend.services.types import NodeId, NodeKind, Principal
from tests.backend_unit import consistency


def new(who: Principal, name: str) -> NewNode:
    return NewNode(NodeId(str(uuid.uuid4())), who.root_id, name, NodeKind.FILE, 0o644, 1)


def refused_late(conn: Connection, who: Principal) -> None:
    with savepoint(conn):
        gone = tree.create_node(conn, who, new(who, "gone"))
        raise NameTaken("refused after its journal entry", current=gone.node)


def test_a_rolled_back_savepoint_takes_its_journal_entry_and_announcement_back(
    db: Database, alice: Principal
) -> None:
    announced: list[dict[str, int]] = []

    def deliver(positions: Mapping[str, int]) -> None:
        announced.append(dict(positions))

    on_commit(db.engine, deliver)
    with db.write() as conn:
        with savepoint(conn):
            kept = tree.create_node(conn, alice, new(alice, "kept"))
        # An op refused *after* it appended its entry: the savepoint takes both back.
        with pytest.raises(NameTaken):
            refused_late(conn, alice)
    assert announced == [{alice.namespace_id: kept.cursor}]

    # The seq it had is handed out again, and announced when that commits.
    with db.write() as conn, savepoint(conn):
        again = tree.create_node(conn, alice, new(alice, "again"))
    assert again.cursor == (kept.cursor or 0) + 1
    assert announced[-1] == {alice.namespace_id: again.cursor}
    with db.read() as conn:
        names = conn.execute(select(journal.c.node).order_by(journal.c.seq)).scalars().all()
    assert not any('"gone"' in str(n) for n in names)
    consistency.check(db)
