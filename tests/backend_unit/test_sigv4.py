"""Our SigV4 presigning (backend/store/sigv4.py) makes exactly botocore's URLs."""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlsplit

import pytest

from backend.store.s3 import S3BlockStore, S3Location, make_client

OBJECT = "ab" * 32


@pytest.fixture(autouse=True)
def _credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "token/with+odd=chars")
    monkeypatch.delenv("AWS_PROFILE", raising=False)


def _same_second(make: object) -> tuple[str, str]:
    """(ours, botocore's), made within one second so that both sign the same time."""
    for _ in range(20):
        before = int(time.time())
        pair = make()  # type: ignore[operator]
        if int(time.time()) == before:
            return pair  # type: ignore[no-any-return]
    raise AssertionError("could not make both URLs within one second")


def _parts(url: str) -> tuple[str, str, dict[str, list[str]]]:
    split = urlsplit(url)
    return split.netloc, split.path, parse_qs(split.query)


@pytest.mark.parametrize(
    "url",
    [
        "s3://bucket/some/prefix?endpoint=https://127.0.0.1:8444&region=us-east-1",
        "s3://bucket?endpoint=http://minio.local:9000&region=eu-central-1",
        "s3://my-bucket/p?region=eu-west-1",  # AWS, virtual-hosted
    ],
)
def test_put_and_get_urls_equal_botocores(url: str) -> None:
    location = S3Location.from_url(url)
    client = make_client(location)
    store = S3BlockStore(client, location, ttl=300, clock=time.time)
    assert store._presigner is not None

    def put() -> tuple[str, str]:
        ours = store.presign_put(OBJECT, "acct-1", 10).url
        theirs = client.generate_presigned_url(
            "put_object",
            Params={
                "Bucket": location.bucket,
                "Key": f"{location.prefix}uploads/acct-1/{OBJECT}",
                "ChecksumSHA256": store.presign_put(OBJECT, "acct-1", 10).headers[
                    "x-amz-checksum-sha256"
                ],
            },
            ExpiresIn=300,
            HttpMethod="PUT",
        )
        return ours, theirs

    def get() -> tuple[str, str]:
        ours = store.presign_get(OBJECT).url
        theirs = client.generate_presigned_url(
            "get_object",
            Params={"Bucket": location.bucket, "Key": f"{location.prefix}objects/{OBJECT}"},
            ExpiresIn=300,
            HttpMethod="GET",
        )
        return ours, theirs

    for make in (put, get):
        ours, theirs = _same_second(make)
        assert _parts(ours) == _parts(theirs)
