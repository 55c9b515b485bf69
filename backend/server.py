"""Run the backend: command-line parsing and a blocking uvicorn server.

`parse_args(argv)` turns `--data DIR --port N ...` into `Settings` (flags win over
`MOUNTFS_*` environment variables); `serve(settings)` runs until SIGTERM or SIGINT and then
stops cleanly: uvicorn stops accepting, finishes in-flight requests, runs the lifespan's
shutdown (closing the database), and `serve` returns. `python -m backend` and the CLI's
`mountfs server` both use these two functions.

Worker processes (`--workers N`): one Python process runs the routes on one core at most
(the GIL), so the server can run N uvicorn workers that accept on one socket bound here.
The default is one per CPU on PostgreSQL but one on SQLite: SQLite has a single writer for
all processes, and handing its lock from one process to another costs a scheduler wake-up
each time; on a busy 2-core machine two workers gave 15–35% more reads (listings, the
journal) but half the creates and renames of one (docs/backend.md). With N > 1, this
process first does the once-per-start work (`backend.app.prepare_data`: secrets,
migrations, the block store's clean-up), then uvicorn's supervisor spawns the workers,
restarts one that dies, and on SIGTERM/SIGINT stops them all gracefully. Nothing is shared
in memory between workers: each has its own engine; SQLite orders their writers with
`BEGIN IMMEDIATE` and a file lock (`backend.db.engine`).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn
from fastapi import FastAPI
from pydantic import ValidationError
from uvicorn.config import LOGGING_CONFIG
from uvicorn.supervisors import Multiprocess

from backend import logs, preflight
from backend.api.metrics import MULTIPROC_ENV
from backend.app import create_app, prepare_data
from backend.settings import DEFAULT_MAX_FILE_BYTES, Settings

__all__ = ["build_parser", "parse_args", "serve"]

log = logging.getLogger(__name__)


def build_parser(prog: str = "python -m backend") -> argparse.ArgumentParser:
    """The flags of the server; every one also reads `MOUNTFS_<NAME>` from the environment.

    Defaults are not set here (argparse.SUPPRESS) but in `Settings`, so that an absent flag
    lets the environment speak.
    """
    p = argparse.ArgumentParser(
        prog=prog,
        description="mountfs metadata service and embedded block store.",
        argument_default=argparse.SUPPRESS,
    )
    p.add_argument(
        "--config",
        metavar="FILE",
        help="TOML file of settings (also $MOUNTFS_CONFIG); flags and MOUNTFS_* win over it",
    )
    p.add_argument("--data", metavar="DIR", help="data directory (database, blocks, secrets)")
    p.add_argument("--host", help="listen address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="listen port (default 8765)")
    p.add_argument("--db", metavar="URL", help="database URL (default sqlite in DIR)")
    p.add_argument(
        "--blockstore",
        metavar="URL",
        help="s3://bucket[/prefix]?endpoint=URL&region=NAME (default: embedded, DIR/blocks)",
    )
    p.add_argument("--public-url", metavar="URL", help="origin clients use to reach us")
    p.add_argument(
        "--url-ttl", type=int, metavar="SECONDS", help="presigned URL lifetime (default 300)"
    )
    p.add_argument(
        "--max-file-bytes",
        type=int,
        metavar="N",
        help=f"largest file a commit may declare (default {DEFAULT_MAX_FILE_BYTES})",
    )
    p.add_argument(
        "--default-quota-bytes", type=int, metavar="N", help="quota of new accounts (unlimited)"
    )
    p.add_argument("--no-registration", action="store_true", help="refuse self-registration")
    p.add_argument(
        "--auth-failures",
        type=int,
        metavar="N",
        help="failed passwords per account or link per window before 429 (default 10)",
    )
    p.add_argument(
        "--auth-failures-per-address",
        type=int,
        metavar="N",
        help="failed passwords per source address per window (default 100)",
    )
    p.add_argument(
        "--auth-window", type=int, metavar="SECONDS", help="rate-limit window (default 900)"
    )
    p.add_argument(
        "--access-log", action="store_true", help="log every request (at INFO; default off)"
    )
    p.add_argument(
        "--log-format",
        type=str.lower,
        choices=["auto", "json", "text"],
        help="json: one object per line; text: for a terminal; auto (default): json on "
        "PostgreSQL, text on SQLite",
    )
    p.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="server processes (default: 1 on SQLite, one per CPU otherwise)",
    )
    p.add_argument("--tls-cert", metavar="PEM", help="serve HTTPS with this certificate chain")
    p.add_argument("--tls-key", metavar="PEM", help="the private key of --tls-cert")
    p.add_argument(
        "--allow-plain-http",
        action="store_true",
        help="allow plain HTTP on a non-loopback address (only behind a TLS proxy)",
    )
    versions = p.add_argument_group("versions, trash and garbage collection (docs/backend.md)")
    versions.add_argument(
        "--keep-all-versions-days", type=int, metavar="N", help="keep every version N days (30)"
    )
    versions.add_argument(
        "--keep-daily-versions-days",
        type=int,
        metavar="N",
        help="then one version per day until N days old (365); the head is always kept",
    )
    versions.add_argument(
        "--trash-days", type=int, metavar="N", help="deleted files can be restored N days (30)"
    )
    versions.add_argument(
        "--gc-grace",
        type=int,
        metavar="SECONDS",
        help="unreferenced chunks are deleted only after this long (86400; >= --url-ttl)",
    )
    versions.add_argument(
        "--maintenance-interval",
        type=int,
        metavar="SECONDS",
        help="run retention and garbage collection this often (3600; 0: never)",
    )
    versions.add_argument(
        "--scrub-interval",
        type=int,
        metavar="SECONDS",
        help="also verify every stored object this often, in a maintenance pass (0: never)",
    )
    p.add_argument(
        "--log-level",
        type=str.lower,
        choices=["critical", "error", "warning", "info", "debug"],
        help="default info",
    )
    return p


def parse_args(argv: Sequence[str] | None = None, prog: str = "python -m backend") -> Settings:
    """Settings from flags and environment; exits with a usage message when invalid."""
    parser = build_parser(prog)
    given = vars(parser.parse_args(argv))
    config = given.pop("config", None) or os.environ.get(preflight.CONFIG_ENV)
    try:
        from_file = preflight.load_config_file(Path(config)) if config else {}
        return Settings(**{**from_file, **given})
    except preflight.StartupError as error:
        parser.error(str(error))
    except ValidationError as error:
        problems = "; ".join(_problem(e) for e in error.errors())
        parser.error(problems)


def _problem(error: Any) -> str:
    """One validation error as `--flag: message` (or just the message for whole-object
    checks), without pydantic's `Value error, ` prefix."""
    where = "--" + ".".join(str(p) for p in error["loc"]).replace("_", "-") + ": "
    message = str(error["msg"]).removeprefix("Value error, ")
    return (where if error["loc"] else "") + message


def serve(settings: Settings) -> None:
    """Run the server until SIGTERM/SIGINT; return after a clean shutdown.

    Off the main thread (tests) there is one worker, in this process: the supervisor of
    several needs signal handlers, which only the main thread can install.
    """
    _configure_logging(settings)
    try:
        preflight.check(settings)
    except preflight.StartupError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    workers = settings.worker_count
    if threading.current_thread() is not threading.main_thread():
        workers = 1
    with _stop_signals_end_serving():
        if workers == 1:
            uvicorn.Server(_config(settings, create_app(settings))).run()
        else:
            _serve_workers(settings, workers)
    log.info("backend stopped")


def _serve_workers(settings: Settings, workers: int) -> None:
    prepare_data(settings)
    if not os.environ.get(MULTIPROC_ENV):
        # Workers count into files here, and /metrics in any of them sums them all.
        os.environ[MULTIPROC_ENV] = tempfile.mkdtemp(prefix="mountfs-metrics-")
    config = _config(settings, _WorkerApp(settings), workers=workers)
    sock = config.bind_socket()
    try:
        Multiprocess(config, sockets=[sock]).run()
    finally:
        sock.close()


@dataclass(frozen=True, slots=True)
class _WorkerApp:
    """The app factory each worker calls; uvicorn pickles it into the spawned process."""

    settings: Settings

    def __call__(self) -> FastAPI:
        _configure_logging(self.settings)
        return create_app(self.settings, prepared=True)


def _config(settings: Settings, app: FastAPI | _WorkerApp, workers: int = 1) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        factory=isinstance(app, _WorkerApp),
        workers=workers,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        # JSON: uvicorn's loggers propagate to our handler (None: uvicorn configures
        # nothing). The access line is ours (backend.logs), with the request id.
        log_config=None if settings.log_format_in_use == "json" else LOGGING_CONFIG,
        access_log=False,
        proxy_headers=True,
        server_header=False,
        timeout_graceful_shutdown=10,
        ssl_certfile=settings.tls_cert,
        ssl_keyfile=settings.tls_key,
    )


def _configure_logging(settings: Settings) -> None:
    logs.configure(settings.log_level, settings.log_format_in_use)


class _stop_signals_end_serving:
    """Keep SIGTERM/SIGINT from killing the process after uvicorn's graceful stop.

    uvicorn catches these signals while it runs and, once shut down, re-raises them to the
    handlers that were installed before it started. Installing quiet handlers first turns
    that re-raise into a normal return from `serve` (exit status 0). Off the main thread
    (tests) signal handlers cannot be installed, and uvicorn does not install its own.
    """

    _SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __enter__(self) -> None:
        self._saved: dict[int, object] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in self._SIGNALS:
                self._saved[sig] = signal.signal(sig, _note_signal)

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._saved.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]


def _note_signal(signum: int, _frame: FrameType | None) -> None:
    log.info("received %s after shutdown", signal.Signals(signum).name)
