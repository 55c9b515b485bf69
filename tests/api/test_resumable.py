"""Resumable uploads (issue 7): chunks an account PUT but has not committed yet are *held*.

`POST /chunks/hold` records them; `prepare` then answers them as present for that account
only (so a resumed upload sends only what is missing), no other account can see, read or
commit them (invariant 5), and the first commit that names them turns the hold into
ownership. A 10 GiB manifest of minimum-size chunks commits in one request.
"""

from __future__ import annotations

import os

from tests.api.conftest import AccountFactory
from tests.support.api_client import (
    MIN_CHUNK_BYTES,
    ApiClient,
    Chunk,
    Json,
    assert_error,
    new_id,
    now_ns,
)

GIB = 1 << 30


def hold(api: ApiClient, chunks: list[Chunk]) -> Json:
    body = [{"hash": c.hash, "object": c.object, "size": c.size} for c in chunks]
    result: Json = api.call("POST", "chunks/hold", json={"chunks": body})
    return result


def test_held_chunks_are_present_for_their_account_only(new_account: AccountFactory) -> None:
    api, other = new_account("holder"), new_account("other")
    chunks = [Chunk(os.urandom(MIN_CHUNK_BYTES)) for _ in range(3)]
    api.upload(chunks[:2])  # the third never arrives (the link dropped)
    assert [p["readable"] for p in api.prepare(c.hash for c in chunks)] == [False] * 3

    answer = hold(api, chunks)
    assert sorted(h["object"] for h in answer["held"]) == sorted(c.object for c in chunks[:2])
    assert {h["stored_size"] for h in answer["held"]} == {chunks[0].stored_size}
    assert answer["missing"] == [chunks[2].object]
    assert hold(api, chunks[:2])["missing"] == []  # idempotent

    prepared = api.prepare(c.hash for c in chunks)
    assert [p["readable"] for p in prepared] == [True, True, False]
    assert [p["object"] for p in prepared[:2]] == [c.object for c in chunks[:2]]
    assert prepared[0]["stored_size"] == chunks[0].stored_size

    # Nobody else learns of them, reads them, or may commit them.
    assert [p["readable"] for p in other.prepare(c.hash for c in chunks)] == [False] * 3
    assert hold(other, chunks[:2])["held"] == []
    response = other.request("POST", "chunks/read-urls", json={"objects": [chunks[0].object]})
    assert_error(response, 404, "not_found")
    theirs = other.mkfile(other.root_id)
    body = other.commit_body(chunks[:2], None)
    response = other.request("POST", f"nodes/{theirs['id']}/revisions", json=body)
    assert_error(response, 409, "missing_chunks")

    # The holder commits without uploading again; the hold became ownership.
    mine = api.mkfile(api.root_id)
    api.upload(chunks[2:])
    result = api.commit(mine["id"], chunks, None, upload=False)
    assert result["revision"]["size"] == sum(c.size for c in chunks)
    assert [p["readable"] for p in api.prepare(c.hash for c in chunks)] == [True] * 3
    assert {h["object"] for h in hold(api, chunks)["held"]} == {c.object for c in chunks}


def test_hold_refuses_malformed_bodies(api: ApiClient) -> None:
    response = api.request("POST", "chunks/hold", json={"chunks": [{"hash": "x"}]})
    assert_error(response, 400, "bad_request")
    response = api.request("POST", "chunks/hold", json={"chunks": [], "extra": 1})
    assert_error(response, 400, "bad_request")


def test_a_10_gib_manifest_of_minimum_size_chunks_commits(api: ApiClient) -> None:
    """40,961 refs (about 9 MB of JSON, above the 8 MiB general body limit)."""
    chunk = Chunk(os.urandom(MIN_CHUNK_BYTES))
    count = 10 * GIB // MIN_CHUNK_BYTES
    node = api.mkfile(api.root_id)
    api.upload([chunk])
    refs = [chunk.ref(i * MIN_CHUNK_BYTES) for i in range(count)]
    body = {
        "revision_id": new_id(),
        "base_revision": None,
        "size": 10 * GIB,
        "mtime_ns": now_ns(),
        "chunks": refs,
    }
    result = api.call("POST", f"nodes/{node['id']}/revisions", json=body, expect=201)
    assert result["node"]["size"] == 10 * GIB


def test_a_file_above_the_maximum_is_413_json(api: ApiClient) -> None:
    chunk = Chunk(os.urandom(MIN_CHUNK_BYTES))
    node = api.mkfile(api.root_id)
    size = 10 * GIB + MIN_CHUNK_BYTES
    refs = [chunk.ref(i * MIN_CHUNK_BYTES) for i in range(size // MIN_CHUNK_BYTES)]
    body: Json = {"revision_id": new_id(), "base_revision": None, "size": size}
    body |= {"mtime_ns": now_ns(), "chunks": refs}
    response = api.request("POST", f"nodes/{node['id']}/revisions", json=body)
    assert_error(response, 413, "file_too_large")
