"""Moving chunk objects to and from the block store through presigned URLs.

Presigned URLs may point at the backend's embedded store or straight at S3, so this client
never sends the device's bearer token: the URL's signature is the whole authorisation.
Bytes are checked here too: a download whose SHA-256 does not match its object name is
refused before anything decrypts it (the store can be wrong, never trusted).
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx

from mountfs.transport.api import (
    ApiError,
    Offline,
    Presigned,
    map_transport_errors,
    raise_for_error,
)

BLOCK_TIMEOUT = httpx.Timeout(120.0, connect=5.0)


class ObjectMismatch(Exception):
    """The store returned bytes whose SHA-256 is not the object's name."""


class BlockClient:
    """PUT and GET of single objects by presigned URL."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self._http = http

    async def put(self, request: Presigned, data: bytes) -> None:
        """Upload `data` to `request` (idempotent: the store accepts an identical re-PUT)."""
        with map_transport_errors():
            response = await self._http.request(
                request.method, request.url, content=data, headers=request.headers
            )
        raise_for_error(response)

    async def get(self, request: Presigned) -> bytes:
        """Download the object and check that it hashes to its name."""
        with map_transport_errors():
            response = await self._http.request(
                request.method, request.url, headers=request.headers
            )
        raise_for_error(response)
        data = response.content
        if hashlib.sha256(data).hexdigest() != request.object:
            raise ObjectMismatch(f"object {request.object} came back with other bytes")
        return data


def blocks_http(max_connections: int = 8) -> httpx.AsyncClient:
    """The HTTP client for presigned block URLs: its own pool, no auth header, ever."""
    limits = httpx.Limits(max_connections=max_connections)
    return httpx.AsyncClient(timeout=BLOCK_TIMEOUT, limits=limits)


@asynccontextmanager
async def open_blocks(max_connections: int = 8) -> AsyncIterator[BlockClient]:
    """A `BlockClient` for the length of the block (see `blocks_http`)."""
    async with blocks_http(max_connections) as http:
        yield BlockClient(http)


__all__ = ["ApiError", "BlockClient", "ObjectMismatch", "Offline", "open_blocks"]
