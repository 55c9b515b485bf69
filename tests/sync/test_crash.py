"""`kill -9` of the mount daemon loses nothing that was written: after `mountfs mount` again
(which cleans up the dead mount point) the data reaches the backend, and a second device
reads it byte for byte. Figures are printed (`-s`)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import time

from tests.support.api_client import ApiClient
from tests.support.mount import (
    BackendLogCheck,
    Devices,
    MountProcess,
    remote_node,
    wait_for,
)

BIG = 100 << 20


def _mount_again(mount: MountProcess) -> None:
    """`mountfs mount` (as a daemon) on the dead mount point of a killed daemon."""
    again = mount.start_daemon()
    assert again.returncode == 0, again.stderr
    assert "dead mount" in again.stderr


def test_kill_9_after_fsync_before_upload(mount_factory: Devices, inspector: ApiClient) -> None:
    mount = mount_factory(start=False)
    assert mount.start_daemon().returncode == 0
    data = os.urandom(3 << 20)
    fd = os.open(mount.mountpoint / "precious", os.O_CREAT | os.O_WRONLY, 0o600)
    os.write(fd, data)
    os.fsync(fd)  # durable here; still open, so the engine waits before it uploads
    (mount.mountpoint / "dir").mkdir()
    dfd = os.open(mount.mountpoint, os.O_RDONLY)
    os.fsync(dfd)
    os.close(dfd)
    mount.kill()
    with contextlib.suppress(OSError):
        os.close(fd)
    node = remote_node(inspector, "precious")
    assert node is None or node["head_revision"] is None, "uploaded before the kill"

    _mount_again(mount)
    assert (mount.mountpoint / "precious").read_bytes() == data
    synced = mount.sync()
    assert synced.returncode == 0, synced.stderr
    node = remote_node(inspector, "precious")
    assert node is not None
    assert node["size"] == len(data)
    mount_factory.roundtrip_check(mount)
    mount.stop()


def test_kill_9_in_the_middle_of_a_100_mib_upload(
    mount_factory: Devices, inspector: ApiClient, check_backend_logs: BackendLogCheck
) -> None:
    mount = mount_factory()
    digest = hashlib.sha256()
    with open(mount.mountpoint / "huge.bin", "wb") as f:
        for _ in range(BIG >> 20):
            piece = os.urandom(1 << 20)
            digest.update(piece)
            f.write(piece)
    closed = time.monotonic()
    sent = wait_for(
        lambda: (n := mount.live_status()["uploaded_bytes"]) >= 16 << 20 and n,
        60,
        "16 MiB uploaded",
    )
    mount.kill()
    print(f"killed after {time.monotonic() - closed:.2f}s with {sent >> 20} MiB of 100 sent")
    node = remote_node(inspector, "huge.bin")
    assert node is None or node["head_revision"] is None, "the upload finished before the kill"

    _mount_again(mount)
    started = time.monotonic()
    synced = mount.sync(timeout=120)
    assert synced.returncode == 0, synced.stderr
    resent = mount.live_status()["uploaded_bytes"]
    print(f"after remount: {resent >> 20} MiB uploaded in {time.monotonic() - started:.2f}s")
    node = remote_node(inspector, "huge.bin")
    assert node is not None
    assert node["size"] == BIG
    manifest = mount_factory.roundtrip_check(mount)
    assert manifest["huge.bin"][3] == digest.hexdigest()
    mount.stop()
