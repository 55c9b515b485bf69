"""A real backend process for tests, and the pytest fixtures that run it.

Tests talk to the backend the way clients do: over HTTP on a loopback port, to a
`python -m backend` subprocess with its own data directory. Nothing is mocked, so a test
also covers start-up (migrations), the CLI flags and shutdown. The process's output goes to
a log file; when a test fails, the lines that every live backend wrote during that test are
attached to the report, which is usually where the explanation is.

This module is a pytest plugin (the root `tests/conftest.py` registers it), so the fixtures
`backend_factory`, `backend_server`, `backend_session` and `backend_logs_clean` are
available to every test.

The same fixtures serve both profiles of `scripts/test --profile` (the `--profile` option):

- `embedded` (the default): every backend is a process on SQLite and the embedded block
  store in its data directory, on plain HTTP.
- `cluster`: `backend_session` is the session's `scripts/cluster` (`tests.support.cluster`):
  its nginx URL over TLS, two instances on PostgreSQL and SeaweedFS S3, which every test
  that just needs "a backend" then exercises. A backend of a test's own (`backend_server`,
  `backend_factory`, `running_backend`: special flags, a restart, a kill) is still a
  process of its own, but on the cluster's services as a deployment would run it: a
  database of its own on the cluster's PostgreSQL, a prefix of its own in the cluster's
  S3 bucket, and TLS with a certificate of the cluster's CA (`--tls-cert`). Clients trust
  that CA through `SSL_CERT_FILE`, as a user's client does.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import signal
import subprocess
import sys
import time
import weakref
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, ClassVar

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from tests.support.cluster import Cluster, drop_database
from tests.support.ports import LOOPBACK, free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
HEALTH_PATH = "/api/v1/health"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0


class BackendStartError(RuntimeError):
    """The backend died or never answered its health check; the message holds its log."""


def profile(config: pytest.Config) -> str:
    """`embedded` or `cluster`: the `--profile` the run was started with."""
    return str(config.getoption("--profile", default="embedded"))


@dataclass(frozen=True)
class ClusterServices:
    """The cluster's PostgreSQL, S3 store and CA, for backend processes of tests' own.

    Each such backend gets a database and a bucket prefix named after its data directory
    (so a second process started on the same data directory finds the first one's state,
    as on the embedded profile), and serves TLS with the cluster's server certificate.
    """

    db_url: str
    """The cluster's own database URL: its credentials create the tests' databases."""
    blockstore: str
    """The cluster's `s3://bucket?endpoint=…` URL; a backend adds its own prefix."""
    tls_cert: Path
    tls_key: Path
    env: dict[str, str] = field(default_factory=dict)
    """The S3 credentials and the CA bundle that verifies the S3 endpoint's TLS."""

    @classmethod
    def of(cls, cluster: Cluster) -> ClusterServices:
        tls = Path(cluster.ca_file).parent
        keys = cluster.state["secrets"]
        return cls(
            db_url=cluster.db_url,
            blockstore=str(cluster.state["blockstore"]),
            tls_cert=tls / "server.pem",
            tls_key=tls / "server.key",
            env={
                "AWS_ACCESS_KEY_ID": str(keys["s3_access_key"]),
                "AWS_SECRET_ACCESS_KEY": str(keys["s3_secret_key"]),
                "AWS_CA_BUNDLE": cluster.ca_file,
            },
        )

    def database_url(self, name: str) -> str:
        return self.db_url.rsplit("/", 1)[0] + f"/{name}"

    def blockstore_url(self, name: str) -> str:
        bucket, _, query = self.blockstore.partition("?")
        return f"{bucket}/{name}?{query}"

    def create_database(self, name: str) -> None:
        """Create database `name` unless it exists (a restart on the same data directory)."""
        engine = create_engine(self.db_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
        try:
            with engine.connect() as conn:
                found = conn.execute(
                    text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}
                ).first()
                if found is None:
                    conn.execute(text(f'CREATE DATABASE "{name}"'))
        finally:
            engine.dispose()

    def drop_database(self, name: str) -> None:
        engine = create_engine(self.db_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
        try:
            drop_database(engine, name)
        finally:
            engine.dispose()


@dataclass(frozen=True)
class ClusterEndpoint:
    """The session's backend in the cluster profile: what tests need of a BackendProcess.

    `base_url` is the load balancer (nginx, TLS); `host` and `port` are the plain-HTTP
    loopback address of instance 0, for tests that relay raw TCP to the backend
    (`tests.support.netcut.Link`, whose URL is plain HTTP). Nothing here can be stopped,
    restarted or looked into: a test that needs that starts a backend of its own.
    """

    base_url: str
    host: str
    port: int

    @classmethod
    def of(cls, cluster: Cluster) -> ClusterEndpoint:
        instance = httpx.URL(cluster.instance_url(0))
        assert instance.port is not None
        return cls(cluster.url, instance.host, instance.port)

    def is_running(self) -> bool:
        return True


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
    services: ClassVar[ClusterServices | None] = None
    """Set for the session in the cluster profile: new backends run on these services."""

    def __init__(self, data_dir: Path, log_path: Path, args: Sequence[str] = ()) -> None:
        self.data_dir = data_dir
        self.log_path = log_path
        self.args = tuple(args)
        self.host = LOOPBACK
        self.port = free_port(self.host)
        self.cluster = BackendProcess.services
        digest = hashlib.sha256(str(data_dir.absolute()).encode()).hexdigest()[:20]
        self.cluster_name = f"t_{digest}"
        """The database and S3 prefix of this backend in the cluster profile."""
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        BackendProcess.made.add(self)
        BackendProcess.log_paths.add(log_path)

    def __repr__(self) -> str:
        return f"<BackendProcess {self.base_url} data={self.data_dir} args={self.args}>"

    @property
    def base_url(self) -> str:
        """Origin of the server, e.g. `http://127.0.0.1:40123` (https in the cluster profile)."""
        scheme = "http" if self.cluster is None else "https"
        return f"{scheme}://{self.host}:{self.port}"

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
            *self._cluster_args(),
            *self.args,
        ]

    def _cluster_args(self) -> list[str]:
        if self.cluster is None:
            return []
        return [
            "--db",
            self.cluster.database_url(self.cluster_name),
            "--blockstore",
            self.cluster.blockstore_url(self.cluster_name),
            "--tls-cert",
            str(self.cluster.tls_cert),
            "--tls-key",
            str(self.cluster.tls_key),
            # One process, as the cluster's instances run (scaling is by instances); a
            # test's own `--workers` comes later and wins.
            "--workers",
            "1",
        ]

    def start(self, timeout: float = START_TIMEOUT_S) -> None:
        """Spawn the process and wait until it is healthy, or raise with its log."""
        if self._proc is not None:
            raise RuntimeError(f"{self!r} is already running")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.cluster is not None:
            self.cluster.create_database(self.cluster_name)
            # On a shared database the backend makes no secrets of its own (every instance
            # must have the same ones): this backend's are made here, once, as an operator
            # does with `openssl rand -hex 32`.
            for name in ("convergence.secret", "signing.key"):
                secret = self.data_dir / name
                if not secret.exists():
                    secret.touch(mode=0o600)
                    secret.write_text(os.urandom(32).hex() + "\n")
        self._log = self.log_path.open("ab")
        self._log.write(f"=== start: {' '.join(self.command())}\n".encode())
        self._log.flush()
        # Settings also come from MOUNTFS_* variables: keep the caller's out, so the flags
        # given here are the whole configuration.
        env = {k: v for k, v in os.environ.items() if not k.startswith("MOUNTFS_")}
        env["PYTHONUNBUFFERED"] = "1"
        if self.cluster is not None:
            env.update(self.cluster.env)
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

    def discard(self) -> None:
        """Stop, and in the cluster profile drop the database (the S3 prefix stays until
        the cluster is purged): for the end of the backend's owner."""
        self.stop()
        if self.cluster is not None:
            self.cluster.drop_database(self.cluster_name)

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
    r"|\S+ \S+ (?:ERROR|CRITICAL) "  # the backend's text format: date time LEVEL logger: ...
    r'|\{.*"level": ?"(?:error|critical|ERROR|CRITICAL)")'  # its JSON lines: {"time": …, "level": …
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
        backend.discard()


BackendFactory = Callable[..., BackendProcess]

_LOG_MARKS = pytest.StashKey[dict[BackendProcess, int]]()


_CLUSTER_LOG_MARKS = pytest.StashKey[dict[Path, int]]()
_cluster_logs: list[Path] = []
"""The cluster instances' logs, in the cluster profile (attached to failure reports)."""


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Remember where each live backend's log stood when this test began."""
    item.stash[_LOG_MARKS] = {b: b.log_size() for b in BackendProcess.live}
    item.stash[_CLUSTER_LOG_MARKS] = {path: log_size(path) for path in _cluster_logs}


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """On failure, attach what every live backend (and cluster instance) logged during the
    test (a cluster instance's log also holds other xdist workers' lines)."""
    report = yield
    if report.failed:
        marks = item.stash.get(_LOG_MARKS, {})
        for backend in sorted(BackendProcess.live, key=lambda b: b.port):
            text = backend.log_text(marks.get(backend, 0)) or "(nothing logged)"
            report.sections.append((f"backend log {backend.base_url} ({report.when})", text))
        cluster_marks = item.stash.get(_CLUSTER_LOG_MARKS, {})
        for path in _cluster_logs:
            text = log_text(path, cluster_marks.get(path, 0))[-20000:] or "(nothing logged)"
            report.sections.append((f"cluster log {path.name} ({report.when})", text))
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
        dropped = set()  # two processes on one data directory share one database
        for backend in started:
            if backend.cluster_name not in dropped:
                dropped.add(backend.cluster_name)
                backend.discard()


@pytest.fixture
def backend_server(backend_factory: BackendFactory) -> BackendProcess:
    """A fresh backend with default flags and an empty data directory, for one test."""
    return backend_factory()


@pytest.fixture(scope="session", autouse=True)
def _cluster_profile(request: pytest.FixtureRequest) -> Iterator[Cluster | None]:
    """In the cluster profile, the session's cluster (started once for all xdist workers,
    see `tests.support.cluster`), and the services new backend processes run on; with it
    `SSL_CERT_FILE` names the cluster's CA for the whole session. None otherwise."""
    if profile(request.config) != "cluster":
        yield None
        return
    cluster: Cluster = request.getfixturevalue("cluster")
    BackendProcess.services = ClusterServices.of(cluster)
    logs = [cluster.instance_log(i) for i in range(len(cluster.state["instances"]))]
    _cluster_logs[:] = logs
    BackendProcess.log_paths.update(logs)
    try:
        with pytest.MonkeyPatch.context() as patch:
            # What a user of a requests-based tool (schemathesis) sets for a private CA;
            # httpx and our client read SSL_CERT_FILE, which the `cluster` fixture sets.
            patch.setenv("REQUESTS_CA_BUNDLE", cluster.ca_file)
            yield cluster
    finally:
        BackendProcess.services = None
        _cluster_logs.clear()
        BackendProcess.log_paths.difference_update(logs)


@pytest.fixture(autouse=True)
def _no_cluster_fault_meanwhile(
    request: pytest.FixtureRequest, _cluster_profile: Cluster | None
) -> None:
    """In the cluster profile every test uses the cluster's services, so each holds the
    shared side of the faults lock (`tests.support.cluster`): a fault test, which takes
    the exclusive side, never breaks an instance under another test's requests. (tests/
    cluster takes its side itself.)"""
    if _cluster_profile is not None and "cluster_exclusive" not in request.fixturenames:
        request.getfixturevalue("cluster_shared")


@pytest.fixture(scope="session")
def backend_session(
    tmp_path_factory: pytest.TempPathFactory, _cluster_profile: Cluster | None
) -> Iterator[BackendProcess | ClusterEndpoint]:
    """One default backend shared by the session; tests must use their own accounts.

    In the cluster profile: the cluster itself, through its load balancer and TLS."""
    if _cluster_profile is not None:
        yield ClusterEndpoint.of(_cluster_profile)
        return
    with running_backend(tmp_path_factory.mktemp("backend-session")) as backend:
        yield backend
