"""HMAC signatures for the embedded block store's presigned URLs.

A URL `.../blocks/{object}?acct=&exp=&sig=` is valid for exactly one object, one method and
one account until `exp` (Unix seconds): `sig` is HMAC-SHA256 under the backend's signing key
over the JSON array `["v1", method, object, account, exp]` (JSON, so no choice of field
values can make two different requests sign the same bytes). GET URLs carry an empty
account. Verification uses `hmac.compare_digest`, so timing reveals nothing about `sig`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass

from backend.store.base import BadSignature

__all__ = ["UrlSigner"]


@dataclass(frozen=True, slots=True)
class UrlSigner:
    key: bytes

    def sign(self, method: str, object: str, account: str, expires: int) -> str:
        message = json.dumps(["v1", method.upper(), object, account, expires]).encode()
        return hmac.new(self.key, message, hashlib.sha256).hexdigest()

    def verify(
        self, method: str, object: str, account: str, expires: int, sig: str, now: float
    ) -> None:
        """Raise BadSignature unless `sig` signs these values and `expires` is not past."""
        expected = self.sign(method, object, account, expires)
        if not hmac.compare_digest(expected.encode(), sig.encode("utf-8", "replace")):
            raise BadSignature("the signature does not match this request")
        if now > expires:
            raise BadSignature("the URL has expired")

    def __repr__(self) -> str:
        return "UrlSigner(<key>)"
