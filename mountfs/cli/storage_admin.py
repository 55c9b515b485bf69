"""`mountfs admin gc`, `mountfs admin scrub`, `mountfs admin stats`: storage hygiene for
an operator.

They run on the server's machine, against its data directory, database and block store
directly (the same `--data`, `--db`, `--blockstore`, `--config` and `MOUNTFS_*` settings as
`mountfs server`), not through the HTTP API. Why:
- they are the operator's, not an account's: the API has no administrator role, and one
  that could delete or read every object would be the most valuable token in the system;
  access to the data directory already is that power, so no new secret is created;
- a scrub reads every object of the store, which belongs next to the store, not behind a
  request timeout;
- they are safe next to a running server: every step is a database transaction with the
  same guarantees as the server's own periodic pass (`backend.services.gc`), and a pass
  holds `DATA/maintenance.lock`, so the server skips its turn meanwhile.
They never migrate the database or create secrets: a deployment that was never started
(or runs an older schema) is refused.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from mountfs.cli.admin import admin
from mountfs.cli.common import human_size, json_option, print_json

if TYPE_CHECKING:  # the backend is imported lazily: client-only commands never load it
    from backend.api.deps import AppState
    from backend.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])


def _deployment_options(fn: F) -> F:
    for option in reversed(
        [
            click.option(
                "--data",
                type=click.Path(file_okay=False, path_type=Path),
                default=None,
                help="The server's data directory (default: $MOUNTFS_DATA).",
            ),
            click.option("--db", "db_url", default=None, help="Database URL ($MOUNTFS_DB)."),
            click.option("--blockstore", default=None, help="s3://… store ($MOUNTFS_BLOCKSTORE)."),
            click.option(
                "--config",
                type=click.Path(dir_okay=False, path_type=Path),
                default=None,
                help="The server's configuration file ($MOUNTFS_CONFIG).",
            ),
        ]
    ):
        fn = option(fn)
    return fn


def _settings(
    data: Path | None, db_url: str | None, blockstore: str | None, config: Path | None
) -> Settings:
    """The server's settings, from the same flags, file and environment it reads."""
    from backend.server import parse_args

    argv: list[str] = []
    for flag, value in (
        ("--data", data),
        ("--db", db_url),
        ("--blockstore", blockstore),
        ("--config", config),
    ):
        if value is not None:
            argv += [flag, str(value)]
    return parse_args(argv, prog="mountfs admin")


def _open(settings: Settings) -> AppState:
    """Open the deployment's database and store, refusing one that is not set up."""
    from backend.app import open_state
    from backend.db.migrate import current_revision, head_revision

    if settings.db is None and not (settings.data / "meta.sqlite3").is_file():
        raise click.ClickException(f"no database in {settings.data}: is that the server's --data?")
    if not settings.convergence_secret_path.is_file() and settings.convergence_secret is None:
        raise click.ClickException(f"no convergence secret in {settings.data}")
    if current_revision(settings.db_url) != head_revision():
        raise click.ClickException(
            "the database schema is not current: start the server once, or `mountfs admin migrate`"
        )
    return open_state(settings)


@admin.command("gc")
@_deployment_options
@click.option(
    "--grace",
    type=click.IntRange(min=0),
    default=None,
    help="Seconds an unreferenced chunk is kept (default: the server's --gc-grace). "
    "Shorter than the longest upload in flight is unsafe.",
)
@click.option("--no-retention", is_flag=True, help="Only collect; do not thin versions first.")
@json_option
def gc(
    data: Path | None,
    db_url: str | None,
    blockstore: str | None,
    config: Path | None,
    grace: int | None,
    no_retention: bool,
    as_json: bool,
) -> None:
    """Apply retention, then delete chunks that nothing references any more."""
    from backend.services import gc as collector
    from backend.services import versions
    from backend.services.maintenance import exclusive, policy_of

    settings = _settings(data, db_url, blockstore, config)
    state = _open(settings)
    try:
        with exclusive(settings.data, wait=True):
            retention = None
            if not no_retention:
                retention = versions.apply_retention(state.db, policy_of(settings))
            seconds = settings.gc_grace if grace is None else grace
            report = collector.collect(state.db, state.store, grace=timedelta(seconds=seconds))
    finally:
        state.db.close()
    if as_json:
        print_json({"retention": asdict(retention) if retention else None, "gc": asdict(report)})
        return
    if retention is not None:
        click.echo(
            f"retention: {retention.revisions_removed} old versions removed, "
            f"{retention.nodes_purged} expired trash items purged, "
            f"{retention.chunks_released} chunks released"
        )
    click.echo(
        f"gc: {report.objects_deleted} chunks deleted ({human_size(report.bytes_deleted)}), "
        f"{report.holds_dropped} abandoned uploads dropped, {report.kept_young} unreferenced "
        f"chunks kept (younger than {timedelta(seconds=seconds)}); "
        f"{report.objects_listed} objects listed in {report.seconds:.1f} s"
    )


@admin.command("scrub")
@_deployment_options
@click.option(
    "--repair",
    is_flag=True,
    help="Delete orphans older than the GC grace and corrupt objects; mark the versions "
    "that lost a chunk damaged.",
)
@click.option("--list", "show", is_flag=True, help="Name every problem object.")
@json_option
def scrub(
    data: Path | None,
    db_url: str | None,
    blockstore: str | None,
    config: Path | None,
    repair: bool,
    show: bool,
    as_json: bool,
) -> None:
    """Verify every stored object against its name and every manifest against the chunk
    table; exit 1 if anything is missing, corrupt, orphaned or inconsistent."""
    from backend.services import scrub as scrubber
    from backend.services.maintenance import exclusive

    settings = _settings(data, db_url, blockstore, config)
    state = _open(settings)
    try:
        with exclusive(settings.data, wait=True) if repair else contextlib.nullcontext(True):
            report = scrubber.scrub(
                state.db, state.store, repair=repair, grace=timedelta(seconds=settings.gc_grace)
            )
    finally:
        state.db.close()
    if as_json:
        print_json({**asdict(report), "clean": report.clean, "mb_per_second": report.mb_per_second})
    else:
        click.echo(
            f"scrub: {report.objects_checked} objects ({human_size(report.bytes_checked)}) "
            f"checked in {report.seconds:.1f} s ({report.mb_per_second:.1f} MB/s); "
            f"{report.manifests_checked} manifests"
        )
        for label, found in (
            ("corrupt", report.corrupt),
            ("missing", report.missing),
            ("orphaned", report.orphaned),
            ("bad manifests", report.bad_manifests),
        ):
            click.echo(f"{label}: {len(found)}")
            if show:
                for name in found:
                    click.echo(f"  {name}")
        if report.repair is not None:
            r = report.repair
            click.echo(
                f"repaired: {r.orphans_deleted} orphans and {r.corrupt_deleted} corrupt objects "
                f"deleted, {r.revisions_damaged} versions marked damaged, "
                f"{r.ownerships_withdrawn} ownerships withdrawn (next upload re-sends them)"
            )
    if not report.clean:
        sys.exit(1)


@admin.command("stats")
@_deployment_options
@json_option
def stats(
    data: Path | None,
    db_url: str | None,
    blockstore: str | None,
    config: Path | None,
    as_json: bool,
) -> None:
    """Storage and dedup figures per account and for the deployment: live, logical
    (every kept version) and stored bytes, dedup and compression ratios."""
    from rich.console import Console
    from rich.table import Table

    from backend.services import stats as figures

    settings = _settings(data, db_url, blockstore, config)
    state = _open(settings)
    try:
        with state.db.read() as conn:
            rows = [*figures.account_stats(conn), figures.deployment_stats(conn)]
    finally:
        state.db.close()
    if as_json:
        print_json(
            [
                {
                    **asdict(r),
                    "dedup_ratio": r.dedup_ratio,
                    "compression_ratio": r.compression_ratio,
                    "versioning_overhead": r.versioning_overhead,
                }
                for r in rows
            ]
        )
        return
    table = Table("account", "files", "live", "versions", "logical", "stored", "dedup", "zstd")
    for r in rows:
        table.add_row(
            r.name,
            str(r.live_files),
            human_size(r.live_bytes),
            str(r.versions),
            human_size(r.logical_bytes),
            human_size(r.stored_bytes),
            f"{r.dedup_ratio:.2f}×",
            f"{r.compression_ratio:.2f}×",
        )
    Console().print(table)
    total = rows[-1]
    click.echo(
        f"unreferenced, freed by the next gc past its grace: {human_size(total.garbage_bytes)}"
    )
