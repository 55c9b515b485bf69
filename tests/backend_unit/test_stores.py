"""Block stores: URL signing, the local store's write path, S3 presigning and upload
evidence (no network: botocore's Stubber answers for S3)."""

from __future__ import annotations

import base64
import hashlib
import os
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import pytest
from botocore.stub import Stubber

from backend.store.base import BadSignature, ChecksumMismatch, UploadEvidence
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


def test_finish_is_repeatable_until_the_evidence_is_discarded(store: LocalBlockStore) -> None:
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
    assert store.finish_upload(obj, ACCOUNT) == len(data)  # not consumed: a cut may retry
    (evidence,) = store.list_upload_evidence()
    assert (evidence.object, evidence.account_id) == (obj, ACCOUNT)
    store.discard_upload_evidence(obj, ACCOUNT)
    store.discard_upload_evidence(obj, ACCOUNT)  # idempotent
    assert store.finish_upload(obj, ACCOUNT) is None
    assert list(store.list_upload_evidence()) == []
    assert list(store.iter_objects()) == [obj]
    assert list((store.root / "tmp").iterdir()) == []


def test_evidence_of_a_deleted_object_confirms_nothing(store: LocalBlockStore) -> None:
    data = b"collected meanwhile"
    obj = name_of(data)
    upload = store.begin_upload(obj, ACCOUNT)
    upload.write(data)
    upload.complete()
    store.delete(obj)  # the GC leaves markers to their own grace
    assert store.finish_upload(obj, ACCOUNT) is None


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


class FakeS3:
    """Stands in for SeaweedFS: botocore's Stubber answers the client's requests."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
        self.location = S3Location.from_url("s3://bkt/pre?endpoint=http://127.0.0.1:9")
        self.client = make_client(self.location)
        self.stub = Stubber(self.client)
        self.store = S3BlockStore(self.client, self.location, ttl=120)


def test_s3_finish_copies_into_place_and_keeps_the_staging_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`finish_upload` never deletes the staging key (a cut confirmation must be able to
    run again); `discard_upload_evidence` does, and only it."""
    s3 = FakeS3(monkeypatch)
    obj = name_of(b"chunk")
    staging = f"pre/uploads/{ACCOUNT}/{obj}"
    checksum = base64.b64encode(bytes.fromhex(obj)).decode()
    head_staging = {"Bucket": "bkt", "Key": staging, "ChecksumMode": "ENABLED"}
    head_object = {"Bucket": "bkt", "Key": f"pre/objects/{obj}"}
    copy = {
        "Bucket": "bkt",
        "Key": f"pre/objects/{obj}",
        "CopySource": {"Bucket": "bkt", "Key": staging},
    }
    with s3.stub:
        s3.stub.add_response(
            "head_object", {"ContentLength": 5, "ChecksumSHA256": checksum}, head_staging
        )
        s3.stub.add_client_error("head_object", "404", http_status_code=404)
        s3.stub.add_response("copy_object", {}, copy)
        assert s3.store.finish_upload(obj, ACCOUNT) == 5
        # Repeated after a cut: the staging key is still there, the object already copied.
        s3.stub.add_response(
            "head_object", {"ContentLength": 5, "ChecksumSHA256": checksum}, head_staging
        )
        s3.stub.add_response("head_object", {"ContentLength": 5}, head_object)
        assert s3.store.finish_upload(obj, ACCOUNT) == 5
        s3.stub.add_response("delete_object", {}, {"Bucket": "bkt", "Key": staging})
        s3.store.discard_upload_evidence(obj, ACCOUNT)
        # Discarded by the GC between the head and the copy: nothing is confirmed.
        s3.stub.add_response(
            "head_object", {"ContentLength": 5, "ChecksumSHA256": checksum}, head_staging
        )
        s3.stub.add_client_error("head_object", "404", http_status_code=404)
        s3.stub.add_client_error("copy_object", "NoSuchKey", http_status_code=404)
        assert s3.store.finish_upload(obj, ACCOUNT) is None
        s3.stub.assert_no_pending_responses()


def test_s3_lists_staging_keys_as_upload_evidence(monkeypatch: pytest.MonkeyPatch) -> None:
    s3 = FakeS3(monkeypatch)
    obj = name_of(b"chunk")
    when = datetime(2026, 11, 1, 12, tzinfo=UTC)
    with s3.stub:
        s3.stub.add_response(
            "list_objects_v2",
            {"Contents": [{"Key": f"pre/uploads/{ACCOUNT}/{obj}", "LastModified": when}]},
            {"Bucket": "bkt", "Prefix": "pre/uploads/"},
        )
        assert list(s3.store.list_upload_evidence()) == [UploadEvidence(obj, ACCOUNT, when)]
