"""Moving chunk objects to and from the block store through presigned URLs.

Presigned URLs may point at the backend's embedded store or straight at S3, so this client
never sends the device's bearer token: the URL's signature is the whole authorisation.
Bytes are checked here too: a download whose SHA-256 does not match its object name is
refused before anything decrypts it (the store can be wrong, never trusted).

Bodies stream in `PIECE` pieces in both directions, each piece through the direction's
`RateLimit` (so `--bwlimit` holds within a chunk) and reported to `on_bytes` as it moves.
A request that fails or is cancelled (a pause) reports the bytes it had moved as undone,
so progress never counts a chunk twice.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import httpx

from mountfs.sync.transfers import RateLimit
from mountfs.transport.api import (
    ApiError,
    Offline,
    Presigned,
    map_transport_errors,
    raise_for_error,
    tls_verify,
)

BLOCK_TIMEOUT = httpx.Timeout(120.0, connect=5.0)
PIECE = 256 * 1024
"""Bytes per step of a streamed body: small enough that a bandwidth limit and a pause act
within a chunk, large enough that the per-piece cost does not show."""

OnBytes = Callable[[int], None]


class ObjectMismatch(Exception):
    """The store returned bytes whose SHA-256 is not the object's name."""


def _ignore(n: int) -> None:
    return None


class BlockClient:
    """PUT and GET of single objects by presigned URL."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self._http = http

    async def put(
        self,
        request: Presigned,
        data: bytes,
        *,
        limit: RateLimit | None = None,
        on_bytes: OnBytes = _ignore,
    ) -> None:
        """Upload `data` to `request` (idempotent: the store accepts an identical re-PUT)."""
        sent = 0

        async def body() -> AsyncIterator[bytes]:
            nonlocal sent
            view = memoryview(data)
            for start in range(0, len(view), PIECE):
                piece = view[start : start + PIECE]
                if limit is not None:
                    await limit.take(len(piece))
                yield bytes(piece)
                sent += len(piece)
                on_bytes(len(piece))

        # S3 refuses chunked uploads to presigned URLs: the length is always declared.
        headers = {**request.headers, "content-length": str(len(data))}
        try:
            with map_transport_errors():
                response = await self._http.request(
                    request.method, request.url, content=body(), headers=headers
                )
            raise_for_error(response)
        except BaseException:
            on_bytes(-sent)
            raise

    async def get(
        self,
        request: Presigned,
        *,
        limit: RateLimit | None = None,
        on_bytes: OnBytes = _ignore,
    ) -> bytes:
        """Download the object and check that it hashes to its name."""
        received = 0
        data = bytearray()
        try:
            with map_transport_errors():
                async with self._http.stream(
                    request.method, request.url, headers=request.headers
                ) as response:
                    if not response.is_success:
                        await response.aread()
                        raise_for_error(response)
                    async for piece in response.aiter_bytes(PIECE):
                        if limit is not None:
                            await limit.take(len(piece))
                        data += piece
                        received += len(piece)
                        on_bytes(len(piece))
        except BaseException:
            on_bytes(-received)
            raise
        if hashlib.sha256(data).hexdigest() != request.object:
            on_bytes(-received)
            raise ObjectMismatch(f"object {request.object} came back with other bytes")
        return bytes(data)


def blocks_http(max_connections: int = 8, ca_file: str | None = None) -> httpx.AsyncClient:
    """The HTTP client for presigned block URLs: its own pool, no auth header, ever.
    TLS verification as the API client's (`tls_verify`)."""
    limits = httpx.Limits(max_connections=max_connections)
    return httpx.AsyncClient(timeout=BLOCK_TIMEOUT, limits=limits, verify=tls_verify(ca_file))


@asynccontextmanager
async def open_blocks(max_connections: int = 8) -> AsyncIterator[BlockClient]:
    """A `BlockClient` for the length of the block (see `blocks_http`)."""
    async with blocks_http(max_connections) as http:
        yield BlockClient(http)


__all__ = ["PIECE", "ApiError", "BlockClient", "ObjectMismatch", "Offline", "open_blocks"]
