"""Alembic environment for the backend's metadata database.

Three ways in:
- Programmatic (`backend.db.migrate.upgrade`, run at server start): the caller passes an
  open Connection in `config.attributes["connection"]`; it owns the transaction.
- `alembic upgrade head` from the repository root (`[tool.alembic]` in pyproject.toml):
  the URL comes from `-x db=URL`, else `MOUNTFS_DB`, else `sqlite:///$MOUNTFS_DATA/meta.sqlite3`.
- Offline (`alembic -x db=postgresql+psycopg://... upgrade head --sql`): prints the DDL.

`render_as_batch=True` makes future ALTERs work on SQLite (table rebuilds).
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import Connection

from backend.db.engine import make_engine
from backend.db.tables import metadata

config = context.config


def _url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("db") or os.environ.get("MOUNTFS_DB")
    if url:
        return url
    data = os.environ.get("MOUNTFS_DATA")
    if not data:
        raise SystemExit("set -x db=URL, MOUNTFS_DB or MOUNTFS_DATA to choose the database")
    return f"sqlite:///{os.path.join(data, 'meta.sqlite3')}"


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_offline() -> None:
    context.configure(
        url=_url(), target_metadata=metadata, literal_binds=True, render_as_batch=True
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    given = config.attributes.get("connection")
    if isinstance(given, Connection):
        _run(given)
        return
    engine = make_engine(_url(), foreign_keys=False)
    try:
        with engine.begin() as connection:
            _run(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
