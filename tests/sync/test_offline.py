"""Offline: the mount keeps working on what it has, says so, and catches up by itself.

The backend is the test's own (`private`), stopped and started again on the same data
directory and port, as a restart or an outage would do.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from tests.support.backend import BackendProcess
from tests.support.mount import Devices, MountProcess, tree_manifest, wait_for

OUTAGE_LOG = ["backend unavailable", "backend unreachable"]
"""What a mount may log while the backend is down (the retries say why they wait)."""


def _offline_work(root: Path) -> None:
    """Reads, writes, creates, renames and deletes of cached files, all without a backend."""
    assert (root / "docs" / "a.bin").read_bytes()[:4] == b"AAAA"
    with open(root / "docs" / "a.bin", "r+b") as f:
        f.seek(100_000)
        f.write(b"edited offline")
    (root / "docs" / "new.txt").write_text("made offline\n")
    os.rename(root / "docs" / "b.txt", root / "moved.txt")
    os.unlink(root / "docs" / "c.txt")
    (root / "fresh" / "deeper").mkdir(parents=True)
    (root / "fresh" / "deeper" / "x").write_bytes(os.urandom(300_000))
    os.symlink("../moved.txt", root / "fresh" / "link")
    os.chmod(root / "moved.txt", 0o600)


def _populate(root: Path) -> None:
    (root / "docs").mkdir()
    (root / "docs" / "a.bin").write_bytes(b"AAAA" + os.urandom(2 << 20))
    (root / "docs" / "b.txt").write_text("bee\n")
    (root / "docs" / "c.txt").write_text("sea\n")


def _wait_offline(mount: MountProcess) -> dict[str, Any]:
    def offline_status() -> dict[str, Any] | None:
        status = mount.live_status()
        return None if status["online"] else status

    return wait_for(offline_status, 30, "status offline")


def test_offline_work_reaches_the_backend_when_it_is_back(
    private: Devices, backend_server: BackendProcess
) -> None:
    backend = backend_server
    mount = private("mnt")
    mount.allowed_log += OUTAGE_LOG
    _populate(mount.mountpoint)
    synced = mount.sync()
    assert synced.returncode == 0, synced.stderr
    assert "up to date" in synced.stdout

    backend.stop()
    _offline_work(mount.mountpoint)
    status = _wait_offline(mount)
    assert status["pending_files"] >= 2  # a.bin, new.txt, x
    assert status["pending_changes"] >= 5  # creates, rename, delete, chmod, symlink
    cli_status = mount.status()
    assert cli_status["mounted"] is True
    assert cli_status["online"] is False
    assert cli_status["pending_changes"] >= 5
    late = mount.sync(timeout=2)
    assert late.returncode == 1
    assert "not up to date" in late.stderr

    backend.start()
    assert mount.sync().returncode == 0
    status = mount.live_status()
    assert status["online"] is True
    assert (status["pending_files"], status["pending_changes"]) == (0, 0)
    manifest = private.roundtrip_check(mount)
    assert manifest["moved.txt"][:2] == ("file", oct(stat.S_IMODE(0o600)))
    assert "docs/c.txt" not in manifest


def test_sync_of_an_unmounted_device_pushes_what_the_last_mount_left(
    private: Devices, backend_server: BackendProcess
) -> None:
    backend = backend_server
    mount = private("mnt")
    mount.allowed_log += OUTAGE_LOG
    _populate(mount.mountpoint)
    mount.synced()
    backend.stop()
    _offline_work(mount.mountpoint)
    expected = tree_manifest(mount.mountpoint)
    mount.stop()  # gives up on the final flush quickly: nothing answers

    left = mount.status()
    assert left["mounted"] is False
    assert left["pending_changes"] >= 5

    backend.start()
    synced = mount.sync()  # no daemon: `mountfs sync` does the work itself
    assert synced.returncode == 0, synced.stderr
    after = mount.status()
    assert (after["pending_files"], after["pending_changes"]) == (0, 0)
    private.second_device_sees(expected)
