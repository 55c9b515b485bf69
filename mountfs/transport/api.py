"""Typed client of the backend API (`docs/protocol.md`) over `httpx.AsyncClient`.

This is the only module that knows URLs and JSON shapes of the backend; callers get
dataclasses and exceptions. httpx runs on trio (through anyio), so the mount, the sync
engine and the CLI (via `trio.run`) share this one client.

Errors: every non-2xx answer becomes `ApiError` with the backend's `error` code, and every
transport failure (refused connection, timeout, TLS) becomes `Offline`. No other place
translates HTTP errors.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from mountfs.transport.auth import BearerAuth

API_PREFIX = "/api/v1"
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)


class ApiError(Exception):
    """The backend answered with an error status.

    Attributes:
        status: HTTP status code.
        code: the backend's machine-readable `error` (e.g. `conflict`, `not_found`).
        detail: the backend's human sentence.
        body: the whole JSON body (may carry `current`, `missing`, …).
    """

    def __init__(self, status: int, code: str, detail: str, body: dict[str, Any]) -> None:
        super().__init__(f"{detail} ({code}, HTTP {status})")
        self.status = status
        self.code = code
        self.detail = detail
        self.body = body


class Offline(Exception):
    """The backend could not be reached (connection refused, timeout, TLS failure)."""


@dataclass(frozen=True, slots=True)
class Account:
    account_id: str
    name: str


@dataclass(frozen=True, slots=True)
class Login:
    account_id: str
    device_id: str
    token: str


@dataclass(frozen=True, slots=True)
class Me:
    account_id: str
    name: str
    device_id: str
    device_label: str
    root_id: str
    namespace_id: str
    quota_bytes: int | None
    used_bytes: int
    max_file_bytes: int


@dataclass(frozen=True, slots=True)
class Device:
    id: str
    label: str
    created_at: str
    last_seen_at: str | None
    revoked_at: str | None
    current: bool


@contextmanager
def _map_transport_errors() -> Iterator[None]:
    """Turn httpx's transport exceptions into `Offline`, chaining the cause."""
    try:
        yield
    except httpx.TransportError as exc:
        raise Offline(f"backend unreachable: {exc}") from exc


def _raise_for_error(response: httpx.Response) -> None:
    if response.is_success:
        return
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    code = str(body.get("error", "http_error"))
    detail = str(body.get("detail", response.reason_phrase or "request failed"))
    raise ApiError(response.status_code, code, detail, body)


class ApiClient:
    """Calls the backend's routes; one instance per server (and token, if any)."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self._http = http

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        with _map_transport_errors():
            response = await self._http.request(method, API_PREFIX + path, **kwargs)
        _raise_for_error(response)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    async def health(self) -> bool:
        body = await self._call("GET", "/health")
        return bool(body and body.get("status") == "ok")

    async def create_account(self, name: str, password: str) -> Account:
        body = await self._call("POST", "/accounts", json={"name": name, "password": password})
        return Account(account_id=body["account_id"], name=body["name"])

    async def login(self, name: str, password: str, device_label: str) -> Login:
        body = await self._call(
            "POST",
            "/login",
            json={"name": name, "password": password, "device_label": device_label},
        )
        return Login(body["account_id"], body["device_id"], body["token"])

    async def me(self) -> Me:
        body = await self._call("GET", "/me")
        return Me(**{field: body[field] for field in Me.__dataclass_fields__})

    async def devices(self) -> list[Device]:
        body = await self._call("GET", "/devices")
        return [
            Device(**{field: item[field] for field in Device.__dataclass_fields__})
            for item in body["devices"]
        ]

    async def revoke_device(self, device_id: str) -> None:
        await self._call("DELETE", f"/devices/{device_id}")


@asynccontextmanager
async def open_api(server: str, token: str | None = None) -> AsyncIterator[ApiClient]:
    """An `ApiClient` for `server`, authenticated with `token` when given.

    TLS verification follows httpx's defaults, which honour `SSL_CERT_FILE`.
    """
    auth = BearerAuth(token) if token else None
    async with httpx.AsyncClient(
        base_url=server.rstrip("/"), auth=auth, timeout=DEFAULT_TIMEOUT
    ) as http:
        yield ApiClient(http)
