"""Real mountfs mounts for tests: a daemon in its own process, waited for, always cleaned up.

The filesystem runs in a subprocess (`python -m mountfs mount ... --foreground`, the real CLI),
never in the test process: a FUSE daemon must not share a process with code that touches its
mountpoint. Start-up is awaited by polling `os.path.ismount` while checking that the process
is still alive; teardown always lazy-unmounts (`fusermount3 -u -z`) and kills what is left.
The daemon's log (`STATE/mountfs.log`) is kept, shown when a test fails, and searched for
unexpected warnings and errors.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import ClassVar

from mountfs.ids import uuid7
from mountfs.mount import LOG_FILE, PID_FILE
from mountfs.transport.auth import DeviceInfo, save_device

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


def make_state(state_dir: Path, account: str = "tester") -> DeviceInfo:
    """A state directory with a device login, as `mountfs login` would leave it."""
    info = DeviceInfo(
        server="http://127.0.0.1:9",
        account_id=uuid7(),
        account_name=account,
        device_id=uuid7(),
        device_label="test-device",
        root_id=uuid7(),
        namespace_id=uuid7(),
        token="test-token",
    )
    save_device(state_dir, info)
    return info


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
    ) -> None:
        self.mountpoint = mountpoint
        self.state_dir = state_dir
        self.cache_size = cache_size
        self.log_level = log_level
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
        return cmd

    def start(self) -> MountProcess:
        """Start the daemon in the foreground and return once the mount is live."""
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
        result = subprocess.run(
            [sys.executable, "-m", "mountfs", "umount", str(self.mountpoint)],
            capture_output=True,
            text=True,
            timeout=STOP_TIMEOUT_S + 10,
        )
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
        """SIGKILL the daemon, as a crash would (the mountpoint is left dead)."""
        pid = self._proc.pid if self._proc is not None else self.pid
        os.kill(pid, signal.SIGKILL)
        if self._proc is not None:
            self._proc.wait(10)
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
