"""Start-up checks and the configuration file: refuse to start, in one line, when the
configuration cannot work.

`Settings` already refuses what is malformed (a database URL that does not parse, an
`s3://` URL with unknown parameters, half a TLS pair, plain HTTP off loopback). What only
the outside world can answer is checked here, before the server listens, so that an
operator sees `error: cannot reach the database at …` instead of a traceback from the
first request:

- the secrets: given values and existing files must be 64 hex digits. With a database
  other than SQLite (many instances, one database), a secret is never generated: every
  instance must use the same convergence secret, and a fresh one would make every chunk
  stored before unreadable and break dedup, so it must exist already;
- a database server (not SQLite, whose file is made at first start) answers `SELECT 1`
  (5 s connect timeout);
- for an S3 block store: AWS credentials are found the standard way (environment,
  shared config/profile, container or instance role), and the bucket answers HeadBucket.

The configuration file (`--config FILE` or `MOUNTFS_CONFIG`) is TOML with the settings'
names as keys (`db = "postgresql+psycopg://…"`, `blockstore = "s3://…"`,
`convergence_secret_file = "/etc/mountfs/convergence.secret"`, …). Precedence: flag, then
`MOUNTFS_<NAME>` in the environment, then the file, then the default.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from backend.security import parse_secret
from backend.settings import Settings
from backend.store.s3 import S3Location, make_client

__all__ = ["CONFIG_ENV", "StartupError", "check", "load_config_file"]

CONFIG_ENV = "MOUNTFS_CONFIG"
_CONNECT_TIMEOUT_S = 5


class StartupError(Exception):
    """The configuration cannot work; the message is one line for the operator."""


def load_config_file(path: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    """The settings a TOML file gives, minus those the environment sets (env wins).

    Keys may use `-` or `_` (`url-ttl` or `url_ttl`); unknown keys are refused by
    `Settings` itself (extra="forbid") with their name.
    """
    environ = os.environ if env is None else env
    try:
        raw = tomllib.loads(path.read_text())
    except OSError as exc:
        raise StartupError(f"cannot read the configuration file {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise StartupError(f"configuration file {path} is not valid TOML: {exc}") from exc
    values: dict[str, Any] = {}
    for key, value in raw.items():
        name = key.replace("-", "_").lower()
        if f"MOUNTFS_{name.upper()}" not in environ:
            values[name] = value
    return values


def check(settings: Settings) -> None:
    """Raise StartupError unless secrets, database and block store are usable."""
    _check_secrets(settings)
    if not settings.db_url.startswith("sqlite"):  # a SQLite file is made at first start
        _check_database(settings.db_url)
    if settings.blockstore:
        _check_bucket(S3Location.from_url(settings.blockstore))


def _check_secrets(settings: Settings) -> None:
    shared_db = not settings.db_url.startswith("sqlite")
    pairs = (
        ("convergence secret", settings.convergence_secret, settings.convergence_secret_path),
        ("signing key", settings.signing_key, settings.signing_key_path),
    )
    for what, given, path in pairs:
        env_name = "MOUNTFS_" + what.upper().replace(" ", "_")
        try:
            if given is not None:
                parse_secret(given.get_secret_value(), env_name)
            elif path.exists():
                parse_secret(path.read_text(), str(path))
            elif shared_db:
                raise StartupError(
                    f"the {what} is missing: with a shared database every instance needs the "
                    f"same one; set {env_name} or {env_name}_FILE (64 hex digits, e.g. "
                    f"`openssl rand -hex 32 > {path}`)"
                )
        except ValueError as exc:
            raise StartupError(f"bad {what}: {exc}") from exc


def _check_database(url: str) -> None:
    parsed = make_url(url)
    shown = parsed.render_as_string(hide_password=True)
    connect_args: dict[str, Any] = {}
    if parsed.get_backend_name() == "postgresql":
        connect_args["connect_timeout"] = _CONNECT_TIMEOUT_S
    engine = create_engine(url, connect_args=connect_args)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise StartupError(f"cannot reach the database at {shown}: {reason}") from exc
    finally:
        engine.dispose()


def _check_bucket(location: S3Location) -> None:
    where = f"s3://{location.bucket}" + (f" at {location.endpoint}" if location.endpoint else "")
    if boto3.Session().get_credentials() is None:
        raise StartupError(
            f"no AWS credentials for the block store {where}: set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE, or run with an instance role)"
        )
    try:
        make_client(location).head_bucket(Bucket=location.bucket)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "?")
        raise StartupError(f"the block store {where} refused HeadBucket ({code})") from exc
    except BotoCoreError as exc:
        raise StartupError(f"cannot reach the block store {where}: {exc}") from exc
