"""The tree: create, get, children, update (rename/move/setattr/replace), delete."""

from __future__ import annotations

import pytest

from tests.api.conftest import AccountFactory
from tests.support.api_client import (
    ApiClient,
    Json,
    assert_error,
    assert_error_one_of,
    new_id,
    now_ns,
    unique_name,
)

NODE_FIELDS = {
    "id",
    "parent_id",
    "name",
    "kind",
    "mode",
    "mtime_ns",
    "size",
    "version",
    "head_revision",
    "target",
    "deleted",
    "namespace_id",
}

INVALID_NAMES = [
    pytest.param("", id="empty"),
    pytest.param(".", id="dot"),
    pytest.param("..", id="dotdot"),
    pytest.param("a/b", id="slash"),
    pytest.param("/", id="only-slash"),
    pytest.param("a\x00b", id="nul"),
    pytest.param("x" * 256, id="256-ascii-bytes"),
    pytest.param("é" * 128, id="256-utf8-bytes"),
    pytest.param("€" * 85 + "x", id="256-utf8-bytes-3byte"),
]


@pytest.fixture
def api(shared: ApiClient) -> ApiClient:
    """Tests here share one account; each works in its own empty folder, `root`."""
    return shared


@pytest.fixture
def root(box: str) -> str:
    return box


def create_raw(api: ApiClient, parent_id: str, name: str, kind: str = "file", **extra: object):  # type: ignore[no-untyped-def]
    body = {
        "id": new_id(),
        "parent_id": parent_id,
        "name": name,
        "kind": kind,
        "mode": 0o644,
        "mtime_ns": now_ns(),
        **extra,
    }
    return api.request("POST", "nodes", json=body)


def test_create_file_dir_symlink_round_trip(api: ApiClient, root: str) -> None:
    mtime = 1_700_000_000_123_456_789
    d = api.create_node(root, "docs", "dir", mode=0o750, mtime_ns=mtime)
    f = api.create_node(d["id"], "readme.txt", "file", mode=0o600, mtime_ns=mtime)
    s = api.create_node(d["id"], "link", "symlink", target="readme.txt", mode=0o777)
    for node in (d, f, s):
        assert set(node) >= NODE_FIELDS
        assert node["version"] == 1
        assert node["deleted"] is False
        assert node["head_revision"] is None
        assert node["size"] == 0
        assert node["namespace_id"] == api.namespace_id
        assert api.get_node(node["id"]) == node
    assert (d["kind"], d["mode"], d["mtime_ns"], d["parent_id"]) == ("dir", 0o750, mtime, root)
    assert (f["kind"], f["mode"], f["name"]) == ("file", 0o600, "readme.txt")
    assert (s["kind"], s["target"]) == ("symlink", "readme.txt")
    assert f["target"] is None
    assert d["target"] is None
    assert [c["id"] for c in api.list_children(d["id"])] == [s["id"], f["id"]]


def test_create_is_idempotent_for_a_replay(api: ApiClient, root: str) -> None:
    node_id = new_id()
    first = api.create_node(root, "once", node_id=node_id, mtime_ns=5, mode=0o640)
    again = api.create_node(root, "once", node_id=node_id, mtime_ns=5, mode=0o640, expect=200)
    assert again == first
    assert len(api.list_children(root)) == 1


def test_create_reusing_an_id_with_other_content_is_409(api: ApiClient, root: str) -> None:
    node = api.mkfile(root, "first")
    response = create_raw(api, root, "second")
    assert response.status_code == 201
    body = {
        "id": node["id"],
        "parent_id": root,
        "name": "different",
        "kind": "file",
        "mode": 0o644,
        "mtime_ns": 1,
    }
    assert_error(api.request("POST", "nodes", json=body), 409, "id_taken")
    assert api.get_node(node["id"]) == node


def test_unicode_and_255_byte_names_round_trip(api: ApiClient, root: str) -> None:
    names = [
        "x" * 255,
        "é" * 127 + "x",  # 255 bytes
        "€" * 85,  # 255 bytes
        "naïve café ☕ 日本語.txt",
        " leading and trailing ",
        "...",
        ".hidden",
        "new\nline",
    ]
    created = {api.mkfile(root, n)["name"] for n in names}
    assert created == set(names)
    assert {c["name"] for c in api.list_children(root)} == set(names)


@pytest.mark.parametrize("name", INVALID_NAMES)
def test_invalid_name_on_create_is_400(api: ApiClient, name: str, root: str) -> None:
    assert_error(create_raw(api, root, name), 400, "invalid_name")
    assert api.list_children(root) == []


@pytest.mark.parametrize("name", INVALID_NAMES)
def test_invalid_name_on_rename_is_400(api: ApiClient, name: str, root: str) -> None:
    node = api.mkfile(root, "keep")
    response = api.request("PATCH", f"nodes/{node['id']}", json={"base_version": 1, "name": name})
    assert_error(response, 400, "invalid_name")
    assert api.get_node(node["id"]) == node


def test_symlink_target_bounds(api: ApiClient, root: str) -> None:
    ok = api.create_node(root, "long", "symlink", target="t" * 4096)
    assert ok["target"] == "t" * 4096
    response = create_raw(api, root, "too-long", "symlink", target="t" * 4097)
    assert_error(response, 400, "bad_request")
    for name, kind, target in [
        ("nul", "symlink", "a\x00b"),
        ("empty", "symlink", ""),
        ("file-with-target", "file", "x"),
        ("dir-with-target", "dir", "x"),
    ]:
        assert_error(create_raw(api, root, name, kind, target=target), 400, "bad_request")
    assert [c["name"] for c in api.list_children(root)] == ["long"]


def test_get_unknown_node_is_404(api: ApiClient) -> None:
    assert_error(api.request("GET", f"nodes/{new_id()}"), 404, "not_found")
    assert_error(api.request("GET", f"nodes/{new_id()}/children"), 404, "not_found")


def test_create_under_missing_file_or_deleted_parent(api: ApiClient, root: str) -> None:
    file = api.mkfile(root)
    gone = api.mkdir(root)
    api.delete_node(gone["id"], 1)
    assert_error(create_raw(api, file["id"], "child"), 409, "not_a_directory")
    assert_error(create_raw(api, gone["id"], "child"), 409, "not_a_directory")
    # An unknown parent: "no such node" or "not a live directory" both say it plainly.
    assert_error_one_of(
        create_raw(api, new_id(), "child"), (404, "not_found"), (409, "not_a_directory")
    )


def test_children_pagination_is_sorted_complete_and_stable(api: ApiClient, root: str) -> None:
    folder = api.mkdir(root, "many")
    names = [f"entry-{i:04d}" for i in range(250)]
    ops = [
        {
            "op": "create",
            "op_id": new_id(),
            "id": new_id(),
            "parent_id": folder["id"],
            "name": n,
            "kind": "file",
            "mode": 0o644,
            "mtime_ns": 1,
        }
        for n in reversed(names)
    ]
    assert [r["status"] for r in api.changes(ops)] == [201] * 250

    for page_size in (1, 7, 100, 250, 1000):
        listed = api.list_children(folder["id"], page_size)
        assert [c["name"] for c in listed] == names, page_size

    # Pages honour page_size and the last one ends the listing.
    page = api.children_page(folder["id"], 100)
    assert len(page["items"]) == 100
    assert page["next_cursor"]
    page = api.children_page(folder["id"], 100, page["next_cursor"])
    assert [c["name"] for c in page["items"]] == names[100:200]
    page = api.children_page(folder["id"], 100, page["next_cursor"])
    assert [c["name"] for c in page["items"]] == names[200:]
    assert not page["next_cursor"]


def test_children_cursor_survives_concurrent_inserts(api: ApiClient, root: str) -> None:
    """Keyset pagination: inserts while paging neither duplicate nor skip old entries."""
    folder = api.mkdir(root)
    for name in ["b", "d", "f", "h"]:
        api.mkfile(folder["id"], name)
    first = api.children_page(folder["id"], 2)
    assert [c["name"] for c in first["items"]] == ["b", "d"]
    api.mkfile(folder["id"], "a")  # sorts before the cursor: not seen in this walk
    api.mkfile(folder["id"], "g")  # sorts after it: seen
    rest: list[str] = []
    cursor = first["next_cursor"]
    while cursor:
        page = api.children_page(folder["id"], 2, cursor)
        rest.extend(c["name"] for c in page["items"])
        cursor = page["next_cursor"]
    assert rest == ["f", "g", "h"]


def test_children_sort_by_code_point(api: ApiClient, root: str) -> None:
    """ "Sorted by name" read as code-point (= UTF-8 byte) order, case-sensitive."""
    folder = api.mkdir(root)
    names = ["b", "B", "a", "A", "_", "é", "z", "Z", "10", "9", "ä", "€"]
    for name in names:
        api.mkfile(folder["id"], name)
    assert [c["name"] for c in api.list_children(folder["id"], 5)] == sorted(names)


@pytest.mark.parametrize(
    "params",
    [{"page_size": 0}, {"page_size": -1}, {"page_size": "many"}, {"cursor": "not-a-cursor"}],
)
def test_bad_children_params_are_400(api: ApiClient, params: dict[str, object], root: str) -> None:
    assert_error(api.request("GET", f"nodes/{root}/children", params=params), 400, "bad_request")


def test_tampered_cursors_are_refused_not_crashed(api: ApiClient, root: str) -> None:
    for i in range(4):
        api.mkfile(root, f"f{i}")
    cursor = api.children_page(root, 2)["next_cursor"]
    variants = [
        cursor[:-1],
        cursor[: len(cursor) // 2],
        cursor + "A",
        cursor + "==",
        "A" * len(cursor),
        cursor[::-1],
        "eyJ4IjoxfQ",  # base64 of {"x":1}
        "bnVsbA",  # base64 of null
        "%00",
        "😀",
    ]
    for variant in variants:
        response = api.request("GET", f"nodes/{root}/children", params={"cursor": variant})
        if response.status_code != 200:
            assert_error(response, 400, "bad_request")


def test_children_of_a_file_is_not_a_directory_or_empty(api: ApiClient, root: str) -> None:
    file = api.mkfile(root)
    response = api.request("GET", f"nodes/{file['id']}/children")
    assert response.status_code in (200, 409), response.text
    if response.status_code == 200:
        assert response.json()["items"] == []
    else:
        assert_error(response, 409, "not_a_directory")


def test_rename_and_setattr_bump_version(api: ApiClient, root: str) -> None:
    node = api.mkfile(root, "old")
    renamed = api.update_node(node["id"], 1, name="new")
    assert (renamed["name"], renamed["version"]) == ("new", 2)
    attrs = api.update_node(node["id"], 2, mode=0o4755, mtime_ns=42)
    assert (attrs["mode"], attrs["mtime_ns"], attrs["version"]) == (0o4755, 42, 3)
    both = api.update_node(node["id"], 3, name="newer", mode=0o600)
    assert (both["name"], both["mode"], both["mtime_ns"], both["version"]) == (
        "newer",
        0o600,
        42,
        4,
    )
    assert api.get_node(node["id"]) == both
    assert [c["name"] for c in api.list_children(root)] == ["newer"]


@pytest.mark.parametrize("mode", [-1, 0o10000, "0644", 1.5])
def test_out_of_range_mode_is_400(api: ApiClient, mode: object, root: str) -> None:
    node = api.mkfile(root)
    response = api.request("PATCH", f"nodes/{node['id']}", json={"base_version": 1, "mode": mode})
    assert_error(response, 400, "bad_request")
    assert_error(create_raw(api, root, "m", mode=mode), 400, "bad_request")


def test_move_across_folders(api: ApiClient, root: str) -> None:
    src, dst = api.mkdir(root, "src"), api.mkdir(root, "dst")
    file = api.mkfile(src["id"], "f")
    moved = api.update_node(file["id"], 1, parent_id=dst["id"])
    assert (moved["parent_id"], moved["name"], moved["version"]) == (dst["id"], "f", 2)
    assert api.list_children(src["id"]) == []
    assert [c["id"] for c in api.list_children(dst["id"])] == [file["id"]]
    # Move and rename at once, a whole directory with content.
    sub = api.mkdir(dst["id"], "sub")
    inner = api.mkfile(sub["id"], "inner")
    api.update_node(sub["id"], 1, parent_id=src["id"], name="sub2")
    assert [c["name"] for c in api.list_children(src["id"])] == ["sub2"]
    assert api.get_node(inner["id"])["parent_id"] == sub["id"]


def test_move_into_own_descendant_is_cycle(api: ApiClient, root: str) -> None:
    a = api.mkdir(root, "a")
    b = api.mkdir(a["id"], "b")
    c = api.mkdir(b["id"], "c")
    for target in (a, b, c):
        response = api.request(
            "PATCH", f"nodes/{a['id']}", json={"base_version": 1, "parent_id": target["id"]}
        )
        assert_error(response, 409, "cycle")
    assert api.get_node(a["id"]) == a


def test_move_the_root_is_refused(new_account: AccountFactory) -> None:
    api = new_account()
    root = api.get_node(api.root_id)
    folder = api.mkdir(root["id"])
    response = api.request(
        "PATCH",
        f"nodes/{root['id']}",
        json={"base_version": root["version"], "parent_id": folder["id"], "name": "r"},
    )
    assert 400 <= response.status_code < 500, response.text
    response = api.request("DELETE", f"nodes/{root['id']}", params={"base_version": 1})
    assert 400 <= response.status_code < 500, response.text
    assert api.get_node(root["id"])["deleted"] is False


def test_move_under_a_file_is_not_a_directory(api: ApiClient, root: str) -> None:
    file, other = api.mkfile(root), api.mkfile(root)
    response = api.request(
        "PATCH", f"nodes/{other['id']}", json={"base_version": 1, "parent_id": file["id"]}
    )
    assert_error(response, 409, "not_a_directory")


def test_name_clash_is_409_with_the_sibling(api: ApiClient, root: str) -> None:
    taken = api.mkfile(root, "taken")
    body = assert_error(create_raw(api, root, "taken", "dir"), 409, "name_taken")
    assert body["current"] == taken
    other = api.mkfile(root, "other")
    response = api.request(
        "PATCH", f"nodes/{other['id']}", json={"base_version": 1, "name": "taken"}
    )
    body = assert_error(response, 409, "name_taken")
    assert body["current"] == taken
    assert api.get_node(other["id"]) == other


def test_names_are_case_sensitive_and_byte_exact(api: ApiClient, root: str) -> None:
    for name in ["Readme", "README", "readme", "caf\u00e9", "cafe\u0301"]:
        api.mkfile(root, name)
    assert len(api.list_children(root)) == 5


def test_stale_base_version_is_409_with_current(api: ApiClient, root: str) -> None:
    node = api.mkfile(root, "n")
    current = api.update_node(node["id"], 1, name="n2")
    for base in (1, 3, 0):
        response = api.request(
            "PATCH", f"nodes/{node['id']}", json={"base_version": base, "name": "n3"}
        )
        assert assert_error(response, 409, "conflict")["current"] == current
        response = api.request("DELETE", f"nodes/{node['id']}", params={"base_version": base})
        assert assert_error(response, 409, "conflict")["current"] == current
    assert api.get_node(node["id"]) == current


def test_replace_id_is_an_atomic_rename_over(api: ApiClient, root: str) -> None:
    target = api.mkfile(root, "document.txt")
    temp = api.mkfile(root, ".document.txt.swp")
    moved = api.update_node(
        temp["id"], 1, name="document.txt", replace_id=target["id"], replace_version=1
    )
    assert moved["name"] == "document.txt"
    assert moved["version"] == 2
    replaced = api.get_node(target["id"])
    assert replaced["deleted"] is True
    assert replaced["version"] == 2
    assert [c["id"] for c in api.list_children(root)] == [temp["id"]]


def test_replace_id_across_folders(api: ApiClient, root: str) -> None:
    d = api.mkdir(root, "d")
    target = api.mkfile(d["id"], "x")
    mover = api.mkfile(root, "y")
    api.update_node(
        mover["id"], 1, parent_id=d["id"], name="x", replace_id=target["id"], replace_version=1
    )
    assert [c["id"] for c in api.list_children(d["id"])] == [mover["id"]]
    assert api.get_node(target["id"])["deleted"] is True


def test_replace_id_with_wrong_preconditions_changes_nothing(api: ApiClient, root: str) -> None:
    target = api.mkfile(root, "t")
    other = api.mkfile(root, "o")
    mover = api.mkfile(root, "m")
    # replace_version stale: conflict, carrying the replaced node's state.
    api.update_node(target["id"], 1, mode=0o600)
    response = api.request(
        "PATCH",
        f"nodes/{mover['id']}",
        json={"base_version": 1, "name": "t", "replace_id": target["id"], "replace_version": 1},
    )
    body = assert_error(response, 409, "conflict")
    assert body["current"]["id"] in (target["id"], mover["id"])
    # replace_id is not the node at the destination name: the name is still taken.
    response = api.request(
        "PATCH",
        f"nodes/{mover['id']}",
        json={"base_version": 1, "name": "t", "replace_id": other["id"], "replace_version": 1},
    )
    assert response.status_code == 409, response.text
    assert api.get_node(other["id"])["deleted"] is False
    assert api.get_node(target["id"])["deleted"] is False
    assert api.get_node(mover["id"]) == mover


def test_replace_of_a_non_empty_directory_is_refused(api: ApiClient, root: str) -> None:
    full = api.mkdir(root, "full")
    api.mkfile(full["id"], "child")
    mover = api.mkdir(root, "mover")
    response = api.request(
        "PATCH",
        f"nodes/{mover['id']}",
        json={"base_version": 1, "name": "full", "replace_id": full["id"], "replace_version": 1},
    )
    assert_error(response, 409, "not_empty")
    assert api.get_node(full["id"])["deleted"] is False


def test_delete_leaves_a_tombstone(api: ApiClient, root: str) -> None:
    node = api.mkfile(root, "gone")
    deleted = api.delete_node(node["id"], 1)
    assert deleted["deleted"] is True
    assert deleted["version"] == 2
    assert api.get_node(node["id"]) == deleted
    assert api.list_children(root) == []
    # The name is free again; the tombstone cannot be changed any more.
    api.mkfile(root, "gone")
    response = api.request("PATCH", f"nodes/{node['id']}", json={"base_version": 2, "name": "x"})
    assert 400 <= response.status_code < 500
    response = api.request("DELETE", f"nodes/{node['id']}", params={"base_version": 2})
    assert 400 <= response.status_code < 500


def test_delete_non_empty_directory_is_409(api: ApiClient, root: str) -> None:
    d = api.mkdir(root)
    child = api.mkfile(d["id"])
    assert_error(
        api.request("DELETE", f"nodes/{d['id']}", params={"base_version": 1}), 409, "not_empty"
    )
    api.delete_node(child["id"], 1)
    assert api.delete_node(d["id"], 1)["deleted"] is True


@pytest.mark.parametrize("params", [{}, {"base_version": "x"}, {"base_version": ""}])
def test_delete_needs_a_base_version(api: ApiClient, params: dict[str, object], root: str) -> None:
    node = api.mkfile(root)
    assert_error(api.request("DELETE", f"nodes/{node['id']}", params=params), 400, "bad_request")
    assert api.get_node(node["id"]) == node


def test_negative_base_version_is_refused(api: ApiClient, root: str) -> None:
    """Out of range (400) or simply never current (409): both refuse and change nothing."""
    node = api.mkfile(root)
    response = api.request("DELETE", f"nodes/{node['id']}", params={"base_version": -1})
    assert_error_one_of(response, (400, "bad_request"), (409, "conflict"))
    response = api.request("PATCH", f"nodes/{node['id']}", json={"base_version": -1, "mode": 0})
    assert_error_one_of(response, (400, "bad_request"), (409, "conflict"))
    assert api.get_node(node["id"]) == node


def test_node_ids_must_be_uuids(api: ApiClient, root: str) -> None:
    # A malformed id either fails validation or names nothing: both are fine for a client.
    response = api.request("GET", "nodes/not-a-uuid")
    assert_error_one_of(response, (400, "bad_request"), (404, "not_found"))
    body: Json = {
        "id": "not-a-uuid",
        "parent_id": root,
        "name": unique_name(),
        "kind": "file",
        "mode": 0o644,
        "mtime_ns": 1,
    }
    assert_error(api.request("POST", "nodes", json=body), 400, "bad_request")
    body["id"], body["kind"] = new_id(), "fifo"
    assert_error(api.request("POST", "nodes", json=body), 400, "bad_request")


def test_times_before_the_epoch_round_trip(api: ApiClient, root: str) -> None:
    """Archives carry old mtimes; negative nanoseconds are valid times."""
    node = api.create_node(root, "old", mtime_ns=-1_000_000_000)
    assert node["mtime_ns"] == -1_000_000_000
    assert api.update_node(node["id"], 1, mtime_ns=-(2**62))["mtime_ns"] == -(2**62)


def test_cycle_detection_in_a_deep_tree(api: ApiClient, root: str) -> None:
    depth = 300
    ids = [new_id() for _ in range(depth)]
    ops = [
        {
            "op": "create",
            "op_id": new_id(),
            "id": ids[i],
            "parent_id": ids[i - 1] if i else root,
            "name": f"level-{i}",
            "kind": "dir",
            "mode": 0o755,
            "mtime_ns": 1,
        }
        for i in range(depth)
    ]
    assert {r["status"] for r in api.changes(ops)} == {201}
    response = api.request(
        "PATCH", f"nodes/{ids[0]}", json={"base_version": 1, "parent_id": ids[-1]}
    )
    assert_error(response, 409, "cycle")
    side = api.mkdir(root, "side")
    assert api.update_node(side["id"], 1, parent_id=ids[-1])["parent_id"] == ids[-1]
    assert api.update_node(ids[depth // 2], 1, parent_id=root)["parent_id"] == root
