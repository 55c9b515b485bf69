"""The change feed: gap-free seq, pagination, entry contents (protocol.md § Journal)."""

from __future__ import annotations

import base64
from datetime import datetime, timedelta

import pytest

from tests.support.api_client import ApiClient, Chunk, assert_error, new_id


def make_history(api: ApiClient) -> dict[str, str]:
    """create, update, commit, delete: one of each op, returns the node ids."""
    root = api.root_id
    d = api.mkdir(root, "d")
    f = api.mkfile(d["id"], "f")
    api.update_node(f["id"], 1, name="g")
    api.commit(f["id"], [Chunk(b"journal content")], None)
    gone = api.mkfile(root, "gone")
    api.delete_node(gone["id"], 1)
    return {"dir": d["id"], "file": f["id"], "gone": gone["id"]}


def test_entries_are_gap_free_and_describe_each_change(api: ApiClient) -> None:
    ids = make_history(api)
    entries = api.journal_all()
    seqs = [e["seq"] for e in entries]
    assert seqs == list(range(1, len(seqs) + 1))
    ours = [e for e in entries if e["node"]["id"] in ids.values()]
    assert [(e["op"], e["node"]["id"]) for e in ours] == [
        ("create", ids["dir"]),
        ("create", ids["file"]),
        ("update", ids["file"]),
        ("commit", ids["file"]),
        ("create", ids["gone"]),
        ("delete", ids["gone"]),
    ]
    for entry in ours:
        assert entry["device_id"] == api.device_id
        at = datetime.fromisoformat(entry["at"].replace("Z", "+00:00"))
        assert at.utcoffset() == timedelta(0), entry["at"]  # "ISO-8601 UTC strings"
    # Each entry's node is the node after that change.
    assert ours[2]["node"]["name"] == "g"
    assert ours[2]["node"]["version"] == 2
    commit = ours[3]
    assert commit["node"]["head_revision"] == commit["revision"]["id"]
    (ref,) = commit["revision"]["chunks"]
    assert ref["object"] == Chunk(b"journal content").object
    assert len(base64.b64decode(ref["key"], validate=True)) == 32
    assert ours[5]["node"]["deleted"] is True
    assert ours[0].get("revision") is None


def test_pagination_with_after_and_limit(api: ApiClient) -> None:
    for i in range(7):
        api.mkfile(api.root_id, f"n{i}")
    everything = api.journal_all()
    last = everything[-1]["seq"]

    page = api.journal(api.namespace_id, after=0, limit=3)
    assert [e["seq"] for e in page["entries"]] == [1, 2, 3]
    assert page["cursor"] == 3
    assert page["has_more"] is True
    page = api.journal(api.namespace_id, after=3, limit=3)
    assert [e["seq"] for e in page["entries"]] == [4, 5, 6]
    page = api.journal(api.namespace_id, after=last - 1, limit=3)
    assert [e["seq"] for e in page["entries"]] == [last]
    assert page["cursor"] == last
    assert page["has_more"] is False
    # Past the end: nothing, and the cursor stays where the device is.
    page = api.journal(api.namespace_id, after=last, limit=3)
    assert page == {"entries": [], "cursor": last, "has_more": False}
    page = api.journal(api.namespace_id, after=last + 100)
    assert page["entries"] == []
    assert page["has_more"] is False
    # Walking with limit=1 sees exactly the same entries.
    walked, after, has_more = [], 0, True
    while has_more:
        page = api.journal(api.namespace_id, after=after, limit=1)
        walked.extend(page["entries"])
        after, has_more = page["cursor"], page["has_more"]
    assert walked == everything


def test_entries_name_the_device_that_made_them(api: ApiClient) -> None:
    api.mkfile(api.root_id, "from-one")
    with api.another_device("two") as two:
        two.mkfile(two.root_id, "from-two")
        devices = {e["node"]["name"]: e["device_id"] for e in two.journal_all()}
    assert devices["from-one"] == api.device_id
    assert devices["from-two"] == two.device_id


def test_a_second_device_sees_the_same_feed(api: ApiClient) -> None:
    make_history(api)
    with api.another_device() as other:
        assert other.journal_all(api.namespace_id) == api.journal_all()


@pytest.mark.parametrize(
    "params", [{"after": -1}, {"after": "x"}, {"limit": 0}, {"limit": -5}, {"limit": "many"}]
)
def test_bad_journal_params_are_400(shared: ApiClient, params: dict[str, object]) -> None:
    response = shared.request("GET", f"journal/{shared.namespace_id}", params=params)
    assert_error(response, 400, "bad_request")


def test_unknown_namespace_is_404(shared: ApiClient) -> None:
    assert_error(shared.request("GET", f"journal/{new_id()}"), 404, "not_found")


def test_an_atomic_replace_tells_other_devices_the_old_node_is_gone(api: ApiClient) -> None:
    """A device that pulls the feed must learn that `replace_id` was deleted.

    Read: each node a change touches appears in the feed in its state after the change
    (the contract says one journal entry per single operation; a replace changes two nodes).
    """
    root = api.root_id
    old = api.mkfile(root, "doc.txt")
    new = api.mkfile(root, "doc.txt.tmp")
    seq = api.journal_all()[-1]["seq"]
    api.update_node(new["id"], 1, name="doc.txt", replace_id=old["id"], replace_version=1)
    entries = api.journal_all(after=seq)
    final = {e["node"]["id"]: e["node"] for e in entries}
    assert final[new["id"]]["name"] == "doc.txt"
    assert old["id"] in final, "the replaced node's deletion is not in the journal"
    assert final[old["id"]]["deleted"] is True
    assert [e["seq"] for e in entries] == list(range(seq + 1, seq + 1 + len(entries)))


def test_batch_result_cursor_is_the_journal_seq_of_the_change(api: ApiClient) -> None:
    """`cursor` in a result lets a device recognise its own change in the feed."""
    ops = [
        {
            "op": "create",
            "op_id": new_id(),
            "id": new_id(),
            "parent_id": api.root_id,
            "name": f"c{i}",
            "kind": "file",
            "mode": 0o644,
            "mtime_ns": 1,
        }
        for i in range(3)
    ]
    results = api.changes(ops)
    by_seq = {e["seq"]: e for e in api.journal_all()}
    for op, result in zip(ops, results, strict=True):
        assert result["status"] == 201
        if "cursor" in result:
            assert by_seq[result["cursor"]]["node"]["id"] == op["id"]
