"""Large-file transfers (issue 7): throughput, memory, resumption, pause latency.

A real backend (embedded SQLite + local block store) runs as a subprocess behind a small
loopback proxy (`tests.support.proxy.CutProxy`) that counts the bytes on the wire and can
cut the network. One account, one device; every figure comes from the real CLI.

- `transfers.upload`, `transfers.download`: `mountfs cp` of an incompressible file (2 GiB,
  quick 256 MiB; fresh random bytes every run, so nothing dedups) to the account and back,
  MB/s (10⁶ bytes) against `cp` of the same file on the local disk followed by `sync`.
  The note gives the `mountfs cp` process's peak RSS.
- `transfers.resume`: the upload cut at 50% of the file's bytes (the proxy drops every
  connection and refuses new ones), then the same `mountfs cp` again: the bytes sent in
  all beyond the file's own size, as a share of the file (0% = nothing sent twice).
- `transfers.pause`: a mount uploading at `--bwlimit 20M`, then the request `mountfs pause`
  sends to the mount's control socket: seconds until the proxy saw the last byte go up.
  (The `mountfs pause` command adds its own start-up, about a second of Python imports.)
- `transfers.rss`: the peak RSS of the two `mountfs cp` runs against the 300 MB budget.
- `transfers.10g`: a 10 GiB file up and back with `mountfs cp`, compared by SHA-256, with
  both processes' peak RSS; one run. It needs about 35 GB of free disk in `--workdir` and
  a quarter of an hour, so it runs only with `MOUNTFS_BENCH_10G=1` (else it is listed as
  skipped, with that reason) and never with `--quick`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .harness import (
    Benchmark,
    ColumnReference,
    FixedReference,
    Metric,
    Options,
    Report,
    Sample,
    Stopwatch,
    Suite,
)

__all__ = ["SUITE"]

MiB = 1 << 20
FULL_BYTES, QUICK_BYTES = 2048 * MiB, 256 * MiB
LOCAL, MOUNTFS, MOUNT = "local cp", "mountfs cp", "mountfs"
RSS_BUDGET_MB = 300.0

UPLOAD = Metric("upload", "MB/s", True)
DOWNLOAD = Metric("download", "MB/s", True)
RESENT = Metric("re-sent after a cut at 50%", "% of file", False)
PAUSE = Metric("pause → transfers stopped", "s", False)
RSS = Metric("peak RSS (cp up / down)", "MB", False)
UPLOAD_10G = Metric("upload, 10 GiB", "MB/s", True)
DOWNLOAD_10G = Metric("download, 10 GiB", "MB/s", True)
RSS_10G = Metric("peak RSS, 10 GiB (cp up / down)", "MB", False)
TEN_GIB = 10 * 1024 * MiB

_RSS_WRAPPER = (
    "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); "
    "sys.exit(r.returncode)"
)


def _random_file(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        for _ in range(size // (8 * MiB)):
            f.write(os.urandom(8 * MiB))


def _mountfs_cp(state: Path, *args: str | Path) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of one `mountfs cp`."""
    cmd = [sys.executable, "-c", _RSS_WRAPPER, sys.executable, "-m", "mountfs", "cp"]
    cmd += [*map(str, args), "--state", str(state)]
    with Stopwatch() as sw:
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"mountfs cp failed: {result.stderr[-2000:]}")
    rss_kib = int(result.stderr.strip().splitlines()[-1])
    return sw.seconds, rss_kib * 1024 / 1e6


def _local_cp(source: Path, target: Path) -> float:
    with Stopwatch() as sw:
        subprocess.run(["cp", str(source), str(target)], check=True)
        subprocess.run(["sync"], check=True)
    target.unlink()
    return sw.seconds


@contextlib.contextmanager
def _stack(workdir: Path) -> Iterator[tuple[Any, Any, Path]]:
    """A backend behind a cut proxy, an account and a logged-in state directory."""
    from tests.support.backend import running_backend
    from tests.support.mount import Account, make_state
    from tests.support.proxy import cut_proxy

    with running_backend(workdir / "backend") as backend:
        port = urlsplit(backend.base_url).port
        assert port is not None
        with cut_proxy(port) as proxy:
            account = Account.register(proxy.url, "bench")
            state = workdir / "state"
            make_state(state, account, "bench")
            yield proxy, account, state


def run(report: Report, options: Options, selected: tuple[str, ...]) -> None:
    size = QUICK_BYTES if options.quick else FULL_BYTES
    throughput = report.table(
        "transfers",
        f"Large-file transfers ({size // MiB} MiB incompressible, embedded backend on "
        "loopback, `mountfs cp`)",
        ColumnReference(LOCAL),
    )
    memory = report.table(
        "transfers-memory",
        "Transfers: client memory (`mountfs cp`, peak resident set)",
        FixedReference((("300 MB budget", RSS_BUDGET_MB),)),
    )
    resilience = report.table(
        "transfers-resilience",
        "Transfers: resumption and pause (through the loopback proxy)",
        ColumnReference(MOUNT),
    )
    with tempfile.TemporaryDirectory(prefix="bench-transfers-", dir=options.workdir) as tmp:
        work = Path(tmp)
        report.progress(f"starting the backend and a cut proxy in {tmp}")
        with _stack(work) as (proxy, account, state):
            source, back = work / "file.bin", work / "back.bin"
            for index in range(options.runs):
                report.progress(f"run {index + 1}/{options.runs}: {size // MiB} MiB of random")
                _random_file(source, size)
                note = f"{size // MiB} MiB"
                if "transfers.upload" in selected or "transfers.download" in selected:
                    local = _local_cp(source, work / "copy.bin")
                    up_s, up_rss = _mountfs_cp(state, source, f"cloud:/run{index}.bin")
                    down_s, down_rss = _mountfs_cp(state, f"cloud:/run{index}.bin", back)
                    back.unlink()
                    for name, metric, secs, rss in (
                        ("transfers.upload", UPLOAD, up_s, up_rss),
                        ("transfers.download", DOWNLOAD, down_s, down_rss),
                    ):
                        if name in selected:
                            throughput.add(name, LOCAL, Sample(metric, size / local / 1e6, note))
                            throughput.add(
                                name,
                                MOUNTFS,
                                Sample(metric, size / secs / 1e6, f"{note}, peak RSS {rss:.0f} MB"),
                            )
                    if "transfers.rss" in selected:
                        rss_note = f"up {up_rss:.0f} MB, down {down_rss:.0f} MB"
                        memory.add(
                            "transfers.rss", MOUNTFS, Sample(RSS, max(up_rss, down_rss), rss_note)
                        )
                if "transfers.resume" in selected:
                    _random_file(source, size)
                    share, note = _resume(proxy, state, source, size, index)
                    resilience.add("transfers.resume", MOUNT, Sample(RESENT, share, note))
                if "transfers.pause" in selected:
                    try:
                        seconds = _pause(work, proxy, account, index)
                    except Exception as exc:
                        report.error("transfers.pause", exc)
                    else:
                        resilience.add(
                            "transfers.pause", MOUNT, Sample(PAUSE, seconds, "control request")
                        )
            source.unlink(missing_ok=True)
            if "transfers.10g" in selected:
                reason = _ten_gib_unavailable(options)
                if reason is not None:
                    report.skip("transfers.10g", reason)
                else:
                    report.progress("10 GiB: writing, uploading, downloading, comparing")
                    try:
                        _ten_gib(work, state, throughput, memory)
                    except Exception as exc:
                        report.error("transfers.10g", exc)


def _ten_gib_unavailable(options: Options) -> str | None:
    if options.quick:
        return "not with --quick (10 GiB)"
    if os.environ.get("MOUNTFS_BENCH_10G") != "1":
        return "set MOUNTFS_BENCH_10G=1 to run it (about 35 GB of disk, 15 minutes)"
    free = shutil.disk_usage(options.workdir).free
    if free < 36 * 1024 * MiB:
        return f"needs about 36 GiB free in {options.workdir}, has {free >> 30} GiB"
    return None


def _ten_gib(work: Path, state: Path, throughput: Any, memory: Any) -> None:
    source, back = work / "ten.bin", work / "ten-back.bin"
    digest = hashlib.sha256()
    with open(source, "wb") as f:
        for _ in range(TEN_GIB // (8 * MiB)):
            piece = os.urandom(8 * MiB)
            digest.update(piece)
            f.write(piece)
    local = _local_cp(source, work / "ten-copy.bin")
    up_s, up_rss = _mountfs_cp(state, source, "cloud:/ten.bin")
    source.unlink()
    down_s, down_rss = _mountfs_cp(state, "cloud:/ten.bin", back)
    check = hashlib.sha256()
    with open(back, "rb") as f:
        while piece := f.read(8 * MiB):
            check.update(piece)
    back.unlink()
    if check.digest() != digest.digest():
        raise RuntimeError("the 10 GiB file came back with other bytes")
    for metric, seconds in ((UPLOAD_10G, up_s), (DOWNLOAD_10G, down_s)):
        throughput.add("transfers.10g", LOCAL, Sample(metric, TEN_GIB / local / 1e6, "10 GiB"))
        throughput.add(
            "transfers.10g", MOUNTFS, Sample(metric, TEN_GIB / seconds / 1e6, "same hash")
        )
    note = f"up {up_rss:.0f} MB, down {down_rss:.0f} MB"
    memory.add("transfers.10g", MOUNTFS, Sample(RSS_10G, max(up_rss, down_rss), note))


def _resume(proxy: Any, state: Path, source: Path, size: int, index: int) -> tuple[float, str]:
    start = proxy.up_bytes
    proxy.cut_after(size // 2)
    cmd = [sys.executable, "-m", "mountfs", "cp", str(source), f"cloud:/cut{index}.bin"]
    first = subprocess.run([*cmd, "--state", str(state)], capture_output=True, check=False)
    if first.returncode == 0:
        raise RuntimeError("the upload finished before the cut")
    proxy.restore()
    _mountfs_cp(state, source, f"cloud:/cut{index}.bin")
    sent = proxy.up_bytes - start
    return 100.0 * (sent - size) / size, f"{sent / MiB:.0f} MiB sent for {size // MiB} MiB"


def _pause(work: Path, proxy: Any, account: Any, index: int) -> float:
    """Seconds from the pause request to the last byte the proxy saw go up."""
    from mountfs import control
    from tests.support.mount import Devices

    devices = Devices(account, work / f"pause{index}")
    try:
        mount = devices("pauser", extra_args=("--bwlimit", "20M"))
        _random_file(mount.mountpoint / "slow.bin", 128 * MiB)
        deadline = time.monotonic() + 60
        while proxy.up_bytes == 0 or not mount.live_status()["transfers"]:
            if time.monotonic() > deadline:
                raise RuntimeError("no upload started")
            time.sleep(0.05)
        time.sleep(1.0)
        last = [time.monotonic()]
        stop = threading.Event()

        def watch() -> None:
            seen = proxy.up_bytes
            while not stop.wait(0.002):
                now = proxy.up_bytes
                if now != seen:
                    seen, last[0] = now, time.monotonic()

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        began = time.monotonic()
        control.request(mount.state_dir, {"cmd": "pause"}, 10)
        while time.monotonic() - last[0] < 1.0:
            time.sleep(0.05)
        stop.set()
        watcher.join()
        control.request(mount.state_dir, {"cmd": "resume"}, 10)
        mount.stop()
        return max(last[0] - began, 0.0)
    finally:
        devices.close()
        shutil.rmtree(work / f"pause{index}", ignore_errors=True)


SUITE = Suite(
    name="transfers",
    benchmarks=(
        Benchmark("transfers.upload", "mountfs cp of a 2 GiB random file up, MB/s vs local cp"),
        Benchmark("transfers.download", "mountfs cp of it back down, MB/s vs local cp"),
        Benchmark("transfers.rss", "peak RSS of those mountfs cp processes"),
        Benchmark("transfers.resume", "bytes re-sent after a network cut at 50%"),
        Benchmark("transfers.pause", "seconds from a pause request to the last byte sent"),
        Benchmark("transfers.10g", "10 GiB up and back by hash (MOUNTFS_BENCH_10G=1)"),
    ),
    run=run,
)
