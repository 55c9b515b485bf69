"""From nothing to a synced folder with the CLI alone: account, login, mount, sync, status."""

from __future__ import annotations

import os
from pathlib import Path

from tests.support.api_client import PASSWORD, unique_name
from tests.support.backend import BackendProcess
from tests.support.mount import Account, Devices, MountProcess, run_cli


def test_account_login_mount_sync_with_the_cli(
    tmp_path: Path, backend_session: BackendProcess
) -> None:
    server = backend_session.base_url
    name = unique_name("cli")
    created = run_cli("account", "create", name, "--server", server, "--password-stdin",
                      stdin=PASSWORD + "\n")  # fmt: skip
    assert created.returncode == 0, created.stderr
    state = tmp_path / "laptop-state"
    login = run_cli("login", "--server", server, "--user", name, "--device", "laptop",
                    "--password-stdin", "--state", state, stdin=PASSWORD + "\n")  # fmt: skip
    assert login.returncode == 0, login.stderr
    assert "logged in as" in login.stdout
    assert oct(os.stat(state / "token").st_mode & 0o777) == oct(0o600)

    devices = Devices(Account(server, name), tmp_path)
    mount = MountProcess(tmp_path / "laptop", state)
    devices.mounts.append(mount)
    try:
        mount.start()
        (mount.mountpoint / "hello.txt").write_text("hello from the laptop\n")
        synced = mount.sync()
        assert synced.returncode == 0, synced.stderr
        assert "up to date" in synced.stdout
        again = mount.sync()  # nothing left to do: still 0, at once
        assert again.returncode == 0, again.stderr
        status = mount.status()
        assert status["mounted"] is True
        assert status["online"] is True
        assert (status["pending_files"], status["pending_changes"]) == (0, 0)
        assert status["uploaded_bytes"] > 0
        devices.roundtrip_check(mount)
        mount.stop()
    finally:
        problems = devices.close()
    assert not problems, "\n".join(problems)


def test_a_state_directory_with_a_long_path_works(mount_factory: Devices, tmp_path: Path) -> None:
    """The control socket's path is longer than a Unix socket address may be."""
    state = tmp_path / ("long-" * 20) / "state"
    mount = mount_factory(state_dir=state)
    (mount.mountpoint / "f").write_bytes(b"x")
    assert mount.live_status()["mounted"] is True
    synced = mount.sync()
    assert synced.returncode == 0, synced.stderr
    mount_factory.roundtrip_check(mount)
