"""The access matrix: every route, run as the owner, an editor, a viewer, another account,
a revoked device, a forged token and no token, against a shared folder.

- `test_every_authenticated_route_refuses_bad_credentials`: each route of `/openapi.json`
  that declares bearer security answers 401 to no token, a forged token and the token of a
  revoked device (before looking at anything else). Device tokens do not expire; the
  expiring credentials are presigned URLs (403 `bad_signature`, tests/api/test_chunks.py)
  and public links (410, tests/api/test_links.py).
- `test_role_matrix`: every route that reaches a node, revision, namespace, share or link
  has a case run as owner, editor, viewer and outsider, with the status each must get:
  members read, editors write like the owner, a viewer's writes are 403, an outsider gets
  404 for everything. `test_role_matrix_covers_routes` fails when such a route has no case,
  so a new route cannot skip the decision of `backend.services.access`.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.api.conftest import AccountFactory
from tests.support.api_client import ApiClient, Chunk, Json, new_id, now_ns
from tests.support.backend import BackendProcess

ROLES = ("owner", "editor", "viewer", "outsider")
HTTP_METHODS = {"get", "put", "post", "patch", "delete"}


@dataclass
class World:
    owner: ApiClient
    editor: ApiClient
    viewer: ApiClient
    outsider: ApiClient
    spare: ApiClient
    folder: Json
    file: Json
    revision: Json
    chunk: Chunk
    namespace: str
    editor_share: Json
    viewer_share: Json

    def client(self, role: str) -> ApiClient:
        client: ApiClient = getattr(self, role)
        return client


@pytest.fixture(scope="module")
def world(backend_session: BackendProcess) -> Iterator[World]:
    url = backend_session.base_url
    owner, editor, viewer, outsider, spare = (
        ApiClient.new_account(url, prefix) for prefix in ("own", "edit", "view", "out", "spare")
    )
    folder = owner.mkdir(owner.root_id, "matrix")
    chunk = Chunk(b"matrix content " + new_id().encode())
    node = owner.mkfile(folder["id"], "file.txt")
    committed = owner.commit(node["id"], [chunk], None)
    shares = {}
    for client, role in ((editor, "editor"), (viewer, "viewer")):
        offered = owner.call(
            "POST",
            f"nodes/{folder['id']}/shares",
            json={"account": client.name, "role": role},
            expect=201,
        )
        shares[role] = client.call("POST", f"shares/{offered['id']}/accept", json={})
    yield World(
        owner,
        editor,
        viewer,
        outsider,
        spare,
        owner.get_node(folder["id"]),
        owner.get_node(node["id"]),
        committed["revision"],
        chunk,
        shares["editor"]["namespace_id"],
        shares["editor"],
        shares["viewer"],
    )
    for client in (owner, editor, viewer, outsider, spare):
        client.close()


def route_key(method: str, path: str) -> tuple[str, str]:
    return method.upper(), re.sub(r"\{[^}]*\}", "{}", path)


def openapi(server: BackendProcess) -> Json:
    with ApiClient(server.base_url) as client:
        spec: Json = client.call("GET", "/openapi.json", auth=False)
    return spec


# ---- bad credentials on every authenticated route ------------------------------------------


def test_every_authenticated_route_refuses_bad_credentials(
    backend_session: BackendProcess, new_account: AccountFactory
) -> None:
    victim = new_account("revoked")
    revoked = victim.another_device("gone")
    victim.call("DELETE", f"devices/{revoked.device_id}", expect=204)
    values = {
        "node_id": victim.root_id,
        "namespace_id": victim.namespace_id,
        "device_id": victim.device_id,
    }
    tokens = {"none": None, "forged": "A" * 43, "revoked": revoked.token}
    checked = 0
    with httpx.Client(base_url=backend_session.base_url, timeout=30.0) as http:
        for path, item in openapi(backend_session)["paths"].items():
            for method, operation in item.items():
                if method not in HTTP_METHODS or not operation.get("security"):
                    continue
                url = re.sub(
                    r"\{([^}]*)\}", lambda m: values.get(m.group(1), str(uuid.uuid4())), path
                )
                for name, token in tokens.items():
                    headers = {"Authorization": f"Bearer {token}"} if token else {}
                    body = None if method in ("get", "delete") else {}
                    response = http.request(
                        method.upper(),
                        url,
                        json=body,
                        headers=headers,
                        params={"timeout": 0} if path.endswith("/watch") else None,
                    )
                    assert response.status_code == 401, (name, method, path, response.text[:300])
                    assert response.json()["error"] == "unauthorized"
                    checked += 1
    revoked.close()
    assert checked >= 3 * 30


# ---- roles ---------------------------------------------------------------------------------


def create_body(parent_id: str) -> Json:
    return {
        "id": new_id(),
        "parent_id": parent_id,
        "name": "made-" + new_id()[:8],
        "kind": "file",
        "mode": 0o644,
        "mtime_ns": now_ns(),
    }


def fresh_file(w: World) -> Json:
    return w.owner.mkfile(w.folder["id"], "victim-" + new_id()[:8])


def commit_body(client: ApiClient, base: str | None) -> Json:
    own = Chunk(b"by " + client.name.encode() + new_id().encode())
    client.upload([own])
    return client.commit_body([own], base)


Call = Callable[[World, ApiClient], httpx.Response]


@dataclass(frozen=True)
class Case:
    route: tuple[str, str]
    call: Call
    owner: int
    editor: int
    viewer: int
    outsider: int = 404


def _patch(w: World, c: ApiClient) -> httpx.Response:
    node = fresh_file(w)
    return c.request("PATCH", f"nodes/{node['id']}", json={"base_version": 1, "mtime_ns": 1})


def _delete(w: World, c: ApiClient) -> httpx.Response:
    node = fresh_file(w)
    return c.request("DELETE", f"nodes/{node['id']}", params={"base_version": 1})


def _commit(w: World, c: ApiClient) -> httpx.Response:
    node = fresh_file(w)
    return c.request("POST", f"nodes/{node['id']}/revisions", json=commit_body(c, None))


def _changes(w: World, c: ApiClient) -> httpx.Response:
    response = c.request(
        "POST",
        "changes",
        json={"ops": [{"op": "create", "op_id": new_id(), **create_body(w.folder["id"])}]},
    )
    # The batch answers 200; the op's own status is what the matrix checks.
    status = response.json()["results"][0]["status"]
    return httpx.Response(status, json=response.json(), request=response.request)


def _share(w: World, c: ApiClient) -> httpx.Response:
    body = {"account": w.spare.name, "role": "viewer"}
    w.owner.call("POST", f"nodes/{w.folder['id']}/shares", json=body, expect=None)  # live now
    return c.request("POST", f"nodes/{w.folder['id']}/shares", json=body)


def _revoke_share(w: World, c: ApiClient) -> httpx.Response:
    # A pending share of the spare account's, made afresh so the owner can end it.
    offered = w.owner.call(
        "POST",
        f"nodes/{w.folder['id']}/shares",
        json={"account": w.spare.name, "role": "viewer"},
        expect=None,
    )
    return c.request("DELETE", f"shares/{offered['id']}")


def _revoke_link(w: World, c: ApiClient) -> httpx.Response:
    made = w.owner.call("POST", f"nodes/{w.file['id']}/links", json={}, expect=201)
    return c.request("DELETE", f"links/{made['id']}")


def _restore(w: World, c: ApiClient) -> httpx.Response:
    node = fresh_file(w)
    first = w.owner.commit(node["id"], [Chunk(b"v1 " + new_id().encode())], None)
    w.owner.commit(node["id"], [Chunk(b"v2 " + new_id().encode())], first["revision"]["id"])
    return c.request(
        "POST", f"nodes/{node['id']}/restore", json={"revision_id": first["revision"]["id"]}
    )


CASES = [
    Case(
        ("GET", "/api/v1/nodes/{}"),
        lambda w, c: c.request("GET", f"nodes/{w.file['id']}"),
        200,
        200,
        200,
    ),
    Case(
        ("GET", "/api/v1/nodes/{}/children"),
        lambda w, c: c.request("GET", f"nodes/{w.folder['id']}/children"),
        200,
        200,
        200,
    ),
    Case(
        ("POST", "/api/v1/nodes"),
        lambda w, c: c.request("POST", "nodes", json=create_body(w.folder["id"])),
        201,
        201,
        403,
    ),
    Case(("PATCH", "/api/v1/nodes/{}"), _patch, 200, 200, 403),
    Case(("DELETE", "/api/v1/nodes/{}"), _delete, 200, 200, 403),
    Case(("POST", "/api/v1/nodes/{}/revisions"), _commit, 201, 201, 403),
    Case(
        ("GET", "/api/v1/nodes/{}/revisions"),
        lambda w, c: c.request("GET", f"nodes/{w.file['id']}/revisions"),
        200,
        200,
        200,
    ),
    Case(
        ("GET", "/api/v1/revisions/{}"),
        lambda w, c: c.request("GET", f"revisions/{w.revision['id']}"),
        200,
        200,
        200,
    ),
    Case(("POST", "/api/v1/changes"), _changes, 201, 201, 403),
    Case(
        ("POST", "/api/v1/chunks/read-urls"),
        lambda w, c: c.request("POST", "chunks/read-urls", json={"objects": [w.chunk.object]}),
        200,
        200,
        200,
    ),
    Case(
        ("GET", "/api/v1/journal/{}"),
        lambda w, c: c.request("GET", f"journal/{w.namespace}", params={"limit": 5}),
        200,
        200,
        200,
    ),
    Case(
        ("GET", "/api/v1/journal/{}/watch"),
        lambda w, c: c.request("GET", f"journal/{w.namespace}/watch", params={"timeout": 0}),
        200,
        200,
        200,
    ),
    Case(("POST", "/api/v1/nodes/{}/shares"), _share, 200, 403, 403),
    Case(
        ("GET", "/api/v1/nodes/{}/shares"),
        lambda w, c: c.request("GET", f"nodes/{w.folder['id']}/shares"),
        200,
        200,
        200,
    ),
    Case(
        ("POST", "/api/v1/shares/{}/accept"),
        lambda w, c: c.request("POST", f"shares/{w.viewer_share['id']}/accept", json={}),
        404,
        404,
        200,
    ),
    Case(("DELETE", "/api/v1/shares/{}"), _revoke_share, 200, 404, 404),
    Case(
        ("POST", "/api/v1/nodes/{}/links"),
        lambda w, c: c.request("POST", f"nodes/{w.file['id']}/links", json={}),
        201,
        201,
        403,
    ),
    Case(("DELETE", "/api/v1/links/{}"), _revoke_link, 200, 404, 404),
    Case(
        ("GET", "/api/v1/nodes/{}/versions"),
        lambda w, c: c.request("GET", f"nodes/{w.file['id']}/versions"),
        200,
        200,
        200,
    ),
    Case(
        ("GET", "/api/v1/nodes/{}/all-children"),
        lambda w, c: c.request("GET", f"nodes/{w.folder['id']}/all-children"),
        200,
        200,
        200,
    ),
    Case(("POST", "/api/v1/nodes/{}/restore"), _restore, 200, 200, 403),
    Case(
        ("GET", "/api/v1/nodes/{}/usage"),
        lambda w, c: c.request("GET", f"nodes/{w.folder['id']}/usage"),
        200,
        200,
        200,
    ),
]

# Routes whose role cases are known to fail in a shared folder (strict xfail, so that a
# fix shows here). None today: the versions routes decide through backend.services.access.
NOT_YET_SHARED: set[tuple[str, str]] = set()

SCOPED = re.compile(r"\{(node_id|revision_id|namespace_id|share_id|link_id)\}")


def test_role_matrix_covers_routes(backend_session: BackendProcess) -> None:
    scoped = {
        route_key(method, path)
        for path, item in openapi(backend_session)["paths"].items()
        for method in item
        if method in HTTP_METHODS and SCOPED.search(path) and path.startswith("/api/")
    } | {
        ("POST", "/api/v1/nodes"),
        ("POST", "/api/v1/changes"),
        ("POST", "/api/v1/chunks/read-urls"),
    }
    covered = {case.route for case in CASES}
    assert not scoped - covered, f"routes without a role case: {sorted(scoped - covered)}"


def _params() -> list[object]:
    params: list[object] = []
    for case in CASES:
        for role in ROLES:
            marks = []
            if case.route in NOT_YET_SHARED and role != "outsider":
                marks.append(pytest.mark.xfail(strict=True, reason="versions routes ignore shares"))
            params.append(
                pytest.param(
                    case, role, id=f"{case.route[0]} {case.route[1]} as {role}", marks=marks
                )
            )
    return params


@pytest.mark.parametrize(("case", "role"), _params())
def test_role_matrix(world: World, case: Case, role: str) -> None:
    response = case.call(world, world.client(role))
    expected = getattr(case, role)
    assert response.status_code == expected, (role, case.route, response.text[:500])
    if expected >= 400 and response.headers.get("content-type", "").startswith("application/json"):
        body = response.json()
        code = body["results"][0]["error"] if "results" in body else body["error"]
        assert code == {403: "forbidden", 404: "not_found"}[expected]
