"""Batched changes: per-op results and transactions, op_id replay (protocol.md § Batched)."""

from __future__ import annotations

import os

import pytest

from tests.support.api_client import ApiClient, Chunk, Json, new_id, now_ns


@pytest.fixture
def api(shared: ApiClient) -> ApiClient:
    """Tests here share one account; each works in its own empty folder, `root`."""
    return shared


@pytest.fixture
def root(box: str) -> str:
    return box


def create_op(parent_id: str, name: str, kind: str = "file", node_id: str | None = None) -> Json:
    return {
        "op": "create",
        "op_id": new_id(),
        "id": node_id or new_id(),
        "parent_id": parent_id,
        "name": name,
        "kind": kind,
        "mode": 0o755 if kind == "dir" else 0o644,
        "mtime_ns": now_ns(),
    }


def test_mixed_batch_applies_each_op_on_its_own(api: ApiClient, root: str) -> None:

    doomed = api.mkfile(root, "doomed")
    taken = api.mkfile(root, "taken")
    chunks = [Chunk(b"batched content")]
    api.upload(chunks)
    dir_id, file_id = new_id(), new_id()
    commit = api.commit_body(chunks, None)
    before = api.journal_all()
    ops = [
        create_op(root, "folder", "dir", dir_id),
        create_op(dir_id, "file.txt", "file", file_id),
        {"op": "commit", "op_id": new_id(), "id": file_id, **commit},
        {"op": "update", "op_id": new_id(), "id": file_id, "base_version": 2, "name": "renamed"},
        create_op(root, "taken"),  # fails: name clash ...
        {"op": "delete", "op_id": new_id(), "id": doomed["id"], "base_version": 1},  # ... runs
        {"op": "update", "op_id": new_id(), "id": new_id(), "base_version": 1, "name": "x"},
        {"op": "delete", "op_id": new_id(), "id": dir_id, "base_version": 1},  # not empty
    ]
    results = api.changes(ops)
    assert [r["status"] for r in results] == [201, 201, 201, 200, 409, 200, 404, 409]
    assert results[0]["node"]["id"] == dir_id
    assert results[2]["revision"]["id"] == commit["revision_id"]
    assert results[2]["node"]["head_revision"] == commit["revision_id"]
    assert results[3]["node"]["name"] == "renamed"
    assert results[3]["node"]["version"] == 3
    assert results[4]["error"] == "name_taken"
    assert results[4]["current"] == taken
    assert results[5]["node"]["deleted"] is True
    assert results[6]["error"] == "not_found"
    assert results[7]["error"] == "not_empty"
    for failed in (results[4], results[6], results[7]):
        assert isinstance(failed["detail"], str)

    assert [c["name"] for c in api.list_children(dir_id)] == ["renamed"]
    assert api.get_node(file_id) == results[3]["node"]
    # One journal entry per applied op, none for the refused ones.
    new = api.journal_all(after=before[-1]["seq"] if before else 0)
    assert [e["op"] for e in new] == ["create", "create", "commit", "update", "delete"]


def test_stop_at_refusal_leaves_every_later_op_untouched(api: ApiClient, root: str) -> None:
    """A device's ops depend on each other in order: with `stop_at_refusal`, nothing after
    the first refusal runs (else a `delete z` could run ahead of a refused move into z)."""
    api.mkfile(root, "taken")
    doomed = api.mkfile(root, "doomed")
    ops = [
        create_op(root, "first"),
        create_op(root, "taken"),  # refused: name clash
        {"op": "delete", "op_id": new_id(), "id": doomed["id"], "base_version": 1},
        create_op(root, "last"),
    ]
    answer = api.call("POST", "changes", json={"ops": ops, "stop_at_refusal": True})
    statuses = [(r["status"], r.get("error")) for r in answer["results"]]
    assert statuses == [
        (201, None),
        (409, "name_taken"),
        (424, "not_attempted"),
        (424, "not_attempted"),
    ]
    assert sorted(c["name"] for c in api.list_children(root)) == ["doomed", "first", "taken"]
    # Sent again once the refusal is resolved, the untouched ops apply normally.
    again = api.call("POST", "changes", json={"ops": ops[2:], "stop_at_refusal": True})
    assert [r["status"] for r in again["results"]] == [200, 201]


def test_commit_op_reports_missing_chunks(api: ApiClient, root: str) -> None:
    node = api.mkfile(root)
    missing = Chunk(b"never uploaded in a batch " + os.urandom(8))
    op = {"op": "commit", "op_id": new_id(), "id": node["id"], **api.commit_body([missing], None)}
    (result,) = api.changes([op])
    assert result["status"] == 409
    assert result["error"] == "missing_chunks"
    assert result["missing"] == [missing.object]


def test_stale_update_op_reports_conflict_with_current(api: ApiClient, root: str) -> None:
    node = api.mkfile(root)
    current = api.update_node(node["id"], 1, name="moved-on")
    (result,) = api.changes(
        [{"op": "update", "op_id": new_id(), "id": node["id"], "base_version": 1, "mode": 0}]
    )
    assert (result["status"], result["error"]) == (409, "conflict")
    assert result["current"] == current


def test_op_id_replay_returns_the_stored_result_once(api: ApiClient, root: str) -> None:

    node = api.mkfile(root, "n")
    chunks = [Chunk(b"replayed")]
    api.upload(chunks)
    ops = [
        create_op(root, "created"),
        {"op": "update", "op_id": new_id(), "id": node["id"], "base_version": 1, "name": "m"},
        {"op": "commit", "op_id": new_id(), "id": node["id"], **api.commit_body(chunks, None)},
        create_op(root, "m"),  # refused: the name was just taken
    ]
    first = api.changes(ops)
    assert [r["status"] for r in first] == [201, 200, 201, 409]
    seq = api.journal_all()[-1]["seq"]

    # The device retries the whole batch (its answer was lost): nothing is applied twice.
    assert api.changes(ops) == first
    assert api.journal_all(after=seq) == []
    assert api.get_node(node["id"])["version"] == 3
    assert len(api.revisions(node["id"])) == 1

    # Even after the state moved on, a replay answers what happened then.
    api.update_node(node["id"], 3, name="later")
    assert api.changes([ops[1]]) == [first[1]]
    assert api.get_node(node["id"])["name"] == "later"


def test_op_ids_are_per_device(api: ApiClient, root: str) -> None:
    """The same op_id from another device is a different operation (keyed by device)."""
    op = create_op(root, "from-device-1")
    (first,) = api.changes([op])
    assert first["status"] == 201
    with api.another_device() as other:
        (second,) = other.changes([{**op, "id": new_id(), "name": "from-device-2"}])
    assert second["status"] == 201
    assert {c["name"] for c in api.list_children(root)} == {
        "from-device-1",
        "from-device-2",
    }


def test_batch_of_1000_is_accepted_and_1001_refused(api: ApiClient, root: str) -> None:
    folder = api.mkdir(root)
    ops = [create_op(folder["id"], f"f{i:04d}") for i in range(1001)]
    response = api.request("POST", "changes", json={"ops": ops})
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "bad_request"
    assert api.list_children(folder["id"]) == []
    results = api.changes(ops[:1000])
    assert {r["status"] for r in results} == {201}
    assert len(api.list_children(folder["id"], 1000)) == 1000


@pytest.mark.parametrize(
    "op",
    [
        pytest.param({"op": "explode", "op_id": "x"}, id="unknown-op"),
        pytest.param({"op": "create", "name": "no-op-id"}, id="missing-op-id"),
        pytest.param({"op": "delete", "op_id": "not-a-uuid", "id": "x"}, id="bad-uuids"),
        pytest.param({"op": "update", "id": 5, "op_id": 7}, id="wrong-types"),
        pytest.param("create", id="not-an-object"),
    ],
)
def test_malformed_ops_are_400_and_change_nothing(api: ApiClient, op: object, root: str) -> None:
    """Read: a malformed op refuses the whole batch (400) or that op alone (status 400)."""
    good = create_op(root, "good")
    response = api.request("POST", "changes", json={"ops": [op, good]})
    assert response.status_code in (200, 400), response.text
    if response.status_code == 400:
        assert response.json()["error"] == "bad_request"
        assert api.list_children(root) == []
    else:
        bad, ok = response.json()["results"]
        assert bad["status"] == 400
        assert bad["error"] == "bad_request"
        assert ok["status"] == 201
