"""A real backend process for tests, and the pytest fixtures that run it.

Tests talk to the backend the way clients do: over HTTP on a loopback port, to a
`python -m backend` subprocess with its own data directory. Nothing is mocked, so a test
also covers start-up (migrations), the CLI flags and shutdown. The process's output goes to
a log file; when a test fails, the lines that every live backend wrote during that test are
attached to the report, which is usually where the explanation is.

This module is a pytest plugin (the root `tests/conftest.py` registers it), so the fixtures
`backend_factory`, `backend_server`, `backend_session` and `backend_logs_clean` are
available to every test.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import weakref
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, ClassVar

import httpx
import pytest

from tests.support.ports import LOOPBACK, free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
HEALTH_PATH = "/api/v1/health"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0


class BackendStartError(RuntimeError):
    """The backend died or never answered its health check; the message holds its log."""


class BackendProcess:
    """One `python -m backend` subprocess on a free loopback port.

    The port is chosen once and kept across restarts, so clients built before a restart
    keep working after it. The log file is appended to, so a restart's output follows the
    previous run's. `start()` returns only once `GET /api/v1/health` answers 200; `stop()`
    sends SIGTERM and escalates to SIGKILL; `kill()` is SIGKILL at once (a crash).

    Attributes:
        data_dir: the `--data` directory; survives restarts, owned by the caller.
        args: extra command-line flags (e.g. `("--url-ttl", "2")`).
        log_path: where stdout and stderr of every run go.
        port: the loopback port, fixed for the object's life.
    """

    live: ClassVar[set[BackendProcess]] = set()
    """Processes currently running; the failure-report hook attaches their logs."""
    made: ClassVar[weakref.WeakSet[BackendProcess]] = weakref.WeakSet()
    """Every instance still referenced, running or not."""
    log_paths: ClassVar[set[Path]] = set()
    """The log file of every instance ever made: checked after each test even when the
    instance itself is gone (a function-scoped server is freed before the check runs)."""

    def __init__(self, data_dir: Path, log_path: Path, args: Sequence[str] = ()) -> None:
        self.data_dir = data_dir
        self.log_path = log_path
        self.args = tuple(args)
        self.host = LOOPBACK
        self.port = free_port(self.host)
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        BackendProcess.made.add(self)
        BackendProcess.log_paths.add(log_path)

    def __repr__(self) -> str:
        return f"<BackendProcess {self.base_url} data={self.data_dir} args={self.args}>"

    @property
    def base_url(self) -> str:
        """Origin of the server, e.g. `http://127.0.0.1:40123`."""
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def command(self) -> list[str]:
        """The exact command line, kept public so a failing test can show it."""
        return [
            sys.executable,
            "-m",
            "backend",
            "--data",
            str(self.data_dir),
            "--host",
            self.host,
            "--port",
            str(self.port),
            *self.args,
        ]

    def start(self, timeout: float = START_TIMEOUT_S) -> None:
        """Spawn the process and wait until it is healthy, or raise with its log."""
        if self._proc is not None:
            raise RuntimeError(f"{self!r} is already running")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self._log.write(f"=== start: {' '.join(self.command())}\n".encode())
        self._log.flush()
        # Settings also come from MOUNTFS_* variables: keep the caller's out, so the flags
        # given here are the whole configuration.
        env = {k: v for k, v in os.environ.items() if not k.startswith("MOUNTFS_")}
        env["PYTHONUNBUFFERED"] = "1"
        # A new session makes the process a group leader, so stop() reaches any children.
        self._proc = subprocess.Popen(
            self.command(),
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        BackendProcess.live.add(self)
        try:
            self._wait_healthy(timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_healthy(self, timeout: float) -> None:
        """Poll the health route while checking that the process has not died."""
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        last_error = "no answer yet"
        with httpx.Client(base_url=self.base_url, timeout=2.0) as client:
            while time.monotonic() < deadline:
                code = self._proc.poll()
                if code is not None:
                    raise BackendStartError(
                        f"backend exited with {code} during start-up\n{self.log_text()}"
                    )
                try:
                    response = client.get(HEALTH_PATH)
                except httpx.TransportError as exc:
                    last_error = repr(exc)
                else:
                    if response.status_code == 200:
                        return
                    last_error = f"{response.status_code} {response.text[:200]}"
                time.sleep(0.05)
        raise BackendStartError(
            f"backend not healthy after {timeout}s ({last_error})\n{self.log_text()}"
        )

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM the process group, SIGKILL it after `timeout`; return the exit code."""
        return self._end(signal.SIGTERM, timeout)

    def kill(self) -> int | None:
        """SIGKILL at once: the crash that durability tests simulate."""
        return self._end(signal.SIGKILL, STOP_TIMEOUT_S)

    def restart(self, timeout: float = START_TIMEOUT_S) -> None:
        """Graceful stop, then start again on the same data directory and port."""
        self.stop()
        self.start(timeout)

    def _end(self, sig: signal.Signals, timeout: float) -> int | None:
        proc, self._proc = self._proc, None
        BackendProcess.live.discard(self)
        code: int | None = None
        if proc is not None:
            self._signal_group(proc, sig)
            try:
                code = proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal_group(proc, signal.SIGKILL)
                code = proc.wait()
        if self._log is not None:
            self._log.write(f"=== ended by {sig.name}: exit code {code}\n".encode())
            self._log.close()
            self._log = None
        return code

    @staticmethod
    def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
        # Already gone is fine: the exit code tells the story.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_size(self) -> int:
        return log_size(self.log_path)

    def log_text(self, since: int = 0) -> str:
        return log_text(self.log_path, since)


def log_size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def log_text(path: Path, since: int = 0) -> str:
    """A log from byte offset `since` (decoded leniently: it is for humans)."""
    if not path.exists():
        return ""
    with path.open("rb") as f:
        f.seek(since)
        return f.read().decode("utf-8", "replace")


PROBLEM_LINE = re.compile(
    r"^(?:Traceback \(most recent call last\)"  # an exception printed by anyone
    r"|(?:ERROR|CRITICAL):"  # uvicorn's own format
    r"|\S+ \S+ (?:ERROR|CRITICAL) )"  # the backend's format: date time LEVEL logger: ...
)
"""A log line that reports an unexpected server-side error (the backend logs every
unhandled exception at ERROR before answering 500), whatever the client was told.
Anchored at the line start, so request paths in access-log lines never match."""


def log_problems(text: str) -> list[str]:
    """The lines of a backend log that report an unexpected server-side error."""
    return [line for line in text.splitlines() if PROBLEM_LINE.match(line)]


@contextmanager
def running_backend(workdir: Path, args: Sequence[str] = ()) -> Iterator[BackendProcess]:
    """A started backend with data and log under `workdir`, always stopped afterwards."""
    backend = BackendProcess(workdir / "data", workdir / "backend.log", args)
    try:
        backend.start()
        yield backend
    finally:
        backend.stop()


BackendFactory = Callable[..., BackendProcess]

_LOG_MARKS = pytest.StashKey[dict[BackendProcess, int]]()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Remember where each live backend's log stood when this test began."""
    item.stash[_LOG_MARKS] = {b: b.log_size() for b in BackendProcess.live}


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """On failure, attach what every live backend logged during the test."""
    report = yield
    if report.failed:
        marks = item.stash.get(_LOG_MARKS, {})
        for backend in sorted(BackendProcess.live, key=lambda b: b.port):
            text = backend.log_text(marks.get(backend, 0)) or "(nothing logged)"
            report.sections.append((f"backend log {backend.base_url} ({report.when})", text))
    return report


@pytest.fixture
def backend_logs_clean() -> Iterator[None]:
    """Fail the test if any backend logged an unexpected error while it ran (a hidden 500,
    an exception in a background task), even if every answer the test saw was fine.

    Not autouse here; a test directory opts in with an autouse fixture that requests it."""
    marks = {path: log_size(path) for path in BackendProcess.log_paths}
    yield
    for path in sorted(BackendProcess.log_paths):
        problems = log_problems(log_text(path, marks.get(path, 0)))
        assert not problems, f"backend log {path} has errors:\n" + "\n".join(problems[:20])


@pytest.fixture
def backend_factory(tmp_path: Path) -> Iterator[BackendFactory]:
    """Start backends with extra flags (`factory("--url-ttl", "2")`); all stopped after.

    Pass `data_dir=` to start a second process on an existing data directory.
    """
    started: list[BackendProcess] = []

    def factory(*args: str, data_dir: Path | None = None) -> BackendProcess:
        n = len(started)
        workdir = tmp_path / f"backend{n}"
        workdir.mkdir()
        backend = BackendProcess(data_dir or workdir / "data", workdir / "backend.log", args)
        started.append(backend)
        backend.start()
        return backend

    try:
        yield factory
    finally:
        for backend in started:
            backend.stop()


@pytest.fixture
def backend_server(backend_factory: BackendFactory) -> BackendProcess:
    """A fresh backend with default flags and an empty data directory, for one test."""
    return backend_factory()


@pytest.fixture(scope="session")
def backend_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackendProcess]:
    """One default backend shared by the session; tests must use their own accounts."""
    with running_backend(tmp_path_factory.mktemp("backend-session")) as backend:
        yield backend
