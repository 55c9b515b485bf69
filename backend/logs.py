"""The backend's logs: one JSON object per line (or text for a terminal), and request ids.

Why: behind a load balancer one user action touches several instances, and the only way
to follow it through their logs (and to match a client's "request abc failed" with the
server's side) is an id that both ends log. So:

- Every HTTP request gets an id: the client's `X-Request-Id` when it sends a valid one
  (1–128 characters of `A-Z a-z 0-9 . _ : -`, so nothing can inject into a log line or a
  header), else a new random one. The answer carries it back in `X-Request-Id`, 500s
  included. The mountfs client sends one per logical call (its retries share it) and names
  it in its own error messages.
- While the request runs, every log record made for it (in the event loop or in a worker
  thread: the context variable is copied into the threadpool) carries `request_id`, the
  `route` template, and, once the bearer token is checked, `account_id` and `device_id`
  (`note_caller`, from `backend.api.deps.current_device`).
- `RequestLogMiddleware` writes one line per answered request (`logger` `backend.access`,
  with `method`, `route`, `status`, `duration_ms`): always for a 5xx (WARNING; the
  exception itself, if any, is logged at ERROR by `backend.api.errors`), and for every
  request with `--access-log` (INFO).

Formats (`--log-format`, `Settings.log_format_in_use`): `json` — one object per line with
`time` (UTC, ISO 8601, milliseconds), `level`, `logger`, `message`, then the request's
fields when there is one, the record's extra fields, and `exc` (the formatted traceback,
newlines escaped by JSON, so one record stays one line); `text` — `date time LEVEL logger:
message`, with ` [request ID]` appended inside a request (the format the test suite's log
scanner, `tests.support.backend.log_problems`, reads). `auto`, the default, is JSON on
PostgreSQL (a cluster: logs go to a collector) and text on SQLite (one machine: a human
reads them). uvicorn's own loggers go through the same handler in JSON mode.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import uuid
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "REQUEST_ID_HEADER",
    "JsonFormatter",
    "RequestContext",
    "RequestLogMiddleware",
    "TextFormatter",
    "configure",
    "current",
    "note_caller",
    "valid_request_id",
]

REQUEST_ID_HEADER = "x-request-id"
_VALID_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
_EXTRA_FIELDS = ("method", "status", "duration_ms", "operation", "outcome")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

access_log = logging.getLogger("backend.access")


@dataclass(slots=True)
class RequestContext:
    """What the log records of one request carry; filled in as the request proceeds."""

    request_id: str
    route: str | None = None
    account_id: str | None = None
    device_id: str | None = None


_CURRENT: ContextVar[RequestContext | None] = ContextVar("mountfs_request", default=None)


def current() -> RequestContext | None:
    """The request being served by this task or thread, if any."""
    return _CURRENT.get()


def note_caller(account_id: str, device_id: str) -> None:
    """Record the authenticated caller on the current request (no-op outside one).

    Called from a worker thread: the context object is shared with the event loop's copy,
    so the access line written at the end sees it too."""
    context = _CURRENT.get()
    if context is not None:
        context.account_id = account_id
        context.device_id = device_id


def valid_request_id(value: str | None) -> str | None:
    """`value` if it is an acceptable request id, else None."""
    if value is not None and _VALID_ID.fullmatch(value):
        return value
    return None


def _request_fields() -> dict[str, str]:
    context = _CURRENT.get()
    if context is None:
        return {}
    fields = {"request_id": context.request_id}
    if context.route is not None:
        fields["route"] = context.route
    if context.account_id is not None:
        fields["account_id"] = context.account_id
    if context.device_id is not None:
        fields["device_id"] = context.device_id
    return fields


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        body.update(_request_fields())
        for name in _EXTRA_FIELDS:
            if name in record.__dict__:
                body[name] = record.__dict__[name]
        if record.exc_info:
            body["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            body["stack"] = self.formatStack(record.stack_info)
        return json.dumps(body, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """`date time LEVEL logger: message [request ID]`, for a terminal."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        line = super().formatMessage(record)
        context = _CURRENT.get()
        return f"{line} [request {context.request_id}]" if context is not None else line


def configure(level: str, fmt: Literal["json", "text"]) -> None:
    """Send every logger's records to stderr in `fmt` at `level` (replacing earlier set-up;
    safe to call again in each worker process)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)


class RequestLogMiddleware:
    """Pure ASGI middleware: the request id (read, made, echoed), the request's log context,
    and the access line (see the module docstring).

    An exception that escapes the app is answered here, by the app's own `Exception`
    handler (`backend.api.errors`, which logs it at ERROR with the request's fields), so
    that the 500 carries the request id too; Starlette's outer error middleware would
    answer without it.
    """

    def __init__(self, app: ASGIApp, *, log_every_request: bool) -> None:
        self.app = app
        self.log_every_request = log_every_request

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = None
        for name, value in scope.get("headers", ()):
            if name == b"x-request-id":
                given = valid_request_id(value.decode("latin-1"))
                break
        context = RequestContext(request_id=given or uuid.uuid4().hex)
        _CURRENT.set(context)  # this request's task only; its threads get copies
        echoed = (b"x-request-id", context.request_id.encode())
        started = time.perf_counter()
        status: int | None = None

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                context.route = _route_of(scope)
                message = {**message, "headers": [*message.get("headers", ()), echoed]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            handler = _exception_handler(scope)
            if status is not None or handler is None:
                raise
            response = await handler(Request(scope, receive), exc)
            await response(scope, receive, send_with_id)
        finally:
            if context.route is None:
                context.route = _route_of(scope)
            self._access(scope, status or 500, time.perf_counter() - started)

    def _access(self, scope: Scope, status: int, seconds: float) -> None:
        if status < 500 and not self.log_every_request:
            return
        method = str(scope.get("method", ""))
        access_log.log(
            logging.WARNING if status >= 500 else logging.INFO,
            "%s %s %d",
            method,
            scope.get("path", ""),
            status,
            extra={"method": method, "status": status, "duration_ms": round(seconds * 1000, 2)},
        )


def _exception_handler(scope: Scope) -> Any:
    app = scope.get("app")
    handlers = getattr(app, "exception_handlers", {})
    return handlers.get(Exception) or handlers.get(500)


def _route_of(scope: Scope) -> str:
    from backend.api.metrics import route_of  # the one place that names routes

    return route_of(scope)
