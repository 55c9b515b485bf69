"""Versions, trash, restore and purge through the HTTP API (a real backend process)."""

from __future__ import annotations

import os

from tests.api.conftest import AccountFactory
from tests.support.api_client import ApiClient, Json, assert_error, chunks_of, new_id


def commit_data(api: ApiClient, node: Json, data: bytes) -> Json:
    """Commit `data` on top of the node's current head; the answer's node."""
    current = api.get_node(node["id"])
    result: Json = api.commit(node["id"], chunks_of(data), current["head_revision"])
    return result["node"]


def versions(api: ApiClient, node_id: str, expect: int = 200) -> Json:
    result: Json = api.call("GET", f"nodes/{node_id}/versions", expect=expect)
    return result


def restore(api: ApiClient, node_id: str, expect: int = 200, **body: object) -> Json:
    result: Json = api.call("POST", f"nodes/{node_id}/restore", json=body, expect=expect)
    return result


def trash(api: ApiClient) -> list[Json]:
    result: list[Json] = api.call("GET", "trash")["items"]
    return result


def delete(api: ApiClient, node_id: str) -> None:
    api.delete_node(node_id, api.get_node(node_id)["version"])


def test_versions_list_time_size_and_device(api: ApiClient) -> None:
    node, _ = api.write_file(api.root_id, "report.pdf", b"one")
    phone = api.another_device("phone")
    commit_data(phone, node, b"two, longer")
    listed = versions(api, node["id"])
    assert listed["node"]["id"] == node["id"]
    items = listed["items"]
    assert [(v["size"], v["device_label"], v["head"]) for v in items] == [
        (len(b"two, longer"), "phone", True),
        (3, "device-1", False),
    ]
    assert items[0]["created_at"] >= items[1]["created_at"]


def test_restore_a_version_is_a_new_head_and_erases_nothing(api: ApiClient) -> None:
    node, first = api.write_file(api.root_id, "doc.txt", b"first")
    commit_data(api, node, b"second")
    answer = restore(api, node["id"], revision_id=first["id"])
    assert answer["revision"]["id"] != first["id"]
    assert answer["node"]["size"] == len(b"first")
    assert [c["object"] for c in answer["revision"]["chunks"]] == [
        c["object"] for c in first["chunks"]
    ]
    assert answer["revision"]["chunks"][0]["key"]  # readable at once
    items = versions(api, node["id"])["items"]
    assert len(items) == 3
    assert items[0]["revision_id"] == answer["revision"]["id"]
    again = restore(api, node["id"])  # no choice: the version before the head ("undo")
    assert again["node"]["size"] == len(b"second")


def test_restore_by_time_picks_the_version_current_then(api: ApiClient) -> None:
    node, first = api.write_file(api.root_id, "timed", b"early")
    commit_data(api, node, b"late!!")
    answer = restore(api, node["id"], at=first["created_at"])
    assert answer["node"]["size"] == len(b"early")
    restore(api, node["id"], 404, at="2000-01-01T00:00:00Z")
    restore(api, node["id"], 400, at=first["created_at"], revision_id=first["id"])


def test_deleted_file_in_trash_and_back_under_a_free_name(api: ApiClient) -> None:
    folder = api.mkdir(api.root_id, "docs")
    node, _ = api.write_file(folder["id"], "a.txt", b"precious")
    delete(api, node["id"])
    (item,) = trash(api)
    assert (item["path"], item["size"], item["files"]) == ("docs/a.txt", 8, 1)
    assert item["device_label"] == "device-1"
    assert item["deleted_at"]
    api.write_file(folder["id"], "a.txt", b"a new file with the old name")
    answer = restore(api, node["id"])
    assert answer["renamed_to"] == "a (restored).txt"
    assert answer["node"]["deleted"] is False
    assert answer["node"]["size"] == 8
    assert trash(api) == []
    names = sorted(c["name"] for c in api.list_children(folder["id"]))
    assert names == ["a (restored).txt", "a.txt"]
    entry = api.journal_all()[-1]
    assert entry["node"]["id"] == node["id"]
    assert entry["device_id"] is None  # made by the service: every device applies it


def test_deleted_folder_comes_back_whole(api: ApiClient) -> None:
    top = api.mkdir(api.root_id, "project")
    sub = api.mkdir(top["id"], "src")
    code, _ = api.write_file(sub["id"], "main.c", os.urandom(1000))
    notes, _ = api.write_file(top["id"], "notes", b"n")
    for victim in (code, sub, notes, top):  # bottom-up, as rm -r does
        delete(api, victim["id"])
    (item,) = trash(api)
    assert (item["path"], item["files"], item["size"]) == ("project", 2, 1001)
    answer = restore(api, top["id"])
    assert answer["undeleted"] == 4
    assert sorted(c["name"] for c in api.list_children(top["id"])) == ["notes", "src"]
    (back,) = api.list_children(sub["id"])
    assert (back["name"], back["size"]) == ("main.c", 1000)
    restore(api, top["id"], 400)  # not deleted any more


def test_all_children_and_resolve_include_deleted_nodes(api: ApiClient) -> None:
    folder = api.mkdir(api.root_id, "mixed")
    live, _ = api.write_file(folder["id"], "live", b"x")
    gone, _ = api.write_file(folder["id"], "gone", b"y")
    delete(api, gone["id"])
    items = api.call("GET", f"nodes/{folder['id']}/all-children")["items"]
    assert {(i["node"]["name"], i["node"]["deleted"]) for i in items} == {
        ("live", False),
        ("gone", True),
    }
    assert next(i for i in items if i["node"]["deleted"])["deleted_at"]
    found = api.call("GET", "resolve", params={"path": "mixed/gone"})
    assert found["id"] == gone["id"]
    assert api.call("GET", "resolve", params={"path": "/mixed/live"})["id"] == live["id"]
    assert_error(api.request("GET", "resolve", params={"path": "mixed/none"}), 404, "not_found")


def test_purge_deletes_for_good(api: ApiClient) -> None:
    node, _ = api.write_file(api.root_id, "secret", b"s" * 100)
    delete(api, node["id"])
    report = api.call("POST", "trash/purge", json={"node_ids": [node["id"]]})
    assert report == {"nodes": 1, "revisions": 2, "chunks_released": 1}
    assert trash(api) == []
    versions(api, node["id"], 404)
    restore(api, node["id"], 404)
    live, _ = api.write_file(api.root_id, "alive", b"a")
    assert_error(
        api.request("POST", "trash/purge", json={"node_ids": [live["id"]]}), 400, "bad_request"
    )
    other, _ = api.write_file(api.root_id, "other", b"o")
    delete(api, other["id"])
    assert api.call("POST", "trash/purge", json={})["nodes"] == 1  # everything


def test_another_accounts_nodes_are_404(api: ApiClient, new_account: AccountFactory) -> None:
    node, rev = api.write_file(api.root_id, "mine", b"m")
    delete(api, node["id"])
    thief = new_account("thief")
    for method, path, body in (
        ("GET", f"nodes/{node['id']}/versions", None),
        ("GET", f"nodes/{node['id']}/all-children", None),
        ("POST", f"nodes/{node['id']}/restore", {"revision_id": rev["id"]}),
        ("POST", "trash/purge", {"node_ids": [node["id"]]}),
    ):
        assert_error(thief.request(method, path, json=body), 404, "not_found")
    assert thief.call("GET", "trash")["items"] == []
    assert_error(thief.request("GET", "resolve", params={"path": "mine"}), 404, "not_found")
    assert_error(thief.request("GET", f"nodes/{new_id()}/versions"), 404, "not_found")
    assert len(trash(api)) == 1  # untouched
