"""Block stores: URL signing, the local store's write path, S3 presigning (no network)."""

from __future__ import annotations

import base64
import hashlib
import os
from urllib.parse import parse_qs, urlsplit

import pytest

from backend.store.base import BadSignature, ChecksumMismatch
from backend.store.local import LocalBlockStore, ObjectTooLarge
from backend.store.s3 import S3BlockStore, S3Location, make_client
from backend.store.signing import UrlSigner

ACCOUNT = "0b8f2a44-5f2e-4c1e-9d55-0d5a1c0f0c01"


def name_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def test_signatures_bind_method_object_account_and_expiry() -> None:
    signer = UrlSigner(b"s" * 32)
    obj = name_of(b"x")
    sig = signer.sign("PUT", obj, ACCOUNT, 1000)
    signer.verify("PUT", obj, ACCOUNT, 1000, sig, now=999)
    for args in [
        ("GET", obj, ACCOUNT, 1000),
        ("PUT", name_of(b"y"), ACCOUNT, 1000),
        ("PUT", obj, "other", 1000),
        ("PUT", obj, ACCOUNT, 1001),
    ]:
        with pytest.raises(BadSignature):
            signer.verify(*args, sig, now=999)
    with pytest.raises(BadSignature):
        signer.verify("PUT", obj, ACCOUNT, 1000, sig, now=1001)
    with pytest.raises(BadSignature):
        UrlSigner(b"t" * 32).verify("PUT", obj, ACCOUNT, 1000, sig, now=999)


def test_presigned_urls_are_absolute_and_verify(store: LocalBlockStore) -> None:
    obj = name_of(b"data")
    put = store.presign_put(obj, ACCOUNT, 4)
    assert put.url.startswith(f"http://backend.test/api/v1/blocks/{obj}?")
    q = query(put.url)
    store.verify("PUT", obj, q["acct"], int(q["exp"]), q["sig"])
    get = store.bind("https://public.example/").presign_get(obj)
    assert get.url.startswith(f"https://public.example/api/v1/blocks/{obj}?")
    assert "acct" not in query(get.url)


def test_upload_then_finish_consumes_the_marker(store: LocalBlockStore) -> None:
    data = os.urandom(70_000)
    obj = name_of(data)
    upload = store.begin_upload(obj, ACCOUNT)
    for i in range(0, len(data), 4096):
        upload.write(data[i : i + 4096])
    assert upload.complete() == len(data)
    assert store.exists(obj)
    assert store.object_path(obj).read_bytes() == data
    assert store.finish_upload(obj, "someone-else") is None
    assert store.finish_upload(obj, ACCOUNT) == len(data)
    assert store.finish_upload(obj, ACCOUNT) is None  # consumed
    assert list(store.iter_objects()) == [obj]
    assert list((store.root / "tmp").iterdir()) == []


def test_wrong_bytes_store_nothing(store: LocalBlockStore) -> None:
    obj = name_of(b"the real content")
    upload = store.begin_upload(obj, ACCOUNT)
    upload.write(b"forged")
    with pytest.raises(ChecksumMismatch):
        upload.complete()
    upload.abort()
    assert not store.exists(obj)
    assert store.finish_upload(obj, ACCOUNT) is None
    assert list((store.root / "tmp").iterdir()) == []


def test_existing_objects_are_never_rewritten(store: LocalBlockStore) -> None:
    data = b"immutable"
    obj = name_of(data)

    def upload_once() -> None:
        upload = store.begin_upload(obj, ACCOUNT)
        upload.write(data)
        upload.complete()

    upload_once()
    path = store.object_path(obj)
    before = (path.stat().st_ino, path.stat().st_mtime_ns)
    upload_once()
    assert (path.stat().st_ino, path.stat().st_mtime_ns) == before


def test_oversized_bodies_are_refused(store: LocalBlockStore) -> None:
    upload = store.begin_upload(name_of(b""), ACCOUNT)
    with pytest.raises(ObjectTooLarge):
        upload.write(b"x" * (store.max_object_bytes + 1))
    upload.abort()


def test_s3_location_parsing() -> None:
    loc = S3Location.from_url("s3://bucket/some/prefix?endpoint=http://h:9000&region=eu-west-1")
    assert loc == S3Location("bucket", "some/prefix/", "http://h:9000", "eu-west-1")
    assert S3Location.from_url("s3://bucket") == S3Location("bucket")
    for bad in ("http://bucket", "s3://", "s3://b?color=red"):
        with pytest.raises(ValueError, match=r"s3"):
            S3Location.from_url(bad)


def test_s3_presigned_put_requires_the_checksum(monkeypatch: pytest.MonkeyPatch) -> None:
    """Presigning is local computation: a fake endpoint and fake keys, no network."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    loc = S3Location.from_url("s3://bkt/pre?endpoint=http://127.0.0.1:9&region=us-east-1")
    store = S3BlockStore(make_client(loc), loc, ttl=120, clock=lambda: 1_700_000_000)
    obj = name_of(b"chunk")
    put = store.presign_put(obj, ACCOUNT, 5)
    parts = urlsplit(put.url)
    assert parts.path == f"/bkt/pre/uploads/{ACCOUNT}/{obj}"
    q = query(put.url)
    assert q["X-Amz-SignedHeaders"] == "host;x-amz-checksum-sha256"
    assert q["X-Amz-Expires"] == "120"
    digest = base64.b64decode(put.headers["x-amz-checksum-sha256"])
    assert digest == bytes.fromhex(obj)
    assert put.expires_at.timestamp() == 1_700_000_120
    get = store.presign_get(obj)
    assert urlsplit(get.url).path == f"/bkt/pre/objects/{obj}"
    assert get.headers == {}
