"""`mountfs admin …`: operator commands for a backend deployment.

`mountfs admin migrate` brings the metadata database to the schema this version needs
(the packaged Alembic migrations), once per deployment rather than from every instance at
start. The database comes from `--db`, `$MOUNTFS_DB` or the `db` key of the backend's
configuration file (`--config` / `$MOUNTFS_CONFIG`), the same places the server reads.

Safe while older instances still serve: on PostgreSQL the upgrade holds an advisory lock
(two migrations never run at once, and instances that start meanwhile wait for it), runs
in one transaction, and the migrations only add (tables, columns with defaults, indexes),
so code of the previous version keeps working on the new schema until it is replaced.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from mountfs.cli.core import main


@main.group()
def admin() -> None:
    """Operator commands for a backend deployment."""


@admin.command("migrate")
@click.option("--db", "db_url", default=None, help="Database URL (default: $MOUNTFS_DB).")
@click.option(
    "--config",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Backend configuration file (default: $MOUNTFS_CONFIG).",
)
def migrate(db_url: str | None, config: Path | None) -> None:
    """Upgrade the metadata database to the current schema (idempotent)."""
    from backend.db.migrate import current_revision, head_revision, upgrade
    from backend.preflight import StartupError, load_config_file

    url = db_url or os.environ.get("MOUNTFS_DB")
    config_path = config or (Path(p) if (p := os.environ.get("MOUNTFS_CONFIG")) else None)
    if url is None and config_path is not None:
        try:
            url = load_config_file(config_path).get("db")
        except StartupError as exc:
            raise click.ClickException(str(exc)) from exc
    if not url:
        raise click.ClickException(
            "no database: give --db URL, set MOUNTFS_DB, or name a config file with `db`"
        )
    before = current_revision(url)
    upgrade(url)
    after = head_revision()
    if before == after:
        click.echo(f"database already at {after}")
    else:
        click.echo(f"database migrated from {before or 'empty'} to {after}")
