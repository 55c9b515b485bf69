"""Malformed input anywhere is a JSON 4xx with the contract's codes, never a 5xx."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.api_client import ApiClient, Json, assert_error, assert_error_one_of, new_id

BODY_LIMIT = 8 * 1024 * 1024


@pytest.fixture
def api(shared: ApiClient) -> ApiClient:
    """Tests here share one account; each works in its own empty folder, `root`."""
    return shared


@pytest.fixture
def root(box: str) -> str:
    return box


def json_routes(api: ApiClient) -> list[tuple[str, str]]:
    """Every route that takes a JSON body, with real ids so only the body can be wrong."""
    node = api.mkfile(api.root_id)
    return [
        ("POST", "accounts"),
        ("POST", "login"),
        ("POST", "nodes"),
        ("PATCH", f"nodes/{node['id']}"),
        ("POST", f"nodes/{node['id']}/revisions"),
        ("POST", "changes"),
        ("POST", "chunks/prepare"),
        ("POST", "chunks/upload-urls"),
        ("POST", "chunks/read-urls"),
    ]


BAD_BODIES = [
    pytest.param(b"{not json", id="syntax"),
    pytest.param(b'{"a": 1', id="truncated"),
    pytest.param(b"", id="empty"),
    pytest.param(b"null", id="null"),
    pytest.param(b"[]", id="array"),
    pytest.param(b'"string"', id="string"),
    pytest.param(b"42", id="number"),
    pytest.param(b"{}", id="empty-object"),
    pytest.param(b'{"name": "\xff\xfe"}', id="not-utf8"),
    pytest.param(b'{"name": "\\ud800"}', id="lone-surrogate"),
    pytest.param(b"[" * 100_000 + b"]" * 100_000, id="deep-nesting"),
    pytest.param(b'{"x": 1e99999}', id="huge-float"),
    pytest.param(b'{"x": NaN}', id="nan"),
]


@pytest.mark.parametrize("body", BAD_BODIES)
def test_malformed_json_is_400_on_every_json_route(api: ApiClient, body: bytes) -> None:
    for method, path in json_routes(api):
        response = api.request(
            method, path, content=body, headers={"Content-Type": "application/json"}
        )
        assert_error(response, 400, "bad_request")


def test_wrong_content_type_is_a_json_4xx(api: ApiClient) -> None:
    for method, path in json_routes(api):
        response = api.request(
            method, path, content=b"name=x", headers={"Content-Type": "text/plain"}
        )
        assert 400 <= response.status_code < 500, (method, path, response.text)
        assert set(response.json()) >= {"error", "detail"}


def node_body(parent: str, **changes: object) -> Json:
    body: Json = {
        "id": new_id(),
        "parent_id": parent,
        "name": "n",
        "kind": "file",
        "mode": 0o644,
        "mtime_ns": 1,
    }
    body.update(changes)
    return body


@pytest.mark.parametrize(
    "changes",
    [
        {"mtime_ns": 2**63},
        {"mtime_ns": 2**64 + 1},
        {"mtime_ns": -(2**63) - 1},
        {"mtime_ns": "yesterday"},
        {"mtime_ns": 1.5},
        {"mode": 2**70},
        {"name": 5},
        {"name": None},
        {"name": ["a"]},
        {"parent_id": "root"},
        {"parent_id": 7},
        {"kind": None},
        {"kind": "FILE"},
        {"target": 12},
    ],
    ids=repr,
)
def test_wrong_types_and_ranges_on_create_are_400(api: ApiClient, changes: Json, root: str) -> None:
    response = api.request("POST", "nodes", json=node_body(root, **changes))
    assert_error(response, 400, "bad_request")
    assert api.list_children(root) == []


@pytest.mark.parametrize(
    "changes",
    [
        {"base_version": 2**63},
        {"base_version": "1"},
        {"base_version": None},
        {"mtime_ns": 2**64},
        {"parent_id": "nope"},
        {"replace_id": "nope"},
        {"replace_version": "x"},
    ],
    ids=repr,
)
def test_wrong_types_and_ranges_on_update_are_400(api: ApiClient, changes: Json, root: str) -> None:
    node = api.mkfile(root)
    body = {"base_version": 1, "name": "renamed", **changes}
    response = api.request("PATCH", f"nodes/{node['id']}", json=body)
    assert_error(response, 400, "bad_request")
    assert api.get_node(node["id"]) == node


@pytest.mark.parametrize(
    "changes",
    [
        {"size": 2**63},
        {"size": -1},
        {"size": "3"},
        {"mtime_ns": 2**64},
        {"revision_id": "r1"},
        {"base_revision": 5},
        {"chunks": None},
        {"chunks": {"offset": 0}},
        {
            "chunks": [
                {
                    "offset": 0,
                    "size": 2**63,
                    "hash": "ab" * 32,
                    "object": "ab" * 32,
                    "stored_size": 1,
                }
            ]
        },
    ],
    ids=repr,
)
def test_wrong_types_and_ranges_on_commit_are_400(api: ApiClient, changes: Json, root: str) -> None:
    node = api.mkfile(root)
    body = {**api.commit_body([], None), **changes}
    response = api.request("POST", f"nodes/{node['id']}/revisions", json=body)
    if changes.get("size") == 2**63:
        # Above any maximum file size as well: either refusal is right.
        assert_error_one_of(response, (400, "bad_request"), (413, "file_too_large"))
    else:
        assert_error(response, 400, "bad_request")
    assert api.get_node(node["id"]) == node


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("children", {"page_size": 10**30}),
        ("children", {"page_size": 2**63}),
        ("journal", {"after": 2**64}),
        ("journal", {"limit": 2**64}),
    ],
    ids=repr,
)
def test_huge_query_integers_are_not_server_errors(
    api: ApiClient, path: str, params: Json, root: str
) -> None:
    url = f"nodes/{root}/children" if path == "children" else f"journal/{api.namespace_id}"
    response = api.request("GET", url, params=params)
    # A server may clamp a too-large page size, or refuse it; it may not crash.
    if response.status_code != 200:
        assert_error(response, 400, "bad_request")


def test_unknown_route_and_method_are_json_errors(api: ApiClient) -> None:
    assert_error(api.request("GET", "no/such/route"), 404, "not_found")
    response = api.request("PUT", "me")
    assert response.status_code == 405
    assert set(response.json()) >= {"error", "detail"}


def padded(size: int) -> bytes:
    """A syntactically valid JSON body of exactly `size` bytes."""
    head, tail = b'{"ops": [], "pad": "', b'"}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


def test_body_above_8_mib_is_413(api: ApiClient) -> None:
    response = api.request(
        "POST",
        "changes",
        content=padded(BODY_LIMIT + 1),
        headers={"Content-Type": "application/json"},
    )
    assert_error(response, 413, "body_too_large")


def test_body_limit_holds_without_content_length(api: ApiClient) -> None:
    """A chunked upload cannot sneak past the limit by not announcing its size."""
    body = padded(BODY_LIMIT + 1024 * 1024)

    def pieces() -> Iterator[bytes]:
        for i in range(0, len(body), 64 * 1024):
            yield body[i : i + 64 * 1024]

    response = api.http.post(
        "/api/v1/changes",
        content=pieces(),
        headers={**api.auth_headers(), "Content-Type": "application/json"},
    )
    assert_error(response, 413, "body_too_large")


def test_body_just_under_the_limit_is_parsed(api: ApiClient) -> None:
    response = api.request(
        "POST", "changes", content=padded(BODY_LIMIT), headers={"Content-Type": "application/json"}
    )
    # Unknown fields may be ignored (200) or refused (400); the size itself is allowed.
    assert response.status_code in (200, 400), response.text[:300]
