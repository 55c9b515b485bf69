"""Filesystem targets: the directories that the filesystem benchmarks run in, side by side.

Each target puts a different filesystem behind a directory: `local` is a plain directory
on the disk that holds the work directory (the reference every ratio is taken against),
`bindfs` is the same disk seen through a FUSE passthrough (the price of FUSE alone, with
no network and no cache logic), and the project's own client joins them once it can
mount. A target is set up once per invocation and every benchmark works in a fresh
sub-directory of it, so a mount's start-up cost is never counted.

To add a target, write a class with the four members of `Target` and register it in
`TARGETS` at the bottom of this module; the comment there says where `mountfs` and
`rclone` go.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

__all__ = [
    "TARGETS",
    "BindfsTarget",
    "LocalTarget",
    "MountfsTarget",
    "Target",
    "filesystem_type",
    "fuse_unmount",
    "open_target",
]

MOUNT_TIMEOUT_S = 10.0


class Target(Protocol):
    """A place to run filesystem benchmarks in.

    `setup()` returns an empty directory to work in; `teardown()` undoes everything
    `setup()` did, is safe to call after a `setup()` that failed half-way, and never
    raises for something that is already gone. `unavailable_reason()` is checked first:
    a target that cannot run on this machine (a missing tool) is skipped with that reason.
    """

    name: str

    def unavailable_reason(self) -> str | None: ...

    def setup(self) -> Path: ...

    def teardown(self) -> None: ...


@contextmanager
def open_target(target: Target) -> Iterator[Path]:
    """Set a target up and always tear it down, also on Ctrl-C or an error in setup."""
    try:
        yield target.setup()
    finally:
        target.teardown()


class LocalTarget:
    """A temporary directory on the local disk: the reference for every ratio."""

    name = "local"

    def __init__(self, base: Path) -> None:
        self._base = base
        self._dir: Path | None = None

    def unavailable_reason(self) -> str | None:
        return None

    def setup(self) -> Path:
        self._dir = Path(tempfile.mkdtemp(prefix="bench-local-", dir=self._base))
        return self._dir

    def teardown(self) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


class BindfsTarget:
    """A bindfs mount of a temporary directory: FUSE's own overhead over the local disk.

    `--no-allow-other` keeps the mount private to the user running the benchmark (no
    `user_allow_other` needed in /etc/fuse.conf); bindfs runs in the background and is
    stopped by unmounting.
    """

    name = "bindfs"

    def __init__(self, base: Path) -> None:
        self._base = base
        self._dir: Path | None = None
        self._mountpoint: Path | None = None

    def unavailable_reason(self) -> str | None:
        return _fuse_unavailable_reason() or _missing_tool("bindfs", "apt install bindfs")

    def setup(self) -> Path:
        self._dir = Path(tempfile.mkdtemp(prefix="bench-bindfs-", dir=self._base))
        source, mountpoint = self._dir / "src", self._dir / "mnt"
        source.mkdir()
        mountpoint.mkdir()
        self._mountpoint = mountpoint
        subprocess.run(
            ["bindfs", "--no-allow-other", str(source), str(mountpoint)],
            check=True,
            capture_output=True,
            timeout=MOUNT_TIMEOUT_S,
        )
        wait_for_mount(mountpoint)
        return mountpoint

    def teardown(self) -> None:
        if self._mountpoint is not None:
            fuse_unmount(self._mountpoint)
            self._mountpoint = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


class MountfsTarget:
    """This project's client: a real backend on loopback, a fresh account, `mountfs mount`.

    The backend runs as `python -m backend` (embedded SQLite + local block store) in a
    temporary directory; the device logs in with `mountfs login` and mounts with
    `mountfs mount`, the way a user does. Uploads happen in the background while the
    benchmarks run, as they would for a user, so the figures include that load.
    """

    name = "mountfs"
    PASSWORD = "bench-password-1"

    def __init__(self, base: Path) -> None:
        self._base = base
        self._dir: Path | None = None
        self._mountpoint: Path | None = None
        self._backend: Any = None

    def unavailable_reason(self) -> str | None:
        return _fuse_unavailable_reason()

    def setup(self) -> Path:
        from tests.support.backend import BackendProcess

        self._dir = Path(tempfile.mkdtemp(prefix="bench-mountfs-", dir=self._base))
        self._backend = BackendProcess(self._dir / "server", self._dir / "server.log")
        self._backend.start()
        server = self._backend.base_url
        state, mountpoint = self._dir / "state", self._dir / "mnt"
        mountpoint.mkdir()
        self._mountfs("account", "create", "bench", "--server", server, "--password-stdin")
        self._mountfs(
            "login", "--server", server, "--user", "bench", "--device", "bench",
            "--state", str(state), "--password-stdin",
        )  # fmt: skip
        self._mountfs("mount", str(mountpoint), "--state", str(state), "--log-level", "WARNING")
        self._mountpoint = mountpoint
        wait_for_mount(mountpoint)
        return mountpoint

    def _mountfs(self, *args: str) -> None:
        subprocess.run(
            [sys.executable, "-m", "mountfs", *args],
            input=self.PASSWORD,
            text=True,
            check=True,
            capture_output=True,
            timeout=60,
        )

    def teardown(self) -> None:
        if self._mountpoint is not None:
            subprocess.run(
                [sys.executable, "-m", "mountfs", "umount", str(self._mountpoint)],
                capture_output=True,
                timeout=120,
                check=False,
            )
            fuse_unmount(self._mountpoint)
            self._mountpoint = None
        if self._backend is not None:
            self._backend.stop()
            self._backend = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


def wait_for_mount(mountpoint: Path, timeout: float = MOUNT_TIMEOUT_S) -> None:
    """Return once `mountpoint` is a mount point; a FUSE daemon may finish after it forks."""
    deadline = time.monotonic() + timeout
    while not os.path.ismount(mountpoint):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{mountpoint} is not mounted after {timeout}s")
        time.sleep(0.02)


def fuse_unmount(mountpoint: Path) -> None:
    """Unmount a FUSE mount: politely first, lazily (`-z`) if something still holds it.

    A lazy unmount detaches the mount at once even when a process is still inside it, so
    an interrupted benchmark never leaves a mount behind.
    """
    if not os.path.ismount(mountpoint):
        return
    polite = subprocess.run(
        ["fusermount3", "-u", str(mountpoint)], capture_output=True, timeout=30, check=False
    )
    if polite.returncode != 0 and os.path.ismount(mountpoint):
        subprocess.run(
            ["fusermount3", "-u", "-z", str(mountpoint)],
            capture_output=True,
            timeout=30,
            check=False,
        )


def filesystem_type(path: Path) -> str:
    """The type of the filesystem holding `path` (`ext4`, `fuse.bindfs`, …), from mountinfo."""
    target = os.path.realpath(path)
    best, best_type = "", "unknown"
    with open("/proc/self/mounts") as mounts:
        for line in mounts:
            fields = line.split()
            if len(fields) < 3:
                continue
            point = fields[1].replace("\\040", " ")
            inside = target == point or target.startswith(point.rstrip("/") + "/")
            if inside and len(point) >= len(best):
                best, best_type = point, fields[2]
    return best_type


def _fuse_unavailable_reason() -> str | None:
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is missing (FUSE not available here)"
    return _missing_tool("fusermount3", "apt install fuse3")


def _missing_tool(tool: str, hint: str) -> str | None:
    return None if shutil.which(tool) else f"`{tool}` is not installed ({hint})"


TargetFactory = Callable[[Path], Target]

# The registered targets, in the order of the table's columns; each factory takes the
# base directory that temporary directories go in. `local` must stay: it is the
# reference of every ratio.
#
# Where the next targets go (register them here, nowhere else):
# - "rclone": `rclone mount` of a local-directory remote with `--vfs-cache-mode full`,
#   the nearest established FUSE cloud client to compare with.
TARGETS: dict[str, TargetFactory] = {
    LocalTarget.name: LocalTarget,
    BindfsTarget.name: BindfsTarget,
    MountfsTarget.name: MountfsTarget,
}
