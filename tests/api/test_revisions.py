"""Content commits, history and manifests (protocol.md § Nodes, § Chunks)."""

from __future__ import annotations

import base64
import os

import pytest

from tests.support.api_client import (
    MIN_CHUNK_BYTES,
    ApiClient,
    Chunk,
    Json,
    assert_error,
    chunks_of,
    manifest,
    new_id,
)


@pytest.fixture
def api(shared: ApiClient) -> ApiClient:
    """Tests here share one account; each works in its own empty folder, `root`."""
    return shared


@pytest.fixture
def root(box: str) -> str:
    return box


def check_manifest(revision: Json, chunks: list[Chunk]) -> None:
    """The manifest in an answer: the committed refs, each with a 32-byte key."""
    refs = revision["chunks"]
    assert [
        {k: r[k] for k in ("offset", "size", "hash", "object", "stored_size")} for r in refs
    ] == (manifest(chunks))
    for ref in refs:
        assert len(base64.b64decode(ref["key"], validate=True)) == 32


def test_commit_round_trip(api: ApiClient, root: str) -> None:
    node = api.mkfile(root, "data.bin")
    data = bytes(range(256)) * 1000 + os.urandom(300_000)
    chunks = chunks_of(data)
    assert len(chunks) == 3
    revision_id = new_id()
    result = api.commit(node["id"], chunks, None, revision_id=revision_id)
    committed, revision = result["node"], result["revision"]
    assert committed["head_revision"] == revision_id == revision["id"]
    assert committed["size"] == len(data)
    assert committed["version"] == 2
    assert api.get_node(node["id"]) == committed
    assert revision["size"] == len(data)

    stored = api.revision(revision_id)
    assert stored["id"] == revision_id
    assert stored["size"] == len(data)
    check_manifest(stored, chunks)
    # The bytes come back through read URLs, exactly as uploaded.
    for chunk in chunks:
        assert api.download(chunk.object) == chunk.ciphertext


def test_commit_sets_mtime_from_the_body(api: ApiClient, root: str) -> None:
    node = api.mkfile(root)
    chunks = [Chunk(b"hello")]
    api.upload(chunks)
    body = api.commit_body(chunks, None, mtime_ns=1_234_567_890)
    result = api.call("POST", f"nodes/{node['id']}/revisions", json=body, expect=201)
    assert result["node"]["mtime_ns"] == 1_234_567_890


def test_empty_file_commit_has_no_chunks(api: ApiClient, root: str) -> None:
    node = api.mkfile(root)
    first = api.commit(node["id"], [Chunk(b"not empty")], None)["node"]
    result = api.commit(node["id"], [], first["head_revision"])
    assert result["node"]["size"] == 0
    assert result["revision"]["size"] == 0
    assert api.revision(result["revision"]["id"])["chunks"] == []


def test_history_is_newest_first_and_chains(api: ApiClient, root: str) -> None:
    node = api.mkfile(root)
    head = None
    ids = []
    for i in range(4):
        result = api.commit(node["id"], [Chunk(f"version {i}".encode())], head)
        head = result["revision"]["id"]
        ids.append(head)
    history = api.revisions(node["id"])
    assert [r["id"] for r in history] == list(reversed(ids))
    assert all("chunks" not in r for r in history)
    for rev_id in ids:
        assert api.revision(rev_id)["id"] == rev_id
    assert api.get_node(node["id"])["version"] == 5


def test_replayed_commit_returns_the_stored_result(api: ApiClient, root: str) -> None:
    node = api.mkfile(root)
    chunks = [Chunk(b"replay me")]
    api.upload(chunks)
    body = api.commit_body(chunks, None)
    first = api.call("POST", f"nodes/{node['id']}/revisions", json=body, expect=201)
    again = api.call("POST", f"nodes/{node['id']}/revisions", json=body, expect=200)
    assert again["revision"] == first["revision"]
    assert again["node"]["head_revision"] == first["node"]["head_revision"]
    assert len(api.revisions(node["id"])) == 1
    assert api.get_node(node["id"])["version"] == 2


def test_stale_base_revision_is_409_with_current(api: ApiClient, root: str) -> None:
    node = api.mkfile(root)
    first = api.commit(node["id"], [Chunk(b"one")], None)
    second = api.commit(node["id"], [Chunk(b"two")], first["revision"]["id"])
    for base in (None, first["revision"]["id"], new_id()):
        body = api.commit_body([Chunk(b"two")], base)
        response = api.request("POST", f"nodes/{node['id']}/revisions", json=body)
        assert assert_error(response, 409, "conflict")["current"] == second["node"]
    assert len(api.revisions(node["id"])) == 2


def test_commit_naming_a_never_uploaded_chunk_is_409_missing_chunks(
    api: ApiClient, root: str
) -> None:
    node = api.mkfile(root)
    uploaded, missing = (
        Chunk(os.urandom(MIN_CHUNK_BYTES)),
        Chunk(b"never uploaded " + os.urandom(8)),
    )
    api.upload([uploaded])
    body = api.commit_body([uploaded, missing], None)
    response = api.request("POST", f"nodes/{node['id']}/revisions", json=body)
    assert assert_error(response, 409, "missing_chunks")["missing"] == [missing.object]
    assert api.get_node(node["id"]) == node
    assert api.revisions(node["id"]) == []


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda refs: refs[1].update(offset=refs[1]["offset"] + 1), id="gap"),
        pytest.param(lambda refs: refs[1].update(offset=refs[1]["offset"] - 1), id="overlap"),
        pytest.param(lambda refs: refs[0].update(offset=1), id="not-from-zero"),
        pytest.param(lambda refs: refs.reverse(), id="out-of-order"),
        pytest.param(lambda refs: refs[0].update(size=-1), id="negative-size"),
        pytest.param(lambda refs: refs[0].update(hash="zz" * 32), id="non-hex-hash"),
        pytest.param(lambda refs: refs[0].update(object="ab"), id="short-object"),
        pytest.param(lambda refs: refs[0].pop("stored_size"), id="missing-field"),
    ],
)
def test_malformed_manifest_is_400(api: ApiClient, mutate, root: str) -> None:  # type: ignore[no-untyped-def]
    node = api.mkfile(root)
    chunks = [Chunk(os.urandom(MIN_CHUNK_BYTES)), Chunk(b"second part")]
    api.upload(chunks)
    body = api.commit_body(chunks, None)
    mutate(body["chunks"])
    response = api.request("POST", f"nodes/{node['id']}/revisions", json=body)
    assert_error(response, 400, "bad_request")
    assert api.get_node(node["id"]) == node
    # The same manifest unmutated is fine: the mutation alone made it malformed.
    api.commit(node["id"], chunks, None, upload=False)


@pytest.mark.parametrize("delta", [-1, 1])
def test_size_must_equal_the_sum_of_refs(api: ApiClient, delta: int, root: str) -> None:
    node = api.mkfile(root)
    chunks = [Chunk(b"abc")]
    api.upload(chunks)
    body = api.commit_body(chunks, None, size=3 + delta)
    response = api.request("POST", f"nodes/{node['id']}/revisions", json=body)
    assert_error(response, 400, "bad_request")


def test_commit_to_a_directory_or_symlink_or_tombstone_is_refused(
    api: ApiClient, root: str
) -> None:

    d = api.mkdir(root)
    s = api.create_node(root, "ln", "symlink", target="x")
    gone = api.mkfile(root)
    api.delete_node(gone["id"], 1)
    chunks = [Chunk(b"content")]
    api.upload(chunks)
    for node in (d, s, gone):
        body = api.commit_body(chunks, None)
        response = api.request("POST", f"nodes/{node['id']}/revisions", json=body)
        assert 400 <= response.status_code < 500, response.text
        assert response.json()["error"]
    assert_error(
        api.request("POST", f"nodes/{new_id()}/revisions", json=api.commit_body(chunks, None)),
        404,
        "not_found",
    )


def test_unknown_revision_is_404(api: ApiClient) -> None:
    assert_error(api.request("GET", f"revisions/{new_id()}"), 404, "not_found")
    assert_error(api.request("GET", f"nodes/{new_id()}/revisions"), 404, "not_found")


def test_deleted_files_keep_their_history(api: ApiClient, root: str) -> None:
    node = api.mkfile(root)
    result = api.commit(node["id"], [Chunk(b"precious")], None)
    api.delete_node(node["id"], result["node"]["version"])
    history = api.revisions(node["id"])
    assert result["revision"]["id"] in [r["id"] for r in history]
    check_manifest(api.revision(result["revision"]["id"]), [Chunk(b"precious")])


def test_identical_content_in_two_files_shares_objects(api: ApiClient, root: str) -> None:
    chunks = [Chunk(b"shared content")]
    a = api.mkfile(root)
    b = api.mkfile(root)
    api.commit(a["id"], chunks, None)
    # Readable by this account now: no upload needed for the second file.
    (prepared,) = api.prepare([chunks[0].hash])
    assert prepared["readable"] is True
    assert prepared["object"] == chunks[0].object
    result = api.commit(b["id"], chunks, None, upload=False)
    check_manifest(api.revision(result["revision"]["id"]), chunks)


def test_manifest_keys_are_the_prepare_keys(api: ApiClient, root: str) -> None:
    """The key a reader gets with a manifest decrypts what the writer encrypted."""
    chunks = [Chunk(os.urandom(MIN_CHUNK_BYTES)), Chunk(os.urandom(100))]
    prepared = {p["hash"]: p["key"] for p in api.prepare([c.hash for c in chunks])}
    node = api.mkfile(root)
    result = api.commit(node["id"], chunks, None)
    for ref in api.revision(result["revision"]["id"])["chunks"]:
        assert ref["key"] == prepared[ref["hash"]]
    for ref in result["revision"]["chunks"]:
        assert ref["key"] == prepared[ref["hash"]]


def test_a_revision_id_names_one_revision_only(api: ApiClient, root: str) -> None:
    """Reusing a revision id on another node, or with other content, is not a replay."""
    first, second = api.mkfile(root), api.mkfile(root)
    chunks = [Chunk(b"one revision " + os.urandom(8))]
    api.upload(chunks)
    body = api.commit_body(chunks, None)
    api.call("POST", f"nodes/{first['id']}/revisions", json=body, expect=201)
    response = api.request("POST", f"nodes/{second['id']}/revisions", json=body)
    assert 400 <= response.status_code < 500, response.text
    assert api.get_node(second["id"]) == second
    other = [Chunk(b"other content " + os.urandom(8))]
    api.upload(other)
    changed = {**api.commit_body(other, None), "revision_id": body["revision_id"]}
    response = api.request("POST", f"nodes/{first['id']}/revisions", json=changed)
    assert 400 <= response.status_code < 500 or (
        response.status_code == 200 and response.json()["revision"]["id"] == body["revision_id"]
    ), response.text
    (stored,) = api.revisions(first["id"])
    check_manifest(api.revision(stored["id"]), chunks)


def test_repeated_chunks_in_one_file(api: ApiClient, root: str) -> None:
    """Repeated content (zeros, sparse files) names one object many times in a manifest."""
    zeros = Chunk(b"\x00" * MIN_CHUNK_BYTES)
    chunks = [zeros, zeros, zeros, Chunk(b"tail")]
    node = api.mkfile(root)
    result = api.commit(node["id"], chunks, None)
    assert result["node"]["size"] == 3 * MIN_CHUNK_BYTES + 4
    check_manifest(api.revision(result["revision"]["id"]), chunks)
    assert api.download(zeros.object) == zeros.ciphertext
