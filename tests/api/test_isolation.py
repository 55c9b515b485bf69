"""Account isolation: every route, walked as account B against account A's resources.

The matrix below has one probe per route. `test_matrix_covers_every_route` derives the
route list from the live server's `/openapi.json` and fails if a route has no probe, so a
new route cannot ship without its isolation test. Each probe makes B try A's resources
(expecting 404: never reveal existence) and, for authenticated routes, makes an anonymous
client try them (expecting 401). After each probe, A's whole visible state is compared
with a snapshot taken before.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.support.api_client import (
    PASSWORD,
    ApiClient,
    Chunk,
    Json,
    assert_error,
    assert_error_one_of,
    describe,
    new_id,
    now_ns,
    unique_name,
)
from tests.support.backend import BackendProcess

Request = tuple[str, str, Any]  # method, path under /api/v1, JSON body (or None)


@dataclass
class World:
    """Account A with a small tree and committed content; account B with its own."""

    a: ApiClient
    b: ApiClient
    anon: ApiClient
    a_root: str
    a_dir: Json
    a_file: Json
    a_link: Json
    a_revision: Json
    a_chunk: Chunk
    a_namespace: str
    b_root: str
    b_file: Json
    b_dir: Json
    a_share: Json
    a_public: Json
    a_deleted: Json


def build_world(a: ApiClient, b: ApiClient, anon: ApiClient, c: ApiClient) -> World:
    """Fresh resources (unique content) for one probe, in the module's two accounts."""
    a_me, b_me = a.me(), b.me()
    a_dir = a.mkdir(a_me["root_id"], unique_name("private"))
    a_chunk = Chunk(b"A's secret content " + new_id().encode())
    a_file = a.mkfile(a_dir["id"], "secret.txt")
    result = a.commit(a_file["id"], [a_chunk], None)
    a_link = a.create_node(a_dir["id"], "link", "symlink", target="secret.txt")
    b_dir = b.mkdir(b_me["root_id"], unique_name("mine"))
    b_file = b.mkfile(b_me["root_id"], unique_name("b"))
    # A's folder shared with a third account C (accepted), and a public link of A's.
    a_shared = a.mkdir(a_me["root_id"], unique_name("shared"))
    a_share = a.call(
        "POST",
        f"nodes/{a_shared['id']}/shares",
        json={"account": c.name, "role": "editor"},
        expect=201,
    )
    c.call("POST", f"shares/{a_share['id']}/accept", json={})
    a_public = a.call("POST", f"nodes/{a_dir['id']}/links", json={}, expect=201)
    doomed = a.mkfile(a_dir["id"], unique_name("doomed"))
    a_deleted = a.call("DELETE", f"nodes/{doomed['id']}", params={"base_version": 1})
    return World(
        a=a,
        b=b,
        anon=anon,
        a_root=a_me["root_id"],
        a_dir=a_dir,
        a_file=result["node"],
        a_link=a_link,
        a_revision=result["revision"],
        a_chunk=a_chunk,
        a_namespace=a_me["namespace_id"],
        b_root=b_me["root_id"],
        b_file=b_file,
        b_dir=b_dir,
        a_share=a_share,
        a_public=a_public,
        a_deleted=a_deleted,
    )


def snapshot(w: World) -> Json:
    """Everything A can see; `last_seen_at` is dropped because A's own calls move it."""
    a = w.a
    nodes = {n: a.get_node(n) for n in (w.a_root, w.a_dir["id"], w.a_file["id"], w.a_link["id"])}
    devices = sorted(
        (
            {k: v for k, v in d.items() if k != "last_seen_at"}
            for d in a.call("GET", "devices")["devices"]
        ),
        key=lambda d: d["id"],
    )
    return {
        "me": a.me(),
        "nodes": nodes,
        "root": a.list_children(w.a_root),
        "dir": a.list_children(w.a_dir["id"]),
        "revisions": a.revisions(w.a_file["id"]),
        "revision": a.revision(w.a_revision["id"]),
        "journal": a.journal_all(w.a_namespace),
        "devices": devices,
        "prepare": a.prepare([w.a_chunk.hash]),
        "content": a.download(w.a_chunk.object),
        "shares": a.call("GET", "shares"),
        "members": a.call("GET", f"nodes/{w.a_share['node_id']}/shares"),
        "links": a.call("GET", "links"),
        "preferences": a.call("GET", "me/preferences"),
        "namespaces": a.call("GET", "namespaces"),
        "trash": a.call("GET", "trash"),
    }


def expect_404(client: ApiClient, request: Request) -> None:
    method, path, body = request
    assert_error(client.request(method, path, json=body), 404, "not_found")


def expect_401(w: World, request: Request) -> None:
    method, path, body = request
    assert_error(w.anon.request(method, path, json=body, auth=False), 401, "unauthorized")


# ---- one probe per route ------------------------------------------------------------


def probe_health(w: World) -> None:
    assert w.anon.call("GET", "health", auth=False) == {"status": "ok"}


def probe_accounts(w: World) -> None:
    # Taking A's name fails without touching A (names are public by nature: login needs them).
    body = {"name": w.a.name, "password": "B's own password"}
    assert_error(w.anon.request("POST", "accounts", json=body, auth=False), 409, "name_exists")


def probe_login(w: World) -> None:
    for password in ("B's own password", w.b.password + "x"):
        body = {"name": w.a.name, "password": password, "device_label": "intruder"}
        assert_error(w.anon.request("POST", "login", json=body, auth=False), 401, "unauthorized")


def probe_me(w: World) -> None:
    me = w.b.me()
    assert me["account_id"] == w.b.account_id != w.a.account_id
    assert me["root_id"] == w.b_root != w.a_root
    assert me["namespace_id"] != w.a_namespace
    expect_401(w, ("GET", "me", None))


def probe_devices(w: World) -> None:
    ids = {d["id"] for d in w.b.call("GET", "devices")["devices"]}
    assert ids == {w.b.device_id}
    expect_401(w, ("GET", "devices", None))


def probe_revoke_device(w: World) -> None:
    request: Request = ("DELETE", f"devices/{w.a.device_id}", None)
    expect_404(w.b, request)
    expect_401(w, request)
    w.a.me()  # A's token still works


def create_body(parent_id: str, node_id: str | None = None) -> Json:
    return {
        "id": node_id or new_id(),
        "parent_id": parent_id,
        "name": "planted",
        "kind": "file",
        "mode": 0o644,
        "mtime_ns": now_ns(),
    }


def probe_create_node(w: World) -> None:
    for parent in (w.a_root, w.a_dir["id"], w.a_file["id"]):
        expect_404(w.b, ("POST", "nodes", create_body(parent)))
    # Reusing one of A's node ids in B's own tree must not touch or show A's node.
    response = w.b.request("POST", "nodes", json=create_body(w.b_root, w.a_file["id"]))
    body = assert_error_one_of(response, (404, "not_found"), (409, "id_taken"))
    assert "current" not in body or body["current"] is None, describe(response, "leaks A's node")
    expect_401(w, ("POST", "nodes", create_body(w.b_root)))


def probe_get_node(w: World) -> None:
    for node in (w.a_root, w.a_dir["id"], w.a_file["id"], w.a_link["id"]):
        expect_404(w.b, ("GET", f"nodes/{node}", None))
    expect_401(w, ("GET", f"nodes/{w.a_root}", None))


def probe_children(w: World) -> None:
    for node in (w.a_root, w.a_dir["id"]):
        expect_404(w.b, ("GET", f"nodes/{node}/children", None))
    expect_401(w, ("GET", f"nodes/{w.a_root}/children", None))


def probe_update_node(w: World) -> None:
    a_file = w.a_file
    for body in (
        {"base_version": a_file["version"], "name": "pwned"},
        {"base_version": a_file["version"], "mode": 0o777},
        {"base_version": a_file["version"], "parent_id": w.b_root},
    ):
        expect_404(w.b, ("PATCH", f"nodes/{a_file['id']}", body))
    # B's own node moved into A's directory, or over A's file.
    expect_404(
        w.b, ("PATCH", f"nodes/{w.b_file['id']}", {"base_version": 1, "parent_id": w.a_dir["id"]})
    )
    expect_404(
        w.b,
        (
            "PATCH",
            f"nodes/{w.b_file['id']}",
            {
                "base_version": 1,
                "parent_id": w.a_dir["id"],
                "name": "secret.txt",
                "replace_id": a_file["id"],
                "replace_version": a_file["version"],
            },
        ),
    )
    response = w.b.request(
        "PATCH",
        f"nodes/{w.b_file['id']}",
        json={"base_version": 1, "replace_id": a_file["id"], "replace_version": a_file["version"]},
    )
    assert response.status_code in (400, 404, 409), describe(response, "replace of A's node")
    assert w.b.get_node(w.b_file["id"]) == w.b_file
    expect_401(w, ("PATCH", f"nodes/{a_file['id']}", {"base_version": 1, "name": "x"}))


def probe_delete_node(w: World) -> None:
    for node in (w.a_file, w.a_link, w.a_dir):
        path = f"nodes/{node['id']}?base_version={node['version']}"
        expect_404(w.b, ("DELETE", path, None))
    expect_401(w, ("DELETE", f"nodes/{w.a_file['id']}?base_version=1", None))


def probe_commit(w: World) -> None:
    own = Chunk(b"B's content")
    w.b.upload([own])
    expect_404(w.b, ("POST", f"nodes/{w.a_file['id']}/revisions", w.b.commit_body([own], None)))
    # B names A's object without having uploaded it: missing, although the store holds it.
    body = w.b.commit_body([w.a_chunk], None)
    response = w.b.request("POST", f"nodes/{w.b_file['id']}/revisions", json=body)
    assert assert_error(response, 409, "missing_chunks")["missing"] == [w.a_chunk.object]
    assert w.b.get_node(w.b_file["id"]) == w.b_file
    # Reusing A's revision id on B's own file neither replays A's commit nor shows it.
    reuse = {**w.b.commit_body([own], None), "revision_id": w.a_revision["id"]}
    response = w.b.request("POST", f"nodes/{w.b_file['id']}/revisions", json=reuse)
    body_out = assert_error_one_of(response, (404, "not_found"), (409, "id_taken"))
    assert "current" not in body_out, describe(response, "leaks A's node")
    assert w.b.get_node(w.b_file["id"]) == w.b_file
    expect_401(w, ("POST", f"nodes/{w.a_file['id']}/revisions", body))


def probe_history(w: World) -> None:
    expect_404(w.b, ("GET", f"nodes/{w.a_file['id']}/revisions", None))
    expect_401(w, ("GET", f"nodes/{w.a_file['id']}/revisions", None))


def probe_revision(w: World) -> None:
    expect_404(w.b, ("GET", f"revisions/{w.a_revision['id']}", None))
    expect_401(w, ("GET", f"revisions/{w.a_revision['id']}", None))


def probe_changes(w: World) -> None:
    own = Chunk(b"B's batched content")
    w.b.upload([own])
    a_file = w.a_file
    ops = [
        {"op": "create", "op_id": new_id(), **create_body(w.a_dir["id"])},
        {
            "op": "update",
            "op_id": new_id(),
            "id": a_file["id"],
            "base_version": a_file["version"],
            "name": "x",
        },
        {
            "op": "update",
            "op_id": new_id(),
            "id": w.b_file["id"],
            "base_version": 1,
            "parent_id": w.a_dir["id"],
        },
        {"op": "delete", "op_id": new_id(), "id": a_file["id"], "base_version": a_file["version"]},
        {"op": "commit", "op_id": new_id(), "id": a_file["id"], **w.b.commit_body([own], None)},
    ]
    results = w.b.changes(ops)
    assert [(r["status"], r.get("error")) for r in results] == [(404, "not_found")] * len(ops)
    for r in results:
        assert not r.get("node")
        assert not r.get("current")
    commit_a = {
        "op": "commit",
        "op_id": new_id(),
        "id": w.b_file["id"],
        **w.b.commit_body([w.a_chunk], None),
    }
    (missing,) = w.b.changes([commit_a])
    assert (missing["status"], missing["error"], missing["missing"]) == (
        409,
        "missing_chunks",
        [w.a_chunk.object],
    )
    expect_401(w, ("POST", "changes", {"ops": ops}))


def probe_prepare(w: World) -> None:
    (entry,) = w.b.prepare([w.a_chunk.hash])
    assert (entry["readable"], entry["object"]) == (False, None)
    expect_401(w, ("POST", "chunks/prepare", {"hashes": [w.a_chunk.hash]}))


def probe_upload_urls(w: World) -> None:
    # Always a URL (even for an object the store holds), so it reveals nothing; re-uploading
    # the same bytes makes the object B's too, after which B may commit it.
    (entry,) = w.b.upload_urls([w.a_chunk])
    garbage = w.b.send_block(entry, b"not A's bytes")
    assert_error(garbage, 400, "checksum_mismatch")
    assert w.b.send_block(entry, w.a_chunk.ciphertext).status_code == 200
    w.b.commit(w.b_file["id"], [w.a_chunk], None, upload=False)
    assert w.b.download(w.a_chunk.object) == w.a_chunk.ciphertext
    expect_401(
        w, ("POST", "chunks/upload-urls", {"objects": [{"object": w.a_chunk.object, "size": 1}]})
    )


def probe_read_urls(w: World) -> None:
    expect_404(w.b, ("POST", "chunks/read-urls", {"objects": [w.a_chunk.object]}))
    expect_401(w, ("POST", "chunks/read-urls", {"objects": [w.a_chunk.object]}))


def b_signed_urls(w: World) -> tuple[str, str, Chunk]:
    """A PUT and a GET URL that B legitimately holds for B's own object."""
    own = Chunk(b"B's readable chunk " + new_id().encode())
    (put_entry,) = w.b.upload_urls([own])
    assert w.b.send_block(put_entry, own.ciphertext).is_success
    node = w.b.mkfile(w.b_root)
    w.b.commit(node["id"], [own], None, upload=False)
    (get_entry,) = w.b.read_urls([own.object])["urls"]
    return put_entry["url"], get_entry["url"], own


def probe_block_put(w: World) -> None:
    put_url, get_url, own = b_signed_urls(w)
    for url in (put_url, get_url):
        forged = url.replace(own.object, w.a_chunk.object)
        response = w.b.send_block({"method": "PUT", "url": forged, "headers": {}}, b"overwrite")
        assert_error(response, 403, "bad_signature")
    bare = put_url.split("?")[0].replace(own.object, w.a_chunk.object)
    response = w.anon.send_block({"method": "PUT", "url": bare, "headers": {}}, b"overwrite")
    assert_error_one_of(response, (403, "bad_signature"), (400, "bad_request"))


def probe_block_get(w: World) -> None:
    put_url, get_url, own = b_signed_urls(w)
    for url in (get_url, put_url):
        forged = url.replace(own.object, w.a_chunk.object)
        response = w.b.send_block({"method": "GET", "url": forged, "headers": {}})
        assert_error(response, 403, "bad_signature")
    bare = get_url.split("?")[0].replace(own.object, w.a_chunk.object)
    response = w.anon.send_block({"method": "GET", "url": bare, "headers": {}})
    assert_error_one_of(response, (403, "bad_signature"), (400, "bad_request"))


def probe_journal(w: World) -> None:
    expect_404(w.b, ("GET", f"journal/{w.a_namespace}", None))
    expect_401(w, ("GET", f"journal/{w.a_namespace}", None))


def probe_watch(w: World) -> None:
    # `timeout=0`: should a refusal ever fail open, the stream still ends at once.
    for after in ("", "&after=0"):
        request: Request = ("GET", f"journal/{w.a_namespace}/watch?timeout=0{after}", None)
        expect_404(w.b, request)
        expect_401(w, request)


# ---- sharing and public links -----------------------------------------------------------


def probe_share_node(w: World) -> None:
    for node in (w.a_dir["id"], w.a_file["id"], w.a_share["node_id"]):
        body = {"account": w.b.name, "role": "editor"}
        expect_404(w.b, ("POST", f"nodes/{node}/shares", body))
    expect_401(
        w, ("POST", f"nodes/{w.a_dir['id']}/shares", {"account": w.b.name, "role": "viewer"})
    )


def probe_members(w: World) -> None:
    for node in (w.a_dir["id"], w.a_share["node_id"]):
        expect_404(w.b, ("GET", f"nodes/{node}/shares", None))
    expect_401(w, ("GET", f"nodes/{w.a_share['node_id']}/shares", None))


def probe_shares(w: World) -> None:
    listed = w.b.call("GET", "shares")
    assert w.a_share["id"] not in {x["id"] for x in listed["incoming"] + listed["outgoing"]}
    expect_401(w, ("GET", "shares", None))


def probe_accept_share(w: World) -> None:
    expect_404(w.b, ("POST", f"shares/{w.a_share['id']}/accept", {}))
    expect_404(w.b, ("POST", f"shares/{w.a_share['id']}/accept", {"parent_id": w.b_root}))
    expect_401(w, ("POST", f"shares/{w.a_share['id']}/accept", {}))
    assert_error(w.b.request("GET", f"nodes/{w.a_share['node_id']}"), 404, "not_found")


def probe_revoke_share(w: World) -> None:
    expect_404(w.b, ("DELETE", f"shares/{w.a_share['id']}", None))
    expect_401(w, ("DELETE", f"shares/{w.a_share['id']}", None))


def probe_namespaces(w: World) -> None:
    followed = w.b.call("GET", "namespaces")["namespaces"]
    assert w.a_share["namespace_id"] not in {n["namespace_id"] for n in followed}
    expect_401(w, ("GET", "namespaces", None))


def probe_preferences(w: World) -> None:
    assert w.b.call("GET", "me/preferences") == {"auto_accept_shares": False}
    expect_401(w, ("GET", "me/preferences", None))


def probe_set_preferences(w: World) -> None:
    body = {"auto_accept_shares": True}
    assert w.b.call("PATCH", "me/preferences", json=body) == body
    w.b.call("PATCH", "me/preferences", json={"auto_accept_shares": False})
    expect_401(w, ("PATCH", "me/preferences", body))


def probe_delete_account(w: World) -> None:
    # Only ever oneself, and only with one's own password: A's password (the tests' common
    # one is B's too, so a wrong one stands for it) deletes nothing.
    response = w.b.request("POST", "me/delete", json={"password": "A's password, guessed"})
    assert_error(response, 403, "forbidden")
    expect_401(w, ("POST", "me/delete", {"password": PASSWORD}))
    w.b.me()


def probe_create_link(w: World) -> None:
    for node in (w.a_dir["id"], w.a_file["id"], w.a_share["node_id"]):
        expect_404(w.b, ("POST", f"nodes/{node}/links", {}))
    expect_401(w, ("POST", f"nodes/{w.a_file['id']}/links", {}))


def probe_links(w: World) -> None:
    assert w.a_public["id"] not in {x["id"] for x in w.b.call("GET", "links")["links"]}
    expect_401(w, ("GET", "links", None))


def probe_revoke_link(w: World) -> None:
    expect_404(w.b, ("DELETE", f"links/{w.a_public['id']}", None))
    expect_401(w, ("DELETE", f"links/{w.a_public['id']}", None))


def probe_link_page(w: World) -> None:
    # Another token, however close to A's, is the same 404 page; A's own opens A's folder
    # and nothing of B's.
    token = w.a_public["url"].rsplit("/", 1)[1]
    forged = token[:-1] + ("A" if token[-1] != "A" else "B")
    assert w.anon.request("GET", f"/s/{forged}", auth=False).status_code == 404
    assert w.b.request("GET", f"/s/{forged}?dl=1").status_code == 404
    assert w.anon.request("GET", f"/s/{token}", auth=False).status_code == 200


def probe_link_unlock(w: World) -> None:
    token = w.a_public["url"].rsplit("/", 1)[1]
    forged = token[:-1] + ("A" if token[-1] != "A" else "B")
    response = w.anon.request(
        "POST",
        f"/s/{forged}",
        content=b"password=x",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        auth=False,
    )
    assert response.status_code == 404


def probe_link_file(w: World) -> None:
    token = w.a_public["url"].rsplit("/", 1)[1]
    # A's own link reaches only what is below its folder: not B's file, not A's root.
    for node in (w.b_file["id"], w.a_root, w.a_share["node_id"]):
        assert w.anon.request("GET", f"/s/{token}/files/{node}", auth=False).status_code == 404


# ---- versions, trash, resumable uploads --------------------------------------------------


def probe_versions(w: World) -> None:
    for route in ("versions", "all-children", "usage"):
        for node in (w.a_file["id"], w.a_dir["id"]):
            expect_404(w.b, ("GET", f"nodes/{node}/{route}", None))
        expect_401(w, ("GET", f"nodes/{w.a_file['id']}/{route}", None))


def probe_restore(w: World) -> None:
    body = {"revision_id": w.a_revision["id"]}
    expect_404(w.b, ("POST", f"nodes/{w.a_file['id']}/restore", body))
    expect_404(w.b, ("POST", f"nodes/{w.a_file['id']}/restore", {}))
    # A's revision named on B's own file must not copy A's content into B's tree.
    response = w.b.request("POST", f"nodes/{w.b_file['id']}/restore", json=body)
    assert_error_one_of(response, (404, "not_found"), (409, "conflict"), (400, "bad_request"))
    assert w.b.get_node(w.b_file["id"]) == w.b_file
    expect_401(w, ("POST", f"nodes/{w.a_file['id']}/restore", body))


def probe_resolve(w: World) -> None:
    # Paths resolve in the caller's own tree: A's folder name means nothing to B.
    expect_404(w.b, ("GET", f"resolve?path=/{w.a_dir['name']}/secret.txt", None))
    expect_401(w, ("GET", "resolve?path=/", None))


def probe_trash(w: World) -> None:
    deleted = w.a_deleted
    listed = w.b.call("GET", "trash")["items"]
    assert deleted["id"] not in {item["node"]["id"] for item in listed}
    expect_401(w, ("GET", "trash", None))


def probe_purge(w: World) -> None:
    deleted = w.a_deleted
    expect_404(w.b, ("POST", "trash/purge", {"node_ids": [deleted["id"]]}))
    w.b.call("POST", "trash/purge", json={})  # B's whole trash: A's stays
    listed = w.a.call("GET", "trash")["items"]
    assert deleted["id"] in {item["node"]["id"] for item in listed}
    expect_401(w, ("POST", "trash/purge", {}))


def probe_hold(w: World) -> None:
    # B claims A's uploaded object without uploading it: not held, still not readable.
    chunk = {"hash": w.a_chunk.hash, "object": w.a_chunk.object, "size": len(w.a_chunk.ciphertext)}
    answer = w.b.call("POST", "chunks/hold", json={"chunks": [chunk]})
    assert answer["held"] == [], answer
    assert answer["missing"] == [w.a_chunk.object], answer
    (entry,) = w.b.prepare([w.a_chunk.hash])
    assert (entry["readable"], entry["object"]) == (False, None)
    expect_401(w, ("POST", "chunks/hold", {"chunks": [chunk]}))


MATRIX: dict[tuple[str, str], Callable[[World], None]] = {
    ("GET", "/api/v1/health"): probe_health,
    ("POST", "/api/v1/accounts"): probe_accounts,
    ("POST", "/api/v1/login"): probe_login,
    ("GET", "/api/v1/me"): probe_me,
    ("GET", "/api/v1/devices"): probe_devices,
    ("DELETE", "/api/v1/devices/{}"): probe_revoke_device,
    ("POST", "/api/v1/nodes"): probe_create_node,
    ("GET", "/api/v1/nodes/{}"): probe_get_node,
    ("GET", "/api/v1/nodes/{}/children"): probe_children,
    ("PATCH", "/api/v1/nodes/{}"): probe_update_node,
    ("DELETE", "/api/v1/nodes/{}"): probe_delete_node,
    ("POST", "/api/v1/nodes/{}/revisions"): probe_commit,
    ("GET", "/api/v1/nodes/{}/revisions"): probe_history,
    ("GET", "/api/v1/revisions/{}"): probe_revision,
    ("POST", "/api/v1/changes"): probe_changes,
    ("POST", "/api/v1/chunks/prepare"): probe_prepare,
    ("POST", "/api/v1/chunks/upload-urls"): probe_upload_urls,
    ("POST", "/api/v1/chunks/read-urls"): probe_read_urls,
    ("PUT", "/api/v1/blocks/{}"): probe_block_put,
    ("GET", "/api/v1/blocks/{}"): probe_block_get,
    ("GET", "/api/v1/journal/{}"): probe_journal,
    ("POST", "/api/v1/nodes/{}/shares"): probe_share_node,
    ("GET", "/api/v1/nodes/{}/shares"): probe_members,
    ("GET", "/api/v1/shares"): probe_shares,
    ("POST", "/api/v1/shares/{}/accept"): probe_accept_share,
    ("DELETE", "/api/v1/shares/{}"): probe_revoke_share,
    ("GET", "/api/v1/me/preferences"): probe_preferences,
    ("GET", "/api/v1/namespaces"): probe_namespaces,
    ("PATCH", "/api/v1/me/preferences"): probe_set_preferences,
    ("POST", "/api/v1/me/delete"): probe_delete_account,
    ("POST", "/api/v1/nodes/{}/links"): probe_create_link,
    ("GET", "/api/v1/links"): probe_links,
    ("DELETE", "/api/v1/links/{}"): probe_revoke_link,
    ("GET", "/s/{}"): probe_link_page,
    ("POST", "/s/{}"): probe_link_unlock,
    ("GET", "/s/{}/files/{}"): probe_link_file,
    ("GET", "/api/v1/journal/{}/watch"): probe_watch,
    ("GET", "/api/v1/nodes/{}/versions"): probe_versions,
    ("GET", "/api/v1/nodes/{}/all-children"): probe_versions,
    ("GET", "/api/v1/nodes/{}/usage"): probe_versions,
    ("POST", "/api/v1/nodes/{}/restore"): probe_restore,
    ("GET", "/api/v1/resolve"): probe_resolve,
    ("GET", "/api/v1/trash"): probe_trash,
    ("POST", "/api/v1/trash/purge"): probe_purge,
    ("POST", "/api/v1/chunks/hold"): probe_hold,
}

HTTP_METHODS = {"get", "put", "post", "patch", "delete", "head", "options", "trace"}


def route_key(method: str, path: str) -> tuple[str, str]:
    """`("GET", "/api/v1/nodes/{node_id}")` → `("GET", "/api/v1/nodes/{}")`."""
    return method.upper(), re.sub(r"\{[^}]*\}", "{}", path)


def served_routes(server: BackendProcess) -> set[tuple[str, str]]:
    with ApiClient(server.base_url) as client:
        spec = client.call("GET", "/openapi.json", auth=False)
    return {
        route_key(method, path)
        for path, item in spec["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }


def test_matrix_covers_every_route(server: BackendProcess) -> None:
    served = served_routes(server)
    unprobed = served - set(MATRIX)
    assert not unprobed, f"routes without an isolation probe: {sorted(unprobed)}"
    # The block store routes may be left out of the schema; every API route must be in it.
    stale = {k for k in set(MATRIX) - served if not k[1].startswith("/api/v1/blocks/")}
    assert not stale, f"probed routes the server does not document: {sorted(stale)}"


@pytest.fixture(scope="module")
def accounts(
    backend_session: BackendProcess,
) -> Iterator[tuple[ApiClient, ApiClient, ApiClient]]:
    """A and B, shared by the module's probes (each probe gets fresh resources in them),
    and C, with whom A shares a folder."""
    url = backend_session.base_url
    with (
        ApiClient.new_account(url, "iso-a") as a,
        ApiClient.new_account(url, "iso-b") as b,
        ApiClient.new_account(url, "iso-c") as c,
    ):
        yield a, b, c


@pytest.fixture
def world(accounts: tuple[ApiClient, ApiClient, ApiClient], anon: ApiClient) -> World:
    a, b, c = accounts
    return build_world(a, b, anon, c)


@pytest.mark.parametrize("route", sorted(MATRIX), ids=lambda r: f"{r[0]} {r[1]}")
def test_foreign_account_cannot_reach_or_change(world: World, route: tuple[str, str]) -> None:
    before = snapshot(world)
    MATRIX[route](world)
    assert snapshot(world) == before


def test_login_as_another_account_creates_no_device(world: World) -> None:
    before = {d["id"] for d in world.a.call("GET", "devices")["devices"]}
    probe_login(world)
    assert {d["id"] for d in world.a.call("GET", "devices")["devices"]} == before
    with ApiClient.login(world.a.base_url, world.a.name, PASSWORD, "real") as again:
        again.me()
