"""What every `mountfs` command module shares: options, running async calls, clean errors.

Errors that a user can act on are printed as one line on stderr with exit status 1;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import json
import ssl
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import trio

from mountfs.config import default_state_dir
from mountfs.sync.transfers import DEFAULT_IN_FLIGHT, Bandwidth, parse_bwlimit
from mountfs.transport.api import ApiClient, ApiError, Offline, open_api
from mountfs.transport.auth import DeviceInfo, NotLoggedIn, load_device

T = TypeVar("T")

state_option = click.option(
    "--state",
    "state_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Device state directory (default: $MOUNTFS_STATE or ~/.local/share/mountfs).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


def _bandwidth(ctx: click.Context, param: click.Parameter, value: str | None) -> Bandwidth:
    try:
        return parse_bwlimit(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


bwlimit_option = click.option(
    "--bwlimit",
    "bandwidth",
    default=None,
    callback=_bandwidth,
    metavar="RATE",
    help="Bandwidth limit in bytes/s: 10M for both directions, or UP:DOWN (10M:50M).",
)
transfers_option = click.option(
    "--transfers",
    "in_flight",
    type=click.IntRange(1, 64),
    default=DEFAULT_IN_FLIGHT,
    show_default=True,
    help="Chunk transfers in flight at once.",
)
ca_file_option = click.option(
    "--ca-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="CA certificate (PEM) to trust for the server, besides the system's "
    "(e.g. the one `scripts/cluster up` prints); $SSL_CERT_FILE works too.",
)


def keep_ca_file(ca_file: Path, state_dir: Path) -> str:
    """Check that `ca_file` holds a usable CA and copy it to `state_dir/ca.pem`, so the
    device keeps trusting it even if the original moves; the copy's path."""
    try:
        ssl.create_default_context(cafile=str(ca_file))
    except (ssl.SSLError, OSError) as exc:
        raise click.ClickException(f"{ca_file} is not a PEM CA certificate: {exc}") from exc
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    kept = state_dir / "ca.pem"
    kept.write_bytes(ca_file.read_bytes())
    return str(kept)


def state_path(state_dir: Path | None) -> Path:
    return (state_dir or default_state_dir()).expanduser()


def run_async(fn: Callable[[], Awaitable[T]]) -> T:
    """Run an async API call, turning the errors a user can act on into a clean exit."""
    try:
        return trio.run(fn)
    except ApiError as exc:
        raise click.ClickException(f"{exc.detail} ({exc.code})") from exc
    except Offline as exc:
        raise click.ClickException(str(exc)) from exc


def device_of(state_dir: Path | None) -> DeviceInfo:
    try:
        return load_device(state_path(state_dir))
    except NotLoggedIn as exc:
        raise click.ClickException(str(exc)) from exc


def read_password(password_stdin: bool, confirm: bool) -> str:
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise click.ClickException("no password on standard input")
        return password
    value: str = click.prompt("Password", hide_input=True, confirmation_prompt=confirm)
    return value


def print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True))


def with_api(state_dir: Path | None, fn: Callable[[ApiClient], Awaitable[T]]) -> T:
    device = device_of(state_dir)

    async def call() -> T:
        async with open_api(device.server, device.token, device.ca_file) as api:
            return await fn(api)

    return run_async(call)


def human_size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def ask_mount(state: Path, body: dict[str, Any], timeout: float = 30) -> dict[str, Any] | None:
    """The running mount's answer to a control command, or None if no mount of `state`
    runs (the caller then works on the state directory itself)."""
    from mountfs import control

    try:
        answer = control.request(state, body, timeout=timeout)
    except control.NoDaemon:
        return None
    except TimeoutError as exc:
        raise click.ClickException(str(exc)) from exc
    if not answer.get("ok"):
        raise click.ClickException(str(answer.get("error", "the mount refused")))
    return answer
