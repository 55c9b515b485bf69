"""Backend settings: one frozen pydantic-settings object built at start-up.

Every setting comes from a command-line flag (`backend.server.parse_args`) or from the
environment as `MOUNTFS_<NAME>` (e.g. `MOUNTFS_URL_TTL=60`); a flag wins over the
environment. Nothing reads settings at import time: `create_app(settings)` receives them.

The embedded default needs only `--data DIR`: SQLite at `DIR/meta.sqlite3`, the block store
in `DIR/blocks/`, and the two secrets in `DIR/convergence.secret` and `DIR/signing.key`
(created at first start, mode 0600).
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from backend.store.s3 import S3Location

__all__ = ["DEFAULT_MAX_FILE_BYTES", "LogFormat", "LogLevel", "Settings"]

MiB = 1024 * 1024
GiB = 1024 * MiB

DEFAULT_MAX_FILE_BYTES = 10 * GiB
"""Largest file a commit may declare (protocol.md: 413 `file_too_large`)."""

LogLevel = Literal["critical", "error", "warning", "info", "debug"]
LogFormat = Literal["auto", "json", "text"]


class Settings(BaseSettings):
    """Everything the backend needs to start; immutable once built.

    Attributes:
        data: directory for the embedded database, block store and secrets.
        host, port: where uvicorn listens.
        db: SQLAlchemy URL; default `sqlite:///DATA/meta.sqlite3`. PostgreSQL works with
            `postgresql+psycopg://user:pw@host/db`.
        blockstore: `None` for the embedded directory store in `DATA/blocks`, or
            `s3://bucket[/prefix]?endpoint=URL&region=NAME` (credentials from the standard
            AWS environment).
        public_url: origin that clients use to reach this server (e.g. behind a proxy);
            presigned block URLs of the embedded store are built on it. Default: the
            origin of each request.
        url_ttl: seconds a presigned block URL stays valid.
        max_file_bytes: largest file size a commit may declare.
        default_quota_bytes: quota of new accounts; `None` is unlimited.
        no_registration: refuse `POST /accounts` (403 `registration_closed`).
        log_level: level of the backend's own log (and uvicorn's).
        access_log: log one line per request (uvicorn's access log, at INFO). Off by
            default: formatting and writing that line costs a measurable share of a
            metadata request's CPU.
        log_format: `json` (one object per line, for a log pipeline), `text` (for a
            terminal), or `auto`: JSON on a shared database (a cluster), text on SQLite
            (`backend.logs`, `log_format_in_use`).
        convergence_secret, signing_key: 32-byte secrets as 64 hex digits; when absent they
            are read from (or generated into) `*_file`, default inside `data`.
        max_json_bytes, max_block_bytes: request body limits (413 `body_too_large`).
        auth_failures, auth_failures_per_address, auth_window: failed password attempts
            (login, public-link passwords) allowed per account or link, and per source
            address, in a window of `auth_window` seconds; then 429 with `Retry-After`.
        workers: server processes sharing the listening socket; default (None): one on
            SQLite, one per usable CPU on another database (`worker_count`, and
            `backend.server` for why).
        tls_cert, tls_key: PEM certificate (chain) and key: the server speaks HTTPS itself.
        allow_plain_http: serve plain HTTP on an address other than loopback (only behind
            a proxy that terminates TLS); without it such a start is refused, since tokens
            and manifests (with their keys) would cross the network in clear.
        metrics_token: bearer token that `/metrics` accepts from any address; without it
            `/metrics` answers only loopback peers (`backend.api.metrics`).
        keep_all_versions_days, keep_daily_versions_days, trash_days: retention
            (`backend.services.versions`): every version for the first, then one per UTC
            day until the second; deleted files are purged after `trash_days`. A file's
            head revision is never removed.
        gc_grace: seconds an unreferenced chunk is kept before garbage collection may
            delete it; at least `url_ttl` (`backend.services.gc`).
        maintenance_interval: seconds between retention + GC passes in the server; 0 turns
            them off (then run `mountfs admin gc`).
        scrub_interval: seconds between scrubs (read back and verify every object) by the
            server's maintenance loop, at most once per maintenance pass; 0 (default)
            leaves scrubbing to `mountfs admin scrub`.
    """

    model_config = SettingsConfigDict(env_prefix="MOUNTFS_", frozen=True, extra="forbid")

    data: Path
    host: str = "127.0.0.1"
    port: int = Field(default=8765, ge=0, le=65535)
    db: str | None = None
    blockstore: str | None = None
    public_url: str | None = None
    url_ttl: int = Field(default=300, ge=1, le=7 * 24 * 3600)
    max_file_bytes: int = Field(default=DEFAULT_MAX_FILE_BYTES, ge=0)
    default_quota_bytes: int | None = Field(default=None, ge=0)
    no_registration: bool = False
    log_level: LogLevel = "info"
    access_log: bool = False
    log_format: LogFormat = "auto"
    workers: int | None = Field(default=None, ge=1, le=256)
    convergence_secret: SecretStr | None = None
    convergence_secret_file: Path | None = None
    signing_key: SecretStr | None = None
    signing_key_file: Path | None = None
    max_json_bytes: int = Field(default=8 * MiB, ge=1024)
    max_block_bytes: int = Field(default=16 * MiB, ge=1024)
    auth_failures: int = Field(default=10, ge=1)
    auth_failures_per_address: int = Field(default=100, ge=1)
    auth_window: int = Field(default=900, ge=1)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    allow_plain_http: bool = False
    metrics_token: SecretStr | None = None
    keep_all_versions_days: int = Field(default=30, ge=0)
    keep_daily_versions_days: int = Field(default=365, ge=0)
    trash_days: int = Field(default=30, ge=0)
    gc_grace: int = Field(default=86400, ge=0)
    maintenance_interval: int = Field(default=3600, ge=0)
    scrub_interval: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _check_gc_grace(self) -> Settings:
        """An upload URL lives `url_ttl`: a shorter grace could delete a chunk on its way
        to a commit (DESIGN.md invariant 7)."""
        if self.gc_grace < self.url_ttl:
            raise ValueError(f"--gc-grace ({self.gc_grace}) must be at least --url-ttl")
        return self

    @field_validator("db")
    @classmethod
    def _check_db(cls, value: str | None) -> str | None:
        """Refuse a malformed or unsupported database URL at start, not at first use."""
        if value is None:
            return None
        try:
            url = make_url(value)
        except ArgumentError:
            raise ValueError(
                "not a database URL (sqlite:///PATH or postgresql+psycopg://USER:PW@HOST/DB)"
            ) from None
        if url.get_backend_name() not in ("sqlite", "postgresql"):
            raise ValueError(f"unsupported database {url.get_backend_name()!r}")
        if url.get_backend_name() == "postgresql" and url.get_driver_name() != "psycopg":
            raise ValueError("PostgreSQL URLs must use the psycopg driver: postgresql+psycopg://")
        return value

    @field_validator("blockstore")
    @classmethod
    def _check_blockstore(cls, value: str | None) -> str | None:
        if value:
            S3Location.from_url(value)  # its ValueError names what is wrong
        return value or None

    @model_validator(mode="after")
    def _check_transport(self) -> Settings:
        """TLS needs both halves, and plain HTTP is for loopback unless explicitly allowed."""
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("--tls-cert and --tls-key go together")
        for path in (self.tls_cert, self.tls_key):
            if path is not None and not path.is_file():
                raise ValueError(f"TLS file {path} does not exist")
        if self.tls_cert is None and not self.allow_plain_http and not _is_loopback(self.host):
            raise ValueError(
                f"refusing plain HTTP on {self.host}: give --tls-cert and --tls-key, or "
                "--allow-plain-http when a proxy in front terminates TLS"
            )
        return self

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_log_level(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("public_url")
    @classmethod
    def _strip_slash(cls, value: str | None) -> str | None:
        return value.rstrip("/") if value else None

    @property
    def db_url(self) -> str:
        """The database URL in use (the embedded SQLite file unless `db` is set)."""
        return self.db or f"sqlite:///{self.data / 'meta.sqlite3'}"

    @property
    def log_format_in_use(self) -> Literal["json", "text"]:
        """`log_format`, with `auto` decided: JSON where the database is shared."""
        if self.log_format != "auto":
            return self.log_format
        return "text" if self.db_url.startswith("sqlite") else "json"

    @property
    def worker_count(self) -> int:
        """The number of server processes to run: `workers` if given; else one on SQLite,
        where a second process slows writes down more than it speeds reads up (measured,
        see `backend.server`); else one per CPU this process may run on."""
        if self.workers is not None:
            return self.workers
        if self.db_url.startswith("sqlite"):
            return 1
        return len(os.sched_getaffinity(0)) or 1

    @property
    def blocks_dir(self) -> Path:
        """Root of the embedded block store."""
        return self.data / "blocks"

    @property
    def convergence_secret_path(self) -> Path:
        return self.convergence_secret_file or self.data / "convergence.secret"

    @property
    def signing_key_path(self) -> Path:
        return self.signing_key_file or self.data / "signing.key"


def _is_loopback(host: str) -> bool:
    """True for an address that only this machine can reach (names resolve to loopback
    only for `localhost`; any other name may reach the network)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
