"""Batched changes applied in groups: many ops per transaction, each in a savepoint.

Black box (protocol.md § Batched): whatever the grouping, every op is answered as if it
ran alone, a refused op leaves the others applied (or, with `stop_at_refusal`, the later
ones untouched), the journal holds exactly the applied ops in order, a replay applies
nothing twice, and the push channel ends at the batch's last position. Batches here are
longer than one group (100 ops, fewer on a slow machine), so refusals land in the middle
of a group and several groups follow each other within one request.
"""

from __future__ import annotations

import os
import threading

import pytest

from tests.api.conftest import AccountFactory
from tests.api.test_changes import create_op
from tests.api.test_watch import ARRIVES_WITHIN_S, QUIET_S, data_lines, watching
from tests.support.api_client import ApiClient, Chunk, Json, new_id

N = 250
"""Ops per long batch: more than one group even on a fast machine."""

REFUSED_AT = 130
"""Where the long batches carry their refused op: past the first group."""


@pytest.fixture
def api(shared: ApiClient) -> ApiClient:
    """Tests here share one account; each works in its own empty folder, `root`."""
    return shared


@pytest.fixture
def root(box: str) -> str:
    return box


def push(api: ApiClient, ops: list[Json], *, stop_at_refusal: bool) -> list[Json]:
    answer = api.call("POST", "changes", json={"ops": ops, "stop_at_refusal": stop_at_refusal})
    results: list[Json] = answer["results"]
    assert len(results) == len(ops)
    return results


def head(api: ApiClient) -> int:
    entries = api.journal_all()
    return int(entries[-1]["seq"]) if entries else 0


def many_creates(parent_id: str, taken_at: int) -> list[Json]:
    """`N` creates of files in `parent_id`; the one at `taken_at` is named "taken"."""
    ops = [create_op(parent_id, f"f{i:03d}") for i in range(N)]
    ops[taken_at] = create_op(parent_id, "taken")
    return ops


def test_a_refused_op_amid_a_long_batch_leaves_every_other_op_applied(
    api: ApiClient, root: str
) -> None:
    taken = api.mkfile(root, "taken")
    ops = many_creates(root, REFUSED_AT)
    before = head(api)

    results = push(api, ops, stop_at_refusal=False)

    assert [r["status"] for i, r in enumerate(results) if i != REFUSED_AT] == [201] * (N - 1)
    refused = results[REFUSED_AT]
    assert (refused["status"], refused["error"]) == (409, "name_taken")
    assert refused["current"] == taken
    applied = [op for i, op in enumerate(ops) if i != REFUSED_AT]
    # The journal holds exactly the applied ops, in order, without gaps (the refused op's
    # savepoint took its seq back), and each answer's cursor is its op's entry.
    entries = api.journal_all(after=before)
    assert [(e["op"], e["node"]["id"]) for e in entries] == [("create", o["id"]) for o in applied]
    assert [e["seq"] for e in entries] == list(range(before + 1, before + N))
    assert [r["cursor"] for r in results if r["status"] == 201] == [e["seq"] for e in entries]
    assert [r["node"] for r in results if r["status"] == 201] == [e["node"] for e in entries]
    children = api.list_children(root, 1000)
    assert sorted(c["id"] for c in children) == sorted([taken["id"], *(o["id"] for o in applied)])

    # The device sends the batch again (its answer was lost): every applied op is answered
    # from storage, identically; the refused one is evaluated afresh (and refused again).
    assert push(api, ops, stop_at_refusal=False) == results
    assert api.journal_all(after=before) == entries


def test_stop_at_refusal_amid_a_long_batch(api: ApiClient, root: str) -> None:
    taken = api.mkfile(root, "taken")
    ops = many_creates(root, REFUSED_AT)
    before = head(api)

    results = push(api, ops, stop_at_refusal=True)

    assert [r["status"] for r in results[:REFUSED_AT]] == [201] * REFUSED_AT
    assert (results[REFUSED_AT]["status"], results[REFUSED_AT]["error"]) == (409, "name_taken")
    assert {(r["status"], r["error"]) for r in results[REFUSED_AT + 1 :]} == {
        (424, "not_attempted")
    }
    entries = api.journal_all(after=before)
    assert [e["node"]["id"] for e in entries] == [o["id"] for o in ops[:REFUSED_AT]]
    assert [e["seq"] for e in entries] == list(range(before + 1, before + REFUSED_AT + 1))
    assert api.get_node(ops[REFUSED_AT + 1]["id"], expect=404)["error"] == "not_found"

    # A replay changes nothing and answers the same.
    assert push(api, ops, stop_at_refusal=True) == results
    assert api.journal_all(after=before) == entries

    # Once the refusal is resolved, the same batch goes through: the ops applied before
    # are answered from storage (not applied twice), the others apply now, in order.
    api.delete_node(taken["id"], 1)
    resolved = head(api)
    again = push(api, ops, stop_at_refusal=True)
    assert again[:REFUSED_AT] == results[:REFUSED_AT]
    assert [r["status"] for r in again[REFUSED_AT:]] == [201] * (N - REFUSED_AT)
    later = api.journal_all(after=resolved)
    assert [e["node"]["id"] for e in later] == [o["id"] for o in ops[REFUSED_AT:]]
    assert len(api.list_children(root, 1000)) == N


def test_a_long_mixed_batch_with_commits_in_the_middle(api: ApiClient, root: str) -> None:
    doomed = api.mkfile(root, "doomed")
    victim = api.mkfile(root, "victim")
    stale = api.mkfile(root, "stale")
    first = [Chunk(b"grouped first " + os.urandom(8))]
    second = [Chunk(b"grouped second " + os.urandom(8))]
    missing = [Chunk(b"never uploaded " + os.urandom(8))]
    api.upload(first + second)
    folder, file_a, file_b = new_id(), new_id(), new_id()
    commit_a = api.commit_body(first, None)
    commit_b = api.commit_body(second, None)
    fillers = [create_op(folder, f"filler{i:02d}") for i in range(40)]
    ops: list[Json] = [
        create_op(root, "folder", "dir", folder),
        create_op(folder, "a.txt", "file", file_a),
        create_op(folder, "b.txt", "file", file_b),
        *fillers[:20],
        {"op": "commit", "op_id": new_id(), "id": file_a, **commit_a},
        {"op": "update", "op_id": new_id(), "id": file_a, "base_version": 2, "name": "a2.txt"},
        {"op": "delete", "op_id": new_id(), "id": doomed["id"], "base_version": 1},
        {"op": "commit", "op_id": new_id(), "id": stale["id"], **api.commit_body(missing, None)},
        {"op": "update", "op_id": new_id(), "id": victim["id"], "base_version": 1, "mode": 0o600},
        {"op": "commit", "op_id": new_id(), "id": file_b, **commit_b},
        *fillers[20:],
        {"op": "delete", "op_id": new_id(), "id": folder, "base_version": 1},  # not empty
        {"op": "delete", "op_id": new_id(), "id": file_b, "base_version": 2},
    ]
    before = head(api)

    results = push(api, ops, stop_at_refusal=False)

    statuses = [r["status"] for r in results]
    assert statuses == [201] * 23 + [201, 200, 200, 409, 200, 201] + [201] * 20 + [409, 200]
    by_op = dict(zip((o["op_id"] for o in ops), results, strict=True))
    commit_a_result = by_op[ops[23]["op_id"]]
    assert commit_a_result["revision"]["id"] == commit_a["revision_id"]
    assert commit_a_result["revision"] == api.revision(commit_a["revision_id"])  # keyed
    assert commit_a_result["node"]["head_revision"] == commit_a["revision_id"]
    assert by_op[ops[24]["op_id"]]["node"]["name"] == "a2.txt"
    assert by_op[ops[25]["op_id"]]["node"]["deleted"] is True
    assert by_op[ops[26]["op_id"]]["error"] == "missing_chunks"
    assert by_op[ops[26]["op_id"]]["missing"] == [missing[0].object]
    assert by_op[ops[27]["op_id"]]["node"]["mode"] == 0o600
    assert by_op[ops[28]["op_id"]]["revision"]["id"] == commit_b["revision_id"]
    assert results[-2]["error"] == "not_empty"
    assert results[-1]["node"]["deleted"] is True

    entries = api.journal_all(after=before)
    applied = [(o, r) for o, r in zip(ops, results, strict=True) if r["status"] < 300]
    assert [e["seq"] for e in entries] == [r["cursor"] for _, r in applied]
    assert [e["op"] for e in entries] == [o["op"] for o, _ in applied]
    assert [e["node"]["id"] for e in entries] == [o["id"] for o, _ in applied]
    assert api.get_node(file_a)["head_revision"] == commit_a["revision_id"]
    assert api.get_node(stale["id"])["head_revision"] is None

    # Replayed whole: every answer identical (commits with their revision and chunk keys),
    # nothing applied twice.
    assert push(api, ops, stop_at_refusal=False) == results
    assert api.journal_all(after=before) == entries
    assert len(api.revisions(file_a)) == 1


def test_a_commit_refused_before_its_group_stops_the_batch(api: ApiClient, root: str) -> None:
    """A commit's uploads are confirmed before its group begins; a manifest refused there
    (here: its size disagrees with its chunks) is answered like any refusal."""
    node = api.mkfile(root, "f")
    chunks = [Chunk(b"confirmed first " + os.urandom(8))]
    api.upload(chunks)
    bad = api.commit_body(chunks, None, size=chunks[0].size + 1)
    ops = [
        create_op(root, "before"),
        {"op": "commit", "op_id": new_id(), "id": node["id"], **bad},
        create_op(root, "after"),
    ]
    stopped = push(api, ops, stop_at_refusal=True)
    assert [(r["status"], r.get("error")) for r in stopped] == [
        (201, None),
        (400, "bad_request"),
        (424, "not_attempted"),
    ]
    went_on = push(api, ops, stop_at_refusal=False)
    assert went_on[0] == stopped[0]  # replayed
    assert [r["status"] for r in went_on[1:]] == [400, 201]
    assert sorted(c["name"] for c in api.list_children(root)) == ["after", "before", "f"]


def test_a_watch_ends_at_the_last_position_of_a_long_batch(new_account: AccountFactory) -> None:
    """The push channel announces what each group committed: a device watching the
    namespace ends at the batch's last applied op, and is told of nothing beyond it (the
    batch ends with a refused op, whose savepoint was rolled back)."""
    api = new_account("grouped")
    root = api.root_id
    api.mkfile(root, "taken")
    ops = many_creates(root, N - 1)  # the batch ends with a refusal
    start = head(api)
    with watching(api, after=start) as stream:
        results = push(api, ops, stop_at_refusal=False)
        last = results[-2]["cursor"]
        assert last == start + N - 1
        positions = [stream.next_event(ARRIVES_WITHIN_S)["data"]["position"]]
        while positions[-1] < last:
            positions.append(stream.next_event(ARRIVES_WITHIN_S)["data"]["position"])
        assert positions == sorted(set(positions))
        assert positions[-1] == last
        assert not data_lines(stream.quiet_for(QUIET_S))
    assert head(api) == last


def test_two_devices_grouping_across_namespaces_in_opposite_orders(
    new_account: AccountFactory,
) -> None:
    """Two devices of one account push at once, alternating between the account's own
    tree and a folder it shares (a namespace of its own), in opposite orders. On PostgreSQL
    each group holds both namespaces' row locks to its end, so the two groups can deadlock;
    the one the database aborts is applied again one op per transaction. Either way every
    op is applied exactly once and each journal holds them without gaps."""
    owner, editor = new_account("owner"), new_account("editor")
    folder = owner.mkdir(owner.root_id, "shared")
    offer = owner.call(
        "POST",
        f"nodes/{folder['id']}/shares",
        json={"account": editor.name, "role": "editor"},
        expect=201,
    )
    editor.call("POST", f"shares/{offer['id']}/accept", json={}, expect=200)
    shared_ns = owner.get_node(folder["id"])["namespace_id"]
    assert shared_ns != owner.namespace_id
    homes = {owner.namespace_id: owner.root_id, shared_ns: folder["id"]}
    heads = {ns: owner.journal_all(ns)[-1]["seq"] for ns in homes}
    with owner.another_device("laptop") as laptop:
        orders = {
            "phone": [owner.namespace_id, shared_ns],
            "laptop": [shared_ns, owner.namespace_id],
        }
        batches = {
            device: [create_op(homes[order[i % 2]], f"{device}-{i:03d}") for i in range(60)]
            for device, order in orders.items()
        }
        answers: dict[str, list[Json]] = {}

        def send(client: ApiClient, device: str) -> None:
            answers[device] = push(client, batches[device], stop_at_refusal=True)

        threads = [
            threading.Thread(target=send, args=(client, device))
            for client, device in zip((owner, laptop), orders, strict=True)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    assert {device: {r["status"] for r in results} for device, results in answers.items()} == {
        device: {201} for device in orders
    }
    for ns, home in homes.items():
        entries = owner.journal_all(ns, after=heads[ns])
        assert [e["seq"] for e in entries] == list(range(heads[ns] + 1, heads[ns] + 61))
        expected = {op["id"] for ops in batches.values() for op in ops if op["parent_id"] == home}
        assert {e["node"]["id"] for e in entries} == expected
