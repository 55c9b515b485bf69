"""Block store on any S3-compatible service (AWS S3, MinIO, SeaweedFS, Ceph RGW).

Configured as `--blockstore s3://bucket[/prefix]?endpoint=URL&region=NAME`; credentials
come from the standard AWS environment (env vars, shared config, instance role).

Keys under the bucket (and optional prefix):

    uploads/<account>/<object>   staging: where that account's presigned PUT writes
    objects/<object>             the object, once an upload has been confirmed

- `presign_put` signs a PUT to the account's staging key with `ChecksumSHA256` (the base64
  of the digest the object name spells): the client must send `x-amz-checksum-sha256`
  (returned in `headers`) and S3 refuses bytes that do not hash to it (invariant 3).
  Staging per account means one account's upload can never be credited to another.
- `finish_upload` heads the staging key (checking the checksum S3 recorded, or hashing the
  bytes itself when the service does not record checksums) and copies it server-side to
  `objects/<object>` unless that exists. It leaves the staging key, the upload evidence
  (store/base.py), in place, so a confirmation whose database transaction is cut can be
  repeated; `discard_upload_evidence` deletes it once the ownership is committed.
- `presign_get` signs a GET of `objects/<object>`.
- `list_upload_evidence` lists the staging keys with their `LastModified` (a new PUT of the
  same key renews it), so the GC deletes those older than its grace: an upload never
  confirmed, or one whose evidence the backend could not delete.

Two accounts confirming the same object at the same moment may both copy it; the bytes are
identical (same name, verified), so the second copy changes nothing observable. The same
holds for a confirmation repeated after a cut, and for one that runs after the GC deleted
the object: the copy puts the verified bytes back under their name. A staging key deleted
between the head and the copy (the GC discarding it as stale) answers None, as if it had
never been there.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from backend.store.base import PresignedRequest, StoredObject, UploadEvidence
from backend.store.sigv4 import SigV4Presigner
from backend.telemetry import timed_store_operation

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client
    from mypy_boto3_s3.type_defs import ObjectTypeDef

__all__ = ["S3BlockStore", "S3Location"]

_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}


@dataclass(frozen=True, slots=True)
class S3Location:
    """Where the store lives: bucket, key prefix ('' or ending in '/'), endpoint, region."""

    bucket: str
    prefix: str = ""
    endpoint: str | None = None
    region: str | None = None

    @classmethod
    def from_url(cls, url: str) -> S3Location:
        """Parse `s3://bucket[/prefix]?endpoint=URL&region=NAME`; ValueError if malformed."""
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise ValueError(f"not an s3://bucket URL: {url!r}")
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        unknown = set(query) - {"endpoint", "region"}
        if unknown:
            raise ValueError(f"unknown s3 URL parameter(s): {', '.join(sorted(unknown))}")
        endpoint = query.get("endpoint")
        if endpoint is not None and urlsplit(endpoint).scheme not in ("http", "https"):
            raise ValueError(f"the s3 endpoint must be an http(s):// URL, not {endpoint!r}")
        prefix = parts.path.strip("/")
        return cls(
            bucket=parts.netloc,
            prefix=f"{prefix}/" if prefix else "",
            endpoint=query.get("endpoint"),
            region=query.get("region"),
        )


def make_client(location: S3Location) -> S3Client:
    """A boto3 S3 client for `location` with SigV4 and path-style addressing for custom
    endpoints (MinIO and friends). Checksums are only added where we ask for them, so
    presigned URLs carry exactly the headers we return to clients."""
    config = Config(
        signature_version="s3v4",
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        s3={"addressing_style": "path" if location.endpoint else "auto"},
        retries={"mode": "standard", "max_attempts": 3},
        # Bounded, so that a store that hangs costs a request at most ~1.5 min (then 503,
        # backend.app) instead of holding a worker thread for botocore's default of 5 x 2 min.
        connect_timeout=5,
        read_timeout=30,
    )
    return boto3.client(
        "s3", endpoint_url=location.endpoint, region_name=location.region, config=config
    )


def _checksum(object: str) -> str:
    """The `x-amz-checksum-sha256` value of an object: base64 of its SHA-256 digest."""
    return base64.b64encode(bytes.fromhex(object)).decode("ascii")


class S3BlockStore:
    """A `BlockStore` on S3; see the module docstring."""

    metrics_kind = "s3"  # the `store` label of its timings (backend.telemetry)

    def __init__(
        self,
        client: S3Client,
        location: S3Location,
        ttl: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._location = location
        self._ttl = ttl
        self._clock = clock
        # Our own SigV4 presigning, tens of times cheaper than botocore's (sigv4.py);
        # botocore's stays the fallback for a client without credentials.
        self._presigner = SigV4Presigner.from_client(client, location.bucket)

    def _object_key(self, object: str) -> str:
        return f"{self._location.prefix}objects/{object}"

    def _staging_key(self, object: str, account_id: str) -> str:
        return f"{self._location.prefix}uploads/{account_id}/{object}"

    def _expiry(self) -> datetime:
        return datetime.fromtimestamp(int(self._clock()) + self._ttl, UTC)

    def presign_put(self, object: str, account_id: str, size: int) -> PresignedRequest:
        checksum = _checksum(object)
        if self._presigner is not None:
            url = self._presigner.presign(
                "PUT",
                self._staging_key(object, account_id),
                self._ttl,
                self._clock(),
                {"x-amz-checksum-sha256": checksum},
            )
            return PresignedRequest(
                url=url,
                method="PUT",
                headers={"x-amz-checksum-sha256": checksum},
                expires_at=self._expiry(),
            )
        url = self._client.generate_presigned_url(
            "put_object",
            Params={
                "Bucket": self._location.bucket,
                "Key": self._staging_key(object, account_id),
                "ChecksumSHA256": checksum,
            },
            ExpiresIn=self._ttl,
            HttpMethod="PUT",
        )
        return PresignedRequest(
            url=url,
            method="PUT",
            headers={"x-amz-checksum-sha256": checksum},
            expires_at=self._expiry(),
        )

    def presign_get(self, object: str) -> PresignedRequest:
        if self._presigner is not None:
            url = self._presigner.presign("GET", self._object_key(object), self._ttl, self._clock())
            return PresignedRequest(url=url, method="GET", headers={}, expires_at=self._expiry())
        url = self._client.generate_presigned_url(
            "get_object",
            Params={"Bucket": self._location.bucket, "Key": self._object_key(object)},
            ExpiresIn=self._ttl,
            HttpMethod="GET",
        )
        return PresignedRequest(url=url, method="GET", headers={}, expires_at=self._expiry())

    @timed_store_operation("finish_upload")
    def finish_upload(self, object: str, account_id: str) -> int | None:
        bucket, staging = self._location.bucket, self._staging_key(object, account_id)
        try:
            head = self._client.head_object(Bucket=bucket, Key=staging, ChecksumMode="ENABLED")
        except ClientError as error:
            if _is_not_found(error):
                return None
            raise
        recorded = head.get("ChecksumSHA256")
        verified = recorded == _checksum(object) if recorded else self._hashes_to(staging, object)
        if not verified:  # cannot happen with a conforming store; never trust it blindly
            self._client.delete_object(Bucket=bucket, Key=staging)
            return None
        if not self.exists(object):
            try:
                self._client.copy_object(
                    Bucket=bucket,
                    Key=self._object_key(object),
                    CopySource={"Bucket": bucket, "Key": staging},
                )
            except ClientError as error:
                if _is_not_found(error):  # discarded since the head (stale, by the GC)
                    return None
                raise
        return int(head["ContentLength"])

    @timed_store_operation("discard_upload_evidence")
    def discard_upload_evidence(self, object: str, account_id: str) -> None:
        self._client.delete_object(
            Bucket=self._location.bucket, Key=self._staging_key(object, account_id)
        )

    def list_upload_evidence(self) -> Iterator[UploadEvidence]:
        prefix = f"{self._location.prefix}uploads/"
        for item in self._listing(prefix):
            account_id, _, object = item["Key"][len(prefix) :].partition("/")
            yield UploadEvidence(object, account_id, item["LastModified"].astimezone(UTC))

    def _hashes_to(self, key: str, object: str) -> bool:
        """Download `key` and check its SHA-256 (for stores that record no checksum)."""
        body = self._client.get_object(Bucket=self._location.bucket, Key=key)["Body"]
        digest = hashlib.sha256()
        for piece in body.iter_chunks(1024 * 1024):
            digest.update(piece)
        return digest.hexdigest() == object

    @timed_store_operation("exists")
    def exists(self, object: str) -> bool:
        try:
            self._client.head_object(Bucket=self._location.bucket, Key=self._object_key(object))
        except ClientError as error:
            if _is_not_found(error):
                return False
            raise
        return True

    @timed_store_operation("delete")
    def delete(self, object: str) -> None:
        self._client.delete_object(Bucket=self._location.bucket, Key=self._object_key(object))

    def iter_objects(self) -> Iterator[str]:
        prefix = f"{self._location.prefix}objects/"
        for item in self._listing(prefix):
            yield item["Key"][len(prefix) :]

    def list_objects(self) -> Iterator[StoredObject]:
        prefix = f"{self._location.prefix}objects/"
        for item in self._listing(prefix):
            modified = item["LastModified"]
            yield StoredObject(
                item["Key"][len(prefix) :], int(item["Size"]), modified.astimezone(UTC)
            )

    def _listing(self, prefix: str) -> Iterator[ObjectTypeDef]:
        """Every key under `prefix`, page after page (ListObjectsV2 items)."""
        pages = self._client.get_paginator("list_objects_v2").paginate(
            Bucket=self._location.bucket, Prefix=prefix
        )
        for page in pages:
            yield from page.get("Contents", [])

    @timed_store_operation("read_object")
    def read_object(self, object: str) -> bytes | None:
        try:
            answer = self._client.get_object(
                Bucket=self._location.bucket, Key=self._object_key(object)
            )
        except ClientError as error:
            if _is_not_found(error):
                return None
            raise
        return answer["Body"].read()


def _is_not_found(error: ClientError) -> bool:
    return str(error.response.get("Error", {}).get("Code")) in _NOT_FOUND
