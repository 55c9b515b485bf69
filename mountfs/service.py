"""A systemd *user* unit per mount point, so the folder is mounted at login.

`mountfs service install MOUNTPOINT` writes `~/.config/systemd/user/mountfs-<path>.service`
(`<path>` is the mount point escaped as `systemd-escape --path` does, so one unit per
mount point and `systemctl --user status mountfs-home-me-Cloud` reads naturally), enables
it with `systemctl --user enable` (which only links files, so it works even where no user
manager runs), then `daemon-reload` and `start` when a manager answers; where none does
(a container, an SSH session without lingering) it prints the commands that are left.

The unit is `Type=forking` around `mountfs mount` without `--foreground`: that command
returns exactly when the folder is usable (the daemon reports over a pipe, see
`mountfs.mount`), so systemd marks the unit started only then and units ordered after it
see the files; a mount that fails fails the unit with the daemon's reason. `PIDFile=`
names the daemon (`STATE/mountfs.pid`, written before the mount is reported), which
systemd then supervises for `Restart=on-failure`. `Type=notify` would give the same
guarantee but needs a `READY=1` from inside the daemon; forking reuses the readiness
report that `mountfs mount` already has. `ExecStop=mountfs umount` waits for the daemon to
push what it can, hence the long `TimeoutStopSec`. The daemon's log goes to the journal
as well as to `STATE/mountfs.log` (see `mountfs.mount._setup_logging`).

Installing again rewrites the unit; a unit that already runs keeps its old command line
until `systemctl --user restart` (not done for you: it unmounts the folder).

`After=network-online.target` orders the mount after the network where the user manager
knows that target; mountfs starts offline anyway and syncs once the backend answers.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

from mountfs.state.lock import PID_FILE
from mountfs.sync.transfers import Bandwidth

if TYPE_CHECKING:  # mountfs.mount loads pyfuse3
    from mountfs.mount import MountOptions

__all__ = [
    "ServiceError",
    "ServiceResult",
    "UnitSpec",
    "install",
    "mount_arguments",
    "mountfs_command",
    "render_unit",
    "uninstall",
    "unit_dir",
    "unit_name",
]

STOP_TIMEOUT_S = 120
"""systemd's patience with `mountfs umount` (it waits up to 60 s, the daemon's final
flush up to 20 s more)."""

_SAFE_ARG = re.compile(r"[A-Za-z0-9_@%+=:,./-]+")
_ESCAPE_KEEP = re.compile(r"[A-Za-z0-9:_.]")


@dataclass(frozen=True, slots=True)
class UnitSpec:
    """What the unit mounts, and with which command.

    Attributes:
        options: what `mountfs mount` is asked for (`mountpoint` and `state_dir` absolute;
            `foreground` is ignored: the unit is `Type=forking`).
        command: the absolute command that runs mountfs (e.g. `/opt/venv/bin/mountfs`).
    """

    options: MountOptions
    command: tuple[str, ...]

    @property
    def mountpoint(self) -> Path:
        return self.options.mountpoint

    @property
    def state_dir(self) -> Path:
        return self.options.state_dir


_FLAG_OF = {
    "log_level": "--log-level",
    "cache_size": "--cache-size",
    "offline_read_timeout": "--offline-read-timeout",
    "bandwidth": "--bwlimit",
    "in_flight": "--transfers",
    "notify": "--no-notify",
}
"""The `mountfs mount` option of each `MountOptions` field that is an option."""


def mount_arguments(opts: MountOptions) -> list[str]:
    """The `mountfs mount` options that ask for `opts` (besides the mount point, `--state`
    and `--foreground`): every field that differs from its default, and the log level.

    One entry per `MountOptions` field (`_FLAG_OF`; a test checks that none is missing), so
    an option added to the mount reaches the unit, or the test fails.
    """
    from mountfs.mount import MountOptions

    args: list[str] = []
    for field in fields(MountOptions):
        if field.name not in _FLAG_OF:
            continue
        value = getattr(opts, field.name)
        if field.name != "log_level" and value == field.default:
            continue
        flag = _FLAG_OF[field.name]
        if isinstance(value, bool):
            args.append(flag)  # only `notify=False` differs from its default
        elif isinstance(value, Bandwidth):
            args += [flag, f"{_rate(value.up)}:{_rate(value.down)}"]
        else:
            args += [flag, str(value)]
    return args


def _rate(rate: float | None) -> str:
    if rate is None:
        return "off"
    return str(int(rate)) if rate == int(rate) else repr(rate)


@dataclass(frozen=True, slots=True)
class ServiceResult:
    """What `install`/`uninstall` did, for the CLI to report.

    Attributes:
        unit_path: the unit file written or removed.
        done: True if systemctl did all its part (the unit runs, or is stopped and gone).
        todo: `systemctl --user` commands left for the user to run, when `done` is False.
        reason: why systemctl could not do its part, when it could not.
    """

    unit_path: Path
    done: bool
    todo: tuple[str, ...] = ()
    reason: str = ""


class ServiceError(RuntimeError):
    """systemctl answered but refused (e.g. the unit failed to start); the message says why."""


def unit_dir() -> Path:
    """`$XDG_CONFIG_HOME/systemd/user`, where systemd looks for a user's own units."""
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "systemd" / "user"


def unit_name(mountpoint: Path) -> str:
    """`mountfs-<escaped path>.service`, escaped as `systemd-escape --path` does.

    Slashes become dashes; bytes outside `[A-Za-z0-9:_.]`, and a leading dot, become `\\xNN`.
    """
    path = "/".join(p for p in str(mountpoint).split("/") if p)
    escaped = "".join(_escape_char(c, first=i == 0) for i, c in enumerate(path)) or "-"
    return f"mountfs-{escaped}.service"


def _escape_char(char: str, *, first: bool) -> str:
    if char == "/":
        return "-"
    if _ESCAPE_KEEP.fullmatch(char) and not (first and char == "."):
        return char
    return "".join(f"\\x{byte:02x}" for byte in char.encode())


def mountfs_command() -> tuple[str, ...]:
    """The absolute command of this installation of mountfs.

    The `mountfs` script beside the running interpreter (a venv's `bin/`), else the one on
    PATH, else `python -m mountfs` with this interpreter: never a bare name, since the
    user manager's PATH is not the login shell's.
    """
    beside = Path(sys.executable).parent / "mountfs"  # not resolved: a venv's python is a link
    if beside.is_file() and os.access(beside, os.X_OK):
        return (str(beside.absolute()),)
    found = shutil.which("mountfs")
    if found:
        return (str(Path(found).absolute()),)
    return (str(Path(sys.executable).absolute()), "-m", "mountfs")


def render_unit(spec: UnitSpec) -> str:
    """The text of the unit file."""
    start = [*spec.command, "mount", str(spec.mountpoint), "--state", str(spec.state_dir)]
    start += mount_arguments(spec.options)
    stop = [*spec.command, "umount", str(spec.mountpoint)]
    return "\n".join(
        [
            "# Written by `mountfs service install`; `mountfs service uninstall` removes it.",
            "[Unit]",
            f"Description={_specifiers(f'mountfs cloud drive at {spec.mountpoint}')}",
            "After=network-online.target",
            "",
            "[Service]",
            "Type=forking",
            f"PIDFile={_specifiers(str(spec.state_dir / PID_FILE))}",
            f"ExecStart={_command_line(start)}",
            f"ExecStop={_command_line(stop)}",
            "Restart=on-failure",
            "RestartSec=10",
            f"TimeoutStopSec={STOP_TIMEOUT_S}",
            "",
            "[Install]",
            "WantedBy=default.target",
            "",
        ]
    )


def _command_line(args: list[str]) -> str:
    return " ".join(_quote(a) for a in args)


def _quote(arg: str) -> str:
    """One argument of an Exec line: quoted where needed, `%` and `$` doubled (not expanded)."""
    if not _SAFE_ARG.fullmatch(arg):
        arg = '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return _specifiers(arg).replace("$", "$$")


def _specifiers(text: str) -> str:
    return text.replace("%", "%%")


def install(spec: UnitSpec) -> ServiceResult:
    """Write and enable the unit, then start it if a user manager answers.

    `systemctl --user enable` works on the files alone, so the unit is set to start at
    the next login even where no manager runs now (then the result lists what is left).

    Raises:
        ServiceError: the manager answered but the unit did not start.
    """
    path = unit_dir() / unit_name(spec.mountpoint)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(path.name + ".tmp")
    temp.write_text(render_unit(spec))
    temp.replace(path)
    enable, reload, start = ["enable", path.name], ["daemon-reload"], ["start", path.name]
    not_enabled = _systemctl(enable)
    no_manager = _systemctl(reload)
    if no_manager is not None:
        todo = ([enable] if not_enabled else []) + [reload, start]
        return ServiceResult(path, False, tuple(map(_shown, todo)), not_enabled or no_manager)
    not_started = _systemctl(start)
    if not_started is not None:
        raise ServiceError(
            f"{not_started}\n(see: systemctl --user status {path.name}; "
            f"journalctl --user -u {path.name})"
        )
    if not_enabled is not None:
        return ServiceResult(path, False, (_shown(enable),), not_enabled)
    return ServiceResult(path, True)


def uninstall(mountpoint: Path) -> ServiceResult:
    """Stop the unit if a manager runs it (which unmounts), disable it, remove the file.

    Raises:
        FileNotFoundError: no unit was installed for `mountpoint`.
    """
    path = unit_dir() / unit_name(mountpoint)
    if not path.exists():
        raise FileNotFoundError(f"no mountfs unit for {mountpoint} ({path})")
    stop, reload = ["stop", path.name], ["daemon-reload"]
    no_manager = _systemctl(reload)
    if no_manager is None:
        _systemctl(stop)  # also fails when the unit was never loaded: nothing to stop then
    if _systemctl(["disable", path.name]) is not None:
        # No systemctl: undo by hand what `enable` did for WantedBy=default.target.
        (path.parent / "default.target.wants" / path.name).unlink(missing_ok=True)
    path.unlink()
    if no_manager is not None:
        return ServiceResult(path, False, (), no_manager)
    _systemctl(reload)
    return ServiceResult(path, True)


def _systemctl(args: list[str]) -> str | None:
    """Run `systemctl --user ARGS`; None on success, else why not (one line)."""
    if shutil.which("systemctl") is None:
        return "systemctl is not installed"
    try:
        result = subprocess.run(
            ["systemctl", "--user", *args], capture_output=True, text=True, timeout=120
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"systemctl --user {' '.join(args)}: {exc}"
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        return f"systemctl --user {' '.join(args)}: {detail[0] if detail else 'failed'}"
    return None


def _shown(args: list[str]) -> str:
    return " ".join(["systemctl", "--user", *args])
