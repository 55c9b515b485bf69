"""Typed client of the backend API (`docs/protocol.md`) over `httpx.AsyncClient`.

This is the only module that knows URLs and JSON shapes of the backend; callers get
dataclasses and exceptions. httpx runs on trio (through anyio), so the mount, the sync
engine and the CLI (via `trio.run`) share this one client.

Errors: every non-2xx answer becomes `ApiError` with the backend's `error` code, and every
transport failure (refused connection, timeout, TLS) becomes `Offline`. No other place
translates HTTP errors.

Request ids: every request to the backend carries `X-Request-Id` (the backend logs it
with every line about that request and echoes it). Inside `request_id_scope()` all
requests share one id, so the retries of one logical call (`mountfs.transport.retry`)
can be followed across instances as one operation; elsewhere each request gets its own.
Both errors name the id (`request_id`, and in their message), so a failure in the
client's log can be matched with the backend's lines.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import ssl
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import certifi
import httpx

from mountfs.transport.auth import BearerAuth
from mountfs.transport.sharing import Followed, Members, RemoteLink, RemoteShare
from mountfs.transport.sse import Event, events
from mountfs.transport.versions import (
    HistoryChild,
    PurgeReport,
    RemoteVersion,
    RestoreReport,
    TrashItem,
)

API_PREFIX = "/api/v1"
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
WATCH_HEARTBEAT_S = 10
"""Seconds of silence after which the backend sends a heartbeat on the push channel."""
REQUEST_ID_HEADER = "X-Request-Id"

_REQUEST_ID: ContextVar[str | None] = ContextVar("mountfs_request_id", default=None)


def new_request_id() -> str:
    """A fresh request id: 16 random hex digits (what the backend accepts: <= 128 of
    `[A-Za-z0-9._:-]`)."""
    return secrets.token_hex(8)


@contextmanager
def request_id_scope(request_id: str | None = None) -> Iterator[str]:
    """Every API request made in this block (in this task) sends the same id: one
    logical operation, retries included. Nested scopes keep the outer id."""
    outer = _REQUEST_ID.get()
    if outer is not None:
        yield outer
        return
    chosen = request_id or new_request_id()
    token = _REQUEST_ID.set(chosen)
    try:
        yield chosen
    finally:
        _REQUEST_ID.reset(token)


async def _stamp_request_id(request: httpx.Request) -> None:
    """httpx request hook: add `X-Request-Id` unless the caller set one."""
    if REQUEST_ID_HEADER not in request.headers:
        request.headers[REQUEST_ID_HEADER] = _REQUEST_ID.get() or new_request_id()


def _request_id_of(request: httpx.Request | None) -> str | None:
    return None if request is None else request.headers.get(REQUEST_ID_HEADER)


class ApiError(Exception):
    """The backend answered with an error status.

    Attributes:
        status: HTTP status code.
        code: the backend's machine-readable `error` (e.g. `conflict`, `not_found`).
        detail: the backend's human sentence.
        body: the whole JSON body (may carry `current`, `missing`, …).
        retry_after: seconds from a `Retry-After` header, if the answer had one.
        request_id: the `X-Request-Id` of the request (None for a store's answer).
    """

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        body: dict[str, Any],
        retry_after: float | None = None,
        request_id: str | None = None,
    ) -> None:
        where = f", request {request_id}" if request_id else ""
        super().__init__(f"{detail} ({code}, HTTP {status}{where})")
        self.status = status
        self.code = code
        self.detail = detail
        self.body = body
        self.retry_after = retry_after
        self.request_id = request_id


class Offline(Exception):
    """The backend could not be reached (connection refused, timeout, TLS failure).

    Attributes:
        request_id: the `X-Request-Id` the lost request carried, if any.
    """

    def __init__(self, message: str, request_id: str | None = None) -> None:
        super().__init__(f"{message} (request {request_id})" if request_id else message)
        self.request_id = request_id


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


@dataclass(frozen=True, slots=True)
class RemoteNode:
    """A node as the backend holds it (see `docs/protocol.md`, "Nodes")."""

    id: str
    parent_id: str | None
    name: str
    kind: str
    mode: int
    mtime_ns: int
    size: int
    version: int
    head_revision: str | None
    target: str | None
    deleted: bool
    namespace_id: str

    @classmethod
    def from_wire(cls, body: dict[str, Any]) -> RemoteNode:
        return cls(**{field: body[field] for field in cls.__dataclass_fields__})


@dataclass(frozen=True, slots=True)
class PreparedChunk:
    """The backend's answer for one plaintext hash: its key, and whether to upload it."""

    hash: str
    key: bytes
    object: str | None
    stored_size: int | None
    readable: bool


@dataclass(frozen=True, slots=True)
class Presigned:
    """A short-lived URL for one object and one method; send `headers` with it."""

    object: str
    url: str
    method: str
    headers: dict[str, str]
    expires_at: str


@dataclass(frozen=True, slots=True)
class OpResult:
    """The answer to one op of a batched push: `status` is an HTTP status code."""

    status: int
    body: dict[str, Any]

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One change of a namespace's journal; `revision` carries the manifest with keys."""

    seq: int
    op: str
    node: RemoteNode
    revision: dict[str, Any] | None
    device_id: str | None
    at: str
    share: dict[str, Any] | None = None
    """For op `share` (a share offered, changed or ended): `{id, owner, role, state}`."""


@dataclass(frozen=True, slots=True)
class JournalPage:
    entries: list[JournalEntry]
    cursor: int
    has_more: bool


@contextmanager
def map_transport_errors() -> Iterator[None]:
    """Turn httpx's transport exceptions into `Offline`, chaining the cause."""
    try:
        yield
    except httpx.TransportError as exc:
        try:
            request: httpx.Request | None = exc.request
        except RuntimeError:  # raised before a request existed
            request = None
        raise Offline(f"backend unreachable: {_reason(exc)}", _request_id_of(request)) from exc


def _reason(exc: BaseException) -> str:
    """The most telling message in an exception's chain: under trio a TLS failure arrives
    as a bare ConnectError(BrokenResourceError()) whose cause is the `ssl` error."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return f"TLS: {seen} (see --ca-file or SSL_CERT_FILE)"
        seen = seen.__cause__ or seen.__context__
    return str(exc) or repr(exc)


def raise_for_error(response: httpx.Response) -> None:
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
    raise ApiError(
        response.status_code,
        code,
        detail,
        body,
        _retry_after(response),
        _answered_request_id(response),
    )


def _answered_request_id(response: httpx.Response) -> str | None:
    """The id the request sent, or the one the backend echoes (it made one up)."""
    try:
        sent = _request_id_of(response.request)
    except RuntimeError:  # a Response built without its request
        sent = None
    return sent or response.headers.get(REQUEST_ID_HEADER)


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return float(response.headers["retry-after"])
    except (KeyError, ValueError):
        return None


class ApiClient:
    """Calls the backend's routes; one instance per server (and token, if any)."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self._http = http

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        with map_transport_errors():
            response = await self._http.request(method, API_PREFIX + path, **kwargs)
        raise_for_error(response)
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

    async def node(self, node_id: str) -> RemoteNode:
        return RemoteNode.from_wire(await self._call("GET", f"/nodes/{node_id}"))

    async def children(
        self, node_id: str, cursor: str | None = None, page_size: int = 1000
    ) -> tuple[list[RemoteNode], str | None]:
        params: dict[str, Any] = {"page_size": page_size}
        if cursor:
            params["cursor"] = cursor
        body = await self._call("GET", f"/nodes/{node_id}/children", params=params)
        return [RemoteNode.from_wire(item) for item in body["items"]], body.get("next_cursor")

    async def revision(self, revision_id: str) -> dict[str, Any]:
        body: dict[str, Any] = await self._call("GET", f"/revisions/{revision_id}")
        return body

    async def revisions(self, node_id: str) -> list[dict[str, Any]]:
        body = await self._call("GET", f"/nodes/{node_id}/revisions")
        return list(body["items"])

    async def commit(
        self,
        node_id: str,
        revision_id: str,
        base_revision: str | None,
        manifest: dict[str, Any],
        mtime_ns: int,
    ) -> dict[str, Any]:
        """Commit a new revision (idempotent by `revision_id`); answers `{node, revision}`."""
        body = {
            "revision_id": revision_id,
            "base_revision": base_revision,
            "mtime_ns": mtime_ns,
            **manifest,
        }
        answer: dict[str, Any] = await self._call("POST", f"/nodes/{node_id}/revisions", json=body)
        return answer

    async def push_changes(self, ops: list[dict[str, Any]]) -> list[OpResult]:
        """Send a batch of ops; each is answered on its own (see protocol "Batched changes")."""
        # In order or not at all: an op after a refused one may depend on it.
        body = await self._call("POST", "/changes", json={"ops": ops, "stop_at_refusal": True})
        return [OpResult(int(r["status"]), r) for r in body["results"]]

    async def prepare_chunks(self, hashes: Sequence[str]) -> list[PreparedChunk]:
        body = await self._call("POST", "/chunks/prepare", json={"hashes": list(hashes)})
        return [
            PreparedChunk(
                c["hash"],
                base64.b64decode(c["key"]),
                c.get("object"),
                c.get("stored_size"),
                bool(c["readable"]),
            )
            for c in body["chunks"]
        ]

    async def upload_urls(self, objects: Sequence[tuple[str, int]]) -> list[Presigned]:
        wire = [{"object": name, "size": size} for name, size in objects]
        body = await self._call("POST", "/chunks/upload-urls", json={"objects": wire})
        return [_presigned(u) for u in body["urls"]]

    async def hold_chunks(self, chunks: Sequence[tuple[str, str, int]]) -> set[str]:
        """Tell the backend that these `(hash, object, plaintext size)` chunks are uploaded,
        so that `prepare` answers them as present if the upload is resumed before a commit
        names them (`docs/protocol.md`, "Resumable uploads"); the objects it now holds."""
        wire = [{"hash": h, "object": o, "size": n} for h, o, n in chunks]
        body = await self._call("POST", "/chunks/hold", json={"chunks": wire})
        return {str(item["object"]) for item in body["held"]}

    async def read_urls(self, objects: Sequence[str]) -> list[Presigned]:
        body = await self._call("POST", "/chunks/read-urls", json={"objects": list(objects)})
        return [_presigned(u) for u in body["urls"]]

    async def journal(self, namespace_id: str, after: int, limit: int = 500) -> JournalPage:
        body = await self._call(
            "GET", f"/journal/{namespace_id}", params={"after": after, "limit": limit}
        )
        entries = [
            JournalEntry(
                seq=e["seq"],
                op=e["op"],
                node=RemoteNode.from_wire(e["node"]),
                revision=e.get("revision"),
                device_id=e.get("device_id"),
                at=e["at"],
                share=e.get("share"),
            )
            for e in body["entries"]
        ]
        return JournalPage(entries, int(body["cursor"]), bool(body["has_more"]))

    # -- versions and trash (mountfs.transport.versions) ---------------------------------

    async def versions(self, node_id: str) -> list[RemoteVersion]:
        body = await self._call("GET", f"/nodes/{node_id}/versions")
        return [RemoteVersion.from_wire(item) for item in body["items"]]

    async def all_children(self, node_id: str) -> list[HistoryChild]:
        body = await self._call("GET", f"/nodes/{node_id}/all-children")
        return [HistoryChild.from_wire(item) for item in body["items"]]

    async def resolve(self, path: str) -> RemoteNode:
        return RemoteNode.from_wire(await self._call("GET", "/resolve", params={"path": path}))

    async def restore(
        self, node_id: str, revision_id: str | None = None, at: str | None = None
    ) -> RestoreReport:
        body = {"revision_id": revision_id, "at": at}
        answer = await self._call("POST", f"/nodes/{node_id}/restore", json=body)
        return RestoreReport.from_wire(answer)

    async def usage(self, node_id: str) -> tuple[int, int]:
        """(bytes, files) below a folder, or a file's size and 1 (`mountfs du`)."""
        body = await self._call("GET", f"/nodes/{node_id}/usage")
        return int(body["bytes"]), int(body["files"])

    async def trash(self) -> list[TrashItem]:
        body = await self._call("GET", "/trash")
        return [TrashItem.from_wire(item) for item in body["items"]]

    async def purge(self, node_ids: Sequence[str] | None = None) -> PurgeReport:
        ids = list(node_ids) if node_ids is not None else None
        return PurgeReport.from_wire(
            await self._call("POST", "/trash/purge", json={"node_ids": ids})
        )

    # -- shares and public links (mountfs.transport.sharing) -----------------------------

    async def share(self, node_id: str, account: str, role: str) -> RemoteShare:
        body = {"account": account, "role": role}
        return RemoteShare.from_wire(
            await self._call("POST", f"/nodes/{node_id}/shares", json=body)
        )

    async def members(self, node_id: str) -> Members:
        body = await self._call("GET", f"/nodes/{node_id}/shares")
        return Members(body["owner"], [RemoteShare.from_wire(s) for s in body["shares"]])

    async def shares(self) -> tuple[list[RemoteShare], list[RemoteShare]]:
        """(incoming, outgoing) shares of this account."""
        body = await self._call("GET", "/shares")
        return (
            [RemoteShare.from_wire(s) for s in body["incoming"]],
            [RemoteShare.from_wire(s) for s in body["outgoing"]],
        )

    async def accept_share(
        self, share_id: str, parent_id: str | None = None, name: str | None = None
    ) -> RemoteShare:
        body = {k: v for k, v in (("parent_id", parent_id), ("name", name)) if v is not None}
        answer = await self._call("POST", f"/shares/{share_id}/accept", json=body)
        return RemoteShare.from_wire(answer)

    async def revoke_share(self, share_id: str) -> RemoteShare:
        return RemoteShare.from_wire(await self._call("DELETE", f"/shares/{share_id}"))

    async def namespaces(self) -> list[Followed]:
        """The namespaces to follow besides the account's own (shares), see protocol.md."""
        body = await self._call("GET", "/namespaces")
        return [Followed.from_wire(item) for item in body["namespaces"]]

    async def preferences(self) -> dict[str, Any]:
        body: dict[str, Any] = await self._call("GET", "/me/preferences")
        return body

    async def set_preferences(self, auto_accept_shares: bool) -> dict[str, Any]:
        body: dict[str, Any] = await self._call(
            "PATCH", "/me/preferences", json={"auto_accept_shares": auto_accept_shares}
        )
        return body

    async def create_link(
        self,
        node_id: str,
        expires_in: int | None = None,
        password: str | None = None,
        max_downloads: int | None = None,
    ) -> RemoteLink:
        body = {
            k: v
            for k, v in (
                ("expires_in", expires_in),
                ("password", password),
                ("max_downloads", max_downloads),
            )
            if v is not None
        }
        return RemoteLink.from_wire(await self._call("POST", f"/nodes/{node_id}/links", json=body))

    async def links(self) -> list[RemoteLink]:
        body = await self._call("GET", "/links")
        return [RemoteLink.from_wire(item) for item in body["links"]]

    async def revoke_link(self, link_id: str) -> RemoteLink:
        return RemoteLink.from_wire(await self._call("DELETE", f"/links/{link_id}"))

    async def delete_account(self, password: str) -> None:
        await self._call("POST", "/me/delete", json={"password": password})

    @asynccontextmanager
    async def watch(
        self,
        namespace_id: str,
        after: int,
        heartbeat: int = WATCH_HEARTBEAT_S,
        *,
        followed: bool = False,
    ) -> AsyncIterator[AsyncIterator[tuple[str, int]]]:
        """The push channel (protocol.md, "Push channel"): journal positions past `after`.

        Yields, once the backend has accepted the watch, an iterator of the `(namespace,
        position)` pairs it announces; the iteration ends when the backend ends the stream.
        `followed`: also the journals of the shares the account follows (own namespace
        only). A refusal raises `ApiError`; a connection that fails, or stays silent for
        longer than two heartbeats, raises `Offline` (also from the iteration).
        """
        path = f"{API_PREFIX}/journal/{namespace_id}/watch"
        params: dict[str, int | str] = {"after": after, "heartbeat": heartbeat}
        if followed:
            params["followed"] = "true"
        timeout = httpx.Timeout(30.0, connect=5.0, read=2 * heartbeat + 5)
        with map_transport_errors():
            async with self._http.stream("GET", path, params=params, timeout=timeout) as answer:
                if not answer.is_success:
                    await answer.aread()
                    raise_for_error(answer)
                yield _positions(events(answer.aiter_lines()))


async def _positions(stream: AsyncIterator[Event]) -> AsyncIterator[tuple[str, int]]:
    async for event in stream:
        body = json.loads(event.data)
        yield str(body["namespace_id"]), int(body["position"])


def _presigned(body: dict[str, Any]) -> Presigned:
    return Presigned(
        body["object"],
        body["url"],
        body["method"],
        dict(body.get("headers") or {}),
        body["expires_at"],
    )


def tls_verify(ca_file: str | None) -> ssl.SSLContext | bool:
    """What both HTTP clients verify TLS servers with: httpx's default (the certifi bundle,
    or `$SSL_CERT_FILE` / `$SSL_CERT_DIR` when set) when `ca_file` is None; else that same
    trust plus the CA in `ca_file` (a deployment's private CA, from `mountfs login
    --ca-file`), so a private API and a public S3 endpoint both verify."""
    if ca_file is None:
        return True
    if cert_file := os.environ.get("SSL_CERT_FILE"):
        context = ssl.create_default_context(cafile=cert_file)
    elif cert_dir := os.environ.get("SSL_CERT_DIR"):
        context = ssl.create_default_context(capath=cert_dir)
    else:
        context = ssl.create_default_context(cafile=certifi.where())
    context.load_verify_locations(cafile=ca_file)
    return context


def api_http(
    server: str, token: str | None = None, ca_file: str | None = None
) -> httpx.AsyncClient:
    """The HTTP client for the backend's API, authenticated with `token` when given.

    TLS verification: see `tls_verify`. The caller closes it (`aclose()`, or `async with`).
    """
    auth = BearerAuth(token) if token else None
    return httpx.AsyncClient(
        base_url=server.rstrip("/"),
        auth=auth,
        timeout=DEFAULT_TIMEOUT,
        verify=tls_verify(ca_file),
        event_hooks={"request": [_stamp_request_id]},
    )


@asynccontextmanager
async def open_api(
    server: str, token: str | None = None, ca_file: str | None = None
) -> AsyncIterator[ApiClient]:
    """An `ApiClient` for `server` for the length of the block (see `api_http`)."""
    async with api_http(server, token, ca_file) as http:
        yield ApiClient(http)
