"""Real mountfs mounts for tests: daemons in their own processes, a real backend behind them.

The filesystem runs in a subprocess (`python -m mountfs mount ... --foreground`, the real CLI),
never in the test process: a FUSE daemon must not share a process with code that touches its
mountpoint. Start-up is awaited by polling `os.path.ismount` while checking that the process
is still alive; teardown always lazy-unmounts (`fusermount3 -u -z`) and kills what is left.
The daemon's log (`STATE/mountfs.log`) is kept, shown when a test fails, and searched for
unexpected warnings and errors.

Every mount is a device of a real account on a real backend (`tests.support.backend`): the
account is registered with a unique name (`Account.register`) and each device logs in as
`mountfs login` does (`Account.login`), so the mount's sync engine is online. `Devices`
makes the mounts of one account and holds the round-trip check that every writing test
ends with (`Devices.roundtrip_check`): a sync (what `mountfs sync` asks of the daemon),
then a second device of the account (fresh state, empty cache) must show the same tree:
names, kinds, modes, link targets, bytes and mtimes (`tree_manifest`).

The pytest fixtures `account`, `mount_factory` and `check_backend_logs` and the report
hook are defined here and imported by the conftests of `tests/mount` and `tests/sync`.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import pytest

from mountfs import control
from mountfs.mount import CACHE_DIR, LOG_FILE, PID_FILE
from mountfs.state.db import DB_FILE, open_state
from mountfs.transport.auth import DeviceInfo, save_device
from mountfs.vfs.fsck import check
from tests.support.api_client import PASSWORD, ApiClient, unique_name
from tests.support.backend import BackendProcess, log_problems

T = TypeVar("T")

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0


def fuse_unavailable() -> str | None:
    """Why real mounts cannot run here, or None if they can."""
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse in this environment"
    fusermount = shutil.which("fusermount3")
    if fusermount is None:
        return "fusermount3 is not installed (apt-get install fuse3)"
    if os.geteuid() != 0 and not os.stat(fusermount).st_mode & stat.S_ISUID:
        return "fusermount3 is not setuid root, so an unprivileged user cannot mount"
    try:
        os.close(os.open("/dev/fuse", os.O_RDWR))
    except OSError as exc:
        return f"cannot open /dev/fuse: {exc.strerror}"
    return None


class Account:
    """An account registered on a test backend; its devices log in with `login`.

    Attributes:
        server: the backend's base URL.
        name: the account's unique name (one account per test, or per module).
        devices: how many devices have logged in so far (labels count up from 1).
    """

    def __init__(self, server: str, name: str) -> None:
        self.server = server
        self.name = name
        self.devices = 0

    def __repr__(self) -> str:
        return f"<Account {self.name} on {self.server}>"

    @classmethod
    def register(cls, server: str, prefix: str = "mnt") -> Account:
        """A fresh account on `server` (unique name, the test password)."""
        name = unique_name(prefix)
        with ApiClient(server) as anon:
            anon.call("POST", "accounts", json={"name": name, "password": PASSWORD}, expect=201)
        return cls(server, name)

    def login(self, state_dir: Path, label: str | None = None) -> DeviceInfo:
        """Log a new device in and save it in `state_dir`, as `mountfs login` does."""
        self.devices += 1
        label = label or f"device-{self.devices}"
        with ApiClient.login(self.server, self.name, PASSWORD, label) as client:
            me = client.me()
            info = DeviceInfo(
                server=self.server,
                account_id=me["account_id"],
                account_name=me["name"],
                device_id=me["device_id"],
                device_label=me["device_label"],
                root_id=me["root_id"],
                namespace_id=me["namespace_id"],
                token=str(client.token),
            )
        save_device(state_dir, info)
        return info

    def api(self) -> ApiClient:
        """A client of a new device of this account, for looking at the backend directly."""
        self.devices += 1
        return ApiClient.login(self.server, self.name, PASSWORD, f"inspector-{self.devices}")


def make_state(state_dir: Path, account: Account, label: str | None = None) -> DeviceInfo:
    """A state directory with a device login of `account`, as `mountfs login` leaves it."""
    return account.login(state_dir, label)


def tree_manifest(base: Path, *, times: bool = True) -> dict[str, tuple[object, ...]]:
    """Relative path -> what must survive a round trip through the backend.

    Files: ("file", mode, size, SHA-256 of the bytes[, mtime_ns with `times`]); directories:
    ("dir", mode); symlinks: ("link", target). Owners, xattrs, atimes and directory mtimes
    are local and left out.
    """
    result: dict[str, tuple[object, ...]] = {}
    for root, dirs, files in os.walk(base):
        for name in sorted(dirs + files):
            path = Path(root) / name
            st = path.lstat()
            entry: tuple[object, ...]
            if stat.S_ISLNK(st.st_mode):
                entry = ("link", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                entry = ("dir", oct(stat.S_IMODE(st.st_mode)))
            else:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                entry = ("file", oct(stat.S_IMODE(st.st_mode)), st.st_size, digest)
                if times:
                    entry += (st.st_mtime_ns,)
            result[str(path.relative_to(base))] = entry
    return result


def manifest_diff(expected: dict[str, Any], seen: dict[str, Any], limit: int = 20) -> list[str]:
    """Human lines for the entries where two manifests differ (at most `limit`)."""
    lines = []
    for key in sorted(expected.keys() | seen.keys()):
        if expected.get(key) != seen.get(key):
            lines.append(f"{key}: expected {expected.get(key)!r}, got {seen.get(key)!r}")
    return lines[:limit] + ([f"... {len(lines) - limit} more"] if len(lines) > limit else [])


def lazy_unmount(mountpoint: Path) -> None:
    subprocess.run(["fusermount3", "-u", "-z", str(mountpoint)], capture_output=True, check=False)


def is_dead_mount(mountpoint: Path) -> bool:
    """The daemon died without unmounting (statvfs is never served from the kernel's cache)."""
    try:
        os.statvfs(mountpoint)
    except OSError as exc:
        return exc.errno == errno.ENOTCONN
    return False


def process_gone(pid: int) -> bool:
    """True if `pid` has exited (a zombie that init has not reaped yet counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state == "Z"


def run_cli(
    *args: str | Path, timeout: float = 120, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `python -m mountfs ARGS` (the real CLI) and return its result, never raising."""
    return subprocess.run(
        [sys.executable, "-m", "mountfs", *map(str, args)],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class MountError(RuntimeError):
    """The mount did not come up, or did not go down; the message holds the log."""


class MountProcess:
    """One mount daemon serving `mountpoint` from `state_dir`.

    Attributes:
        live: instances not yet cleaned up (the failure report shows their logs).
    """

    live: ClassVar[set[MountProcess]] = set()

    def __init__(
        self,
        mountpoint: Path,
        state_dir: Path,
        *,
        cache_size: int | None = None,
        log_level: str = "INFO",
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.mountpoint = mountpoint
        self.state_dir = state_dir
        self.cache_size = cache_size
        self.log_level = log_level
        self.extra_args = extra_args  # more `mountfs mount` options
        self.allowed_log: list[str] = []  # log fragments a test expects (e.g. a repair)
        self.console_path = state_dir.parent / f"{state_dir.name}-console.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    def __repr__(self) -> str:
        return f"<MountProcess {self.mountpoint} state={self.state_dir}>"

    @property
    def log_path(self) -> Path:
        return self.state_dir / LOG_FILE

    def command(self, *, foreground: bool = True) -> list[str]:
        cmd = [sys.executable, "-m", "mountfs", "mount", str(self.mountpoint)]
        cmd += ["--state", str(self.state_dir), "--log-level", self.log_level]
        if foreground:
            cmd.append("--foreground")
        if self.cache_size is not None:
            cmd += ["--cache-size", str(self.cache_size)]
        return cmd + list(self.extra_args)

    def start(self) -> MountProcess:
        """Start the daemon in the foreground and return once the mount is live."""
        if not is_dead_mount(self.mountpoint):  # `mountfs mount` cleans that up itself
            self.mountpoint.mkdir(parents=True, exist_ok=True)
        MountProcess.live.add(self)
        with open(self.console_path, "ab") as console:
            self._proc = subprocess.Popen(
                self.command(), stdout=console, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not os.path.ismount(self.mountpoint):
            if self._proc.poll() is not None:
                raise MountError(f"the daemon exited with {self._proc.returncode}:\n{self.logs()}")
            if time.monotonic() > deadline:
                raise MountError(f"not mounted after {START_TIMEOUT_S}s:\n{self.logs()}")
            time.sleep(0.01)
        return self

    def start_daemon(self) -> subprocess.CompletedProcess[str]:
        """`mountfs mount` without --foreground: returns when the parent returns."""
        if not is_dead_mount(self.mountpoint):  # `mountfs mount` cleans that up itself
            self.mountpoint.mkdir(parents=True, exist_ok=True)
        MountProcess.live.add(self)
        return subprocess.run(
            self.command(foreground=False), capture_output=True, text=True, timeout=60
        )

    @property
    def pid(self) -> int:
        """The daemon's pid (from its pid file: in daemon mode it is not our child)."""
        return int((self.state_dir / PID_FILE).read_text().strip())

    def stop(self) -> None:
        """Unmount cleanly and wait for the daemon to exit (as `mountfs umount` does)."""
        result = run_cli("umount", self.mountpoint, timeout=STOP_TIMEOUT_S + 10)
        if result.returncode != 0:
            raise MountError(f"mountfs umount failed: {result.stderr}\n{self.logs()}")
        if self._proc is not None:
            try:
                self._proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                raise MountError(f"daemon still running after unmount:\n{self.logs()}") from None
            if self._proc.returncode != 0:
                raise MountError(f"daemon exited with {self._proc.returncode}:\n{self.logs()}")
        MountProcess.live.discard(self)

    def terminate(self) -> None:
        """SIGTERM the foreground daemon: it must unmount and exit 0 by itself."""
        assert self._proc is not None, "only for daemons started with start()"
        self._proc.terminate()
        code = self._proc.wait(STOP_TIMEOUT_S)
        if code != 0:
            raise MountError(f"daemon exited with {code} after SIGTERM:\n{self.logs()}")

    def kill(self) -> None:
        """SIGKILL the daemon, as a crash would (the mountpoint is left dead).

        The next mount may then log that it repaired the state (a push was in flight).
        """
        pid = self._proc.pid if self._proc is not None else self.pid
        self.allowed_log.append("state repaired after an unclean stop")
        os.kill(pid, signal.SIGKILL)
        if self._proc is not None:
            self._proc.wait(10)
            self._proc = None  # a later start_daemon() makes a daemon that is not our child
        deadline = time.monotonic() + 10
        # The thread-group leader turns zombie before its last thread has closed /dev/fuse:
        # wait until the kernel has noticed the connection is gone.
        while not (process_gone(pid) and is_dead_mount(self.mountpoint)):
            if time.monotonic() > deadline:
                raise MountError(f"daemon {pid} did not die within 10s")
            time.sleep(0.01)

    def cleanup(self) -> None:
        """Whatever state it is in: lazy-unmount, then terminate and kill the daemon."""
        if os.path.ismount(self.mountpoint) or is_dead_mount(self.mountpoint):
            lazy_unmount(self.mountpoint)
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        MountProcess.live.discard(self)

    def cli(self, *args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run `mountfs ARGS --state STATE` (the real CLI) and return its result."""
        return run_cli(*args, "--state", self.state_dir, timeout=timeout)

    def sync(self, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """`mountfs sync`: exit 0 once everything is pushed and pulled, 1 on timeout."""
        return self.cli("sync", "--timeout", str(timeout), timeout=timeout + 30)

    def synced(self, timeout: float = 60) -> None:
        """Push and pull everything now; it must succeed.

        This is the request `mountfs sync` sends to a running mount, sent over the control
        socket without starting the CLI (which costs more than the sync itself); the CLI's
        own behaviour is tested in `tests/sync`.
        """
        answer = control.request(self.state_dir, {"cmd": "sync", "timeout": timeout}, timeout + 10)
        if not (answer.get("ok") and answer.get("synced")):
            raise MountError(f"sync of {self.state_dir} failed: {answer}\n{self.logs()[-5000:]}")

    def live_status(self) -> dict[str, Any]:
        """The running daemon's status (what `mountfs status --json` prints), without the CLI."""
        answer = control.request(self.state_dir, {"cmd": "status"}, 10)
        status: dict[str, Any] = answer["status"]
        return status

    def status(self) -> dict[str, Any]:
        """`mountfs status --json` of this device (mounted or not)."""
        result = self.cli("status", "--json", timeout=30)
        if result.returncode != 0:
            raise MountError(f"mountfs status failed: {result.stderr}")
        answer: dict[str, Any] = json.loads(result.stdout)
        return answer

    def logs(self) -> str:
        parts = []
        for path in (self.log_path, self.console_path):
            if path.exists():
                parts.append(f"--- {path} ---\n{path.read_text(errors='replace')}")
        return "\n".join(parts)

    def unexpected_log_lines(self) -> list[str]:
        """WARNING/ERROR/CRITICAL lines and tracebacks not matching `allowed_log`."""
        allowed = self.allowed_log
        if not self.log_path.exists():
            return []
        markers = (" WARNING ", " ERROR ", " CRITICAL ", "Traceback")
        return [
            line
            for line in self.log_path.read_text(errors="replace").splitlines()
            if any(m in line for m in markers) and not any(f in line for f in allowed)
        ]


def verify_after_unmount(mount: MountProcess) -> list[str]:
    """The state must be consistent and the log clean once the daemon has stopped."""
    problems = [f"log: {line}" for line in mount.unexpected_log_lines()]
    db_path = mount.state_dir / DB_FILE
    if db_path.exists():
        db = open_state(db_path)
        try:
            problems += [f"fsck: {p}" for p in check(db, mount.state_dir / CACHE_DIR)]
        finally:
            db.close()
    return problems


class Devices:
    """The mounts of one account in one test (or module), and the round-trip check.

    Calling it makes a mount: a new device of `account` with its own state directory under
    `base` (unless `state_dir` names an existing one). `close()` cleans every mount up and
    returns what `verify_after_unmount` found wrong with any of them.
    """

    def __init__(self, account: Account, base: Path) -> None:
        self.account = account
        self.base = base
        self.mounts: list[MountProcess] = []

    def __call__(
        self,
        name: str = "mnt",
        *,
        state_dir: Path | None = None,
        cache_size: int | None = None,
        start: bool = True,
        log_level: str = "INFO",
        extra_args: tuple[str, ...] = (),
    ) -> MountProcess:
        state = state_dir or self.base / f"{name}-state"
        if not (state / "device.json").exists():
            make_state(state, self.account, name)
        mount = MountProcess(
            self.base / name,
            state,
            cache_size=cache_size,
            log_level=log_level,
            extra_args=extra_args,
        )
        self.mounts.append(mount)
        if start:
            mount.start()
        return mount

    def roundtrip_check(
        self, mount: MountProcess, path: Path | None = None, *, reader: MountProcess | None = None
    ) -> dict[str, tuple[object, ...]]:
        """Check that the tree under `path` (default: all of `mount`) is intact in the backend.

        `mount` is synced (as `mountfs sync` does), then `second_device_sees` its manifest.
        Returns the manifest.
        """
        base = path or mount.mountpoint
        expected = tree_manifest(base)
        mount.synced()
        self.second_device_sees(expected, base.relative_to(mount.mountpoint), reader=reader)
        return expected

    def second_device_sees(
        self,
        expected: dict[str, tuple[object, ...]],
        relative: Path = Path(),
        *,
        reader: MountProcess | None = None,
    ) -> None:
        """Assert that another device of the account shows `expected` at `relative`.

        The device is `reader`, or else a fresh one (new login, empty state and cache),
        stopped again afterwards; it is synced first, so it has pulled everything (and the
        kernel of `reader` has been told of every remote change it applied).
        """
        second = reader or self(f"device-{len(self.mounts) + 1}")
        try:
            second.synced()
            seen = tree_manifest(second.mountpoint / relative)
        finally:
            if reader is None:
                second.stop()
        diff = manifest_diff(expected, seen)
        assert not diff, "the second device sees another tree:\n" + "\n".join(diff)

    def stop_all(self) -> None:
        """Unmount cleanly every mount that is still mounted."""
        for mount in self.mounts:
            if os.path.ismount(mount.mountpoint):
                mount.stop()

    def close(self) -> list[str]:
        """Clean every mount up; the problems found in their logs and states."""
        for mount in self.mounts:
            mount.cleanup()
        return [f"{m.mountpoint.name}: {p}" for m in self.mounts for p in verify_after_unmount(m)]


# --- pytest wiring (imported by the conftests of tests/mount and tests/sync) ---------------

FUSE_PROBLEM = fuse_unavailable()


def mark_mount_tests(here: Path, items: list[pytest.Item]) -> None:
    """Mark the items under `here` as mount tests, skipped with the reason if FUSE is missing."""
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.mount)
            if FUSE_PROBLEM is not None:
                item.add_marker(pytest.mark.skip(reason=f"needs FUSE: {FUSE_PROBLEM}"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """On failure, attach the logs of the mounts still alive."""
    report = yield
    if report.failed:
        for mount in list(MountProcess.live):
            report.sections.append((f"mountfs log {mount.mountpoint}", mount.logs()[-20000:]))
    return report


@pytest.fixture
def account(backend_session: BackendProcess) -> Account:
    """A fresh account on the session's backend."""
    return Account.register(backend_session.base_url)


@pytest.fixture
def mount_factory(tmp_path: Path, account: Account) -> Iterator[Devices]:
    """Mounts of the test's own account (`mount_factory()` mounts device-N at tmp/mnt)."""
    devices = Devices(account, tmp_path)
    yield devices
    problems = devices.close()
    assert not problems, "\n".join(problems)


class BackendLogCheck:
    """What `check_backend_logs` tolerates in a test (`known`), and how it reads the log.

    Attributes:
        known: exception names (the last line of a traceback, e.g.
            `starlette.requests.ClientDisconnect`) that a test expects the backend to log.
            Each one is a backend bug that the final report names.
    """

    def __init__(self) -> None:
        self.known: list[str] = []

    def problems(self, text: str) -> list[str]:
        """The problem lines of `text` (`log_problems`) not caused by a `known` exception."""
        lines = text.splitlines()
        flagged = set(log_problems(text))
        result = []
        for index, line in enumerate(lines):
            if line not in flagged:
                continue
            cause = next(
                (
                    later
                    for later in lines[index + 1 :]
                    if later.strip() and not later.startswith(" ") and later not in flagged
                ),
                "",
            )
            if cause.strip() not in self.known:
                result.append(line)
        return result


@pytest.fixture(autouse=True)
def check_backend_logs() -> Iterator[BackendLogCheck]:
    """Fail a test during which a backend logged an unexpected error (a hidden 500)."""
    check = BackendLogCheck()
    marks = {b: b.log_size() for b in BackendProcess.made}
    yield check
    for backend in list(BackendProcess.made):
        problems = check.problems(backend.log_text(marks.get(backend, 0)))
        assert not problems, f"{backend!r} logged errors:\n" + "\n".join(problems[:20])


def remote_node(api: ApiClient, path: str) -> dict[str, Any] | None:
    """The live node at `path` (relative to the account's root) in the backend, or None."""
    node: dict[str, Any] | None = None
    parent = api.root_id
    for name in path.split("/"):
        node = next((c for c in api.list_children(parent) if c["name"] == name), None)
        if node is None:
            return None
        parent = node["id"]
    return node


def wait_for(condition: Callable[[], T | None], timeout: float, what: str) -> T:
    """Poll `condition` (every 10 ms) until it returns something other than None or False."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.01)
