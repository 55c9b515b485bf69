"""Sharing folders and files with other accounts, black-box over HTTP (docs/protocol.md
§ Shares): the namespace move, accept/placement, roles (editor writes, viewer 403,
outsiders 404), unsharing and leaving, and the defined outcomes for moving a shared
folder, sharing inside one, deleting the shared root and deleting the owner's account."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from tests.api.conftest import AccountFactory
from tests.support.api_client import (
    PASSWORD,
    ApiClient,
    Chunk,
    Json,
    assert_error,
    new_id,
    now_ns,
)


def share(
    owner: ApiClient, node_id: str, recipient: ApiClient, role: str, expect: int = 201
) -> Json:
    body = {"account": recipient.name, "role": role}
    result: Json = owner.call("POST", f"nodes/{node_id}/shares", json=body, expect=expect)
    return result


def accept(client: ApiClient, share_id: str, expect: int = 200, **placement: str) -> Json:
    result: Json = client.call("POST", f"shares/{share_id}/accept", json=placement, expect=expect)
    return result


def incoming(client: ApiClient) -> list[Json]:
    result: list[Json] = client.call("GET", "shares")["incoming"]
    return result


@dataclass
class Shared:
    """A's folder `docs` (a file with content and a subfolder) shared with B as editor and
    C as viewer, both accepted; D is an outsider."""

    a: ApiClient
    b: ApiClient
    c: ApiClient
    d: ApiClient
    folder: Json
    file: Json
    sub: Json
    chunk: Chunk
    b_share: Json
    c_share: Json


@pytest.fixture
def shared_folder(new_account: AccountFactory) -> Shared:
    a, b, c, d = (new_account(p) for p in ("owner", "editor", "viewer", "outsider"))
    folder = a.mkdir(a.root_id, "docs")
    chunk = Chunk(b"the plan " + new_id().encode())
    file = a.mkfile(folder["id"], "plan.txt")
    committed = a.commit(file["id"], [chunk], None)
    sub = a.mkdir(folder["id"], "sub")
    b_share = accept(b, share(a, folder["id"], b, "editor")["id"])
    c_share = accept(c, share(a, folder["id"], c, "viewer")["id"])
    # Re-read: sharing moved them into the share's namespace.
    folder, file, sub = (a.get_node(n["id"]) for n in (folder, committed["node"], sub))
    return Shared(a, b, c, d, folder, file, sub, chunk, b_share, c_share)


def test_sharing_moves_the_folder_into_its_own_namespace(shared_folder: Shared) -> None:
    s = shared_folder
    ns = s.b_share["namespace_id"]
    assert ns != s.a.namespace_id
    assert s.a.get_node(s.folder["id"])["namespace_id"] == ns
    assert s.a.get_node(s.file["id"])["namespace_id"] == ns
    # A's own journal says where the folder went; the share's journal rebuilds it.
    a_last = s.a.journal_all(s.a.namespace_id)[-1]
    assert (a_last["op"], a_last["node"]["id"], a_last["node"]["namespace_id"]) == (
        "update",
        s.folder["id"],
        ns,
    )
    seeded = s.b.journal_all(ns)
    # Parents first: the shared folder, then its two children (in id order).
    assert [e["op"] for e in seeded[:3]] == ["create"] * 3
    assert seeded[0]["node"]["id"] == s.folder["id"]
    assert {e["node"]["id"] for e in seeded[1:3]} == {s.file["id"], s.sub["id"]}
    file_entry = next(e for e in seeded if e["node"]["id"] == s.file["id"])
    assert file_entry["revision"]["chunks"][0]["object"] == s.chunk.object
    assert file_entry["revision"]["chunks"][0]["key"]


def test_pending_share_grants_nothing_until_accepted(new_account: AccountFactory) -> None:
    a, b = new_account("owner"), new_account("friend")
    folder = a.mkdir(a.root_id, "photos")
    offered = share(a, folder["id"], b, "viewer")
    assert offered["state"] == "pending"
    (listed,) = incoming(b)
    assert (listed["id"], listed["owner"], listed["name"], listed["role"]) == (
        offered["id"],
        a.name,
        "photos",
        "viewer",
    )
    assert_error(b.request("GET", f"nodes/{folder['id']}"), 404, "not_found")
    assert_error(b.request("GET", f"journal/{offered['namespace_id']}"), 404, "not_found")
    placed = accept(b, offered["id"])
    assert (placed["state"], placed["mount_parent_id"], placed["mount_name"]) == (
        "accepted",
        b.root_id,
        "photos",
    )
    assert b.get_node(folder["id"])["name"] == "photos"
    # The recipient's journal attaches the share where it was placed.
    mount = b.journal_all()[-1]
    assert mount["op"] == "create"
    assert mount["node"]["id"] == folder["id"]
    assert (mount["node"]["parent_id"], mount["node"]["name"]) == (b.root_id, "photos")
    assert mount["node"]["namespace_id"] == offered["namespace_id"]


def test_editor_writes_like_the_owner_and_the_owner_pays(shared_folder: Shared) -> None:
    s = shared_folder
    before = s.a.me()["used_bytes"]
    note = Chunk(b"editor's note")
    node = s.b.mkfile(s.folder["id"], "note.txt")
    result = s.b.commit(node["id"], [note], None)
    assert result["revision"]["device_id"] == s.b.device_id
    assert s.a.me()["used_bytes"] == before + note.size
    assert s.b.me()["used_bytes"] == 0
    entries = s.a.journal_all(s.b_share["namespace_id"])
    assert entries[-1]["op"] == "commit"
    assert entries[-1]["device_id"] == s.b.device_id
    assert s.a.download(note.object) == note.ciphertext
    renamed = s.b.update_node(node["id"], result["node"]["version"], name="note2.txt")
    assert renamed["name"] == "note2.txt"
    s.b.delete_node(node["id"], renamed["version"])
    assert s.a.me()["used_bytes"] == before


def test_viewer_reads_but_every_write_is_403(shared_folder: Shared) -> None:
    s = shared_folder
    c = s.c
    assert {n["name"] for n in c.list_children(s.folder["id"])} == {"plan.txt", "sub"}
    assert c.download(s.chunk.object) == s.chunk.ciphertext
    assert c.revisions(s.file["id"])
    file = s.file
    create = {
        "id": new_id(),
        "parent_id": s.folder["id"],
        "name": "x",
        "kind": "file",
        "mode": 0o644,
        "mtime_ns": now_ns(),
    }
    assert_error(c.request("POST", "nodes", json=create), 403, "forbidden")
    assert_error(
        c.request(
            "PATCH", f"nodes/{file['id']}", json={"base_version": file["version"], "name": "y"}
        ),
        403,
        "forbidden",
    )
    assert_error(
        c.request("DELETE", f"nodes/{file['id']}", params={"base_version": file["version"]}),
        403,
        "forbidden",
    )
    own = Chunk(b"viewer's bytes")
    c.upload([own])
    body = c.commit_body([own], file["head_revision"])
    assert_error(c.request("POST", f"nodes/{file['id']}/revisions", json=body), 403, "forbidden")
    results = c.changes(
        [
            {"op": "create", "op_id": new_id(), **create},
            {"op": "commit", "op_id": new_id(), "id": file["id"], **body},
        ]
    )
    assert [(r["status"], r["error"]) for r in results] == [(403, "forbidden")] * 2
    assert_error(
        c.request(
            "POST", f"nodes/{s.sub['id']}/shares", json={"account": s.d.name, "role": "viewer"}
        ),
        403,
        "forbidden",
    )
    assert s.a.get_node(file["id"]) == file


def test_outsider_gets_404_everywhere(shared_folder: Shared) -> None:
    s = shared_folder
    d = s.d
    for path in (
        f"nodes/{s.folder['id']}",
        f"nodes/{s.folder['id']}/children",
        f"nodes/{s.folder['id']}/shares",
        f"nodes/{s.file['id']}/revisions",
        f"journal/{s.b_share['namespace_id']}",
    ):
        assert_error(d.request("GET", path), 404, "not_found")
    assert_error(
        d.request("POST", "chunks/read-urls", json={"objects": [s.chunk.object]}), 404, "not_found"
    )
    for share_id in (s.b_share["id"], s.c_share["id"]):
        assert_error(d.request("DELETE", f"shares/{share_id}"), 404, "not_found")
        assert_error(d.request("POST", f"shares/{share_id}/accept", json={}), 404, "not_found")


def test_members_list_who_has_access(shared_folder: Shared) -> None:
    s = shared_folder
    for client in (s.a, s.b, s.c):
        listed = client.call("GET", f"nodes/{s.sub['id']}/shares")
        assert listed["owner"] == s.a.name
        assert {(x["recipient"], x["role"]) for x in listed["shares"]} == {
            (s.b.name, "editor"),
            (s.c.name, "viewer"),
        }
    outgoing = s.a.call("GET", "shares")["outgoing"]
    assert {x["recipient"] for x in outgoing} == {s.b.name, s.c.name}
    # Changing a role keeps the share (200) and takes effect at once.
    changed = share(s.a, s.folder["id"], s.c, "editor", expect=200)
    assert (changed["id"], changed["role"], changed["state"]) == (
        s.c_share["id"],
        "editor",
        "accepted",
    )
    s.c.mkdir(s.folder["id"], "now-allowed")


def test_unshare_and_leave(shared_folder: Shared) -> None:
    s = shared_folder
    ended = s.a.call("DELETE", f"shares/{s.b_share['id']}")
    assert ended["state"] == "revoked"
    assert_error(s.b.request("GET", f"nodes/{s.folder['id']}"), 404, "not_found")
    assert_error(
        s.b.request("POST", "chunks/read-urls", json={"objects": [s.chunk.object]}),
        404,
        "not_found",
    )
    detach = s.b.journal_all()[-1]
    assert (detach["op"], detach["node"]["id"], detach["node"]["deleted"]) == (
        "delete",
        s.folder["id"],
        True,
    )
    assert [x["state"] for x in incoming(s.b)] == ["revoked"]
    assert s.a.call("DELETE", f"shares/{s.b_share['id']}")["state"] == "revoked"  # idempotent
    # The viewer leaves on its own.
    assert s.c.call("DELETE", f"shares/{s.c_share['id']}")["state"] == "revoked"
    assert_error(s.c.request("GET", f"nodes/{s.folder['id']}"), 404, "not_found")
    # Sharing again offers it again (pending), with the same namespace.
    again = share(s.a, s.folder["id"], s.b, "viewer")
    assert (again["state"], again["namespace_id"]) == ("pending", s.b_share["namespace_id"])


def test_moving_the_shared_folder(shared_folder: Shared) -> None:
    s = shared_folder
    elsewhere = s.a.mkdir(s.a.root_id, "archive")
    moved = s.a.update_node(
        s.folder["id"],
        s.a.get_node(s.folder["id"])["version"],
        parent_id=elsewhere["id"],
        name="old-docs",
    )
    assert (moved["parent_id"], moved["name"]) == (elsewhere["id"], "old-docs")
    # In the owner's tree: journalled there. The members keep their own placement.
    assert s.a.journal_all(s.a.namespace_id)[-1]["node"]["name"] == "old-docs"
    assert incoming(s.b)[0]["mount_name"] == "docs"
    assert {n["name"] for n in s.b.list_children(s.folder["id"])} == {"plan.txt", "sub"}
    # A member cannot move or rename the owner's folder; it places its own view instead.
    assert_error(
        s.b.request(
            "PATCH", f"nodes/{s.folder['id']}", json={"base_version": moved["version"], "name": "x"}
        ),
        403,
        "forbidden",
    )
    b_dir = s.b.mkdir(s.b.root_id, "from-others")
    placed = accept(s.b, s.b_share["id"], parent_id=b_dir["id"], name="team docs")
    assert (placed["mount_parent_id"], placed["mount_name"]) == (b_dir["id"], "team docs")
    moved_entry = s.b.journal_all()[-1]
    assert (moved_entry["op"], moved_entry["node"]["parent_id"], moved_entry["node"]["name"]) == (
        "update",
        b_dir["id"],
        "team docs",
    )
    # Moves never cross into or out of a shared folder (the client copies instead).
    loose = s.a.mkfile(s.a.root_id, "loose.txt")
    response = s.a.request(
        "PATCH",
        f"nodes/{loose['id']}",
        json={"base_version": loose["version"], "parent_id": s.folder["id"]},
    )
    assert_error(response, 409, "cross_share")
    response = s.b.request(
        "PATCH",
        f"nodes/{s.file['id']}",
        json={"base_version": s.file["version"], "parent_id": b_dir["id"]},
    )
    assert_error(response, 409, "cross_share")
    # A move inside the share is fine for the editor.
    inside = s.b.update_node(s.file["id"], s.file["version"], parent_id=s.sub["id"])
    assert inside["parent_id"] == s.sub["id"]


def test_sharing_inside_or_around_a_shared_folder_is_refused(shared_folder: Shared) -> None:
    s = shared_folder
    body = {"account": s.d.name, "role": "viewer"}
    assert_error(s.a.request("POST", f"nodes/{s.sub['id']}/shares", json=body), 409, "nested_share")
    assert_error(
        s.a.request("POST", f"nodes/{s.file['id']}/shares", json=body), 409, "nested_share"
    )
    outer = s.a.mkdir(s.a.root_id, "outer")
    inner = s.a.mkdir(outer["id"], "inner")
    share(s.a, inner["id"], s.d, "viewer")
    assert_error(s.a.request("POST", f"nodes/{outer['id']}/shares", json=body), 409, "nested_share")
    # Members cannot re-share; the account root and oneself are refused too.
    assert_error(s.b.request("POST", f"nodes/{s.folder['id']}/shares", json=body), 403, "forbidden")
    assert_error(s.a.request("POST", f"nodes/{s.a.root_id}/shares", json=body), 403, "forbidden")
    me = {"account": s.a.name, "role": "viewer"}
    assert_error(s.a.request("POST", f"nodes/{outer['id']}/shares", json=me), 400, "bad_request")
    nobody = {"account": "no-such-account-" + new_id()[:8], "role": "viewer"}
    assert_error(s.a.request("POST", f"nodes/{outer['id']}/shares", json=nobody), 404, "not_found")
    # A share cannot be placed inside another share.
    accept_body = {"parent_id": s.sub["id"]}
    offered = share(s.a, inner["id"], s.b, "viewer")
    assert_error(
        s.b.request("POST", f"shares/{offered['id']}/accept", json=accept_body), 409, "nested_share"
    )


def test_single_file_share(new_account: AccountFactory) -> None:
    a, b = new_account("owner"), new_account("friend")
    node, _ = a.write_file(a.root_id, "report.pdf", b"%PDF report")
    offered = share(a, node["id"], b, "viewer")
    assert offered["kind"] == "file"
    accept(b, offered["id"])
    got = b.get_node(node["id"])
    (rev,) = [r for r in b.revisions(node["id"]) if r["kind"] == "content"]
    assert b.revision(rev["id"])["chunks"]
    assert got["size"] == len(b"%PDF report")


def test_placement_names_are_made_unique(new_account: AccountFactory) -> None:
    a, b = new_account("owner"), new_account("friend")
    b.mkdir(b.root_id, "photos")
    first = share(a, a.mkdir(a.root_id, "photos")["id"], b, "viewer")
    assert accept(b, first["id"])["mount_name"] == "photos (2)"
    other = new_account("other")
    second = share(other, other.mkdir(other.root_id, "photos")["id"], b, "viewer")
    assert accept(b, second["id"])["mount_name"] == "photos (3)"


def test_auto_accept_preference(new_account: AccountFactory) -> None:
    a, b = new_account("owner"), new_account("friend")
    assert b.call("GET", "me/preferences") == {"auto_accept_shares": False}
    assert b.call("PATCH", "me/preferences", json={"auto_accept_shares": True}) == {
        "auto_accept_shares": True
    }
    folder = a.mkdir(a.root_id, "auto")
    offered = share(a, folder["id"], b, "editor")
    assert offered["state"] == "accepted"
    assert b.journal_all()[-1]["node"]["id"] == folder["id"]
    b.mkdir(folder["id"], "written-by-b")


def test_deleting_the_shared_root_ends_its_shares(shared_folder: Shared) -> None:
    s = shared_folder
    a = s.a
    file = a.get_node(s.file["id"])
    a.delete_node(file["id"], file["version"])
    a.delete_node(s.sub["id"], a.get_node(s.sub["id"])["version"])
    # An editor may empty it, but not delete the root itself.
    folder = a.get_node(s.folder["id"])
    assert_error(
        s.b.request("DELETE", f"nodes/{folder['id']}", params={"base_version": folder["version"]}),
        403,
        "forbidden",
    )
    a.delete_node(folder["id"], folder["version"])
    assert [x["state"] for x in incoming(s.b)] == ["revoked"]
    assert_error(s.b.request("GET", f"nodes/{folder['id']}"), 404, "not_found")
    assert s.b.journal_all()[-1]["op"] == "delete"


def test_deleting_an_account_that_owns_shares(shared_folder: Shared) -> None:
    s = shared_folder
    link = s.a.call("POST", f"nodes/{s.file['id']}/links", json={}, expect=201)
    assert_error(
        s.a.request("POST", "me/delete", json={"password": "not the password"}), 403, "forbidden"
    )
    s.a.call("POST", "me/delete", json={"password": PASSWORD}, expect=204)
    assert_error(s.a.request("GET", "me"), 401, "unauthorized")
    body = {"name": s.a.name, "password": PASSWORD, "device_label": "again"}
    assert_error(s.a.request("POST", "login", json=body, auth=False), 401, "unauthorized")
    for member in (s.b, s.c):
        assert [x["state"] for x in incoming(member)] == ["revoked"]
        assert_error(member.request("GET", f"nodes/{s.folder['id']}"), 404, "not_found")
        assert member.journal_all()[-1]["op"] == "delete"
    assert s.d.request("GET", link["url"]).status_code == 404
    # The name stays taken.
    again = {"name": s.a.name, "password": PASSWORD}
    assert_error(s.d.request("POST", "accounts", json=again, auth=False), 409, "name_exists")


def test_followed_namespaces(shared_folder: Shared) -> None:
    s = shared_folder
    ns = s.b_share["namespace_id"]
    (owned,) = s.a.call("GET", "namespaces")["namespaces"]
    assert (owned["namespace_id"], owned["root_id"], owned["role"]) == (ns, s.folder["id"], "owner")
    (member,) = s.b.call("GET", "namespaces")["namespaces"]
    assert (member["namespace_id"], member["role"], member["share_id"]) == (
        ns,
        "editor",
        s.b_share["id"],
    )
    assert (member["mount_parent_id"], member["mount_name"]) == (s.b.root_id, "docs")
    assert s.d.call("GET", "namespaces")["namespaces"] == []
    # Unsharing ends the member's, never the owner's (its files stay in that namespace).
    s.a.call("DELETE", f"shares/{s.b_share['id']}")
    assert s.b.call("GET", "namespaces")["namespaces"] == []
    assert len(s.a.call("GET", "namespaces")["namespaces"]) == 1


def _share_entries(client: ApiClient) -> list[Json]:
    return [e for e in client.journal_all() if e["op"] == "share"]


def test_offer_role_change_and_revoke_are_journalled_for_the_recipient(
    new_account: AccountFactory,
) -> None:
    """Each reaches the recipient's own journal as a `share` entry (so the push channel
    announces it); the owner's journal gets none, and nothing changes in a tree."""
    a, b = new_account("owner"), new_account("friend")
    folder = a.mkdir(a.root_id, "report")
    a_before = len(a.journal_all())
    offered = share(a, folder["id"], b, "viewer")
    [entry] = _share_entries(b)
    assert entry["share"] == {
        "id": offered["id"],
        "owner": a.name,
        "by": a.name,
        "change": "offered",
        "role": "viewer",
        "state": "pending",
    }
    assert entry["node"]["id"] == folder["id"]
    assert entry["node"]["name"] == "report"
    assert entry["node"]["parent_id"] is None  # not placed in B's tree (yet)
    assert entry["node"]["namespace_id"] == offered["namespace_id"]
    assert entry["device_id"] == a.device_id
    share(a, folder["id"], b, "viewer", expect=200)  # the same role again: no news
    assert len(_share_entries(b)) == 1
    share(a, folder["id"], b, "editor", expect=200)
    assert _share_entries(b)[-1]["share"]["change"] == "role"
    assert _share_entries(b)[-1]["share"]["role"] == "editor"
    placed = accept(b, offered["id"])
    a.call("DELETE", f"shares/{offered['id']}")
    ended = _share_entries(b)[-1]
    assert ended["share"]["change"] == "ended"
    assert ended["share"]["state"] == "revoked"
    assert ended["share"]["by"] == a.name
    assert ended["node"]["parent_id"] == placed["mount_parent_id"]
    # The detach entry follows it; the owner's own journal only has the namespace move.
    assert b.journal_all()[-1]["op"] == "delete"
    assert [e["op"] for e in a.journal_all()[a_before:]] == ["update"]


def test_leaving_and_auto_accept_are_journalled(new_account: AccountFactory) -> None:
    a, b = new_account("owner"), new_account("friend")
    b.call("PATCH", "me/preferences", json={"auto_accept_shares": True})
    folder = a.mkdir(a.root_id, "auto")
    offered = share(a, folder["id"], b, "editor")
    ops = [(e["op"], (e["share"] or {}).get("state")) for e in b.journal_all()]
    assert ops[-2:] == [("share", "accepted"), ("create", None)]
    b.call("DELETE", f"shares/{offered['id']}")
    left = _share_entries(b)[-1]["share"]
    assert (left["change"], left["by"]) == ("ended", b.name)


def test_trash_of_a_shared_folder_for_owner_and_editor(shared_folder: Shared) -> None:
    """A deletion inside a share is in the trash of its owner and of its editors (with the
    device that deleted it; the editor's paths start at its own placement), not of its
    viewers; an editor restores it like one of its own."""
    s = shared_folder
    b_label = s.b.call("GET", "devices")["devices"][0]["label"]
    s.b.delete_node(s.file["id"], s.file["version"])

    def trash_of(client: ApiClient) -> list[Json]:
        items: list[Json] = client.call("GET", "trash")["items"]
        return [i for i in items if i["node"]["id"] == s.file["id"]]

    (owners,) = trash_of(s.a)
    assert owners["path"] == "docs/plan.txt"
    assert owners["device_id"] == s.b.device_id
    assert owners["device_label"] == b_label
    assert owners["size"] == s.chunk.size
    # The editor placed it elsewhere: its path is its own.
    folder = s.b.mkdir(s.b.root_id, "from alice")
    accept(s.b, s.b_share["id"], parent_id=folder["id"], name="her docs")
    (editors,) = trash_of(s.b)
    assert editors["path"] == "from alice/her docs/plan.txt"
    assert trash_of(s.c) == []  # a viewer sees none (and cannot restore)
    assert trash_of(s.d) == []
    restored = s.b.call("POST", f"nodes/{s.file['id']}/restore", json={})
    assert restored["node"]["deleted"] is False
    assert trash_of(s.a) == []
    # Its trash path resolves for the editor (the share at its placement), as
    # `mountfs restore PATH` asks.
    s.b.delete_node(s.file["id"], restored["node"]["version"])
    found = s.b.call("GET", "resolve", params={"path": "from alice/her docs/plan.txt"})
    assert found["id"] == s.file["id"]


def test_a_taken_id_answers_the_same_whoever_holds_it(new_account: AccountFactory) -> None:
    """A client-chosen id used by another account is refused exactly like one's own id
    reused with other content: nothing tells whose it is (docs/protocol.md, "Id
    collisions")."""
    a, b = new_account("holder"), new_account("prober")
    theirs = a.mkfile(a.root_id, "secret.txt")
    mine = b.mkfile(b.root_id, "mine.txt")
    foreign = b.create_node(b.root_id, "probe", node_id=theirs["id"], expect=409)
    own = b.create_node(b.root_id, "probe", node_id=mine["id"], expect=409)
    assert foreign == own
    assert set(foreign) == {"error", "detail"}
