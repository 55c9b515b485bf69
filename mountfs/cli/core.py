"""The first commands of `mountfs`: the `main` group, server, account, login, devices,
mount, umount, status, sync and service.
"""

from __future__ import annotations

import contextlib
import socket
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.table import Table

from mountfs import __version__
from mountfs.cli.common import (
    bwlimit_option,
    ca_file_option,
    device_of,
    human_size,
    json_option,
    keep_ca_file,
    print_json,
    read_password,
    run_async,
    state_option,
    state_path,
    transfers_option,
    with_api,
)
from mountfs.fstab import MIN_OFFLINE_READ_TIMEOUT
from mountfs.sync.reads import OFFLINE_READ_TIMEOUT
from mountfs.sync.transfers import Bandwidth
from mountfs.transport.api import open_api
from mountfs.transport.auth import DeviceInfo, save_device

if TYPE_CHECKING:  # mountfs.mount loads pyfuse3: imported when a mount is really made
    from mountfs.mount import MountOptions


class _Commands(click.Group):
    """The `mountfs` group, which also takes the call that `mount.fuse3` makes for fstab.

    `mount.fuse3` (fstab type `fuse` with `mountfs#SOURCE`, or type `fuse.mountfs`) runs
    `mountfs SOURCE MOUNTPOINT -o OPTS`: that form, whose first word is no subcommand, is
    handed whole to `mountfs.fstab`.
    """

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        from mountfs.fstab import looks_like_helper_call

        if args and self.get_command(ctx, args[0]) is None and looks_like_helper_call(args):
            return "fstab", _fstab_call, args
        return super().resolve_command(ctx, args)


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mountfs")
def main() -> None:
    """mountfs: a cloud drive that you mount as a folder.

    `mountfs STATE_DIR MOUNTPOINT -o OPTIONS` is the form that mount.fuse3 uses for an
    fstab line (see `mount.mountfs`).
    """


@click.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def _fstab_call(args: tuple[str, ...]) -> None:
    """SOURCE MOUNTPOINT -o OPTIONS, as mount.fuse3 calls it (not listed: no subcommand)."""
    from mountfs.fstab import run

    sys.exit(run(args, prog="mountfs"))


@main.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def server(args: tuple[str, ...]) -> None:
    """Run the backend (metadata service + embedded block store).

    All options belong to the backend: `mountfs server --help` lists them
    (--data DIR, --host, --port, --db URL, ...).
    """
    from backend.server import parse_args, serve

    serve(parse_args(list(args)))


@main.group()
def account() -> None:
    """Manage accounts on a backend."""


@account.command("create")
@click.argument("name")
@click.option("--server", required=True, help="Backend URL, e.g. http://127.0.0.1:8765")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@ca_file_option
def account_create(name: str, server: str, password_stdin: bool, ca_file: Path | None) -> None:
    """Register the account NAME."""
    password = read_password(password_stdin, confirm=True)

    async def call() -> str:
        async with open_api(server, ca_file=str(ca_file) if ca_file else None) as api:
            return (await api.create_account(name, password)).account_id

    account_id = run_async(call)
    click.echo(f"created account {name} ({account_id})")


@main.command()
@click.option("--server", required=True, help="Backend URL, e.g. http://127.0.0.1:8765")
@click.option("--user", "user", required=True, help="Account name.")
@click.option("--device", "label", default=None, help="Device label (default: host name).")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@ca_file_option
@state_option
def login(
    server: str,
    user: str,
    label: str | None,
    password_stdin: bool,
    ca_file: Path | None,
    state_dir: Path | None,
) -> None:
    """Log this device in: its token is kept in the state directory (mode 0600).

    With --ca-file the CA is copied into the state directory and trusted from then on by
    every command and the mount of this device (besides the system's CAs).
    """
    password = read_password(password_stdin, confirm=False)
    label = label or socket.gethostname()
    state = state_path(state_dir)
    kept_ca = keep_ca_file(ca_file, state) if ca_file else None

    async def call() -> DeviceInfo:
        async with open_api(server, ca_file=kept_ca) as api:
            login = await api.login(user, password, label)
        async with open_api(server, login.token, kept_ca) as api:
            me = await api.me()
        return DeviceInfo(
            server=server.rstrip("/"),
            account_id=me.account_id,
            account_name=me.name,
            device_id=me.device_id,
            device_label=me.device_label,
            root_id=me.root_id,
            namespace_id=me.namespace_id,
            token=login.token,
            ca_file=kept_ca,
        )

    info = run_async(call)
    save_device(state, info)
    click.echo(f"logged in as {info.account_name} on device {info.device_label} ({state})")


@main.group(invoke_without_command=True)
@state_option
@json_option
@click.pass_context
def devices(ctx: click.Context, state_dir: Path | None, as_json: bool) -> None:
    """List the account's devices (`devices revoke ID` cuts one off)."""
    ctx.obj = state_dir
    if ctx.invoked_subcommand is not None:
        return
    listed = with_api(state_dir, lambda api: api.devices())
    if as_json:
        print_json([asdict(d) for d in listed])
        return
    table = Table("id", "label", "created", "last seen", "state")
    for d in listed:
        state = "revoked" if d.revoked_at else ("this device" if d.current else "active")
        table.add_row(d.id, d.label, d.created_at, d.last_seen_at or "-", state)
    Console().print(table)


@devices.command("revoke")
@click.argument("device_id")
@state_option
@click.pass_context
def devices_revoke(ctx: click.Context, device_id: str, state_dir: Path | None) -> None:
    """Revoke DEVICE_ID: its token stops working at once."""
    with_api(state_dir or ctx.obj, lambda api: api.revoke_device(device_id))
    click.echo(f"revoked device {device_id}")


def _mount_settings(command: Callable[..., None]) -> Callable[..., None]:
    """The options of a mount, for `mount` and `service install` alike (the unit passes
    them on: `mountfs.service.mount_arguments`; fstab spells them `mountfs.fstab.OPTIONS`)."""
    for option in reversed(
        [
            click.option(
                "--log-level",
                type=click.Choice(
                    ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], case_sensitive=False
                ),
                default="INFO",
                show_default=True,
            ),
            click.option("--cache-size", type=int, default=None, help="Cache limit in bytes."),
            click.option(
                "--offline-read-timeout",
                type=click.FloatRange(min=MIN_OFFLINE_READ_TIMEOUT),
                default=OFFLINE_READ_TIMEOUT,
                show_default=True,
                help="Seconds a read of uncached bytes waits for an unresponsive backend "
                "(then EIO).",
            ),
            click.option(
                "--no-notify",
                is_flag=True,
                help="No desktop notifications (conflicts) from this mount.",
            ),
            bwlimit_option,
            transfers_option,
        ]
    ):
        command = option(command)
    return command


def mount_options_of(
    mountpoint: Path,
    state_dir: Path | None,
    foreground: bool,
    log_level: str,
    cache_size: int | None,
    offline_read_timeout: float,
    no_notify: bool,
    bandwidth: Bandwidth,
    in_flight: int,
) -> MountOptions:
    """What the options of `_mount_settings` ask for, as `mountfs.mount` takes it (for
    `mount` and `service install`, so both read them alike; tests compare it with fstab's)."""
    from mountfs.mount import MountOptions

    return MountOptions(
        mountpoint=mountpoint.expanduser().absolute(),
        state_dir=state_path(state_dir).absolute(),
        foreground=foreground,
        log_level=log_level.upper(),
        cache_size=cache_size,
        offline_read_timeout=offline_read_timeout,
        notify=not no_notify,
        bandwidth=bandwidth,
        in_flight=in_flight,
    )


@main.command()
@click.argument("mountpoint", type=click.Path(file_okay=False, path_type=Path))
@state_option
@click.option("--foreground", "-f", is_flag=True, help="Stay in the foreground.")
@_mount_settings
def mount(
    mountpoint: Path,
    state_dir: Path | None,
    foreground: bool,
    log_level: str,
    cache_size: int | None,
    offline_read_timeout: float,
    no_notify: bool,
    bandwidth: Bandwidth,
    in_flight: int,
) -> None:
    """Mount the account logged in on this device at MOUNTPOINT."""
    from mountfs.mount import mount as do_mount

    device_of(state_dir)  # fail early, with the login hint, if there is none
    options = mount_options_of(
        mountpoint,
        state_dir,
        foreground,
        log_level,
        cache_size,
        offline_read_timeout,
        no_notify,
        bandwidth,
        in_flight,
    )
    sys.exit(do_mount(options))


@main.command()
@click.argument("mountpoint", type=click.Path(file_okay=False, path_type=Path))
@click.option("--timeout", type=float, default=60.0, show_default=True)
def umount(mountpoint: Path, timeout: float) -> None:
    """Flush what can be flushed and unmount MOUNTPOINT cleanly."""
    from mountfs.mount import umount as do_umount

    sys.exit(do_umount(mountpoint.expanduser().absolute(), timeout))


@main.command()
@state_option
@json_option
@click.option("--watch", is_flag=True, help="Show the transfers live until Ctrl-C.")
def status(state_dir: Path | None, as_json: bool, watch: bool) -> None:
    """Online or offline, what waits to upload, cache use, last sync, transfers."""
    from mountfs import control
    from mountfs.cache.block_cache import CACHE_DIR, CacheLimits
    from mountfs.cli.transfers import transfers_view, watch_status
    from mountfs.status import Status, offline_status

    state = state_path(state_dir)
    device_of(state_dir)

    def fetch() -> Status:
        try:
            answer = control.request(state, {"cmd": "status"}, timeout=10)
            return Status(**answer["status"])
        except control.NoDaemon:
            limit_root = state / CACHE_DIR if (state / CACHE_DIR).is_dir() else state
            return offline_status(state, CacheLimits.for_disk(limit_root, None).cache_size)
        except TimeoutError as exc:
            raise click.ClickException(str(exc)) from exc

    report = fetch()
    if as_json:
        print_json(report.to_json())
        return
    table = Table(show_header=False, box=None)
    state_text = "offline" if not report.online else "online"
    if not report.mounted:
        state_text = "not mounted"
    table.add_row("state", state_text)
    waiting = f"{report.pending_files} files, {human_size(report.pending_bytes)}"
    table.add_row("waiting", f"{waiting} (+{report.pending_changes} changes)")
    cache = f"{human_size(report.cache_bytes)} of {human_size(report.cache_limit_bytes)}"
    table.add_row("cache", cache)
    if report.pinned_files:
        done = report.pinned_bytes - report.pinned_missing_bytes
        pinned = f"{report.pinned_files} files, {human_size(done)} of "
        pinned += f"{human_size(report.pinned_bytes)} downloaded"
        table.add_row("pinned", pinned)
    table.add_row("last sync", report.last_sync or "never")
    Console().print(table)
    if watch:
        watch_status(fetch)
    elif report.paused or report.transfers:
        Console().print(transfers_view(report))


@main.command()
@state_option
@click.option("--timeout", type=float, default=300.0, show_default=True, help="Seconds.")
def sync(state_dir: Path | None, timeout: float) -> None:
    """Push what is pending, pull what is new; exit 0 once up to date (1 on timeout)."""
    from mountfs import control
    from mountfs.sync.oneshot import sync_unmounted

    state = state_path(state_dir)
    device_of(state_dir)
    try:
        answer = control.request(state, {"cmd": "sync", "timeout": timeout}, timeout=timeout + 5)
        done = bool(answer.get("ok")) and bool(answer.get("synced"))
        if not done and answer.get("error"):
            click.echo(f"sync: {answer['error']}", err=True)
    except control.NoDaemon:
        done = sync_unmounted(state, timeout)
    except TimeoutError:
        done = False
    if not done:
        click.echo(f"not up to date after {timeout:.0f}s", err=True)
        sys.exit(1)
    click.echo("up to date")


@main.group()
def service() -> None:
    """Mount at login with a systemd user unit (one per mount point)."""


@service.command("install")
@click.argument(
    "mountpoint", type=click.Path(file_okay=False, path_type=Path), default=Path("~/Cloud")
)
@state_option
@_mount_settings
def service_install(
    mountpoint: Path,
    state_dir: Path | None,
    log_level: str,
    cache_size: int | None,
    offline_read_timeout: float,
    no_notify: bool,
    bandwidth: Bandwidth,
    in_flight: int,
) -> None:
    """Write, enable and start a systemd user unit that mounts MOUNTPOINT (default ~/Cloud).

    It takes the options of `mountfs mount` and passes them on."""
    from mountfs import service as units

    device_of(state_dir)  # the unit would only fail at every login without one
    options = mount_options_of(
        mountpoint,
        state_dir,
        False,
        log_level,
        cache_size,
        offline_read_timeout,
        no_notify,
        bandwidth,
        in_flight,
    )
    mountpoint = options.mountpoint
    with contextlib.suppress(FileExistsError):  # mkdir, unlike stat, works on a dead mount
        mountpoint.mkdir(parents=True)
    spec = units.UnitSpec(options=options, command=units.mountfs_command())
    try:
        result = units.install(spec)
    except units.ServiceError as exc:
        raise click.ClickException(f"wrote the unit, but it did not start: {exc}") from exc
    click.echo(f"wrote {result.unit_path}")
    if result.done:
        click.echo(f"{mountpoint} is mounted now and at every login ({result.unit_path.name})")
        return
    click.echo(f"systemctl could not do it all here ({result.reason}); run:", err=True)
    for command in result.todo:
        click.echo(f"  {command}", err=True)


@service.command("uninstall")
@click.argument(
    "mountpoint", type=click.Path(file_okay=False, path_type=Path), default=Path("~/Cloud")
)
def service_uninstall(mountpoint: Path) -> None:
    """Stop (unmounting) and remove the systemd user unit of MOUNTPOINT (default ~/Cloud)."""
    from mountfs import service as units

    mountpoint = mountpoint.expanduser().absolute()
    try:
        result = units.uninstall(mountpoint)
    except FileNotFoundError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"removed {result.unit_path}")
    if not result.done:
        click.echo(
            f"no user manager answered ({result.reason}): if the folder is still mounted, "
            f"run `mountfs umount {mountpoint}`",
            err=True,
        )
