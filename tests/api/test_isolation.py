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


def build_world(a: ApiClient, b: ApiClient, anon: ApiClient) -> World:
    """Fresh resources (unique content) for one probe, in the module's two accounts."""
    a_me, b_me = a.me(), b.me()
    a_dir = a.mkdir(a_me["root_id"], unique_name("private"))
    a_chunk = Chunk(b"A's secret content " + new_id().encode())
    a_file = a.mkfile(a_dir["id"], "secret.txt")
    result = a.commit(a_file["id"], [a_chunk], None)
    a_link = a.create_node(a_dir["id"], "link", "symlink", target="secret.txt")
    b_dir = b.mkdir(b_me["root_id"], unique_name("mine"))
    b_file = b.mkfile(b_me["root_id"], unique_name("b"))
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
def accounts(backend_session: BackendProcess) -> Iterator[tuple[ApiClient, ApiClient]]:
    """A and B, shared by the module's probes (each probe gets fresh resources in them)."""
    url = backend_session.base_url
    with ApiClient.new_account(url, "iso-a") as a, ApiClient.new_account(url, "iso-b") as b:
        yield a, b


@pytest.fixture
def world(accounts: tuple[ApiClient, ApiClient], anon: ApiClient) -> World:
    return build_world(*accounts, anon)


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
