"""Random sequences of file operations, run on the mount and on a local directory in
lock-step: every step must have the same outcome (result or errno) on both, and the trees
must be identical at the end. Seeded, so a failure replays exactly; the failing step and
the history are in the assertion message."""

from __future__ import annotations

import errno
import mmap
import os
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.mount.conftest import Roundtrip

NAMES = ["a", "b", "c", "sub/x", "sub/y", "sub/deeper/z"]
DIRS = ["sub", "sub/deeper", "other"]
FLAGS = [
    os.O_RDWR,
    os.O_RDWR | os.O_CREAT,
    os.O_RDWR | os.O_CREAT | os.O_TRUNC,
    os.O_WRONLY | os.O_CREAT | os.O_APPEND,
    os.O_RDONLY,
    os.O_RDWR | os.O_CREAT | os.O_EXCL,
]


class Side:
    """One of the two directories, with its open descriptors by logical handle number."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.fds: dict[int, int] = {}

    def path(self, name: str) -> Path:
        return self.base / name

    def close_all(self) -> None:
        for fd in self.fds.values():
            if fd >= 0:
                os.close(fd)
        self.fds.clear()


def _outcome(fn: Callable[[], object]) -> object:
    try:
        return ("ok", fn())
    except OSError as exc:
        return ("err", errno.errorcode.get(exc.errno or 0, exc.errno))


class Script:
    """Draws the next operation; the same draw is applied to both sides."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.next_handle = 0
        self.handles: list[int] = []

    def step(self) -> tuple[str, Callable[[Side], object]]:
        rng = self.rng
        kind = rng.choice(
            ["open", "open", "close", "write", "write", "write", "read", "truncate",
             "ftruncate", "rename", "unlink", "mmap", "fsync", "stat", "mkdir", "rmdir",
             "listdir"]
        )  # fmt: skip
        name, other = rng.choice(NAMES), rng.choice(NAMES)
        directory = rng.choice(DIRS)
        handle = rng.choice(self.handles) if self.handles else None
        offset, size = rng.choice([0, 1, 4095, 4096, 10_000, 70_000]), rng.randrange(1, 20_000)
        data = rng.randbytes(size)
        if kind == "open":
            flags, number = rng.choice(FLAGS), self.next_handle
            self.next_handle += 1
            self.handles.append(number)
            return f"open({name}, {flags:#o}) -> h{number}", lambda s: _open(s, name, flags, number)
        if handle is None or kind in ("truncate", "rename", "unlink", "stat", "mkdir", "rmdir",
                                      "listdir"):  # fmt: skip
            return _path_op(kind, name, other, directory, offset + size)
        if kind == "close":
            self.handles.remove(handle)
            return f"close(h{handle})", lambda s: _close(s, handle)
        if kind == "write":
            return f"pwrite(h{handle}, {size}B @{offset})", lambda s: _fd_op(
                s, handle, lambda fd: os.pwrite(fd, data, offset)
            )
        if kind == "read":
            return f"pread(h{handle}, {size} @{offset})", lambda s: _fd_op(
                s, handle, lambda fd: os.pread(fd, size, offset)
            )
        if kind == "ftruncate":
            return f"ftruncate(h{handle}, {offset + size})", lambda s: _fd_op(
                s, handle, lambda fd: os.ftruncate(fd, offset + size)
            )
        if kind == "fsync":
            return f"fsync(h{handle})", lambda s: _fd_op(s, handle, os.fsync)
        return f"mmap-write(h{handle}, {size}B @{offset})", lambda s: _fd_op(
            s, handle, lambda fd: _mmap_write(fd, offset, data)
        )


def _open(side: Side, name: str, flags: int, number: int) -> object:
    try:
        side.fds[number] = os.open(side.path(name), flags, 0o644)
    except OSError:
        side.fds[number] = -1
        raise
    return "opened"


def _close(side: Side, number: int) -> object:
    fd = side.fds.pop(number)
    if fd < 0:
        return "never opened"
    os.close(fd)
    return "closed"


def _fd_op(side: Side, number: int, fn: Callable[[int], object]) -> object:
    fd = side.fds[number]
    if fd < 0:
        return "never opened"
    return fn(fd)


def _mmap_write(fd: int, offset: int, data: bytes) -> object:
    size = os.fstat(fd).st_size
    if size == 0:
        return "empty"
    start = min(offset, size - 1)
    piece = data[: size - start]
    with mmap.mmap(fd, size, mmap.MAP_SHARED) as mapped:
        mapped[start : start + len(piece)] = piece
        mapped.flush()
    return len(piece)


def _path_op(
    kind: str, name: str, other: str, directory: str, size: int
) -> tuple[str, Callable[[Side], object]]:
    if kind == "truncate":
        return f"truncate({name}, {size})", lambda s: os.truncate(s.path(name), size)
    if kind == "rename":
        return f"rename({name}, {other})", lambda s: os.rename(s.path(name), s.path(other))
    if kind == "unlink":
        return f"unlink({name})", lambda s: os.unlink(s.path(name))
    if kind == "mkdir":
        return f"mkdir({directory})", lambda s: os.mkdir(s.path(directory))
    if kind == "rmdir":
        return f"rmdir({directory})", lambda s: os.rmdir(s.path(directory))
    if kind == "listdir":
        return f"listdir({directory})", lambda s: sorted(os.listdir(s.path(directory)))

    def do_stat(s: Side) -> object:
        st = os.stat(s.path(name))
        return st.st_size, st.st_mode, st.st_nlink

    return f"stat({name})", do_stat


def _snapshot(base: Path) -> dict[str, bytes | None]:
    result: dict[str, bytes | None] = {}
    for path in sorted(base.rglob("*")):
        result[str(path.relative_to(base))] = None if path.is_dir() else path.read_bytes()
    return result


def run_script(seed: int, steps: int, mount_dir: Path, local_dir: Path) -> None:
    script = Script(seed)
    sides = (Side(mount_dir), Side(local_dir))
    for side in sides:
        os.mkdir(side.path("sub"))
    history: list[str] = []
    try:
        for _ in range(steps):
            label, op = script.step()
            history.append(label)
            on_mount, on_local = (_outcome(lambda s=side, f=op: f(s)) for side in sides)
            assert on_mount == on_local, (
                f"seed {seed}, step {len(history)}: {label}\n"
                f"mount: {on_mount!r:.300}\nlocal: {on_local!r:.300}\n" + "\n".join(history[-25:])
            )
    finally:
        for side in sides:
            side.close_all()
    assert _snapshot(mount_dir) == _snapshot(local_dir), f"seed {seed}: trees differ"


@pytest.mark.parametrize("seed", range(6))
def test_random_operations_match_a_local_disk(
    seed: int, work: Path, local: Path, roundtrip: Roundtrip
) -> None:
    run_script(seed, 250, work, local)
    roundtrip()


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(100, 120))
def test_long_random_operations_match_a_local_disk(
    seed: int, work: Path, local: Path, roundtrip: Roundtrip
) -> None:
    run_script(seed, 3000, work, local)
    roundtrip()
