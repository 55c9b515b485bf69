"""Real mounts on the cluster profile: through nginx and TLS, on separate instances, and
across the crash of an instance."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cluster import Cluster
from tests.support.mount import Account, Devices, tree_manifest, wait_for

pytestmark = pytest.mark.usefixtures("needs_fuse")

# What a mount logs, at WARNING, while the instance it talked to is down and it retries.
RETRY_LOG = ("unreachable", "retrying", "502", "Bad Gateway", "will retry", "offline")


@pytest.fixture
def devices(cluster: Cluster, tmp_path: Path) -> Iterator[Devices]:
    """Mounts of a fresh account that log in through the load balancer."""
    made = Devices(Account.register(cluster.url), tmp_path)
    yield made
    problems = made.close()
    assert not problems, "\n".join(problems)


def test_a_mount_through_the_load_balancer_round_trips(devices: Devices) -> None:
    mount = devices("laptop")
    work = mount.mountpoint / "docs"
    work.mkdir()
    (work / "small.txt").write_text("hello from the cluster\n")
    (work / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    (work / "link").symlink_to("small.txt")
    devices.roundtrip_check(mount)


def test_devices_on_different_instances_see_each_others_writes(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Device A talks to instance 0 only, device B to instance 1 only: each sees what the
    other writes, by itself (push channel or polling), without a manual sync."""
    name = Account.register(cluster.url).name
    side_a = Devices(Account(cluster.instance_url(0), name), tmp_path / "a")
    side_b = Devices(Account(cluster.instance_url(1), name), tmp_path / "b")
    try:
        a, b = side_a("a"), side_b("b")
        (a.mountpoint / "from-a.txt").write_text("written on instance 0\n")
        wait_for(lambda: _reads(b.mountpoint / "from-a.txt", "written on instance 0\n"), 60, "B")
        (b.mountpoint / "from-b.txt").write_text("written on instance 1\n")
        wait_for(lambda: _reads(a.mountpoint / "from-b.txt", "written on instance 1\n"), 60, "A")
    finally:
        problems = side_a.close() + side_b.close()
    assert not problems, "\n".join(problems)


def _reads(path: Path, text: str) -> bool:
    """Whether `path` exists with exactly `text` (a remote file shows up first empty, as
    created, then with its content once the writer's commit arrives)."""
    try:
        return path.read_text() == text
    except FileNotFoundError:
        return False


def test_writes_survive_the_crash_of_an_instance(
    cluster_exclusive: Cluster, devices: Devices
) -> None:
    """Files written before, during and after instance 0 is SIGKILLed all reach the
    backend: the client fails over through nginx and retries what was cut off."""
    cluster = cluster_exclusive
    mount = devices("writer")
    mount.allowed_log.extend(RETRY_LOG)
    work = mount.mountpoint / "w"
    work.mkdir()
    try:
        for n in range(30):
            if n == 10:
                cluster.kill_instance(0)
            (work / f"f{n:02d}.txt").write_text(f"file {n}\n" * (n + 1))
        cluster.up()
        expected = tree_manifest(work)
        assert len(expected) == 30
        mount.synced(timeout=120)
        devices.second_device_sees(expected, Path("w"))
    finally:
        cluster.up()
