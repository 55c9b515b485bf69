"""Tree service rules, driven directly over a real SQLite database."""

from __future__ import annotations

import threading
import uuid

import pytest
from sqlalchemy import select

from backend.db.engine import Database
from backend.db.tables import journal, namespace
from backend.services import errors, tree
from backend.services.tree import NewNode, NodeChange
from backend.services.types import JournalOp, Node, NodeId, NodeKind, Principal
from tests.backend_unit import consistency
from tests.backend_unit.conftest import MakeAccount


def nid() -> NodeId:
    return NodeId(str(uuid.uuid4()))


def create(
    db: Database, who: Principal, parent: NodeId, name: str, kind: NodeKind = NodeKind.FILE
) -> Node:
    target = "t" if kind is NodeKind.SYMLINK else None
    new = NewNode(nid(), parent, name, kind, 0o644, 1, target)
    with db.write() as conn:
        return tree.create_node(conn, who, new).node


def update(db: Database, who: Principal, node: Node, **fields: object) -> Node:
    with db.write() as conn:
        change = NodeChange(base_version=node.version, **fields)
        return tree.update_node(conn, who, node.id, change).node


def test_create_list_and_replay(db: Database, alice: Principal) -> None:
    names = ["b", "B", "a", "é", "10", "9"]
    made = [create(db, alice, alice.root_id, n) for n in names]
    with db.read() as conn:
        page = tree.list_children(conn, alice, alice.root_id, 4, None)
        assert [n.name for n in page.items] == sorted(names)[:4]
        rest = tree.list_children(conn, alice, alice.root_id, 4, page.next_cursor)
    assert [n.name for n in rest.items] == sorted(names)[4:]
    assert rest.next_cursor is None
    # A replay (same id, parent, name, kind) answers the node without a new entry.
    first = made[0]
    with db.write() as conn:
        replay = tree.create_node(
            conn, alice, NewNode(first.id, alice.root_id, "b", NodeKind.FILE, 0o600, 9)
        )
    assert (replay.created, replay.node) == (False, first)
    with db.write() as conn, pytest.raises(errors.IdTaken):
        tree.create_node(conn, alice, NewNode(first.id, alice.root_id, "c", NodeKind.FILE, 0, 0))
    consistency.check(db)


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "a\x00b", "x" * 256, "é" * 128])
def test_invalid_names(db: Database, alice: Principal, name: str) -> None:
    with pytest.raises(errors.InvalidName):
        create(db, alice, alice.root_id, name)


def test_name_taken_and_parent_rules(db: Database, alice: Principal) -> None:
    taken = create(db, alice, alice.root_id, "taken")
    with pytest.raises(errors.NameTaken) as caught:
        create(db, alice, alice.root_id, "taken", NodeKind.DIR)
    assert caught.value.current == taken
    with pytest.raises(errors.NotADirectory):
        create(db, alice, taken.id, "child")
    with pytest.raises(errors.NotFound):
        create(db, alice, nid(), "child")
    consistency.check(db)


def test_move_cycle_and_root(db: Database, alice: Principal) -> None:
    a = create(db, alice, alice.root_id, "a", NodeKind.DIR)
    b = create(db, alice, a.id, "b", NodeKind.DIR)
    c = create(db, alice, b.id, "c", NodeKind.DIR)
    for target in (a, b, c):
        with pytest.raises(errors.Cycle):
            update(db, alice, a, parent_id=target.id)
    moved = update(db, alice, c, parent_id=alice.root_id, name="c2")
    assert (moved.parent_id, moved.name, moved.version) == (alice.root_id, "c2", 2)
    with db.read() as conn:
        root = tree.get_node(conn, alice.namespace_id, alice.root_id)
    with pytest.raises(errors.Forbidden):
        update(db, alice, root, name="x")
    assert update(db, alice, root, mode=0o700).mode == 0o700  # setattr on the root is fine
    consistency.check(db)


def test_replace_is_one_transaction_with_two_entries(db: Database, alice: Principal) -> None:
    target = create(db, alice, alice.root_id, "doc")
    temp = create(db, alice, alice.root_id, ".doc.swp")
    moved = update(db, alice, temp, name="doc", replace_id=target.id, replace_version=1)
    assert moved.name == "doc"
    with db.read() as conn:
        gone = tree.get_node(conn, alice.namespace_id, target.id)
        ops = conn.execute(
            select(journal.c.op, journal.c.node_id)
            .where(journal.c.namespace_id == alice.namespace_id)
            .order_by(journal.c.seq.desc())
            .limit(2)
        ).all()
    assert gone.deleted
    assert gone.version == 2
    assert [(JournalOp(o), n) for o, n in reversed(ops)] == [
        (JournalOp.DELETE, target.id),
        (JournalOp.UPDATE, temp.id),
    ]
    consistency.check(db)


def test_replace_preconditions(db: Database, alice: Principal) -> None:
    target = create(db, alice, alice.root_id, "t")
    other = create(db, alice, alice.root_id, "o")
    mover = create(db, alice, alice.root_id, "m")
    target = update(db, alice, target, mode=0o600)
    with pytest.raises(errors.Conflict):
        update(db, alice, mover, name="t", replace_id=target.id, replace_version=1)
    with pytest.raises(errors.NameTaken):
        update(db, alice, mover, name="t", replace_id=other.id)
    with pytest.raises(errors.BadRequest):
        update(db, alice, mover, replace_id=target.id)  # no move: nothing to replace
    full = create(db, alice, alice.root_id, "full", NodeKind.DIR)
    create(db, alice, full.id, "child")
    empty = create(db, alice, alice.root_id, "empty", NodeKind.DIR)
    with pytest.raises(errors.NotEmpty):
        update(db, alice, empty, name="full", replace_id=full.id)
    consistency.check(db)


def test_delete_rules(db: Database, alice: Principal) -> None:
    d = create(db, alice, alice.root_id, "d", NodeKind.DIR)
    f = create(db, alice, d.id, "f")
    with db.write() as conn, pytest.raises(errors.NotEmpty):
        tree.delete_node(conn, alice, d.id, 1)
    with db.write() as conn, pytest.raises(errors.Conflict):
        tree.delete_node(conn, alice, f.id, 7)
    with db.write() as conn:
        outcome = tree.delete_node(conn, alice, f.id, 1)
    assert outcome.node.deleted
    assert outcome.revision is not None
    with db.write() as conn:
        assert tree.delete_node(conn, alice, d.id, 1).revision is None
    with db.write() as conn, pytest.raises(errors.Forbidden):
        tree.delete_node(conn, alice, alice.root_id, 1)
    consistency.check(db)


def test_other_accounts_nodes_are_not_found(
    db: Database, alice: Principal, make_account: MakeAccount
) -> None:
    bob = make_account()
    folder = create(db, alice, alice.root_id, "private", NodeKind.DIR)
    with pytest.raises(errors.NotFound):
        create(db, bob, folder.id, "intruder")
    with db.write() as conn, pytest.raises(errors.NotFound):
        tree.update_node(conn, bob, folder.id, NodeChange(base_version=1, name="x"))
    with db.write() as conn, pytest.raises(errors.NotFound):
        tree.delete_node(conn, bob, folder.id, 1)
    with db.read() as conn, pytest.raises(errors.NotFound):
        tree.list_children(conn, bob, folder.id, 10, None)
    # Moving one's own node under a foreign directory is refused the same way.
    mine = create(db, bob, bob.root_id, "mine")
    with pytest.raises(errors.NotFound):
        update(db, bob, mine, parent_id=folder.id)
    consistency.check(db)


def test_concurrent_writers_keep_the_journal_gap_free(db: Database, alice: Principal) -> None:
    """Many threads creating at once: every create lands, seqs are 1..N without gaps."""
    failures: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            for j in range(10):
                create(db, alice, alice.root_id, f"t{i}-{j}")
        except BaseException as exc:  # reported below
            failures.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    with db.read() as conn:
        last = conn.execute(
            select(namespace.c.last_seq).where(namespace.c.id == alice.namespace_id)
        ).scalar_one()
    assert last == 60
    consistency.check(db)
