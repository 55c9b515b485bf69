"""Pinning for offline use, and reads of uncached bytes with no backend.

`mountfs pin` keeps a folder downloaded on device B: what A changes in it arrives complete
at the next sync, and with the backend stopped B still reads every pinned byte, while an
unpinned file that was never read fails fast with EIO. A hung backend (SIGSTOP: it accepts
connections and never answers) costs a read at most `--offline-read-timeout`.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import time
from pathlib import Path

import pytest

from tests.support.backend import BackendProcess
from tests.support.mount import Devices, MountProcess, tree_manifest, wait_for

OUTAGE_LOG = [
    "backend unavailable",
    "backend unreachable",
    "no answer from the backend",
    "the backend is unreachable",
    "pinned downloads wait",
    "still waiting",
    "fetching",
]
"""What a mount may log while the backend is down (failed reads say why)."""


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _read_error(path: Path) -> tuple[int | None, float]:
    """(errno of reading `path`, or None if it worked; seconds the attempt took)."""
    started = time.monotonic()
    try:
        path.read_bytes()
    except OSError as exc:
        return exc.errno, time.monotonic() - started
    return None, time.monotonic() - started


def _pins(mount: MountProcess) -> dict[str, object]:
    listed = mount.cli("pin", "--json", timeout=60)
    assert listed.returncode == 0, listed.stderr
    answer: dict[str, object] = json.loads(listed.stdout)
    return answer


def test_pinned_folder_stays_readable_offline(
    private: Devices, backend_server: BackendProcess
) -> None:
    a = private("a")
    b = private("b")
    b.allowed_log += OUTAGE_LOG
    a.allowed_log += OUTAGE_LOG
    keep = a.mountpoint / "keep"
    (keep / "sub").mkdir(parents=True)
    (keep / "big.bin").write_bytes(os.urandom(1 << 20))
    (keep / "small.txt").write_text("small\n")
    (keep / "sub" / "deep.bin").write_bytes(os.urandom(200_000))
    (a.mountpoint / "loose.bin").write_bytes(os.urandom(100_000))
    a.synced()
    b.synced()

    pinned = b.cli("pin", b.mountpoint / "keep", timeout=60)
    assert pinned.returncode == 0, pinned.stderr
    assert "pinned /keep: 3 files" in pinned.stdout
    b.synced()  # a synced device holds every pinned byte
    status = b.status()
    assert (status["pinned_files"], status["pinned_bytes"]) == (3, (1 << 20) + 6 + 200_000)
    assert status["pinned_missing_bytes"] == 0
    listing = _pins(b)
    assert [p["path"] for p in listing["pins"]] == ["/keep"]
    shown = b.cli("status", timeout=30)
    assert "pinned" in shown.stdout
    assert "3 files" in shown.stdout

    # Changes on A inside the pinned folder: an edit (new size), new files, a new folder.
    (keep / "big.bin").write_bytes(os.urandom((1 << 20) + 12345))
    (keep / "new.txt").write_text("added later\n")
    (keep / "sub" / "more").mkdir()
    (keep / "sub" / "more" / "x.bin").write_bytes(os.urandom(500_000))
    (a.mountpoint / "moved-in.bin").write_bytes(os.urandom(400_000))
    a.synced()
    b.synced()
    os.rename(b.mountpoint / "moved-in.bin", b.mountpoint / "keep" / "moved-in.bin")  # on B
    b.synced()
    a.synced()
    expected = tree_manifest(keep)  # A's view: reading on B now would fetch on demand
    assert "moved-in.bin" in expected
    assert b.status()["pinned_missing_bytes"] == 0

    backend_server.stop()
    assert tree_manifest(b.mountpoint / "keep") == expected  # every pinned byte, offline
    code, took = _read_error(b.mountpoint / "loose.bin")  # never read, not pinned
    assert code == errno.EIO
    assert took < 10, f"an offline read of uncached bytes took {took:.1f}s"
    # Pins can be managed offline; the content stays cached until evicted.
    unpinned = b.cli("unpin", b.mountpoint / "keep", timeout=60)
    assert unpinned.returncode == 0, unpinned.stderr
    assert _pins(b)["pins"] == []
    assert _digest(b.mountpoint / "keep" / "big.bin") == expected["big.bin"][3]


def test_pins_without_a_mount(private: Devices) -> None:
    a = private("a")
    (a.mountpoint / "docs").mkdir()
    (a.mountpoint / "docs" / "r.bin").write_bytes(os.urandom(700_000))
    a.synced()
    b = private("b", start=False)
    b.mountpoint.mkdir(parents=True, exist_ok=True)
    assert b.sync().returncode == 0  # pulls the tree, no content
    missing = b.cli("pin", "nowhere")
    assert missing.returncode == 1
    assert "no such file or folder" in missing.stderr
    pinned = b.cli("pin", "docs", "--wait", "60", timeout=120)  # account path, no mount
    assert pinned.returncode == 0, pinned.stderr
    status = b.status()
    assert status["mounted"] is False
    assert (status["pinned_files"], status["pinned_missing_bytes"]) == (1, 0)
    b.start()
    assert b.status()["pinned_missing_bytes"] == 0
    not_pinned = b.cli("unpin", b.mountpoint / "docs" / "r.bin")
    assert not_pinned.returncode == 1
    assert "inside the pinned folder /docs" in not_pinned.stderr


def test_reads_give_up_on_a_hung_backend(private: Devices, backend_server: BackendProcess) -> None:
    a = private("a")
    b = private("b", extra_args=("--offline-read-timeout", "1.5"))
    b.allowed_log += OUTAGE_LOG
    a.allowed_log += OUTAGE_LOG
    (a.mountpoint / "cold.bin").write_bytes(os.urandom(300_000))
    a.synced()
    b.synced()
    pid = backend_server.pid
    assert pid is not None
    os.killpg(pid, signal.SIGSTOP)  # accepts connections, answers nothing
    try:
        code, took = _read_error(b.mountpoint / "cold.bin")
        assert code == errno.EIO
        assert took < 15, f"a read waited {took:.1f}s on a hung backend"
        again, _ = _read_error(b.mountpoint / "cold.bin")  # fails at once now
        assert again == errno.EIO
    finally:
        os.killpg(pid, signal.SIGCONT)
    # Once the backend answers again, so do reads (after at most the fail-fast window).
    wait_for(lambda: _read_error(b.mountpoint / "cold.bin")[0] is None, 30, "read works again")
    assert (b.mountpoint / "cold.bin").read_bytes() == (a.mountpoint / "cold.bin").read_bytes()


@pytest.mark.parametrize("value", ["0", "-1", "soon"])
def test_offline_read_timeout_is_validated(value: str, tmp_path: Path) -> None:
    from tests.support.mount import run_cli

    result = run_cli("mount", tmp_path, "--offline-read-timeout", value, "--state", tmp_path)
    assert result.returncode == 2
    assert "offline-read-timeout" in result.stderr
