"""Backend settings: one frozen pydantic-settings object built at start-up.

Every setting comes from a command-line flag (`backend.server.parse_args`) or from the
environment as `MOUNTFS_<NAME>` (e.g. `MOUNTFS_URL_TTL=60`); a flag wins over the
environment. Nothing reads settings at import time: `create_app(settings)` receives them.

The embedded default needs only `--data DIR`: SQLite at `DIR/meta.sqlite3`, the block store
in `DIR/blocks/`, and the two secrets in `DIR/convergence.secret` and `DIR/signing.key`
(created at first start, mode 0600).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["DEFAULT_MAX_FILE_BYTES", "LogLevel", "Settings"]

MiB = 1024 * 1024
GiB = 1024 * MiB

DEFAULT_MAX_FILE_BYTES = 10 * GiB
"""Largest file a commit may declare (protocol.md: 413 `file_too_large`)."""

LogLevel = Literal["critical", "error", "warning", "info", "debug"]


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
        convergence_secret, signing_key: 32-byte secrets as 64 hex digits; when absent they
            are read from (or generated into) `*_file`, default inside `data`.
        max_json_bytes, max_block_bytes: request body limits (413 `body_too_large`).
        workers: server processes sharing the listening socket; default (None): one on
            SQLite, one per usable CPU on another database (`worker_count`, and
            `backend.server` for why).
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
    workers: int | None = Field(default=None, ge=1, le=256)
    convergence_secret: SecretStr | None = None
    convergence_secret_file: Path | None = None
    signing_key: SecretStr | None = None
    signing_key_file: Path | None = None
    max_json_bytes: int = Field(default=8 * MiB, ge=1024)
    max_block_bytes: int = Field(default=16 * MiB, ge=1024)

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
