"""The embedded block store: a directory served by the backend with signed URLs.

Layout under `root` (`DATA/blocks/`):

    objects/ab/abcdef…   one file per object, named by the SHA-256 of its bytes
    uploads/<account>/<object>
                         empty marker: this account PUT this object and it is durable
                         (the upload evidence, store/base.py); `finish_upload` checks it
                         and the object, `discard_upload_evidence` unlinks it once the
                         ownership it proves is committed; its mtime is the latest PUT
    tmp/                 bodies being received; anything left here after a crash is junk

The backend serves `PUT|GET /api/v1/blocks/{object}?acct=&exp=&sig=` (see
`backend.api.routes.blocks`) with the same contract as S3 presigned URLs: a PUT body is
streamed to `tmp/` while hashed, refused unless it hashes to the object name, fsynced, then
hard-linked into place (a link never overwrites, so an existing object is never touched)
and the directory fsynced, before the marker is written (or, if it exists, its mtime
renewed, so that GC never takes a fresh upload's marker for a stale one) and 2xx is
answered. Every PUT does the full work even when the object exists, so neither the answer
nor its timing tells an account whether somebody else stored that object.

A marker outlives its object when the GC deletes the object (the GC does not look at
markers of objects it deletes; stale ones go by age), so `finish_upload` confirms only
when the object file is there too.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar
from urllib.parse import urlencode

from backend.durable import fsync_dir, makedirs_durably
from backend.store.base import (
    ChecksumMismatch,
    PresignedRequest,
    StoredObject,
    StoreError,
    UploadEvidence,
)
from backend.store.signing import UrlSigner
from backend.telemetry import timed_store_operation

__all__ = ["BLOCKS_PATH", "LocalBlockStore", "ObjectTooLarge", "Upload"]

BLOCKS_PATH = "/api/v1/blocks"
"""Where the backend serves the store's objects (relative to the server's origin)."""


class ObjectTooLarge(StoreError):
    """A PUT body is larger than the store accepts."""


@dataclass(frozen=True, slots=True)
class LocalBlockStore:
    """A `BlockStore` over a local directory; see the module docstring.

    Attributes:
        root: the store's directory.
        signer: signs and checks the presigned URLs.
        ttl: seconds a presigned URL stays valid.
        max_object_bytes: largest accepted PUT body.
        base_url: origin the URLs are built on; `bind()` sets it per request (from the
            request or the `public_url` setting), since only then is it known.
        clock: Unix time source (tests may pin it).
    """

    metrics_kind: ClassVar[str] = "local"  # the `store` label of its timings (telemetry)

    root: Path
    signer: UrlSigner
    ttl: int
    max_object_bytes: int
    base_url: str = ""
    clock: Callable[[], float] = field(default=time.time)

    def bind(self, base_url: str) -> LocalBlockStore:
        """The same store, building its URLs on `base_url`."""
        return replace(self, base_url=base_url.rstrip("/"))

    def open(self) -> None:
        """Create the layout and clear bodies left half-received by a crash."""
        for sub in ("objects", "uploads", "tmp"):
            makedirs_durably(self.root / sub)
        for leftover in (self.root / "tmp").iterdir():
            leftover.unlink(missing_ok=True)

    # ---- BlockStore ----------------------------------------------------------------

    def presign_put(self, object: str, account_id: str, size: int) -> PresignedRequest:
        return self._presign("PUT", object, account_id)

    def presign_get(self, object: str) -> PresignedRequest:
        return self._presign("GET", object, "")

    @timed_store_operation("finish_upload")
    def finish_upload(self, object: str, account_id: str) -> int | None:
        if not self.marker_path(object, account_id).is_file():
            return None
        try:
            return self.object_path(object).stat().st_size
        except FileNotFoundError:
            return None

    @timed_store_operation("discard_upload_evidence")
    def discard_upload_evidence(self, object: str, account_id: str) -> None:
        # Not fsynced: a marker that comes back after a crash is stale evidence (GC).
        self.marker_path(object, account_id).unlink(missing_ok=True)

    def list_upload_evidence(self) -> Iterator[UploadEvidence]:
        uploads = self.root / "uploads"
        for account_dir in sorted(uploads.iterdir()):
            for name, info in _scan(account_dir):
                modified = datetime.fromtimestamp(info.st_mtime, UTC)
                yield UploadEvidence(name, account_dir.name, modified)

    @timed_store_operation("exists")
    def exists(self, object: str) -> bool:
        return self.object_path(object).is_file()

    @timed_store_operation("delete")
    def delete(self, object: str) -> None:
        self.object_path(object).unlink(missing_ok=True)

    def iter_objects(self) -> Iterator[str]:
        for prefix in sorted((self.root / "objects").iterdir()):
            for path in prefix.iterdir():
                yield path.name

    def list_objects(self) -> Iterator[StoredObject]:
        for prefix in sorted((self.root / "objects").iterdir()):
            for name, info in _scan(prefix):
                modified = datetime.fromtimestamp(info.st_mtime, UTC)
                yield StoredObject(name, info.st_size, modified)

    @timed_store_operation("read_object")
    def read_object(self, object: str) -> bytes | None:
        try:
            return self.object_path(object).read_bytes()
        except FileNotFoundError:
            return None

    # ---- serving ---------------------------------------------------------------------

    def verify(self, method: str, object: str, account: str, expires: int, sig: str) -> None:
        """Raise BadSignature unless the query parameters sign this request."""
        self.signer.verify(method, object, account, expires, sig, self.clock())

    def object_path(self, object: str) -> Path:
        return self.root / "objects" / object[:2] / object

    def begin_upload(self, object: str, account_id: str) -> Upload:
        return Upload(self, object, account_id)

    def marker_path(self, object: str, account_id: str) -> Path:
        return self.root / "uploads" / account_id / object

    def _presign(self, method: str, object: str, account: str) -> PresignedRequest:
        # Rounded up: a URL is valid for at least `ttl` seconds (rounding down left a
        # 1-second URL as little as a few milliseconds, and a client's PUT was refused).
        expires = math.ceil(self.clock()) + self.ttl
        query = {"exp": str(expires), "sig": self.signer.sign(method, object, account, expires)}
        if account:
            query = {"acct": account, **query}
        return PresignedRequest(
            url=f"{self.base_url}{BLOCKS_PATH}/{object}?{urlencode(query)}",
            method=method,
            headers={},
            expires_at=datetime.fromtimestamp(expires, UTC),
        )


class Upload:
    """One PUT being received. Blocking methods: call them from a worker thread.

    `write` each piece of the body, then `complete` (verify, make durable, record the
    marker, return the size) or `abort` (drop the temp file). Not reusable.
    """

    def __init__(self, store: LocalBlockStore, object: str, account_id: str) -> None:
        self._store = store
        self._object = object
        self._account_id = account_id
        self._hash = hashlib.sha256()
        self._size = 0
        self._tmp = store.root / "tmp" / f"{secrets.token_hex(16)}.part"
        self._fd: int | None = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)

    def write(self, data: bytes) -> None:
        if self._fd is None:
            raise RuntimeError("upload already finished")
        self._size += len(data)
        if self._size > self._store.max_object_bytes:
            raise ObjectTooLarge(f"objects are at most {self._store.max_object_bytes} bytes")
        self._hash.update(data)
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]

    def complete(self) -> int:
        """Make the object durable under its name; return its size.

        Raises ChecksumMismatch (and stores nothing) if the bytes are not named `object`.
        """
        if self._fd is None:
            raise RuntimeError("upload already finished")
        if self._hash.hexdigest() != self._object:
            raise ChecksumMismatch("the body's SHA-256 is not the object name")
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = None
        final = self._store.object_path(self._object)
        makedirs_durably(final.parent)
        with contextlib.suppress(FileExistsError):  # same name, same bytes: never overwrite
            os.link(self._tmp, final)
        self._tmp.unlink()
        fsync_dir(final.parent)
        self._mark()
        return self._size

    def _mark(self) -> None:
        marker = self._store.marker_path(self._object, self._account_id)
        makedirs_durably(marker.parent)
        fd = os.open(marker, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            # A repeated upload renews the time of a pending marker: the GC discards
            # markers older than its grace, and must date this one from this upload.
            os.utime(fd)
        finally:
            os.close(fd)
        fsync_dir(marker.parent)

    def abort(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._tmp.unlink(missing_ok=True)


def _scan(folder: Path) -> Iterator[tuple[str, os.stat_result]]:
    """The files of `folder` with their stat; what goes while we list (a discard, a GC) is
    skipped, and so is a folder that is gone or is not one."""
    try:
        entries = os.scandir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return
    with entries:
        for entry in entries:
            try:
                yield entry.name, entry.stat()
            except FileNotFoundError:
                continue
