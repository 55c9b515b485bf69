"""Operational endpoints: `/metrics` (Prometheus), `/healthz` and `/readyz`.

Every instance exposes, in the Prometheus text format:

- `mountfs_http_requests_total{method,route,status}` and
  `mountfs_http_request_duration_seconds{method,route}`: request rate, errors and latency
  per route. `route` is the route's template (`/api/v1/nodes/{node_id}`), never the raw
  path, so the number of series stays bounded; requests that match no route count as
  `unmatched`.
- `mountfs_http_requests_in_flight{route}`: requests whose answer has started and not
  ended. For the push channel's streaming route that is the number of open watch
  connections.
- `mountfs_journal_entries_total{op}`: journal entries this instance committed
  (`op="commit"` are revision commits), counted when their transaction commits, never
  for one that rolled back (SQLAlchemy events on the engine, `instrument_engine`).
- `mountfs_blockstore_request_duration_seconds{operation,outcome}`: latency of every
  request the backend makes to an S3 block store (HeadObject, CopyObject, DeleteObject…;
  `instrument_s3`). Presigning is local CPU and makes none: chunk bytes never pass here.
- `mountfs_blockstore_operation_duration_seconds{store,operation,outcome}`: the block
  store's own operations, for the local store and S3 alike (`finish_upload`,
  `discard_upload_evidence`, `exists`, `delete`, `read_object`; `outcome` ok or error).
  An S3 store that stops answering shows here as errors and long durations (botocore's
  retries included).
- `mountfs_push_connections`: open push channels (accepted watch streams).
- `mountfs_journal_fanout_lag_seconds`: journal lag between instances. Each instance,
  after committing a journal entry, NOTIFYs the others with the entry's position and its
  commit time; the receiver observes how long ago that was when it hears it (and wakes
  its push channels at once). That is the delay a device connected to another instance
  waits beyond its own instance's; a NOTIFY that never arrives shows as no observation
  and is made up for by the periodic re-check (`backend.services.notify`). Needs the
  instances' clocks in sync (NTP); a negative difference counts as 0.
- `mountfs_gc_runs_total{outcome}`, `mountfs_gc_objects_deleted_total`,
  `mountfs_gc_bytes_deleted_total`; `mountfs_scrub_runs_total{outcome}`,
  `mountfs_scrub_objects_checked_total`, `mountfs_scrub_bytes_checked_total`,
  `mountfs_scrub_problems_total{kind}`, `mountfs_scrub_last_problems{kind}` (what the
  last scrub found: alert on `missing` or `corrupt` above 0): passes of the process that
  ran them — the server's maintenance loop (GC every `--maintenance-interval`, a
  read-only scrub every `--scrub-interval` if set); `mountfs admin gc|scrub` report
  theirs on their output instead.

Several worker processes (`--workers N`) each count their own requests; `backend.server`
then points `PROMETHEUS_MULTIPROC_DIR` at a directory shared by the workers and
`/metrics` answers the sum over all of them (prometheus-client's multiprocess mode).

Access: the figures name routes and volumes, not secrets, but they are no business of the
internet. `/metrics` answers peers on loopback (a Prometheus on the same host, or anyone
reaching the instance's own port there), or any peer that sends
`Authorization: Bearer <MOUNTFS_METRICS_TOKEN>`; others get 404, as if it did not exist.
Behind a proxy the peer is the address from `X-Forwarded-For` (uvicorn trusts it from the
loopback proxy only), and the cluster's nginx does not route `/metrics` at all: scrape each
instance on its own port.

`/healthz` says the process serves (for a liveness probe); `/readyz` also runs `SELECT 1`
on the database and answers 503 `not_ready` when that fails, so a load balancer with
active checks takes the instance out while its database is unreachable.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import time
from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy import Connection, Engine, event, text
from sqlalchemy.sql.dml import Insert
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backend import telemetry
from backend.api.routes import API_PREFIX
from backend.db.tables import journal
from backend.settings import Settings

__all__ = ["MetricsMiddleware", "install", "instrument_engine", "instrument_s3"]

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_LATENCY_BUCKETS = telemetry.LATENCY_BUCKETS

REQUESTS = Counter(
    "mountfs_http_requests_total",
    "HTTP requests answered, by route template and status code.",
    ["method", "route", "status"],
)
DURATION = Histogram(
    "mountfs_http_request_duration_seconds",
    "Time from receiving a request to the end of its answer, by route template.",
    ["method", "route"],
    buckets=_LATENCY_BUCKETS,
)
IN_FLIGHT = Gauge(
    "mountfs_http_requests_in_flight",
    "Answers started and not finished (open push connections on the watch route).",
    ["route"],
    multiprocess_mode="livesum",
)
JOURNAL_ENTRIES = Counter(
    "mountfs_journal_entries_total",
    "Journal entries committed by this instance, by op (commit = a new revision).",
    ["op"],
)
STORE_DURATION = Histogram(
    "mountfs_blockstore_request_duration_seconds",
    "Requests to the S3 block store, by S3 operation and outcome (ok, http_NNN, error).",
    ["operation", "outcome"],
    buckets=_LATENCY_BUCKETS,
)

_UNMATCHED = "unmatched"
_WATCH_ROUTE = API_PREFIX + "/journal/{namespace_id}/watch"
_OWN_ROUTES = frozenset({"/metrics", "/healthz", "/readyz"})


class MetricsMiddleware:
    """Pure ASGI middleware (no per-request task or body copy, unlike BaseHTTPMiddleware)
    that counts and times every HTTP request by its route template."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        route: str | None = None
        pushing = False

        async def send_counted(message: Message) -> None:
            nonlocal status, route, pushing
            if message["type"] == "http.response.start":
                status = int(message["status"])
                route = route_of(scope)  # routing has filled scope["route"] by now
                IN_FLIGHT.labels(route).inc()
                if route == _WATCH_ROUTE and status == 200:
                    telemetry.PUSH_CONNECTIONS.inc()
                    pushing = True
            await send(message)

        try:
            await self.app(scope, receive, send_counted)
        finally:
            if route is None:
                route = route_of(scope)
            else:
                IN_FLIGHT.labels(route).dec()
                if pushing:
                    telemetry.PUSH_CONNECTIONS.dec()
            if route not in _OWN_ROUTES:
                method = scope.get("method", "")
                REQUESTS.labels(method, route, str(status)).inc()
                DURATION.labels(method, route).observe(time.perf_counter() - started)


def route_of(scope: Scope) -> str:
    """The matched route's template. FastAPI keeps the template of an included router's
    route without the router's prefix, so the API's prefix is put back here."""
    matched = scope.get("route")
    path = getattr(matched, "path", None)
    if not isinstance(path, str):
        return _UNMATCHED
    if str(scope.get("path", "")).startswith(API_PREFIX + "/") and not path.startswith(API_PREFIX):
        return API_PREFIX + path
    return path


def install(app: FastAPI, settings: Settings) -> None:
    """Add the middleware and the three operational routes to `app`."""
    app.add_middleware(MetricsMiddleware)
    token = settings.metrics_token.get_secret_value() if settings.metrics_token else None

    @app.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        if not _may_scrape(request, token):
            return Response(
                b'{"error":"not_found","detail":"no such route"}',
                status_code=404,
                media_type="application/json",
            )
        return Response(_exposition(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    @app.get("/readyz", include_in_schema=False)
    def readyz(request: Request) -> Response:
        state = getattr(request.app.state, "mountfs", None)
        try:
            if state is None:
                raise RuntimeError("still starting")
            with state.db.read() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as exc:  # any failure means: do not send traffic here
            log.warning("not ready: %s", exc)
            return Response(
                b'{"error":"not_ready","detail":"the database is unreachable"}',
                status_code=503,
                media_type="application/json",
            )
        return Response(b'{"status":"ready"}', media_type="application/json")


def _may_scrape(request: Request, token: str | None) -> bool:
    if token is not None:
        given = request.headers.get("authorization", "")
        if hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return True
    peer = request.client.host if request.client else ""
    try:
        return ipaddress.ip_address(peer).is_loopback
    except ValueError:
        return False


def _exposition() -> bytes:
    """The text format: this process's registry, or the sum over all worker processes."""
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return bytes(generate_latest(registry))
    return bytes(generate_latest(REGISTRY))


def instrument_engine(engine: Engine) -> None:
    """Count journal entries by op when (and only when) their transaction commits.

    Inserts into `journal` are noted on the connection as they execute; a commit adds the
    notes to `mountfs_journal_entries_total`, a rollback drops them.
    """

    @event.listens_for(engine, "after_execute")
    def _noted(
        conn: Connection,
        clause: Any,
        multiparams: Any,
        params: Any,
        _options: Any,
        _result: Any,
    ) -> None:
        if isinstance(clause, Insert) and clause.table is journal:
            pending: list[str] = conn.info.setdefault("mountfs_journal_ops", [])
            pending.extend(_ops(multiparams, params))

    @event.listens_for(engine, "commit")
    def _committed(conn: Connection) -> None:
        for op in conn.info.pop("mountfs_journal_ops", ()):
            JOURNAL_ENTRIES.labels(op).inc()

    @event.listens_for(engine, "rollback")
    def _rolled_back(conn: Connection) -> None:
        if not conn.invalidated:  # a lost connection's info cannot be reached (or matter)
            conn.info.pop("mountfs_journal_ops", None)


def _ops(multiparams: Any, params: Any) -> Iterator[str]:
    rows = multiparams if multiparams else [params]
    for row in rows:
        if isinstance(row, dict):
            yield str(row.get("op", "unknown"))
        elif isinstance(row, list):
            yield from _ops(row, None)


def instrument_s3(client: Any) -> Any:
    """Time every request a boto3 S3 client makes (botocore's call events), by operation
    and outcome; presigning makes no request and is not counted. Returns the client."""

    def before(model: Any, context: dict[str, Any], **_: Any) -> None:
        context["mountfs_operation"] = model.name
        context["mountfs_started"] = time.perf_counter()

    def after(model: Any, context: dict[str, Any], http_response: Any, **_: Any) -> None:
        outcome = "ok" if http_response.status_code < 400 else f"http_{http_response.status_code}"
        _observe_store(model.name, outcome, context)

    def failed(context: dict[str, Any], **_: Any) -> None:
        _observe_store(str(context.get("mountfs_operation", "unknown")), "error", context)

    events = client.meta.events
    events.register("before-call.s3", before)
    events.register("after-call.s3", after)
    events.register("after-call-error.s3", failed)
    return client


def _observe_store(operation: str, outcome: str, context: dict[str, Any]) -> None:
    started = context.pop("mountfs_started", None)
    if started is not None:
        STORE_DURATION.labels(operation, outcome).observe(time.perf_counter() - started)
