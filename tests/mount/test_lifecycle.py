"""Mounting, unmounting, remounting and crashing: state survives what it must."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest

from tests.mount.conftest import MountFactory
from tests.support.mount import (
    Account,
    is_dead_mount,
    make_state,
    process_gone,
    run_cli,
    tree_manifest,
)


def test_remount_keeps_every_byte(mount_factory: MountFactory) -> None:
    mount = mount_factory()
    root = mount.mountpoint
    (root / "docs" / "deep").mkdir(parents=True)
    for i in range(20):
        (root / "docs" / f"f{i}").write_bytes(os.urandom(i * 50_000))
    (root / "docs" / "deep" / "big").write_bytes(os.urandom(9 << 20))
    os.rename(root / "docs" / "f3", root / "docs" / "deep" / "moved")
    os.symlink("docs/f1", root / "link")
    os.setxattr(root / "docs" / "f2", "user.tag", b"kept")
    os.utime(root / "docs" / "f4", ns=(5, 1_111_111_111_222_333_444))
    before = tree_manifest(root)
    mount.stop()
    mount.start()
    assert tree_manifest(root) == before
    assert os.readlink(root / "link") == "docs/f1"
    assert os.getxattr(root / "docs" / "f2", "user.tag") == b"kept"
    assert os.stat(root / "docs" / "f4").st_mtime_ns == 1_111_111_111_222_333_444
    mount_factory.roundtrip_check(mount)
    mount.stop()


def test_kill_9_after_fsync_then_mount_again(mount_factory: MountFactory) -> None:
    mount = mount_factory(start=False)
    result = mount.start_daemon()
    assert result.returncode == 0, result.stderr
    assert os.path.ismount(mount.mountpoint)  # `mountfs mount` returned once it was ready
    data = os.urandom(3 << 20)
    fd = os.open(mount.mountpoint / "precious", os.O_CREAT | os.O_WRONLY, 0o600)
    os.write(fd, data)
    os.fsync(fd)
    os.close(fd)
    (mount.mountpoint / "dir").mkdir()
    dfd = os.open(mount.mountpoint, os.O_RDONLY)
    os.fsync(dfd)
    os.close(dfd)
    mount.kill()
    assert is_dead_mount(mount.mountpoint)

    again = mount.start_daemon()  # the dead mount is cleaned up, then mounted again
    assert again.returncode == 0, again.stderr
    assert "dead mount" in again.stderr
    assert (mount.mountpoint / "precious").read_bytes() == data
    assert (mount.mountpoint / "dir").is_dir()
    mount_factory.roundtrip_check(mount)
    pid = mount.pid
    umount = run_cli("umount", mount.mountpoint)
    assert umount.returncode == 0, umount.stderr
    assert not os.path.ismount(mount.mountpoint)
    assert process_gone(pid)  # `mountfs umount` returned after the daemon exited


def test_one_daemon_per_state_directory(mount_factory: MountFactory, tmp_path: Path) -> None:
    mount = mount_factory()
    other = tmp_path / "other"
    other.mkdir()
    result = run_cli("mount", other, "--state", mount.state_dir)
    assert result.returncode == 1
    assert "in use by another mountfs process" in result.stderr
    assert not os.path.ismount(other)
    mount.allowed_log.append("in use by another mountfs process")


def test_mount_and_umount_errors(tmp_path: Path, account: Account) -> None:
    state = tmp_path / "state"
    missing = run_cli("mount", tmp_path / "nowhere", "--state", state)
    assert missing.returncode == 1
    make_state(state, account)
    missing = run_cli("mount", tmp_path / "nowhere", "--state", state)
    assert missing.returncode == 1
    assert "No such file or directory" in missing.stderr
    (tmp_path / "plain").mkdir()
    not_mounted = run_cli("umount", tmp_path / "plain")
    assert not_mounted.returncode == 1
    assert "not mounted" in not_mounted.stderr


def test_umount_of_a_busy_mount_fails_cleanly(mount_factory: MountFactory) -> None:
    mount = mount_factory()
    holder = open(mount.mountpoint / "open-file", "w")  # noqa: SIM115
    busy = run_cli("umount", mount.mountpoint)
    assert busy.returncode == 1
    assert os.path.ismount(mount.mountpoint)
    holder.close()
    mount_factory.roundtrip_check(mount)
    mount.stop()


def _fill(fd: int) -> None:
    chunk = b"z" * (1 << 20)
    for _ in range(100):
        os.write(fd, chunk)
        os.fsync(fd)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_full_disk_gives_enospc_and_loses_nothing(
    mount_factory: MountFactory, tmp_path: Path
) -> None:
    state = tmp_path / "small-state"
    state.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(state)], check=True)
    try:
        mount = mount_factory(state_dir=state)
        mount.allowed_log += ["disk is full", "No space left"]
        keep = os.urandom(4 << 20)
        (mount.mountpoint / "keep").write_bytes(keep)
        fd = os.open(mount.mountpoint / "filler", os.O_CREAT | os.O_WRONLY, 0o600)
        with pytest.raises(OSError, match="No space left") as exc_info:
            _fill(fd)
        assert exc_info.value.errno == errno.ENOSPC
        os.close(fd)
        assert (mount.mountpoint / "keep").read_bytes() == keep
        os.unlink(mount.mountpoint / "filler")
        (mount.mountpoint / "after").write_bytes(b"room again")
        assert (mount.mountpoint / "after").read_bytes() == b"room again"
        mount.stop()
        mount.start()
        assert (mount.mountpoint / "keep").read_bytes() == keep
        mount_factory.roundtrip_check(mount)
        mount.stop()
    finally:
        subprocess.run(["umount", "-l", str(state)], check=False)


def test_sigterm_unmounts_a_foreground_daemon(mount_factory: MountFactory) -> None:
    mount = mount_factory()
    (mount.mountpoint / "f").write_bytes(b"kept")
    mount.terminate()
    assert not os.path.ismount(mount.mountpoint)
    mount.start()
    assert (mount.mountpoint / "f").read_bytes() == b"kept"
    mount_factory.roundtrip_check(mount)
    mount.stop()
