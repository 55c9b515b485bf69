"""Request body size limits, enforced before a body is read in full.

A small ASGI middleware: a declared `Content-Length` above the limit is answered 413
`body_too_large` at once, without calling the app or reading the body; a body without a
length (chunked) is counted as the app reads it, and the read that crosses the limit
raises `BodyTooLarge`, which the app's handlers answer with the same 413. Block PUTs
(`/api/v1/blocks/...`) get their own, larger limit, and so do content commits
(`POST /api/v1/nodes/{id}/revisions`): their manifest grows with the file, up to
`max_refs(max_file_bytes)` refs, so their limit is derived from the largest file
(`manifest_body_limit`). A 10 GiB file cut into minimum-size chunks is 40,961 refs, about
9 MB of JSON as clients send it: above the 8 MiB general limit. The manifest is sent whole
rather than split over several requests because a revision is one transaction (invariant
6: it is committed only with every chunk it names); splitting it would need server-side
staging of partial manifests for no gain, while the bigger limit costs only that one route
a bounded parse (tens of MB at most).
"""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backend.api.errors import BodyTooLarge, error_response
from backend.api.schemas import ErrorOut
from backend.services.validation import max_refs
from backend.store.local import BLOCKS_PATH

__all__ = ["MANIFEST_REF_BYTES", "BodyLimitMiddleware", "manifest_body_limit"]

MANIFEST_REF_BYTES = 320
"""Upper bound of one ref's JSON, whitespace included (about 225 bytes as httpx sends it:
two 64-digit hex strings, three integers, the field names)."""
_COMMIT_PATH = re.compile(r"^/api/v1/nodes/[^/]+/revisions$")


def manifest_body_limit(max_file_bytes: int, json_limit: int) -> int:
    """The body limit of a content commit: room for the largest allowed manifest (see the
    module docstring), never below the general JSON limit."""
    return max(json_limit, max_refs(max_file_bytes) * MANIFEST_REF_BYTES + (64 << 10))


class BodyLimitMiddleware:
    def __init__(
        self, app: ASGIApp, *, json_limit: int, block_limit: int, manifest_limit: int = 0
    ) -> None:
        self.app = app
        self.json_limit = json_limit
        self.block_limit = block_limit
        self.manifest_limit = max(manifest_limit, json_limit)

    def _limit(self, scope: Scope) -> int:
        if scope["method"] == "PUT" and scope["path"].startswith(BLOCKS_PATH + "/"):
            return self.block_limit
        if scope["method"] == "POST" and _COMMIT_PATH.match(scope["path"]):
            return self.manifest_limit
        return self.json_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self._limit(scope)
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            detail = f"the request body is larger than {limit} bytes"
            response = error_response(413, ErrorOut(error="body_too_large", detail=detail))
            await response(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, limited_receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
