"""`mountfs versions`, `mountfs restore`, `mountfs trash`, `mountfs trash empty` and `mountfs du`.

A PATH is a path in the mounted folder (`~/Cloud/docs/a.txt`, or one under
`~/Cloud/.versions/`), or, when it lies in no mountfs mount, a path from the account's root
(`docs/a.txt`). Deleted files and folders are found by their old path: where a live node
and deleted ones had the name, the live one wins, then the most recently deleted.
These commands ask the backend directly (they work with or without a mount); a running
mount shows the result within a second (the push channel).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from mountfs.cli.common import human_size, json_option, print_json, state_option, with_api
from mountfs.cli.core import main
from mountfs.transport.api import ApiClient
from mountfs.transport.versions import RemoteVersion, RestoreReport, TrashItem

VERSIONS_DIR = ".versions"
_STAMP = re.compile(r"^(\d{4}-\d{2}-\d{2})T(\d{2})-(\d{2})-(\d{2})Z(?:-\d+)?(?: \(|$)")


def _mount_points() -> list[Path]:
    """Mount points of mountfs mounts (fstype fuse.mountfs), longest first."""
    found = []
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        fields = line.split(" ")
        if " - " not in line or len(fields) < 5:
            continue
        fstype = line.split(" - ", 1)[1].split(" ")[0]
        if fstype == "fuse.mountfs":
            found.append(Path(fields[4].replace("\\040", " ")))
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def account_path(arg: str) -> tuple[str, str | None]:
    """The path from the account root that `arg` names, and the name of a version file
    when `arg` is one under `.versions/` (`2026-11-24T10-15-02Z (laptop) a.txt`)."""
    local = Path(arg).expanduser().absolute()
    parts: list[str] | None = None
    for mount in _mount_points():
        if local == mount or mount in local.parents:
            parts = list(local.relative_to(mount).parts)
            break
    if parts is None:
        parts = [p for p in arg.split("/") if p not in ("", ".")]
    if not parts or parts[0] != VERSIONS_DIR:
        return "/".join(parts), None
    parts = parts[1:]
    if parts and _STAMP.match(parts[-1]):
        return "/".join(parts[:-1]), parts[-1]
    return "/".join(parts), None


def parse_at(value: str) -> tuple[str | None, datetime | None]:
    """`--at`: a revision id, or a time (ISO 8601, or the `.versions` stamp; a time
    without a zone is local time)."""
    try:
        return str(uuid.UUID(value)), None
    except ValueError:
        pass
    stamp = _STAMP.match(value + " (")
    if stamp is not None:
        day, hh, mm, ss = stamp.groups()
        return None, datetime.fromisoformat(f"{day}T{hh}:{mm}:{ss}+00:00")
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is neither a revision id nor a time (e.g. 2026-11-24T10:15)",
            param_hint="--at",
        ) from None
    return None, when if when.tzinfo is not None else when.astimezone()


def utc_stamp(when: datetime) -> str:
    """A version's time as `.versions` names it: UTC, sortable, no colons."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H-%M-%SZ")


@main.command()
@click.argument("path")
@state_option
@json_option
def versions(path: str, state_dir: Path | None, as_json: bool) -> None:
    """List the versions of the file at PATH (deleted files too): time, size, device."""
    where, _ = account_path(path)

    async def call(api: ApiClient) -> list[RemoteVersion]:
        node = await api.resolve(where)
        if node.kind != "file":
            raise click.ClickException(f"{where or '/'} is a {node.kind}: only files have versions")
        return await api.versions(node.id)

    listed = with_api(state_dir, call)
    if as_json:
        print_json([{**asdict(v), "created_at": v.created_at.isoformat()} for v in listed])
        return
    table = Table("version (UTC)", "size", "device", "revision", "")
    for v in listed:
        note = "current" if v.head and v.kind == "content" else ""
        if v.kind == "tombstone":
            note = "deleted"
        if v.damaged:
            note = "damaged"
        size = human_size(v.size) if v.kind == "content" else "-"
        table.add_row(utc_stamp(v.created_at), size, v.device_label, v.revision_id, note)
    Console().print(table)


@main.command()
@click.argument("path")
@click.option(
    "--at",
    "at",
    default=None,
    metavar="REVISION|TIME",
    help="The version to restore: its revision id, or a time (the version current then). "
    "Default: a deleted file or folder comes back as it was; a file gets its previous "
    "version back.",
)
@state_option
def restore(path: str, at: str | None, state_dir: Path | None) -> None:
    """Make an old version of PATH current again (a new version: history is kept), or
    bring back a deleted file or folder."""
    where, version_file = account_path(path)
    revision_id, when = parse_at(at) if at else (None, None)

    async def call(api: ApiClient) -> RestoreReport:
        node = await api.resolve(where)
        chosen = revision_id
        if version_file is not None and chosen is None and when is None:
            from mountfs.vfs.versions import named_versions

            named = dict(named_versions(await api.versions(node.id), node.name))
            if version_file not in named:
                raise click.ClickException(f"no version {version_file!r} of {where}")
            chosen = named[version_file].revision_id
        return await api.restore(node.id, chosen, when.isoformat() if when else None)

    report = with_api(state_dir, call)
    shown = where or "/"
    if report.renamed_to:
        parent = shown.rpartition("/")[0]
        shown = f"{shown} as {parent + '/' if parent else ''}{report.renamed_to}"
    brought = f" ({report.undeleted} items back from the trash)" if report.undeleted > 1 else ""
    click.echo(f"restored {shown}{brought}")


@main.group(invoke_without_command=True)
@state_option
@json_option
@click.pass_context
def trash(ctx: click.Context, state_dir: Path | None, as_json: bool) -> None:
    """List deleted files and folders that can still be restored (`mountfs restore PATH`);
    `mountfs trash empty` deletes them for good."""
    ctx.obj = state_dir
    if ctx.invoked_subcommand is not None:
        return
    items = with_api(state_dir, lambda api: api.trash())
    if as_json:
        print_json(
            [
                {**asdict(i), "deleted_at": i.deleted_at.isoformat() if i.deleted_at else None}
                for i in items
            ]
        )
        return
    if not items:
        click.echo("the trash is empty")
        return
    table = Table("deleted (UTC)", "path", "size", "files", "device")
    for i in items:
        when = utc_stamp(i.deleted_at) if i.deleted_at else "-"
        path = i.path + ("/" if i.kind == "dir" else "")
        table.add_row(when, path, human_size(i.size), str(i.files), i.device_label or "-")
    Console().print(table)


@trash.command("empty")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@state_option
@click.pass_context
def trash_empty(ctx: click.Context, yes: bool, state_dir: Path | None) -> None:
    """Delete everything in the trash for good (asks first)."""
    state = state_dir or ctx.obj
    items: list[TrashItem] = with_api(state, lambda api: api.trash())
    if not items:
        click.echo("the trash is empty")
        return
    size = human_size(sum(i.size for i in items))
    files = sum(i.files for i in items)
    if not yes:
        click.confirm(
            f"Delete {len(items)} items ({files} files, {size}) for good? "
            "They cannot be restored afterwards",
            abort=True,
        )
    ids = [i.node_id for i in items]  # exactly what was shown, nothing deleted since
    report = with_api(state, lambda api: api.purge(ids))
    click.echo(
        f"deleted {report.nodes} files and folders for good ({report.revisions} versions, {size})"
    )


@main.command()
@click.argument("paths", nargs=-1, required=True)
@state_option
@json_option
def du(paths: tuple[str, ...], state_dir: Path | None, as_json: bool) -> None:
    """Bytes and files below each PATH (a folder, or a file), from totals the server keeps
    up to date: nothing is walked or downloaded."""

    async def call(api: ApiClient) -> list[tuple[str, int, int]]:
        out = []
        for arg in paths:
            where, _ = account_path(arg)
            node = await api.resolve(where)
            if node.deleted:
                raise click.ClickException(f"{where or '/'} is deleted")
            size, files = await api.usage(node.id)
            out.append((where or "/", size, files))
        return out

    rows = with_api(state_dir, call)
    if as_json:
        print_json([{"path": p, "bytes": b, "files": f} for p, b, f in rows])
        return
    for path, size, files in rows:
        click.echo(f"{human_size(size):>10}  {files:>8} files  {path}")
