"""Request body size limits, enforced before a body is read in full.

A small ASGI middleware: a declared `Content-Length` above the limit is answered 413
`body_too_large` at once, without calling the app or reading the body; a body without a
length (chunked) is counted as the app reads it, and the read that crosses the limit
raises `BodyTooLarge`, which the app's handlers answer with the same 413. Block PUTs
(`/api/v1/blocks/...`) get their own, larger limit.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backend.api.errors import BodyTooLarge, error_response
from backend.api.schemas import ErrorOut
from backend.store.local import BLOCKS_PATH

__all__ = ["BodyLimitMiddleware"]


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, *, json_limit: int, block_limit: int) -> None:
        self.app = app
        self.json_limit = json_limit
        self.block_limit = block_limit

    def _limit(self, scope: Scope) -> int:
        is_block = scope["method"] == "PUT" and scope["path"].startswith(BLOCKS_PATH + "/")
        return self.block_limit if is_block else self.json_limit

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
