"""Chunk preparation, presigned URLs and the embedded block store (protocol.md § Chunks)."""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import pytest

from tests.api.conftest import AccountFactory
from tests.support.api_client import (
    MIN_CHUNK_BYTES,
    ApiClient,
    Chunk,
    Json,
    assert_error,
    assert_error_one_of,
    sha256_hex,
)
from tests.support.backend import BackendProcess, running_backend

URL_TTL_S = 2


@pytest.fixture
def api(shared: ApiClient) -> ApiClient:
    """Tests here share one account; each works in its own empty folder, `root`."""
    return shared


@pytest.fixture
def root(box: str) -> str:
    return box


def with_query(url: str, **changes: str) -> str:
    """`url` with some query parameters replaced (or added)."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    query.update(changes)
    return urlunsplit(parts._replace(query=urlencode(query)))


def without_query(url: str, name: str) -> str:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != name]
    return urlunsplit(parts._replace(query=urlencode(query)))


def with_object(url: str, old: str, new: str) -> str:
    parts = urlsplit(url)
    assert old in parts.path
    return urlunsplit(parts._replace(path=parts.path.replace(old, new)))


def put(api: ApiClient, url: str, data: bytes, headers: Json | None = None) -> httpx.Response:
    return api.send_block({"method": "PUT", "url": url, "headers": headers or {}}, data)


def get(api: ApiClient, url: str, headers: Json | None = None) -> httpx.Response:
    return api.send_block({"method": "GET", "url": url, "headers": headers or {}})


def committed(api: ApiClient, chunks: list[Chunk]) -> Json:
    """Upload and commit `chunks` into a new file, so the account owns them."""
    node = api.mkfile(api.root_id)
    result: Json = api.commit(node["id"], chunks, None)
    return result


def test_prepare_keys_are_deterministic_and_convergent(
    api: ApiClient, new_account: AccountFactory
) -> None:
    hashes = [sha256_hex(os.urandom(16)) for _ in range(3)]
    first = api.prepare(hashes)
    assert [c["hash"] for c in first] == hashes
    for entry in first:
        assert len(base64.b64decode(entry["key"], validate=True)) == 32
        assert entry["readable"] is False
        assert entry["object"] is None
    assert api.prepare(hashes) == first
    assert len({c["key"] for c in first}) == 3
    # Convergent: the key depends on the plaintext only, so another account gets the same.
    other = new_account("other")
    assert [c["key"] for c in other.prepare(hashes)] == [c["key"] for c in first]


def test_prepare_readable_only_after_own_upload_and_commit(api: ApiClient) -> None:
    chunk = Chunk(os.urandom(1000))
    (before,) = api.prepare([chunk.hash])
    assert (before["readable"], before["object"]) == (False, None)
    api.upload([chunk])
    (uploaded,) = api.prepare([chunk.hash])
    assert (uploaded["readable"], uploaded["object"]) == (False, None)
    committed(api, [chunk])
    (after,) = api.prepare([chunk.hash])
    assert (after["readable"], after["object"]) == (True, chunk.object)
    assert after["key"] == before["key"]


@pytest.mark.parametrize(
    "hashes",
    [
        pytest.param(["zz" * 32], id="non-hex"),
        pytest.param(["ab" * 31], id="short"),
        pytest.param([123], id="not-a-string"),
        pytest.param(["ab" * 32] * 1001, id="1001-hashes"),
    ],
)
def test_prepare_rejects_bad_hashes(api: ApiClient, hashes: list[object]) -> None:
    response = api.request("POST", "chunks/prepare", json={"hashes": hashes})
    assert_error(response, 400, "bad_request")


def test_prepare_accepts_1000_hashes(api: ApiClient) -> None:
    hashes = [sha256_hex(i.to_bytes(4, "big")) for i in range(1000)]
    assert [c["hash"] for c in api.prepare(hashes)] == hashes


def test_upload_urls_shape(api: ApiClient) -> None:
    chunks = [Chunk(b"a"), Chunk(b"b")]
    urls = api.upload_urls(chunks)
    assert [u["object"] for u in urls] == [c.object for c in chunks]
    for entry in urls:
        assert entry["method"] == "PUT"
        assert isinstance(entry["headers"], dict)
        assert entry["expires_at"]
        assert entry["url"]


def test_block_put_then_get_round_trip(api: ApiClient) -> None:
    chunk = Chunk(os.urandom(300_000))
    (entry,) = api.upload_urls([chunk])
    response = api.send_block(entry, chunk.ciphertext)
    assert response.is_success, response.text
    committed(api, [chunk])
    (read,) = api.read_urls([chunk.object])["urls"]
    assert read["method"] == "GET"
    assert read["object"] == chunk.object
    assert read["expires_at"]
    response = api.send_block(read)
    assert response.status_code == 200
    assert response.content == chunk.ciphertext


def test_arbitrary_binary_chunks_are_accepted(api: ApiClient) -> None:
    """The backend never decrypts: any bytes, named by their SHA-256, are a valid object."""
    chunks = [Chunk(os.urandom(MIN_CHUNK_BYTES)), Chunk(b"\x00" * 10)]
    result = committed(api, chunks)
    assert result["node"]["size"] == MIN_CHUNK_BYTES + 10
    empty = committed(api, [Chunk(b"")])
    assert empty["node"]["size"] == 0
    for chunk in chunks:
        assert api.download(chunk.object) == chunk.ciphertext


@pytest.mark.embedded_only("the embedded block routes' JSON errors (S3 serves blocks there)")
def test_put_with_wrong_body_is_checksum_mismatch(api: ApiClient, root: str) -> None:
    chunk = Chunk(b"the real content " + os.urandom(8))
    (entry,) = api.upload_urls([chunk])
    assert_error(api.send_block(entry, b"forged content"), 400, "checksum_mismatch")
    # Nothing was stored: a commit still lacks the object ...
    node = api.mkfile(root)
    body = api.commit_body([chunk], None)
    response = api.request("POST", f"nodes/{node['id']}/revisions", json=body)
    assert assert_error(response, 409, "missing_chunks")["missing"] == [chunk.object]
    # ... and the right bytes are still accepted on the same URL.
    assert api.send_block(entry, chunk.ciphertext).is_success


def object_files(data_dir: Path, obj: str) -> list[Path]:
    """Files in the data directory named after `obj` (layout-agnostic best effort)."""
    return [p for p in data_dir.rglob(f"*{obj}*") if p.is_file()]


@pytest.mark.embedded_only("looks at the object files in the embedded block directory")
def test_identical_reput_is_200_and_does_not_rewrite(
    api: ApiClient, server: BackendProcess
) -> None:
    chunk = Chunk(os.urandom(5000))
    (entry,) = api.upload_urls([chunk])
    assert api.send_block(entry, chunk.ciphertext).is_success
    # The object itself, not the account's upload marker: a re-PUT renews the marker (its
    # age is what GC reads to tell a fresh upload from an abandoned one).
    files = [p for p in object_files(server.data_dir, chunk.object) if "uploads" not in p.parts]
    assert files
    before = [(p, p.stat().st_ino, p.stat().st_mtime_ns) for p in files]
    (again,) = api.upload_urls([chunk])
    assert api.send_block(again, chunk.ciphertext).status_code == 200
    assert api.send_block(entry, chunk.ciphertext).status_code == 200
    after = [(p, p.stat().st_ino, p.stat().st_mtime_ns) for p in files]
    assert after == before
    committed(api, [chunk])
    assert api.download(chunk.object) == chunk.ciphertext


@pytest.mark.embedded_only("the embedded block routes' JSON errors (S3 serves blocks there)")
def test_signature_is_bound_to_object_method_account_and_itself(
    api: ApiClient, new_account: AccountFactory
) -> None:
    chunk, other = Chunk(os.urandom(100)), Chunk(os.urandom(100))
    (entry,) = api.upload_urls([chunk])
    url = entry["url"]
    # Another object under this object's signature.
    swapped = with_object(url, chunk.object, other.object)
    assert_error(put(api, swapped, other.ciphertext, entry["headers"]), 403, "bad_signature")
    # GET with a PUT signature.
    assert_error(get(api, url), 403, "bad_signature")
    # Tampered signature, account, expiry.
    sig = dict(parse_qsl(urlsplit(url).query))["sig"]
    flipped = ("0" if sig[0] != "0" else "1") + sig[1:]
    bob = new_account("bob")
    far = str(int(time.time()) + 10**6)
    for forged in (
        with_query(url, sig=flipped),
        with_query(url, sig=""),
        with_query(url, acct=bob.account_id),
        with_query(url, exp=far),
    ):
        assert_error(put(api, forged, chunk.ciphertext, entry["headers"]), 403, "bad_signature")
    # A URL without its signature at all is refused too (as forged or as malformed).
    for param in ("sig", "acct", "exp"):
        response = put(api, without_query(url, param), chunk.ciphertext, entry["headers"])
        assert_error_one_of(response, (403, "bad_signature"), (400, "bad_request"))

    # None of that stored anything; the genuine URL still works.
    assert api.send_block(entry, chunk.ciphertext).is_success
    committed(api, [chunk])
    (read,) = api.read_urls([chunk.object])["urls"]
    # PUT with a GET signature.
    assert_error(put(api, read["url"], chunk.ciphertext), 403, "bad_signature")
    assert_error(
        get(api, with_object(read["url"], chunk.object, other.object)), 403, "bad_signature"
    )
    assert api.send_block(read).content == chunk.ciphertext


def test_read_urls_only_for_readable_objects(api: ApiClient) -> None:
    owned, uploaded_only, unknown = (Chunk(os.urandom(32)) for _ in range(3))
    committed(api, [owned])
    api.upload([uploaded_only])
    assert [u["object"] for u in api.read_urls([owned.object])["urls"]] == [owned.object]
    for objects in ([unknown.object], [owned.object, unknown.object], [uploaded_only.object]):
        response = api.request("POST", "chunks/read-urls", json={"objects": objects})
        assert_error(response, 404, "not_found")


@pytest.mark.embedded_only("the embedded block routes' JSON errors (S3 serves blocks there)")
def test_block_put_above_16_mib_is_413(api: ApiClient) -> None:
    big = Chunk(b"x" * (16 * 1024 * 1024 + 1 - len(Chunk(b"").ciphertext)))
    # Ask for the URL with a size the store accepts: the limit must hold at the PUT itself.
    body = {"objects": [{"object": big.object, "size": 16 * 1024 * 1024}]}
    (entry,) = api.call("POST", "chunks/upload-urls", json=body)["urls"]
    assert_error(api.send_block(entry, big.ciphertext), 413, "body_too_large")


@pytest.mark.embedded_only("the embedded block routes' JSON errors (S3 serves blocks there)")
def test_block_put_limit_holds_without_content_length(api: ApiClient) -> None:
    big = Chunk(b"y" * (16 * 1024 * 1024 + 1024))
    body = {"objects": [{"object": big.object, "size": 16 * 1024 * 1024}]}
    (entry,) = api.call("POST", "chunks/upload-urls", json=body)["urls"]
    data = big.ciphertext

    def pieces() -> Iterator[bytes]:
        for i in range(0, len(data), 1024 * 1024):
            yield data[i : i + 1024 * 1024]

    response = api.http.put(entry["url"], content=pieces())
    assert_error(response, 413, "body_too_large")


def test_block_put_of_exactly_16_mib_is_accepted(api: ApiClient) -> None:
    big = Chunk(os.urandom(16 * 1024 * 1024 - len(Chunk(b"").ciphertext)))
    assert big.stored_size == 16 * 1024 * 1024
    (entry,) = api.upload_urls([big])
    assert api.send_block(entry, big.ciphertext).is_success


@pytest.fixture(scope="module")
def short_ttl_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackendProcess]:
    workdir = tmp_path_factory.mktemp("ttl")
    with running_backend(workdir, ("--url-ttl", str(URL_TTL_S))) as backend:
        yield backend


@pytest.mark.embedded_only("the embedded block routes' JSON errors (S3 serves blocks there)")
def test_presigned_urls_expire(short_ttl_server: BackendProcess) -> None:
    with ApiClient.new_account(short_ttl_server.base_url, "ttl") as api:
        owned, fresh = Chunk(b"owned chunk"), Chunk(b"fresh chunk")
        committed(api, [owned])
        (put_entry,) = api.upload_urls([fresh])
        (get_entry,) = api.read_urls([owned.object])["urls"]
        time.sleep(URL_TTL_S + 1.5)
        assert_error(api.send_block(put_entry, fresh.ciphertext), 403, "bad_signature")
        assert_error(api.send_block(get_entry), 403, "bad_signature")
        # New URLs work again.
        api.upload([fresh])
        assert api.download(owned.object) == owned.ciphertext


def test_prepare_answers_each_hash_in_order_even_repeated(api: ApiClient) -> None:
    a, b = sha256_hex(os.urandom(8)), sha256_hex(os.urandom(8))
    answer = api.prepare([a, b, a])
    assert [c["hash"] for c in answer] == [a, b, a]
    assert answer[0] == answer[2]
