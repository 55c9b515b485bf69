"""Desktop notifications of a real mount, seen through a fake `notify-send` on the PATH.

The fake is a real executable that appends its arguments (one JSON list per line) to a
file; the mount runs it exactly as it would run the real one. A D-Bus session address is
set so the mount believes a desktop session is there. Another device of the account puts a
conflicted copy into the tree through the API (what a losing device does), and the mount
must announce it -- once, and only when notifications are on and a session exists.
Another account offering a share (then ending it) is announced the same way, from the
`share` entries of the account's journal that the push channel announces.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from tests.support.api_client import ApiClient
from tests.support.mount import Account, Devices, MountProcess, make_state, wait_for

COPY = "report (conflicted copy from desktop 2026-11-24).txt"
SETTLE_S = 3.0


@pytest.fixture
def calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake notify-send first on the PATH (mounts started now inherit it); its log."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "notify-send.calls"
    fake = bin_dir / "notify-send"
    fake.write_text(
        "#!/usr/bin/env python3\n"
        "import json, sys\n"
        f"with open({str(log)!r}, 'a') as f:\n"
        "    f.write(json.dumps(sys.argv[1:]) + '\\n')\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", f"unix:path={tmp_path}/no-bus")
    return log


def recorded(log: Path) -> list[list[str]]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines()]


def put_conflicted_copy(api: ApiClient) -> None:
    """What a device that lost a conflict does: keep its version beside the original."""
    api.write_file(api.root_id, "report.txt", b"the winner")
    api.write_file(api.root_id, COPY, b"the loser")


class QuietMount(MountProcess):
    def command(self, *, foreground: bool = True) -> list[str]:
        return [*super().command(foreground=foreground), "--no-notify"]


def test_a_conflicted_copy_from_another_device_is_announced_once(
    mount_factory: Devices, inspector: ApiClient, calls: Path
) -> None:
    mount = mount_factory("laptop")
    inspector.write_file(inspector.root_id, "ordinary.txt", b"nothing to say")
    put_conflicted_copy(inspector)
    wait_for(lambda: (mount.mountpoint / COPY).exists(), 30, "the copy reaches the mount")
    wait_for(lambda: recorded(calls), 10, "a notification")
    time.sleep(SETTLE_S)  # and no second one, for the ordinary file or the same copy
    (call,) = recorded(calls)
    options = [arg for arg in call if arg.startswith("--")]
    summary, body = [arg for arg in call if not arg.startswith("--")]
    assert "--app-name=mountfs" in options
    assert summary == "Conflicting changes"
    assert "report.txt" in body
    assert f"“{COPY}”" in body
    assert "other version" in body


def test_no_notifications_with_no_notify_or_without_a_session(
    mount_factory: Devices, inspector: ApiClient, calls: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    quiet = QuietMount(mount_factory.base / "quiet", mount_factory.base / "quiet-state")
    mount_factory.mounts.append(quiet)
    make_state(quiet.state_dir, mount_factory.account, "quiet")
    quiet.start()
    monkeypatch.delenv("DBUS_SESSION_BUS_ADDRESS")
    headless = mount_factory("headless")
    put_conflicted_copy(inspector)
    for mount in (quiet, headless):
        copy = mount.mountpoint / COPY
        wait_for(copy.exists, 30, f"the copy reaches {mount.mountpoint.name}")
    time.sleep(SETTLE_S)
    assert recorded(calls) == []


def test_a_share_offer_and_its_end_are_announced(
    mount_factory: Devices, inspector: ApiClient, calls: Path
) -> None:
    mount = mount_factory("laptop")
    owner = Account.register(mount_factory.account.server, "sharer")
    with owner.api() as other:
        folder = other.mkdir(other.root_id, "holiday photos")
        body = {"account": mount_factory.account.name, "role": "viewer"}
        offer = other.call("POST", f"nodes/{folder['id']}/shares", json=body, expect=201)
        wait_for(lambda: recorded(calls) or None, 10, "a notification of the offer")
        ((*_, summary, text),) = recorded(calls)
        assert summary == f"{owner.name} shared the folder “holiday photos” with you"
        assert f"mountfs shares accept {offer['id']}" in text
        assert "view it" in text
        other.call("DELETE", f"shares/{offer['id']}")
        wait_for(lambda: len(recorded(calls)) == 2, 10, "a notification of the end")
    time.sleep(SETTLE_S)
    first, second = recorded(calls)
    assert second[-2] == f"{owner.name} stopped sharing the folder “holiday photos” with you"
    assert not (mount.mountpoint / "holiday photos").exists()  # never accepted
