"""The block store contract: immutable, content-addressed objects behind presigned URLs.

Clients move chunk bytes straight to and from the store with short-lived presigned
requests; the backend only signs them (for accounts allowed to use them) and, at commit
time, asks the store to confirm that an account's upload completed (`finish_upload`).

Object names are the lower-case hex SHA-256 of the stored bytes, and every implementation
verifies that on upload (DESIGN.md invariant 3), so an object can be written once and never
changed by anyone. `finish_upload` is keyed by account: it confirms only an upload made
with a URL signed for that account, which is how ownership (invariant 5) is proven without
revealing whether another account stored the same object.

The store keeps *evidence* of each account's upload (local: a marker file; S3: the
account's staging key) until the backend has durably recorded what it proves. Confirming
(`finish_upload`) never consumes it: the caller records ownership (or a hold) in a
database transaction and only after that transaction has committed removes the evidence
(`discard_upload_evidence`). A transaction cut in between (database restarted, instance
killed) thus leaves the evidence for the client's retry instead of losing the upload.
Evidence left behind (a failed discard, a process killed after the commit) is harmless:
it only ever lets its own account confirm bytes it did upload, and garbage collection
removes it once it is older than the grace period (`list_upload_evidence`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

__all__ = [
    "BadSignature",
    "BlockStore",
    "ChecksumMismatch",
    "PresignedRequest",
    "StoreError",
    "StoredObject",
    "UploadEvidence",
]


@dataclass(frozen=True, slots=True)
class StoredObject:
    """One object as the store lists it (garbage collection and scrub).

    Attributes:
        modified: aware UTC time the object was last written: the GC never deletes an
            object with no metadata row younger than its grace period (an upload may be
            on its way to a commit).
    """

    name: str
    size: int
    modified: datetime


@dataclass(frozen=True, slots=True)
class UploadEvidence:
    """A store's record that `account_id` uploaded `object` (garbage collection).

    Attributes:
        modified: aware UTC time of the latest upload it records: evidence older than the
            GC grace period belongs to an upload whose commit can no longer come (the grace
            outlives any URL plus the time to commit), so it may be discarded.
    """

    object: str
    account_id: str
    modified: datetime


@dataclass(frozen=True, slots=True)
class PresignedRequest:
    """One HTTP request a client may make to the store, as-is, until `expires_at`.

    Attributes:
        url: absolute URL (query includes the signature).
        method: "PUT" or "GET".
        headers: headers the client must send verbatim (e.g. `x-amz-checksum-sha256`).
        expires_at: aware UTC time after which the store refuses it.
    """

    url: str
    method: str
    headers: Mapping[str, str]
    expires_at: datetime


class BlockStore(Protocol):
    """What the backend needs from a block store (local directory or S3)."""

    def presign_put(self, object: str, account_id: str, size: int) -> PresignedRequest:
        """A PUT of exactly the bytes named `object`, attributed to `account_id`.

        Always granted, even if the object exists: an identical upload is accepted and
        never overwrites (and the answer does not reveal whether it existed).
        """
        ...

    def presign_get(self, object: str) -> PresignedRequest:
        """A GET of `object`; the caller has checked that the account may read it."""
        ...

    def finish_upload(self, object: str, account_id: str) -> int | None:
        """Confirm that `account_id` uploaded `object` and that it is durably stored.

        Returns the object's stored size, or None if the store holds no evidence of such an
        upload by this account (or the object itself is gone). Does not consume the
        evidence: a repeated call answers the same until `discard_upload_evidence`, so a
        caller whose transaction recording the ownership is cut can simply try again.
        Idempotent (S3: the copy into place happens at most once per object name). May
        block on network I/O.
        """
        ...

    def discard_upload_evidence(self, object: str, account_id: str) -> None:
        """Remove the evidence `finish_upload` checks, once what it proves is recorded.

        Call only after the transaction recording the ownership (or hold) has committed.
        Idempotent (absent evidence is ignored); a failure only leaves the evidence for
        garbage collection, so callers treat it as best effort.
        """
        ...

    def list_upload_evidence(self) -> Iterator[UploadEvidence]:
        """Every upload evidence the store keeps, in no particular order (GC)."""
        ...

    def exists(self, object: str) -> bool: ...

    def delete(self, object: str) -> None:
        """Remove an object (garbage collection only); absent objects are ignored."""
        ...

    def iter_objects(self) -> Iterator[str]:
        """Every stored object name (for scrub and GC), in no particular order."""
        ...

    def list_objects(self) -> Iterator[StoredObject]:
        """Every stored object with its size and time, in no particular order."""
        ...

    def read_object(self, object: str) -> bytes | None:
        """The object's bytes (scrub), or None if it is absent."""
        ...


class StoreError(Exception):
    """Base of the errors a block store reports; `detail` is one human sentence."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class BadSignature(StoreError):
    """A presigned request is expired, forged, or used for another object or method."""


class ChecksumMismatch(StoreError):
    """Uploaded bytes do not hash to the object name they were sent for."""
