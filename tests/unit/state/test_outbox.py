"""The outbox: wire shape of queued ops, coalescing rules, claims."""

from __future__ import annotations

from mountfs.ids import uuid7
from mountfs.state import outbox
from mountfs.state.db import StateDb

ROOT = "root-id"


def _create(db: StateDb, parent: str = ROOT, name: str = "f", kind: str = "file") -> str:
    node_id = uuid7()
    with db.transaction() as conn:
        outbox.append_create(
            conn,
            node_id=node_id,
            parent_id=parent,
            name=name,
            kind=kind,
            mode=0o644,
            mtime_ns=5,
            target=None,
        )
    return node_id


def _ops(db: StateDb) -> list[tuple[str, str, dict[str, object]]]:
    return [(op.op, op.node_id, op.body) for op in outbox.pending(db.conn, unclaimed_only=False)]


def test_ops_have_the_wire_shape_with_null_preconditions(db: StateDb) -> None:
    node = uuid7()
    with db.transaction() as conn:
        outbox.append_update(conn, node, {"name": "b", "replace_id": "other"})
        outbox.append_delete(conn, node)
    (update, delete) = outbox.pending(db.conn)
    assert update.body == {
        "op": "update",
        "op_id": update.op_id,
        "id": node,
        "base_version": None,
        "name": "b",
        "replace_id": "other",
        "replace_version": None,
    }
    assert delete.body == {"op": "delete", "op_id": delete.op_id, "id": node, "base_version": None}
    assert update.seq < delete.seq


def test_attribute_updates_merge_into_the_queued_create(db: StateDb) -> None:
    node = _create(db)
    other = _create(db, name="g")
    with db.transaction() as conn:
        outbox.append_update(conn, node, {"mode": 0o600, "mtime_ns": 9})
    ops = _ops(db)
    assert [(op, nid) for op, nid, _ in ops] == [("create", node), ("create", other)]
    assert ops[0][2]["mode"] == 0o600
    assert ops[0][2]["mtime_ns"] == 9


def test_a_move_merges_only_at_the_tail(db: StateDb) -> None:
    node = _create(db)
    with db.transaction() as conn:
        outbox.append_update(conn, node, {"name": "renamed"})
    assert [op for op, _, _ in _ops(db)] == ["create"]
    assert _ops(db)[0][2]["name"] == "renamed"
    later = _create(db, name="later")
    with db.transaction() as conn:
        outbox.append_update(conn, node, {"name": "again"})
    assert [(op, nid) for op, nid, _ in _ops(db)] == [
        ("create", node),
        ("create", later),
        ("update", node),
    ]


def test_rename_over_never_merges(db: StateDb) -> None:
    node = _create(db)
    with db.transaction() as conn:
        outbox.append_update(conn, node, {"name": "x", "replace_id": "victim"})
    assert [op for op, _, _ in _ops(db)] == ["create", "update"]


def test_deleting_an_unsent_node_cancels_its_history(db: StateDb) -> None:
    node = _create(db)
    with db.transaction() as conn:
        outbox.append_update(conn, node, {"mode": 0o700})
        assert outbox.append_delete(conn, node) is True
    assert _ops(db) == []


def test_no_cancel_while_another_op_names_the_node(db: StateDb) -> None:
    folder = _create(db, name="d", kind="dir")
    child = _create(db, parent=folder, name="c")
    with db.transaction() as conn:
        assert outbox.append_delete(conn, child) is True  # the child goes first (rm -r)
        assert outbox.append_delete(conn, folder) is True
    assert _ops(db) == []
    folder = _create(db, name="d2", kind="dir")
    synced_child = uuid7()
    with db.transaction() as conn:
        outbox.append_update(conn, synced_child, {"parent_id": folder})
    _create(db, name="between")  # so the next move cannot merge at the tail
    with db.transaction() as conn:
        outbox.append_update(conn, synced_child, {"parent_id": ROOT})
        assert outbox.append_delete(conn, folder) is False
    assert [op for op, _, _ in _ops(db)] == ["create", "update", "create", "update", "delete"]


def test_back_to_back_moves_collapse_into_one(db: StateDb) -> None:
    folder = _create(db, name="d", kind="dir")
    synced = uuid7()
    with db.transaction() as conn:
        outbox.append_update(conn, synced, {"parent_id": folder, "name": "x"})
        outbox.append_update(conn, synced, {"parent_id": ROOT})
        assert outbox.append_delete(conn, folder) is True  # nothing names it any more
    assert _ops(db) == [("update", synced, _ops(db)[0][2])]
    assert _ops(db)[0][2]["parent_id"] == ROOT
    assert _ops(db)[0][2]["name"] == "x"


def test_no_cancel_of_a_claimed_create_or_a_node_that_replaced_another(db: StateDb) -> None:
    claimed = _create(db)
    with db.transaction() as conn:
        outbox.claim(conn, [outbox.pending(conn)[0].seq])
        assert outbox.append_delete(conn, claimed) is False
    replacer = _create(db, name="tmp")
    with db.transaction() as conn:
        outbox.append_update(conn, replacer, {"name": "doc", "replace_id": "old-doc"})
        assert outbox.cancel_unsent(conn, replacer) is False
    assert outbox.references(db.conn, "old-doc")


def test_claims_hide_rows_until_released(db: StateDb) -> None:
    first, second = _create(db), _create(db, name="g")
    with db.transaction() as conn:
        outbox.claim(conn, [outbox.pending(conn, limit=1)[0].seq])
    assert [op.node_id for op in outbox.pending(db.conn)] == [second]
    with db.transaction() as conn:
        assert outbox.release_claims(conn) == 1
    pending = outbox.pending(db.conn)
    assert [op.node_id for op in pending] == [first, second]
    with db.transaction() as conn:
        outbox.complete(conn, pending[0].seq)
    assert [op.node_id for op in outbox.pending(db.conn)] == [second]
