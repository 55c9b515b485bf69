"""Public links in a browser or `curl`: `/s/{token}` (docs/protocol.md § Public links).

- `GET /s/{token}`: the page (file: name, size, download button; folder: every file with
  its own download link and a download-all zip); `?dl=1` answers the bytes instead (a
  file's content, or a folder's zip), as Dropbox's `?dl=1` does.
- `POST /s/{token}`: the password form. Right: 303 back to the page with a cookie that
  unlocks this link for an hour; wrong: 401 with the form again. Scripts send the password
  as HTTP Basic instead (`curl -u :PASSWORD`).
- `GET /s/{token}/files/{node_id}`: one file of a folder link.

Answers: unknown and revoked tokens are the same 404 page (tokens cannot be probed);
expired and used-up links are 410; a protected link without the password is 401;
too many wrong passwords, per link and per source address, are 429 with `Retry-After`.
Downloads stream one chunk at a time and honour a single `Range` (206; 416 when it cannot
be satisfied), so browsers and `curl -C -` resume.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import mimetypes
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import RedirectResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from backend.api import pages
from backend.api.deps import CurrentSettings, Db, Keys, Store
from backend.security import Keyring, verify_password
from backend.services import content, links, ratelimit
from backend.services.errors import BadRequest, NotFound, RateLimited
from backend.services.types import Node, NodeId, NodeKind

__all__ = ["LINK_PATH", "router"]

LINK_PATH = "/s"
UNLOCK_SECONDS = 3600
_HTML = {"text/html": {"schema": {"type": "string"}}}
_BYTES = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
_PAGES: dict[int | str, dict[str, Any]] = {
    status: {"description": text, "content": _HTML}
    for status, text in (
        (401, "A password is needed (the form)."),
        (404, "No such link, or it was revoked (one answer for both)."),
        (410, "The link has expired or reached its download limit."),
        (416, "The Range cannot be satisfied."),
        (429, "Too many wrong passwords; see Retry-After."),
    )
}

router = APIRouter(prefix=LINK_PATH, tags=["public links"])

_DOWNLOAD_HEADERS = {
    "Cache-Control": "private, no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Shared bytes come from anyone: should a browser ever render one (an .html file),
    # it runs sandboxed, with no access to this origin.
    "Content-Security-Policy": "sandbox; default-src 'none'",
}

Token = Annotated[str, Path(max_length=256)]


@dataclass(frozen=True, slots=True)
class _Opened:
    link: links.Link
    node: Node


def _gone_page(error: Exception) -> Response:
    if isinstance(error, links.LinkExpired):
        return pages.message_page("Link expired", "This link has expired.", 410)
    if isinstance(error, links.LinkExhausted):
        return pages.message_page(
            "Download limit reached", "This link has reached its download limit.", 410
        )
    if isinstance(error, RateLimited):
        return pages.message_page(
            "Too many attempts",
            f"Too many wrong passwords. Try again in {error.retry_after} seconds.",
            429,
            {"Retry-After": str(error.retry_after)},
        )
    return pages.message_page(
        "Link not found", "This link does not exist or was revoked by its owner.", 404
    )


def _open(db: Db, token: str) -> _Opened:
    with db.read() as conn:
        found, target = links.resolve(conn, token)
    return _Opened(found, target)


def _unlock_key(keys: Keyring) -> bytes:
    """A key for unlock cookies, derived from the convergence secret for this one use."""
    return hmac.digest(keys.convergence_secret, b"mountfs-link-unlock-v1", "sha256")


def _cookie_name(found: links.Link) -> str:
    return "mfs_unlock_" + found.id.replace("-", "")


def _unlock_value(keys: Keyring, found: links.Link, expires: int) -> str:
    mac = hmac.new(_unlock_key(keys), f"{found.id}.{expires}".encode(), hashlib.sha256)
    return f"{expires}.{mac.hexdigest()}"


def _cookie_ok(request: Request, keys: Keyring, found: links.Link) -> bool:
    value = request.cookies.get(_cookie_name(found), "")
    expires_text, _, _ = value.partition(".")
    if not expires_text.isdigit() or int(expires_text) < time.time():
        return False
    return hmac.compare_digest(value, _unlock_value(keys, found, int(expires_text)))


def _basic_password(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return decoded.partition(":")[2]


def _check_password(
    db: Db, settings: CurrentSettings, request: Request, found: links.Link, password: str
) -> bool:
    """Verify a link password under the rate limits (raises RateLimited)."""
    limits = ratelimit.limits_of(settings)
    keys = [f"link:{found.id}", ratelimit.address_key(request)]
    ratelimit.check(db, keys, limits)
    if found.password_hash is not None and verify_password(found.password_hash, password):
        return True
    ratelimit.record_failure(db, keys, limits)
    return False


def _unlocked(
    db: Db, settings: CurrentSettings, keys: Keyring, request: Request, found: links.Link
) -> bool:
    if not found.has_password or _cookie_ok(request, keys, found):
        return True
    password = _basic_password(request)
    return password is not None and _check_password(db, settings, request, found, password)


@router.get(
    "/{token}",
    response_class=Response,
    responses={
        200: {"description": "The page, or with dl=1 the bytes.", "content": {**_HTML, **_BYTES}},
        206: {"description": "Part of the bytes (Range).", "content": _BYTES},
        **_PAGES,
    },
)
def open_link(
    token: Token,
    request: Request,
    db: Db,
    store: Store,
    keys: Keys,
    settings: CurrentSettings,
    dl: Annotated[int, Query(ge=0, le=1)] = 0,
) -> Response:
    """The link's page, or its bytes with `dl=1` (a folder's as a zip)."""
    try:
        opened = _open(db, token)
        if not _unlocked(db, settings, keys, request, opened.link):
            return pages.password_page()
        if dl:
            if opened.node.kind is NodeKind.DIR:
                return _zip(db, store, keys, opened)
            return _download(db, store, keys, request, opened.link, opened.node)
        links.check_not_exhausted(opened.link)
        return _page(db, token, opened)
    except (NotFound, links.LinkExpired, links.LinkExhausted, RateLimited) as error:
        return _gone_page(error)


@router.post(
    "/{token}",
    response_class=Response,
    responses={303: {"description": "Unlocked: back to the page with a cookie."}, **_PAGES},
)
async def unlock_link(
    token: Token, request: Request, db: Db, keys: Keys, settings: CurrentSettings
) -> Response:
    """The password form's target (`application/x-www-form-urlencoded`, field `password`)."""
    body = await request.body()
    try:
        fields = parse_qs(body.decode("utf-8", "replace"), max_num_fields=8)
    except ValueError:  # more fields than a password form has
        fields = {}
    password = (fields.get("password") or [""])[0]
    try:
        opened = await run_in_threadpool(_open, db, token)
        if not opened.link.has_password:
            return RedirectResponse(f"{LINK_PATH}/{quote(token)}", 303)
        ok = await run_in_threadpool(_check_password, db, settings, request, opened.link, password)
        if not ok:
            return pages.password_page("Wrong password. Try again.")
    except (NotFound, links.LinkExpired, RateLimited) as error:
        return _gone_page(error)
    expires = int(time.time()) + UNLOCK_SECONDS
    answer = RedirectResponse(f"{LINK_PATH}/{quote(token)}", 303)
    answer.set_cookie(
        _cookie_name(opened.link),
        _unlock_value(keys, opened.link, expires),
        max_age=UNLOCK_SECONDS,
        path=f"{LINK_PATH}/{quote(token)}",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    answer.headers.update(pages.SECURITY_HEADERS)
    return answer


@router.get(
    "/{token}/files/{node_id}",
    response_class=Response,
    responses={
        200: {"description": "The file's bytes.", "content": _BYTES},
        206: {"description": "Part of the file (Range).", "content": _BYTES},
        **_PAGES,
    },
)
def download_file(
    token: Token,
    node_id: Annotated[uuid.UUID, Path()],
    request: Request,
    db: Db,
    store: Store,
    keys: Keys,
    settings: CurrentSettings,
) -> Response:
    """One file of a folder link (or the file of a file link)."""
    try:
        opened = _open(db, token)
        if not _unlocked(db, settings, keys, request, opened.link):
            return pages.password_page()
        with db.read() as conn:
            item = links.node_in_link(conn, opened.link, NodeId(str(node_id)))
        if item.kind is not NodeKind.FILE:
            raise NotFound("not a file")
        return _download(db, store, keys, request, opened.link, item)
    except (NotFound, links.LinkExpired, links.LinkExhausted, RateLimited) as error:
        return _gone_page(error)


def _page(db: Db, token: str, opened: _Opened) -> Response:
    base = f"{LINK_PATH}/{quote(token)}"
    if opened.node.kind is NodeKind.FILE:
        return pages.file_page(opened.node.name, opened.node.size, f"{base}?dl=1")
    with db.read() as conn:
        files = links.folder_files(conn, opened.node)
    rows = [pages.FileRow(f.path, f.node.size, f"{base}/files/{f.node.id}") for f in files]
    return pages.folder_page(
        opened.node.name, rows, f"{base}?dl=1", len(files) >= links.MAX_LISTING
    )


def _disposition(name: str) -> str:
    """`attachment` with an ASCII fallback name (no quotes, backslashes or control
    characters: a name may hold CR/LF, which must never reach a header) and the exact
    name in RFC 5987 form."""
    ascii_name = "".join(c if " " <= c < "\x7f" and c not in '"\\' else "_" for c in name)
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}"


def _byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """[start, end) of a single `bytes=` range; None = the whole file. Raises BadRequest
    when the range cannot be satisfied (416)."""
    if not header or not header.startswith("bytes=") or "," in header:
        return None
    first, _, last = header[len("bytes=") :].strip().partition("-")
    try:
        if first == "":
            length = int(last)
            if length <= 0:
                raise BadRequest("empty suffix range")
            return max(0, size - length), size
        start = int(first)
        end = int(last) + 1 if last else size
    except ValueError:
        return None  # a malformed Range is ignored (RFC 9110 § 14.2)
    if start >= size or end <= start:
        raise BadRequest("range not satisfiable")
    return start, min(end, size)


def _download(
    db: Db, store: Store, keys: Keyring, request: Request, found: links.Link, item: Node
) -> Response:
    size = item.size
    try:
        wanted = _byte_range(request.headers.get("range"), size)
    except BadRequest:
        return pages.message_page(
            "Range not satisfiable",
            "The requested range is outside the file.",
            416,
            {"Content-Range": f"bytes */{size}"},
        )
    start, end = wanted if wanted is not None else (0, size)
    with db.write() as conn:
        refs = links.file_chunks(conn, item)
        # Counting: a download starts at byte 0; a resumed one (a later range) is not a new
        # download. But with a limit set, every request counts: otherwise ranges that skip
        # byte 0 would fetch the file any number of times.
        if start == 0 or found.max_downloads is not None:
            links.count_download(conn, found)
        else:
            links.check_not_exhausted(found)
    headers = {
        "Content-Disposition": _disposition(item.name),
        "Content-Length": str(end - start),
        "Accept-Ranges": "bytes",
        **_DOWNLOAD_HEADERS,
    }
    status = 200
    if wanted is not None:
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    media = mimetypes.guess_type(item.name)[0] or "application/octet-stream"
    body: Iterator[bytes] = content.read_range(store, keys, refs, start, end)
    return StreamingResponse(body, status, headers, media_type=media)


def _zip(db: Db, store: Store, keys: Keyring, opened: _Opened) -> Response:
    with db.write() as conn:
        files = links.folder_files(conn, opened.node)
        entries = [
            content.ZipEntry(f.path, f.node.size, f.node.mtime_ns, links.file_chunks(conn, f.node))
            for f in files
        ]
        links.count_download(conn, opened.link)
    headers = {"Content-Disposition": _disposition(f"{opened.node.name}.zip"), **_DOWNLOAD_HEADERS}
    return StreamingResponse(
        content.zip_stream(store, keys, entries), 200, headers, media_type="application/zip"
    )
