"""A small typed helper over httpx for tests that drive the backend's HTTP API.

This is test support, not the product client (`mountfs/transport/`): it speaks
`docs/protocol.md` literally, returns the JSON answers as plain dicts so that tests assert
on the wire format itself, and makes every status check explicit (`expect=`), so a test
that wants to see an error simply asks for it.

Chunks here are arbitrary bytes: the backend never decrypts, so `Chunk` fakes the client's
pipeline with a fixed prefix as "encryption". What matters to the backend is that
`object` is the SHA-256 of the bytes that are PUT and that `hash` names the plaintext.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

API = "/api/v1"
PASSWORD = "correct horse battery staple"
FAKE_CIPHER_PREFIX = b"mountfs-test-ciphertext\x00"

Json = dict[str, Any]


def unique_name(prefix: str = "acct") -> str:
    """An account (or file) name no other test uses: `[A-Za-z0-9._-]`, ≤ 64 chars."""
    return f"{prefix[:40]}-{uuid.uuid4().hex[:16]}"


def new_id() -> str:
    """A client-chosen id (UUIDv4 is enough for tests; the contract only asks for a UUID)."""
    return str(uuid.uuid4())


def now_ns() -> int:
    return time.time_ns()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Chunk:
    """One chunk as a client would produce it: a plaintext and its stored bytes."""

    plaintext: bytes

    @property
    def ciphertext(self) -> bytes:
        return FAKE_CIPHER_PREFIX + self.plaintext

    @property
    def hash(self) -> str:
        return sha256_hex(self.plaintext)

    @property
    def object(self) -> str:
        return sha256_hex(self.ciphertext)

    @property
    def size(self) -> int:
        return len(self.plaintext)

    @property
    def stored_size(self) -> int:
        return len(self.ciphertext)

    def ref(self, offset: int) -> Json:
        """The `ChunkRef` naming this chunk at plaintext `offset`."""
        return {
            "offset": offset,
            "size": self.size,
            "hash": self.hash,
            "object": self.object,
            "stored_size": self.stored_size,
        }


MIN_CHUNK_BYTES = 256 * 1024
"""The client's smallest CDC chunk (all but a file's last); the backend bounds the number
of refs per byte with it, so multi-chunk manifests in tests use at least this size."""


def chunks_of(data: bytes, chunk_size: int = MIN_CHUNK_BYTES) -> list[Chunk]:
    """Fixed-size cut (tests need contiguity, not content-defined boundaries)."""
    return [Chunk(data[i : i + chunk_size]) for i in range(0, len(data), chunk_size)]


def manifest(chunks: Sequence[Chunk]) -> list[Json]:
    """Contiguous refs from offset 0, as the contract requires."""
    refs, offset = [], 0
    for chunk in chunks:
        refs.append(chunk.ref(offset))
        offset += chunk.size
    return refs


class UnexpectedStatus(AssertionError):
    """An answer's status was not the one the test expected; the message shows the body."""


class ApiClient:
    """One device's view of the API: a base URL, maybe a bearer token, an httpx client.

    Attributes set by `new_account`/`login`: `name`, `password`, `account_id`, `device_id`.
    Close it (or use it as a context manager) when done; `new_account` clients are closed by
    whoever made them.
    """

    def __init__(self, base_url: str, token: str | None = None, timeout: float = 30.0) -> None:
        self.base_url = base_url
        self.token = token
        self.http = httpx.Client(base_url=base_url, timeout=timeout)
        self.name = ""
        self.password = ""
        self.account_id = ""
        self.device_id = ""

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    # ---- transport -------------------------------------------------------------------

    def auth_headers(self) -> dict[str, str]:
        return {} if self.token is None else {"Authorization": f"Bearer {self.token}"}

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
        auth: bool = True,
    ) -> httpx.Response:
        """Send one request; `path` is relative to `/api/v1` unless it is absolute."""
        url = path if path.startswith(("http://", "https://", "/")) else f"{API}/{path}"
        all_headers = {**(self.auth_headers() if auth else {}), **(headers or {})}
        return self.http.request(
            method, url, json=json, params=params, content=content, headers=all_headers
        )

    def call(self, method: str, path: str, *, expect: int | None = 200, **kw: Any) -> Any:
        """`request`, then check the status (unless `expect` is None) and decode JSON."""
        response = self.request(method, path, **kw)
        if expect is not None and response.status_code != expect:
            raise UnexpectedStatus(describe(response, f"expected {expect}"))
        if not response.content:
            return None
        return response.json()

    # ---- accounts and devices --------------------------------------------------------

    @classmethod
    def new_account(cls, base_url: str, prefix: str = "acct", label: str = "device-1") -> ApiClient:
        """Register a fresh account and log in one device of it."""
        anon = cls(base_url)
        name = unique_name(prefix)
        try:
            anon.call("POST", "accounts", json={"name": name, "password": PASSWORD}, expect=201)
        finally:
            anon.close()
        return cls.login(base_url, name, PASSWORD, label)

    @classmethod
    def login(cls, base_url: str, name: str, password: str, label: str) -> ApiClient:
        client = cls(base_url)
        body = client.call(
            "POST",
            "login",
            json={"name": name, "password": password, "device_label": label},
        )
        client.token = body["token"]
        client.name, client.password = name, password
        client.account_id, client.device_id = body["account_id"], body["device_id"]
        return client

    def another_device(self, label: str = "device-2") -> ApiClient:
        """A second login of the same account: a separate device with its own token."""
        return ApiClient.login(self.base_url, self.name, self.password, label)

    def me(self) -> Json:
        result: Json = self.call("GET", "me")
        return result

    @property
    def root_id(self) -> str:
        return str(self.me()["root_id"])

    @property
    def namespace_id(self) -> str:
        return str(self.me()["namespace_id"])

    # ---- nodes -----------------------------------------------------------------------

    def create_node(
        self,
        parent_id: str,
        name: str,
        kind: str = "file",
        *,
        node_id: str | None = None,
        mode: int | None = None,
        mtime_ns: int | None = None,
        target: str | None = None,
        expect: int | None = 201,
    ) -> Json:
        body: Json = {
            "id": node_id or new_id(),
            "parent_id": parent_id,
            "name": name,
            "kind": kind,
            "mode": mode if mode is not None else (0o755 if kind == "dir" else 0o644),
            "mtime_ns": mtime_ns if mtime_ns is not None else now_ns(),
        }
        if target is not None:
            body["target"] = target
        result: Json = self.call("POST", "nodes", json=body, expect=expect)
        return result

    def mkdir(self, parent_id: str, name: str | None = None) -> Json:
        return self.create_node(parent_id, name or unique_name("dir"), "dir")

    def mkfile(self, parent_id: str, name: str | None = None) -> Json:
        return self.create_node(parent_id, name or unique_name("file"), "file")

    def get_node(self, node_id: str, expect: int | None = 200) -> Json:
        result: Json = self.call("GET", f"nodes/{node_id}", expect=expect)
        return result

    def children_page(
        self, node_id: str, page_size: int | None = None, cursor: str | None = None
    ) -> Json:
        params: dict[str, Any] = {}
        if page_size is not None:
            params["page_size"] = page_size
        if cursor is not None:
            params["cursor"] = cursor
        result: Json = self.call("GET", f"nodes/{node_id}/children", params=params)
        return result

    def list_children(self, node_id: str, page_size: int | None = None) -> list[Json]:
        """Every live child, following `next_cursor` to the end."""
        items: list[Json] = []
        cursor: str | None = None
        for _ in range(100_000):
            page = self.children_page(node_id, page_size, cursor)
            items.extend(page["items"])
            cursor = page.get("next_cursor")
            if not cursor:
                return items
        raise AssertionError("children pagination did not terminate")

    def update_node(
        self, node_id: str, base_version: int, *, expect: int | None = 200, **fields: Any
    ) -> Json:
        result: Json = self.call(
            "PATCH",
            f"nodes/{node_id}",
            json={"base_version": base_version, **fields},
            expect=expect,
        )
        return result

    def delete_node(self, node_id: str, base_version: int, expect: int | None = 200) -> Json:
        result: Json = self.call(
            "DELETE", f"nodes/{node_id}", params={"base_version": base_version}, expect=expect
        )
        return result

    # ---- chunks and blocks -----------------------------------------------------------

    def prepare(self, hashes: Iterable[str]) -> list[Json]:
        body = self.call("POST", "chunks/prepare", json={"hashes": list(hashes)})
        result: list[Json] = body["chunks"]
        return result

    def upload_urls(self, chunks: Iterable[Chunk]) -> list[Json]:
        objects = [{"object": c.object, "size": c.stored_size} for c in chunks]
        body = self.call("POST", "chunks/upload-urls", json={"objects": objects})
        result: list[Json] = body["urls"]
        return result

    def read_urls(self, objects: Iterable[str], expect: int | None = 200) -> Any:
        return self.call("POST", "chunks/read-urls", json={"objects": list(objects)}, expect=expect)

    def send_block(self, entry: Json, data: bytes | None = None) -> httpx.Response:
        """Follow one presigned URL entry (its method and headers), without the bearer."""
        return self.request(
            entry["method"],
            entry["url"],
            content=data,
            headers=dict(entry.get("headers") or {}),
            auth=False,
        )

    def upload(self, chunks: Sequence[Chunk]) -> None:
        """PUT every chunk through its presigned URL (2xx each, or fail the test)."""
        if not chunks:
            return
        by_object = {c.object: c for c in chunks}
        for entry in self.upload_urls(by_object.values()):
            response = self.send_block(entry, by_object[entry["object"]].ciphertext)
            if not response.is_success:
                raise UnexpectedStatus(describe(response, "block PUT failed"))

    def download(self, obj: str) -> bytes:
        (entry,) = self.read_urls([obj])["urls"]
        response = self.send_block(entry)
        if response.status_code != 200:
            raise UnexpectedStatus(describe(response, "block GET failed"))
        return response.content

    # ---- revisions -------------------------------------------------------------------

    def commit_body(
        self,
        chunks: Sequence[Chunk],
        base_revision: str | None,
        *,
        revision_id: str | None = None,
        size: int | None = None,
        mtime_ns: int | None = None,
    ) -> Json:
        return {
            "revision_id": revision_id or new_id(),
            "base_revision": base_revision,
            "size": sum(c.size for c in chunks) if size is None else size,
            "mtime_ns": mtime_ns if mtime_ns is not None else now_ns(),
            "chunks": manifest(chunks),
        }

    def commit(
        self,
        node_id: str,
        chunks: Sequence[Chunk],
        base_revision: str | None,
        *,
        upload: bool = True,
        revision_id: str | None = None,
        expect: int | None = 201,
    ) -> Json:
        """Upload (unless told not to) and commit `chunks` as the node's new content."""
        if upload:
            self.upload(chunks)
        body = self.commit_body(chunks, base_revision, revision_id=revision_id)
        result: Json = self.call("POST", f"nodes/{node_id}/revisions", json=body, expect=expect)
        return result

    def write_file(self, parent_id: str, name: str, data: bytes) -> tuple[Json, Json]:
        """Create a file and commit `data` to it; return `(node, revision)` after commit."""
        node = self.create_node(parent_id, name)
        result = self.commit(node["id"], chunks_of(data), None)
        return result["node"], result["revision"]

    def revisions(self, node_id: str) -> list[Json]:
        result: list[Json] = self.call("GET", f"nodes/{node_id}/revisions")["items"]
        return result

    def revision(self, revision_id: str, expect: int | None = 200) -> Json:
        result: Json = self.call("GET", f"revisions/{revision_id}", expect=expect)
        return result

    # ---- batches and the journal -----------------------------------------------------

    def changes(self, ops: list[Json]) -> list[Json]:
        result: list[Json] = self.call("POST", "changes", json={"ops": ops})["results"]
        return result

    def journal(self, namespace_id: str, after: int = 0, limit: int | None = None) -> Json:
        params: dict[str, Any] = {"after": after}
        if limit is not None:
            params["limit"] = limit
        result: Json = self.call("GET", f"journal/{namespace_id}", params=params)
        return result

    def journal_all(self, namespace_id: str | None = None, after: int = 0) -> list[Json]:
        """Every entry after `after`, following `has_more` to the end."""
        ns = namespace_id or self.namespace_id
        entries: list[Json] = []
        for _ in range(100_000):
            page = self.journal(ns, after)
            entries.extend(page["entries"])
            after = page["cursor"]
            if not page["has_more"]:
                return entries
        raise AssertionError("journal pagination did not terminate")


def describe(response: httpx.Response, why: str) -> str:
    """One line naming the request and the answer, for assertion messages."""
    request = response.request
    body = response.text[:2000]
    return f"{why}: {request.method} {request.url} -> {response.status_code} {body}"


def assert_error(response: httpx.Response, status: int, code: str) -> Json:
    """Check the contract's error shape `{"error", "detail"}` and return the body."""
    assert response.status_code == status, describe(response, f"expected {status} {code}")
    assert response.headers.get("content-type", "").startswith("application/json"), describe(
        response, "error answers are JSON"
    )
    body: Json = response.json()
    assert body.get("error") == code, describe(response, f"expected error {code!r}")
    assert isinstance(body.get("detail"), str), describe(response, "detail must be a string")
    return body


def assert_error_one_of(response: httpx.Response, *allowed: tuple[int, str]) -> Json:
    """`assert_error` where the contract admits more than one reading (the tests say why)."""
    for status, code in allowed:
        if response.status_code == status:
            return assert_error(response, status, code)
    raise AssertionError(describe(response, f"expected one of {allowed}"))
