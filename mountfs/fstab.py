"""The calling form of `mount(8)` and `/etc/fstab`: `mount.mountfs SOURCE MOUNTPOINT -o OPTS`.

Two programs reach us that way, and both end in `mountfs.mount.mount`:

- `mount.fuse3` (fstab type `fuse` with source `mountfs#SOURCE`, or type `fuse.mountfs`)
  runs `mountfs SOURCE MOUNTPOINT -o OPTS` through `/bin/sh`, after dropping
  `user,nouser,users,auto,noauto,nofail,_netdev` and adding `dev,suid` (unless `nodev` or
  `nosuid` was given); `mountfs.cli` routes that form here.
- `mount -t mountfs` runs the helper `/sbin/mount.mountfs SOURCE MOUNTPOINT [-sfnv] -o OPTS`
  (the `mount.mountfs` console script), which gets the fstab options unfiltered.

SOURCE is the device's state directory (where `mountfs login --state` put the login). An
empty source, `none` or `mountfs` stands for the `state=` option, else the default state
directory. Our own options are those of `mountfs mount`, spelled with underscores
(`OPTIONS`, one entry per `MountOptions` field, so a new mount option cannot be forgotten
here: a test checks it): `state=DIR`, `log_level=LEVEL`, `cache_size=BYTES` (suffixes K,
M, G, T: powers of 1024), `offline_read_timeout=SECONDS`, `bwlimit=RATE` (or `UP:DOWN`),
`transfers=N` and the flag `no_notify`. The generic options that `mount` and fstab carry
(`defaults`, `rw`, `noatime`, `nodev`, `user`, `_netdev`, `x-systemd.*`, `comment=…`, …)
are accepted and dropped: they concern `mount` itself, or the kernel's handling of a
mount that libfuse makes with its own flags. Anything else is an error that names the
option, so a typo in fstab does not silently mount with defaults -- except with `-s`
(sloppy), where `mount` asks helpers to ignore what they do not know.

The mount is always a daemon: `mount` (and a systemd `.mount` unit made from fstab)
expects the helper to return once the filesystem is mounted, which is exactly when
`mountfs.mount.mount` returns 0.
"""

from __future__ import annotations

import getopt
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mountfs.config import default_state_dir
from mountfs.sync.transfers import Bandwidth, parse_bwlimit

if TYPE_CHECKING:  # mountfs.mount loads pyfuse3: imported when a mount is really made
    from mountfs.mount import MountOptions

__all__ = [
    "FLAGS",
    "NOT_OPTIONS",
    "OPTIONS",
    "FstabError",
    "HelperCall",
    "looks_like_helper_call",
    "main",
    "mount_options",
    "parse_argv",
    "parse_size",
    "run",
]

USAGE = "usage: mount.mountfs STATE_DIR MOUNTPOINT [-sfnv] [-o OPTION[,OPTION...]]"

EXIT_USAGE = 1
"""mount(8)'s code for an incorrect invocation (a bad option included)."""
EXIT_MOUNT_FAILURE = 32
"""mount(8)'s code for a mount that failed."""

PLACEHOLDER_SOURCES = frozenset({"", "none", "mountfs"})
"""Sources that name no state directory: fstab needs something in its first field."""

GENERIC_OPTIONS = frozenset(
    {
        # fstab and mount(8) bookkeeping
        "defaults", "auto", "noauto", "user", "nouser", "users", "owner", "group",
        "nofail", "_netdev", "loud", "silent",
        # flags the kernel applies to every mount; libfuse mounts with its own (nodev,nosuid)
        "rw", "dev", "nodev", "suid", "nosuid", "exec", "noexec",
        "atime", "noatime", "relatime", "norelatime", "strictatime", "nostrictatime",
        "diratime", "nodiratime", "lazytime", "nolazytime", "async", "iversion", "noiversion",
        "mand", "nomand",
        # the kernel checks permissions anyway: mountfs always mounts with it
        "default_permissions",
    }
)  # fmt: skip
"""Options accepted and dropped (see the module docstring)."""

GENERIC_PREFIXES = ("x-", "X-", "comment=", "user=", "helper=", "uhelper=")
"""Families of options for userspace tools (systemd's `x-systemd.*`, `user=NAME` that
mount(8) records for a user mount, ...), accepted and dropped."""

UNSUPPORTED = {
    "ro": "read-only mounts are not supported",
    "sync": "synchronous writes are not supported (fsync a file to make it durable)",
    "dirsync": "synchronous directory updates are not supported",
    "remount": "remounting is not supported: unmount, then mount again",
    "bind": "bind mounts of mountfs are not supported",
    "allow_other": "allow_other is not supported: the mount is its owner's",
    "allow_root": "allow_root is not supported: the mount is its owner's",
}
"""Options that ask for something mountfs cannot do: refused with the reason."""

_SIZE_SUFFIXES = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


class FstabError(ValueError):
    """A calling mistake the user fixes in fstab or on the command line."""


MIN_OFFLINE_READ_TIMEOUT = 0.1
"""The least `--offline-read-timeout` / `offline_read_timeout=` (seconds)."""
MIN_TRANSFERS, MAX_TRANSFERS = 1, 64
"""The range of `--transfers` / `transfers=`."""


@dataclass(frozen=True, slots=True)
class HelperCall:
    """The arguments of a mount helper call, before their meaning is worked out.

    Attributes:
        source: the fstab source field (the state directory, or a placeholder).
        mountpoint: where to mount, as given.
        options: the `-o` options, split at commas, in order.
        fake: `-f`: do everything but mount.
        sloppy: `-s`: ignore options we do not know instead of refusing them.
        verbose: `-v`: say what is being mounted.
    """

    source: str
    mountpoint: str
    options: tuple[str, ...] = ()
    fake: bool = False
    sloppy: bool = False
    verbose: bool = False


def parse_argv(argv: Sequence[str]) -> HelperCall:
    """Parse `SOURCE MOUNTPOINT [-sfnv] [-t TYPE] [-o OPTS]...` in any order (as mount does).

    Raises:
        FstabError: a malformed call (the message says what is wrong).
    """
    try:
        flags, positional = getopt.gnu_getopt(list(argv), "sfnvo:t:N:")
    except getopt.GetoptError as exc:
        raise FstabError(f"{exc.msg}\n{USAGE}") from None
    if len(positional) != 2:
        raise FstabError(f"expected a source and a mount point, got {positional!r}\n{USAGE}")
    options: list[str] = []
    seen: set[str] = set()
    for flag, value in flags:
        seen.add(flag)
        if flag == "-o":
            options += [o for o in value.split(",") if o]
        elif flag == "-t" and value not in ("mountfs", "fuse.mountfs"):
            raise FstabError(f"filesystem type {value!r} is not mountfs")
        elif flag == "-N":
            raise FstabError("mounting in another namespace (-N) is not supported")
    return HelperCall(
        source=positional[0],
        mountpoint=positional[1],
        options=tuple(options),
        fake="-f" in seen,
        sloppy="-s" in seen,
        verbose="-v" in seen,
    )


def mount_options(call: HelperCall) -> MountOptions:
    """What to mount, from the helper call's source and options.

    Raises:
        FstabError: an unknown option (unless sloppy), a bad value, or a refused option.
    """
    from mountfs.mount import MountOptions

    state: str | None = None
    settings: dict[str, object] = {}
    for option in call.options:
        name, has_value, value = option.partition("=")
        if name == "state" or name in OPTIONS:
            if not has_value or not value:
                raise FstabError(f"option {name}= needs a value")
            if name == "state":
                state = value
            else:
                field, parse = OPTIONS[name]
                settings[field] = parse(value)
        elif option in FLAGS:
            field, flag_value = FLAGS[option]
            settings[field] = flag_value
        elif name in FLAGS:
            raise FstabError(f"option {name} takes no value")
        elif option in UNSUPPORTED:
            raise FstabError(f"option {option!r}: {UNSUPPORTED[option]}")
        elif option in GENERIC_OPTIONS or option.startswith(GENERIC_PREFIXES):
            continue
        elif not call.sloppy:
            known = ", ".join(["state=", *(f"{o}=" for o in OPTIONS), *FLAGS])
            raise FstabError(f"unknown option {option!r} (mountfs takes {known})")
    return MountOptions(
        mountpoint=_absolute(call.mountpoint),
        state_dir=_state_dir(call.source, state),
        foreground=False,
        **settings,  # type: ignore[arg-type]
    )


def _state_dir(source: str, option: str | None) -> Path:
    if source in PLACEHOLDER_SOURCES:
        return _absolute(option) if option else default_state_dir()
    state = _absolute(source)
    if option is not None and _absolute(option) != state:
        raise FstabError(f"two state directories: source {source!r} and state={option!r}")
    return state


def _absolute(path: str) -> Path:
    return Path(os.path.expanduser(path)).absolute()


def _log_level(value: str) -> str:
    level = value.upper()
    if level not in logging.getLevelNamesMapping() or level == "NOTSET":
        raise FstabError(f"log_level={value}: use DEBUG, INFO, WARNING, ERROR or CRITICAL")
    return level


def _seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds >= MIN_OFFLINE_READ_TIMEOUT or seconds == float("inf"):
        raise FstabError(
            f"offline_read_timeout={text}: expected seconds, at least {MIN_OFFLINE_READ_TIMEOUT}"
        )
    return seconds


def _bandwidth(text: str) -> Bandwidth:
    try:
        return parse_bwlimit(text)
    except ValueError as exc:
        raise FstabError(str(exc).replace("--bwlimit ", "bwlimit=", 1)) from None


def _transfers(text: str) -> int:
    if not text.isdigit() or not MIN_TRANSFERS <= int(text) <= MAX_TRANSFERS:
        raise FstabError(
            f"transfers={text}: expected a number from {MIN_TRANSFERS} to {MAX_TRANSFERS}"
        )
    return int(text)


def parse_size(text: str) -> int:
    """`cache_size=` in bytes: an integer with an optional K, M, G or T (powers of 1024)."""
    number, suffix = text, ""
    if text and text[-1].upper() in _SIZE_SUFFIXES:
        number, suffix = text[:-1], text[-1].upper()
    if not number.isdigit():
        raise FstabError(f"cache_size={text}: expected bytes, e.g. 10737418240 or 10G")
    return int(number) * _SIZE_SUFFIXES[suffix]


OPTIONS: dict[str, tuple[str, Callable[[str], object]]] = {
    "log_level": ("log_level", _log_level),
    "cache_size": ("cache_size", parse_size),
    "offline_read_timeout": ("offline_read_timeout", _seconds),
    "bwlimit": ("bandwidth", _bandwidth),
    "transfers": ("in_flight", _transfers),
}
"""Our `name=value` options besides `state=`: the `MountOptions` field each sets and how
its value is read (the same rules as `mountfs mount`'s option of that name)."""
FLAGS: dict[str, tuple[str, object]] = {"no_notify": ("notify", False)}
"""Our options without a value: the `MountOptions` field and the value each sets."""
NOT_OPTIONS = frozenset({"mountpoint", "state_dir", "foreground"})
"""`MountOptions` fields that are not options: the fstab fields, and the helper always
makes a daemon."""


def run(argv: Sequence[str], prog: str = "mount.mountfs") -> int:
    """Mount as the call asks; the exit status for `mount` (0, 1 usage, 32 failure)."""
    from mountfs.mount import mount

    try:
        call = parse_argv(argv)
        opts = mount_options(call)
    except FstabError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if call.verbose or call.fake:
        print(
            f"{prog}: {'would mount' if call.fake else 'mounting'} {opts.state_dir} at "
            f"{opts.mountpoint} (log level {opts.log_level}, cache size "
            f"{opts.cache_size if opts.cache_size is not None else 'automatic'})",
            file=sys.stderr,
        )
    if call.fake:
        return 0
    return 0 if mount(opts) == 0 else EXIT_MOUNT_FAILURE


def looks_like_helper_call(args: Sequence[str]) -> bool:
    """Whether `mountfs ARGS` (ARGS[0] not a subcommand) is the form mount.fuse3 uses.

    That is `SOURCE MOUNTPOINT [-o OPTS]` where the mount point is a directory or is
    followed by `-o` (mount.fuse3 passes `-o` unless both `nodev` and `nosuid` were given),
    so that a mistyped subcommand still gets click's "No such command".
    """
    if len(args) < 2 or args[0].startswith("-") or args[1].startswith("-"):
        return False
    return os.path.isdir(args[1]) or "-o" in args[2:]


def main() -> None:
    """The `mount.mountfs` console script."""
    sys.exit(run(sys.argv[1:]))
