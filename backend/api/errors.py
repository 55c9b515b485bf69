"""The one place where errors become HTTP answers (`{"error", "detail", ...}`).

`STATUS` maps every domain exception (services and block store) to its status and wire
code (docs/protocol.md § Errors); `error_body` builds the JSON; `install` registers the
handlers for domain errors, Starlette's HTTP errors (unknown route, wrong method),
FastAPI's validation errors (400 `bad_request`, not 422) and anything unexpected (logged,
then 500 `internal` — for input of any kind that is a bug). The batched-changes route uses
`error_body` to answer a failed op exactly as the single route would have.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.routing import Match

from backend.api.schemas import ErrorOut, NodeOut, compact
from backend.services import errors as svc
from backend.store import base as store
from backend.store.local import ObjectTooLarge

__all__ = ["STATUS", "BodyTooLarge", "error_body", "error_response", "install", "responses"]

log = logging.getLogger(__name__)


class BodyTooLarge(HTTPException):
    """Raised by the body-size middleware's receive wrapper (see `backend.api.limits`).

    An HTTPException, because FastAPI re-raises those from body parsing untouched."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than {limit} bytes")


# Most specific classes first: the first isinstance match wins.
STATUS: list[tuple[type[Exception], int, str]] = [
    (svc.InvalidName, 400, "invalid_name"),
    (svc.BadRequest, 400, "bad_request"),
    (svc.Unauthorized, 401, "unauthorized"),
    (svc.RegistrationClosed, 403, "registration_closed"),
    (svc.Forbidden, 403, "forbidden"),
    (svc.NotFound, 404, "not_found"),
    (svc.Conflict, 409, "conflict"),
    (svc.NameTaken, 409, "name_taken"),
    (svc.CrossShare, 409, "cross_share"),
    (svc.NestedShare, 409, "nested_share"),
    (svc.RateLimited, 429, "rate_limited"),
    (svc.Cycle, 409, "cycle"),
    (svc.NotEmpty, 409, "not_empty"),
    (svc.NotADirectory, 409, "not_a_directory"),
    (svc.MissingChunks, 409, "missing_chunks"),
    (svc.IdTaken, 409, "id_taken"),
    (svc.QuotaExceeded, 409, "quota_exceeded"),
    (svc.NameExists, 409, "name_exists"),
    (svc.FileTooLarge, 413, "file_too_large"),
    (store.ChecksumMismatch, 400, "checksum_mismatch"),
    (store.BadSignature, 403, "bad_signature"),
    (ObjectTooLarge, 413, "body_too_large"),
]

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
}


def error_body(error: svc.ServiceError | store.StoreError) -> tuple[int, ErrorOut]:
    """Status and body for a domain error."""
    for cls, status, code in STATUS:
        if isinstance(error, cls):
            body = ErrorOut(error=code, detail=error.detail)
            if isinstance(error, svc.Refused) and error.current is not None:
                body.current = NodeOut.of(error.current)
            if isinstance(error, svc.MissingChunks):
                body.missing = list(error.missing)
            return status, body
    raise TypeError(f"no status for {type(error).__name__}")  # a missing table row is a bug


def error_response(
    status: int, body: ErrorOut, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(compact(body), status, headers)


def responses(*statuses: int, ok: dict[str, Any] | None = None) -> dict[int | str, dict[str, Any]]:
    """OpenAPI declarations of the error answers a route can give (for `responses=`);
    `ok` adds a 200 answer besides the route's main status (e.g. 201 with 200 on replay)."""
    declared: dict[int | str, dict[str, Any]] = {
        status: {"model": ErrorOut, "description": _DESCRIPTIONS[status]} for status in statuses
    }
    if ok is not None:
        declared[200] = ok
    return declared


_DESCRIPTIONS = {
    400: "Malformed request (`bad_request`, `invalid_name`, `checksum_mismatch`).",
    401: "Missing, unknown or revoked bearer token (`unauthorized`).",
    403: "Not allowed (`forbidden`, `registration_closed`, `bad_signature`).",
    404: "No such resource, or it belongs to another account (`not_found`).",
    409: "Refused by the current state; `current` or `missing` tell why.",
    413: "Body or declared file size above the limit (`body_too_large`, `file_too_large`).",
    429: "Too many failed password attempts (`rate_limited`); see `Retry-After`.",
}


async def _domain_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, svc.ServiceError | store.StoreError)
    return error_response(*error_body(exc), headers=retry_after(exc))


def retry_after(exc: Exception) -> dict[str, str] | None:
    """`Retry-After` for a rate-limited answer (RFC 9110 § 10.2.3), else no header."""
    if isinstance(exc, svc.RateLimited):
        return {"Retry-After": str(exc.retry_after)}
    return None


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "bad_request" if exc.status_code < 500 else "internal")
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = ", ".join(_allowed_methods(request))
    return error_response(exc.status_code, ErrorOut(error=code, detail=detail), headers)


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path. Starlette lists only the first
    matching route's methods, but e.g. /nodes/{id} has GET, PATCH and DELETE as separate
    routes; so ask the router, one method at a time."""
    routes = request.app.router.routes
    return [
        method
        for method in _METHODS
        if any(r.matches({**request.scope, "method": method})[0] is Match.FULL for r in routes)
    ]


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    # A name refused by the edge's name validator keeps the protocol's specific code.
    names = any(problem.get("type") == "invalid_name" for problem in exc.errors())
    code = "invalid_name" if names else "bad_request"
    return error_response(400, ErrorOut(error=code, detail=describe_validation(exc)))


def describe_validation(exc: RequestValidationError) -> str:
    """`field.path: message` for the first problems, e.g. `body.mode: Input should be ...`."""
    parts = []
    for problem in exc.errors()[:3]:
        loc = ".".join(str(p) for p in problem.get("loc", ()))
        parts.append(f"{loc}: {problem.get('msg', 'invalid')}")
    more = len(exc.errors()) - 3
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error in %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, ErrorOut(error="internal", detail="internal server error"))


def install(app: FastAPI) -> None:
    """Register every handler on `app`."""
    app.add_exception_handler(svc.ServiceError, _domain_error)
    app.add_exception_handler(store.StoreError, _domain_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)
