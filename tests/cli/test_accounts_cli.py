"""The account and device commands of the `mountfs` CLI, against a real backend process."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import httpx

from tests.support.backend import BackendProcess

PASSWORD = "correct horse battery staple"


def mountfs(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mountfs", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def create_and_login(server: str, name: str, state: Path, device: str) -> None:
    created = mountfs(
        "account", "create", name, "--server", server, "--password-stdin", stdin=PASSWORD
    )
    assert created.returncode == 0 or "name_exists" in created.stderr, created.stderr
    logged = mountfs(
        "login", "--server", server, "--user", name, "--device", device,
        "--state", str(state), "--password-stdin", stdin=PASSWORD,
    )  # fmt: skip
    assert logged.returncode == 0, logged.stderr


def test_login_keeps_a_private_token_and_devices_lists_it(
    backend_server: BackendProcess, tmp_path: Path
) -> None:
    state = tmp_path / "laptop"
    create_and_login(backend_server.base_url, "alice", state, "laptop")

    token_file = state / "token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert stat.S_IMODE((state / "device.json").stat().st_mode) == 0o600
    device = json.loads((state / "device.json").read_text())
    assert device["account_name"] == "alice"
    assert "token" not in device

    listed = mountfs("devices", "--state", str(state), "--json")
    assert listed.returncode == 0, listed.stderr
    devices = json.loads(listed.stdout)
    assert [d["label"] for d in devices] == ["laptop"]
    assert devices[0]["current"] is True


def test_revoked_device_is_cut_off_at_once(backend_server: BackendProcess, tmp_path: Path) -> None:
    server = backend_server.base_url
    create_and_login(server, "bob", tmp_path / "laptop", "laptop")
    create_and_login(server, "bob", tmp_path / "phone", "phone")
    phone = json.loads((tmp_path / "phone" / "device.json").read_text())
    phone_token = (tmp_path / "phone" / "token").read_text().strip()

    revoked = mountfs("devices", "revoke", phone["device_id"], "--state", str(tmp_path / "laptop"))
    assert revoked.returncode == 0, revoked.stderr

    answer = httpx.get(f"{server}/api/v1/me", headers={"Authorization": f"Bearer {phone_token}"})
    assert answer.status_code == 401
    assert answer.json()["error"] == "unauthorized"
    # The revoked device's CLI says so, in one line, with a non-zero status.
    cut_off = mountfs("devices", "--state", str(tmp_path / "phone"))
    assert cut_off.returncode == 1
    assert "unauthorized" in cut_off.stderr
    listed = json.loads(mountfs("devices", "--state", str(tmp_path / "laptop"), "--json").stdout)
    by_label = {d["label"]: d for d in listed}
    assert by_label["phone"]["revoked_at"] is not None
    assert by_label["laptop"]["revoked_at"] is None


def test_wrong_password_and_missing_login_are_clear_errors(
    backend_server: BackendProcess, tmp_path: Path
) -> None:
    server = backend_server.base_url
    create_and_login(server, "carol", tmp_path / "a", "a")
    wrong = mountfs(
        "login", "--server", server, "--user", "carol", "--state", str(tmp_path / "b"),
        "--password-stdin", stdin="not the password",
    )  # fmt: skip
    assert wrong.returncode == 1
    assert "unauthorized" in wrong.stderr
    assert not (tmp_path / "b" / "token").exists()

    nobody = mountfs("devices", "--state", str(tmp_path / "nowhere"))
    assert nobody.returncode == 1
    assert "mountfs login" in nobody.stderr


def test_unreachable_server_is_reported_not_a_traceback(tmp_path: Path) -> None:
    result = mountfs(
        "account", "create", "dave", "--server", "http://127.0.0.1:9", "--password-stdin",
        stdin=PASSWORD,
    )  # fmt: skip
    assert result.returncode == 1
    assert "unreachable" in result.stderr
    assert "Traceback" not in result.stderr
