"""Run the packaged Alembic migrations programmatically (`upgrade head` at start-up).

The migrations live inside the installed package (`backend/db/migrations`), so the Alembic
Config is built in code from that directory and works from any working directory, with or
without the repository's `pyproject.toml`.

Migrations run on a separate engine with SQLite foreign keys OFF (batch-mode table rebuilds
must not cascade); `PRAGMA foreign_key_check` afterwards proves nothing was left dangling.
"""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text

from backend.db.engine import make_engine

__all__ = ["alembic_config", "current_revision", "head_revision", "upgrade"]

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
log = logging.getLogger(__name__)
_MIGRATION_LOCK = 0x6D6F756E74  # "mount": the advisory lock key of migrations on PostgreSQL


def alembic_config() -> Config:
    """An Alembic Config pointing at the packaged migrations (no alembic.ini needed)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(url: str) -> str | None:
    """The revision the database at `url` is at (None if never migrated)."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def upgrade(url: str, target: str = "head") -> None:
    """Bring the database at `url` to `target` in one transaction; idempotent."""
    engine = make_engine(url, foreign_keys=False)
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                # Instances starting together queue here: one migrates, the others then
                # find the schema at head (the lock ends with the transaction).
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
            config = alembic_config()
            config.attributes["connection"] = conn
            command.upgrade(config, target)
            if conn.dialect.name == "sqlite":
                broken = conn.execute(text("PRAGMA foreign_key_check")).fetchall()
                if broken:
                    raise RuntimeError(f"foreign key violations after migration: {broken[:5]}")
    finally:
        engine.dispose()
    log.info("database schema at %s", target)
