"""The push channel end to end: two real mounts of one account, nobody calls `mountfs sync`.

A change made on device A must show on device B by itself within a few seconds. While B's
push channel is connected its engine polls the journal only once a minute
(`sync.listen.CONNECTED_POLL_S`), so B seeing the change in seconds proves the push (the
tests also check that B's channel is connected). Stopping and restarting the backend
drops the channel; it must come back by itself, without a remount, and carry news again.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from mountfs.sync.listen import CONNECTED_POLL_S
from tests.support.backend import BackendProcess
from tests.support.mount import Devices, MountProcess, wait_for

SEEN_WITHIN_S = 8.0
"""Generous on a loaded 2-core machine; the aim on loopback is well under a second."""
RECOVER_WITHIN_S = 40.0
"""Reconnect backoff is capped at 10 s, the engine's at 15 s; a restart takes a few s."""


def connects(mount: MountProcess) -> int:
    """How many times the mount's push channel connected (from its log)."""
    if not mount.log_path.exists():
        return 0
    return mount.log_path.read_text(errors="replace").count("push channel connected")


def read_or_none(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def assert_push_is_what_delivers() -> None:
    assert CONNECTED_POLL_S >= 5 * SEEN_WITHIN_S, "polling alone would pass these tests"


def test_changes_on_one_device_appear_on_the_other_by_themselves(mount_factory: Devices) -> None:
    assert_push_is_what_delivers()
    a = mount_factory("a")
    b = mount_factory("b")
    wait_for(lambda: connects(a) >= 1 and connects(b) >= 1, 20, "both push channels connect")

    # created (in a new folder)
    (a.mountpoint / "docs").mkdir()
    (a.mountpoint / "docs" / "note.txt").write_bytes(b"first version\n")
    on_b = b.mountpoint / "docs" / "note.txt"
    wait_for(lambda: read_or_none(on_b) == b"first version\n", SEEN_WITHIN_S, "create on B")

    # edited: B has read the file, so this also needs the kernel's copy to be dropped
    with open(a.mountpoint / "docs" / "note.txt", "ab") as f:
        f.write(b"second line\n")
    wanted = b"first version\nsecond line\n"
    wait_for(lambda: read_or_none(on_b) == wanted, SEEN_WITHIN_S, "edit on B")

    # renamed (and moved)
    os.rename(a.mountpoint / "docs" / "note.txt", a.mountpoint / "renamed.txt")
    wait_for(
        lambda: read_or_none(b.mountpoint / "renamed.txt") == wanted and not on_b.exists(),
        SEEN_WITHIN_S,
        "rename on B",
    )

    # deleted
    os.unlink(a.mountpoint / "renamed.txt")
    wait_for(lambda: "renamed.txt" not in os.listdir(b.mountpoint), SEEN_WITHIN_S, "delete on B")
    assert connects(b) == 1, "B's channel never dropped, so it never needed a poll"


def test_a_backend_restart_is_survived_without_a_remount(
    private: Devices, backend_server: BackendProcess
) -> None:
    assert_push_is_what_delivers()
    a = private("a")
    b = private("b")
    wait_for(lambda: connects(a) >= 1 and connects(b) >= 1, 20, "both push channels connect")
    (a.mountpoint / "before.txt").write_bytes(b"before the restart")
    wait_for(
        lambda: read_or_none(b.mountpoint / "before.txt") == b"before the restart",
        SEEN_WITHIN_S,
        "a change before the restart",
    )
    for mount in (a, b):  # the engines log the outage while the backend is down
        mount.allowed_log.append("backend unavailable")
    backend_server.stop()
    time.sleep(1.0)  # both devices notice the drop and start retrying
    backend_server.start()
    wait_for(lambda: connects(b) >= 2, RECOVER_WITHIN_S, "B's push channel reconnects")
    wait_for(lambda: connects(a) >= 2, RECOVER_WITHIN_S, "A's push channel reconnects")

    # News still arrives by push after the restart (polling is back to once a minute).
    (a.mountpoint / "after.txt").write_bytes(b"after the restart")
    wait_for(
        lambda: read_or_none(b.mountpoint / "after.txt") == b"after the restart",
        SEEN_WITHIN_S,
        "a change after the restart",
    )
