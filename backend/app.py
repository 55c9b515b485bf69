"""The composition root: `create_app(settings)` builds the ASGI app; its lifespan opens
(and closes) everything the routes use.

Start-up, in the lifespan (blocking work, run in a worker thread):
1. `prepare_data`: create the data directory; load or create the two secrets (0600
   files); `alembic upgrade head` on the configured database; lay out the embedded block
   store and clear the upload bodies a crash left half-received;
2. open the database (SQLite: WAL, see `backend.db.engine`) and the block store;
3. publish them as one `AppState` on `app.state.mountfs`.

Step 1 must run exactly once per start, before any request is served: with several
worker processes (`backend.server`) the parent runs it before starting them and builds
their apps with `create_app(settings, prepared=True)`, so that no worker migrates while
another serves, and no worker deletes another one's upload in progress.

Nothing is opened at import time and nothing is global, so tests can build several apps
(on several data directories) in one process.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoCoreConnectionError
from fastapi import FastAPI, Request, Response
from pydantic import SecretStr
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from starlette.concurrency import run_in_threadpool

from backend.api import errors, metrics
from backend.api.deps import AppState
from backend.api.limits import BodyLimitMiddleware, manifest_body_limit
from backend.api.news import News
from backend.api.openapi import MountfsAPI
from backend.api.routes import API_PREFIX, routers, web
from backend.api.schemas import ErrorOut
from backend.db.engine import Database, make_engine
from backend.db.migrate import upgrade
from backend.durable import makedirs_durably
from backend.logs import RequestLogMiddleware
from backend.security import Keyring, load_or_create_secret, parse_secret
from backend.services.maintenance import MaintenanceLoop
from backend.services.notify_pg import notifier_for
from backend.settings import Settings
from backend.store.base import BlockStore
from backend.store.local import LocalBlockStore
from backend.store.s3 import S3BlockStore, S3Location, make_client
from backend.store.signing import UrlSigner

__all__ = ["create_app", "open_state", "prepare_data"]

log = logging.getLogger(__name__)


def create_app(settings: Settings, *, prepared: bool = False) -> FastAPI:
    """The backend as an ASGI app; serve it with uvicorn (see `backend.server`).

    `prepared=True`: `prepare_data(settings)` has already run for this start (the parent
    of several workers did it), so the lifespan only opens.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not prepared:
            await run_in_threadpool(prepare_data, settings)
        state = await run_in_threadpool(open_state, settings)
        app.state.mountfs = state
        # Retention + garbage collection every --maintenance-interval s (a daemon thread).
        upkeep = MaintenanceLoop(state.db, state.store, settings)
        upkeep.start()
        try:
            async with state.news.running():  # the push channel (backend.api.news)
                yield
        finally:
            await run_in_threadpool(upkeep.stop)
            await run_in_threadpool(state.db.close)

    app = MountfsAPI(
        title="mountfs backend",
        version="1",
        summary="Metadata service and embedded block store of mountfs (docs/protocol.md).",
        lifespan=lifespan,
        redoc_url=None,
    )
    errors.install(app)
    app.add_middleware(
        BodyLimitMiddleware,
        json_limit=settings.max_json_bytes,
        block_limit=settings.max_block_bytes,
        manifest_limit=manifest_body_limit(settings.max_file_bytes, settings.max_json_bytes),
    )
    metrics.install(app, settings)  # counts what the limits refuse too
    app.add_exception_handler(DBAPIError, _database_unavailable)
    app.add_exception_handler(BotoCoreError, _store_unavailable)
    app.add_exception_handler(ClientError, _store_unavailable)
    # Outermost: every log record of a request carries its id, 413s and 500s included.
    app.add_middleware(RequestLogMiddleware, log_every_request=settings.access_log)
    for router in routers(embedded_store=settings.blockstore is None):
        app.include_router(router, prefix=API_PREFIX)
    app.include_router(web.router)  # public links' pages: /s/{token}, outside the API
    return app


RETRY_AFTER_DB_S = 2
"""`Retry-After` of a 503 while the database is unreachable: about what a PostgreSQL
restart or a fail-over to a standby takes."""


async def _database_unavailable(request: Request, exc: Exception) -> Response:
    """503 `unavailable` with `Retry-After` when the database connection failed (it is
    down, restarting, or dropped the connection) or PostgreSQL aborted the transaction to
    break a deadlock; any other database error is a bug (500).

    The engine pre-pings pooled connections (`backend.db.engine.make_engine`), so once
    PostgreSQL is back the next request gets a fresh connection: instances recover without
    a restart. Every write is idempotent for the client that retries it (client-made node
    ids, `revision_id`, `op_id`), so a transaction whose fate the lost connection hid is
    safe to send again.
    """
    assert isinstance(exc, DBAPIError)
    if not _is_transient(exc):
        raise exc  # answered 500 by the `Exception` handler (backend.api.errors)
    log.warning("database unavailable in %s %s: %s", request.method, request.url.path, exc.orig)
    return errors.error_response(
        503,
        ErrorOut(error="unavailable", detail="the database is unavailable; retry shortly"),
        {"Retry-After": str(RETRY_AFTER_DB_S)},
    )


def _is_transient(exc: DBAPIError) -> bool:
    """A lost or refused connection (SQLSTATE class 08, 57P: shutdown; none at all when
    the connection never opened), or a deadlock/serialisation failure (class 40): trying
    again later can succeed. Constraint violations and the like are bugs."""
    if exc.connection_invalidated:
        return True
    if isinstance(exc, OperationalError | InterfaceError):
        sqlite_error = getattr(exc.orig, "sqlite_errorname", None)
        if sqlite_error is not None:  # SQLite: only "busy" (the busy timeout ran out)
            return str(sqlite_error).startswith(("SQLITE_BUSY", "SQLITE_LOCKED"))
        state = getattr(exc.orig, "sqlstate", None)
        return state is None or str(state).startswith(("08", "57P", "40"))
    return False


RETRY_AFTER_STORE_S = 5
"""`Retry-After` of a 503 while the S3 store does not answer."""

_STORE_BUSY_CODES = frozenset({"SlowDown", "ServiceUnavailable", "RequestTimeout", "InternalError"})


async def _store_unavailable(request: Request, exc: Exception) -> Response:
    """503 `unavailable` with `Retry-After` when the S3 store cannot be reached, timed out
    (after botocore's own retries, `store.s3.make_client`) or answered 5xx/SlowDown: an
    outage the client waits out, like the database's. Anything else from botocore (bad
    credentials, a refused request) is a bug or a misconfiguration: 500."""
    transient = isinstance(exc, BotoCoreConnectionError | HTTPClientError)
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
        transient = status >= 500 or str(error.get("Code")) in _STORE_BUSY_CODES
    if not transient:
        raise exc  # answered 500 by the `Exception` handler (backend.api.errors)
    log.warning("block store unavailable in %s %s: %s", request.method, request.url.path, exc)
    return errors.error_response(
        503,
        ErrorOut(error="unavailable", detail="the block store is unavailable; retry shortly"),
        {"Retry-After": str(RETRY_AFTER_STORE_S)},
    )


def prepare_data(settings: Settings) -> None:
    """Step 1 of the module docstring: the once-per-start work; blocking."""
    makedirs_durably(settings.data)
    _secret(settings.convergence_secret, settings.convergence_secret_path)
    signing_key = _secret(settings.signing_key, settings.signing_key_path)
    upgrade(settings.db_url)
    if settings.blockstore is None:
        _local_store(settings, signing_key).open()


def open_state(settings: Settings) -> AppState:
    """Step 2 of the module docstring (after `prepare_data`); blocking."""
    convergence = _secret(settings.convergence_secret, settings.convergence_secret_path)
    signing_key = _secret(settings.signing_key, settings.signing_key_path)
    db = Database(make_engine(settings.db_url))
    metrics.instrument_engine(db.engine)
    local: LocalBlockStore | None = None
    store: BlockStore
    if settings.blockstore is None:
        local = _local_store(settings, signing_key)
        store = local
    else:
        location = S3Location.from_url(settings.blockstore)
        client = metrics.instrument_s3(make_client(location))
        store = S3BlockStore(client, location, settings.url_ttl)
    log.info(
        "backend ready: db=%s store=%s",
        settings.db_url.split("@")[-1],
        settings.blockstore.split("?")[0] if settings.blockstore else settings.blocks_dir,
    )
    return AppState(
        settings=settings,
        db=db,
        keys=Keyring(convergence),
        store=store,
        local_store=local,
        news=News.local(db, notifier_for(db)),
    )


def _local_store(settings: Settings, signing_key: bytes) -> LocalBlockStore:
    return LocalBlockStore(
        root=settings.blocks_dir,
        signer=UrlSigner(signing_key),
        ttl=settings.url_ttl,
        max_object_bytes=settings.max_block_bytes,
    )


def _secret(given: SecretStr | None, path: Path) -> bytes:
    """A secret from the settings (environment) if given, else from (or into) its file."""
    if given is not None:
        return parse_secret(given.get_secret_value(), "secret from the settings")
    return load_or_create_secret(path)
