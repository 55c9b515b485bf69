"""Large files over bad networks (issue 7): resumable, pausable, cancellable transfers.

Every device here talks to its own backend through a loopback proxy (`CutProxy`) that
counts the bytes on the wire and can cut the network mid-transfer, so the tests measure
what was really sent. Figures are printed (`-s`).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.support.backend import BackendFactory, BackendProcess
from tests.support.mount import (
    Account,
    Devices,
    MountProcess,
    make_state,
    remote_node,
    run_cli,
    wait_for,
)
from tests.support.proxy import CutProxy, cut_proxy

MIB = 1 << 20
SLACK = 1.05
"""A resumed transfer may move at most 5% more than the file."""


@dataclass
class Net:
    proxy: CutProxy
    devices: Devices
    tmp: Path

    def state(self, name: str) -> Path:
        """A logged-in state directory (no mount) of the account, through the proxy."""
        state = self.tmp / f"{name}-state"
        if not (state / "device.json").exists():
            make_state(state, self.devices.account, name)
        return state


@pytest.fixture
def net(tmp_path: Path, backend_server: BackendProcess) -> Iterator[Net]:
    port = urlsplit(backend_server.base_url).port
    assert port is not None
    with cut_proxy(port) as proxy:
        devices = Devices(Account.register(proxy.url, "xfer"), tmp_path / "devices")
        try:
            yield Net(proxy, devices, tmp_path)
        finally:
            proxy.restore()
            problems = devices.close()
    assert not problems, "\n".join(problems)


def random_file(path: Path, size: int) -> str:
    """Write `size` incompressible bytes to `path`; their SHA-256 hex."""
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        for _ in range(size // (8 * MIB)):
            piece = os.urandom(8 * MIB)
            digest.update(piece)
            f.write(piece)
    return digest.hexdigest()


def file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while piece := f.read(8 * MIB):
            digest.update(piece)
    return digest.hexdigest()


def cp(state: Path, *args: str | Path, timeout: float = 300) -> dict[str, Any]:
    result = run_cli("cp", *args, "--state", state, "--json", timeout=timeout)
    assert result.returncode == 0, result.stderr
    answer: dict[str, Any] = json.loads(result.stdout)
    return answer


def cut_and_wait(proxy: CutProxy) -> None:
    wait_for(lambda: proxy.is_down or None, 120, "the network cut")


# --- cp -------------------------------------------------------------------------------------


@pytest.mark.embedded_only("cuts a proxy that carries the chunk bytes (S3 on the cluster)")
def test_cp_resumes_an_upload_and_a_download_cut_mid_way(net: Net) -> None:
    size = 160 * MIB
    state = net.state("cp")
    source = net.tmp / "big.bin"
    digest = random_file(source, size)

    net.proxy.cut_after(64 * MIB)
    first = run_cli("cp", source, "cloud:/big.bin", "--state", state, timeout=300)
    assert first.returncode == 1, first.stdout
    assert "unreachable" in first.stderr or "backend" in first.stderr, first.stderr
    sent_before = net.proxy.up_bytes
    net.proxy.restore()
    second = cp(state, source, "cloud:/")
    total_up = net.proxy.up_bytes
    print(
        f"upload cut at {sent_before / MIB:.0f} MiB; resumed with {second['sent_bytes']} B; "
        f"{total_up / size:.3f}× the file on the wire"
    )
    assert second["size"] == size
    assert int(second["reused_chunks"]) > 0
    assert total_up < size * SLACK

    target = net.tmp / "back.bin"
    before_down = net.proxy.down_bytes
    net.proxy.cut_after_down(64 * MIB)
    cut = run_cli("cp", "cloud:/big.bin", target, "--state", state, timeout=300)
    assert cut.returncode == 1, cut.stdout
    assert not target.exists()
    assert (net.tmp / "back.bin.mountfs-part").exists()
    net.proxy.restore()
    again = cp(state, "cloud:/big.bin", target)
    down = net.proxy.down_bytes - before_down
    print(f"download resumed: {again['reused_chunks']} chunks kept; {down / size:.3f}× on the wire")
    assert int(again["reused_chunks"]) > 0
    assert down < size * SLACK
    assert file_hash(target) == digest
    assert not (net.tmp / "back.bin.mountfs-part").exists()


@pytest.mark.embedded_only("cuts a proxy that carries the chunk bytes (S3 on the cluster)")
@pytest.mark.parametrize("size", [256 * MIB, 2048 * MIB], ids=["256M", "2G"])
def test_cp_a_large_file_both_ways_in_bounded_memory(net: Net, size: int) -> None:
    """Up and down by hash, each `mountfs cp` process under 300 MB resident. The 2 GiB
    case is the one the issue asks CI to run (about 70 s here); the 10 GiB variant is
    `test_10_gib_round_trip` (slow: 5m43s here, peak RSS 161 MiB) and
    `scripts/bench --only transfers`."""
    state = net.state("gib")
    source = net.tmp / "gib.bin"
    digest = random_file(source, size)
    for args in (
        (source, "cloud:/gib.bin"),
        ("cloud:/gib.bin", net.tmp / "gib-back.bin"),
    ):
        code = (
            "import resource, subprocess, sys; "
            "r = subprocess.run(sys.argv[1:]); "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)"
        )
        result = run_python(code, "cp", *args, "--state", state)
        rss_mb = int(result.strip().splitlines()[-1]) / 1024
        print(f"cp {args[0]} → {args[1]}: peak RSS {rss_mb:.0f} MiB")
        assert rss_mb < 300
    assert file_hash(net.tmp / "gib-back.bin") == digest
    source.unlink()
    (net.tmp / "gib-back.bin").unlink()


def run_python(code: str, *mountfs_args: str | Path) -> str:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", code, sys.executable, "-m", "mountfs", *map(str, mountfs_args)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.embedded_only("cuts a proxy that carries the chunk bytes (S3 on the cluster)")
@pytest.mark.slow
def test_10_gib_round_trip(net: Net) -> None:
    size = 10 * 1024 * MIB
    state = net.state("ten")
    source = net.tmp / "ten.bin"
    digest = random_file(source, size)
    cp(state, source, "cloud:/ten.bin", timeout=3600)
    source.unlink()
    cp(state, "cloud:/ten.bin", net.tmp / "ten-back.bin", timeout=3600)
    assert file_hash(net.tmp / "ten-back.bin") == digest
    (net.tmp / "ten-back.bin").unlink()


@pytest.mark.embedded_only("cuts a proxy that carries the chunk bytes (S3 on the cluster)")
def test_cp_refuses_what_it_cannot_copy(net: Net) -> None:
    state = net.state("bad")
    both_local = run_cli("cp", "/etc/hostname", "/tmp/x", "--state", state)
    assert both_local.returncode == 2
    assert "cloud:/path" in both_local.stderr
    missing = run_cli("cp", "cloud:/nope.bin", net.tmp / "x", "--state", state)
    assert missing.returncode == 1
    assert "no such file" in missing.stderr
    no_folder = run_cli("cp", "/etc/hostname", "cloud:/no/such/dir/x", "--state", state)
    assert no_folder.returncode == 1
    assert "no such folder" in no_folder.stderr


# --- the mount ------------------------------------------------------------------------------


def write_random(path: Path, size: int) -> str:
    return random_file(path, size)


@pytest.mark.embedded_only("cuts a proxy that carries the chunk bytes (S3 on the cluster)")
def test_mount_upload_resumes_after_a_network_cut(net: Net) -> None:
    size = 192 * MIB
    mount = net.devices("writer")
    mount.allowed_log += ["backend unavailable", "backend unreachable"]
    digest = write_random(mount.mountpoint / "big.bin", size)
    start = net.proxy.up_bytes
    net.proxy.cut_after(64 * MIB)
    cut_and_wait(net.proxy)
    time.sleep(1.0)
    net.proxy.restore()
    mount.synced(timeout=180)
    sent = net.proxy.up_bytes - start
    print(f"mount upload with a cut at 64 MiB: {sent / size:.3f}× the file on the wire")
    assert sent < size * SLACK
    reader = net.devices("reader")
    reader.synced()
    assert file_hash(reader.mountpoint / "big.bin") == digest
    reader.stop()
    mount.stop()


@pytest.mark.embedded_only("cuts a proxy that carries the chunk bytes (S3 on the cluster)")
def test_kill_9_mid_upload_resumes_after_restart(net: Net) -> None:
    size = 128 * MIB
    mount = net.devices("killed")
    write_random(mount.mountpoint / "huge.bin", size)
    start = net.proxy.up_bytes
    wait_for(lambda: net.proxy.up_bytes - start >= 48 * MIB or None, 120, "48 MiB sent")
    mount.kill()
    with net.devices.account.api() as api:
        node = remote_node(api, "huge.bin")
        assert node is None or node["head_revision"] is None, "finished before the kill"
    again = mount.start_daemon()
    assert again.returncode == 0, again.stderr
    mount.synced(timeout=180)
    sent = net.proxy.up_bytes - start
    print(f"kill -9 after 48 MiB, restart: {sent / size:.3f}× the file on the wire")
    assert sent < size * SLACK
    with net.devices.account.api() as api:
        node = remote_node(api, "huge.bin")
        assert node is not None
        assert node["size"] == size
    mount.stop()


@pytest.mark.embedded_only("cuts a proxy that carries the chunk bytes (S3 on the cluster)")
def test_a_read_cut_mid_way_resumes_from_the_cached_chunks(net: Net) -> None:
    size = 96 * MIB
    writer = net.devices("writer")
    digest = write_random(writer.mountpoint / "movie.bin", size)
    writer.synced(timeout=120)
    writer.stop()
    reader = net.devices("reader")
    reader.allowed_log += ["backend unavailable", "backend unreachable", "fetching"]
    reader.synced()
    start = net.proxy.down_bytes
    net.proxy.cut_after_down(40 * MIB)
    with pytest.raises(OSError, match="Input/output error"):
        file_hash(reader.mountpoint / "movie.bin")
    net.proxy.restore()
    reader.synced(timeout=60)  # back online
    time.sleep(6)  # reads fail fast for --offline-read-timeout after a failure (reads.py)
    assert file_hash(reader.mountpoint / "movie.bin") == digest
    fetched = net.proxy.down_bytes - start
    print(f"read cut after 40 MiB, read again: {fetched / size:.3f}× the file came down")
    assert fetched < size * SLACK
    reader.stop()


class _Sampler:
    """Watches the proxy's upward byte count from a thread, to time when it stops."""

    def __init__(self, proxy: CutProxy) -> None:
        self._proxy = proxy
        self._stop = threading.Event()
        self.last_change = time.monotonic()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        last = self._proxy.up_bytes
        while not self._stop.wait(0.005):
            now = self._proxy.up_bytes
            if now != last:
                last, self.last_change = now, time.monotonic()

    def stopped_moving(self, quiet: float = 0.5, timeout: float = 10.0) -> float:
        """Once no byte moved for `quiet` seconds: when they last moved."""
        deadline = time.monotonic() + timeout
        while time.monotonic() - self.last_change < quiet:
            assert time.monotonic() < deadline, f"bytes still moving after {timeout}s"
            time.sleep(0.02)
        self._stop.set()
        self._thread.join()
        return self.last_change


@pytest.mark.embedded_only("cuts a proxy that carries the chunk bytes (S3 on the cluster)")
def test_pause_resume_and_progress_from_the_cli(net: Net) -> None:
    size = 48 * MIB
    mount = net.devices("pauser", extra_args=("--bwlimit", "4M"))  # 12 s of upload
    digest = write_random(mount.mountpoint / "slow.bin", size)
    transfer = wait_for(
        lambda: next((t for t in mount.live_status()["transfers"] if t["bytes_done"] > 0), None),
        60,
        "an upload in progress",
    )
    assert transfer["path"] == "slow.bin"
    assert transfer["direction"] == "upload"
    assert transfer["bytes_total"] == size
    assert set(transfer) >= {"rate_bps", "eta_s", "state"}
    shown = mount.cli("status")
    assert shown.returncode == 0, shown.stderr
    assert "slow.bin" in shown.stdout
    assert "%" in shown.stdout

    sampler = _Sampler(net.proxy)
    began = time.monotonic()
    paused = mount.cli("pause")
    assert paused.returncode == 0, paused.stderr
    stopped = sampler.stopped_moving() - began
    print(f"`mountfs pause` (CLI start included) → bytes stopped after {stopped:.2f}s")
    assert stopped < 5.0
    held = net.proxy.up_bytes
    time.sleep(1.5)
    assert net.proxy.up_bytes == held
    report = mount.status()
    assert report["paused"] is True
    assert report["transfers"][0]["state"] == "paused"

    # Paused survives a restart of the client.
    mount.stop()
    mount.start()
    time.sleep(2)
    assert net.proxy.up_bytes - held < 64 * 1024  # metadata only, no chunk moved
    assert mount.status()["paused"] is True

    resumed = mount.cli("resume")
    assert resumed.returncode == 0, resumed.stderr
    mount.synced(timeout=120)
    assert mount.status()["paused"] is False
    assert mount.status()["transfers"] == []
    reader = net.devices("reader")
    reader.synced()
    assert file_hash(reader.mountpoint / "slow.bin") == digest
    reader.stop()
    mount.stop()


@pytest.mark.embedded_only("cuts a proxy that carries the chunk bytes (S3 on the cluster)")
def test_cancel_from_the_cli_reverts_or_removes_and_keeps_a_copy(net: Net) -> None:
    mount = net.devices("canceller", extra_args=("--bwlimit", "8M"))
    old = os.urandom(MIB)
    (mount.mountpoint / "doc.bin").write_bytes(old)
    mount.synced()
    new_digest = write_random(mount.mountpoint / "doc.bin", 48 * MIB)
    write_random(mount.mountpoint / "fresh.bin", 16 * MIB)
    wait_for(
        lambda: any(t["bytes_done"] > 0 for t in mount.live_status()["transfers"]) or None,
        60,
        "an upload in progress",
    )

    reverted = mount.cli("cancel", mount.mountpoint / "doc.bin", "--json")
    assert reverted.returncode == 0, reverted.stderr
    answer = json.loads(reverted.stdout)
    assert answer["outcome"] == "reverted"
    trash = Path(answer["trash"])
    assert trash.parent == mount.state_dir / "trash"
    assert file_hash(trash) == new_digest
    assert (mount.mountpoint / "doc.bin").read_bytes() == old

    removed = mount.cli("cancel", "cloud:/fresh.bin")
    assert removed.returncode == 0, removed.stderr
    assert "removed" in removed.stdout
    assert "trash" in removed.stdout
    assert not (mount.mountpoint / "fresh.bin").exists()

    nothing = mount.cli("cancel", mount.mountpoint / "doc.bin")
    assert nothing.returncode == 1
    assert "no pending upload" in nothing.stderr

    mount.synced(timeout=120)
    with net.devices.account.api() as api:
        node = remote_node(api, "doc.bin")
        assert node is not None
        assert node["size"] == MIB
        assert remote_node(api, "fresh.bin") is None
    mount.stop()


def test_a_file_past_the_maximum_is_efbig(tmp_path: Path, backend_factory: BackendFactory) -> None:
    backend = backend_factory("--max-file-bytes", str(64 * MIB))
    devices = Devices(Account.register(backend.base_url, "big"), tmp_path / "devices")
    try:
        mount: MountProcess = devices("limited")
        path = mount.mountpoint / "too-big.bin"
        path.write_bytes(b"x")

        def refused() -> bool | None:
            try:
                os.truncate(path, 65 * MIB)
            except OSError as exc:
                return exc.errno == errno.EFBIG or None
            os.truncate(path, 1)
            time.sleep(0.1)
            return None

        wait_for(refused, 30, "EFBIG from truncate past 64 MiB")
        os.truncate(path, 64 * MIB)  # up to the limit is fine
        with open(path, "r+b") as f, pytest.raises(OSError, match="too large") as caught:
            f.truncate(64 * MIB + 1)
        assert caught.value.errno == errno.EFBIG
        assert path.stat().st_size == 64 * MIB
        mount.stop()
    finally:
        problems = devices.close()
    assert not problems, "\n".join(problems)
