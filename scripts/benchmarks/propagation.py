"""How fast, and at what network cost, a change on one device reaches another.

Two real mounts of one account (devices A and B, `mountfs mount` daemons with their own
state directories) against a real backend on loopback (`python -m backend`, embedded
SQLite and block store), exactly what a user with two machines runs -- only the wire is
loopback. Nobody calls `mountfs sync`: B learns of A's changes through the push channel.

- `propagation.small`: A writes a new 1 KiB file and closes it; the clock runs from the
  return of `close()` on A until B reads exactly those bytes (B polls every 2 ms with
  `open` + `read`). Median and p99 over the trials.
- `propagation.edit`: the same for a 4 KiB overwrite at a random 4 KiB-aligned offset of
  a 100 MiB file (quick: 32 MiB) that both devices have read once (set-up, not timed):
  from A's `close()` until B reads the new 4 KiB at that offset. The bytes row is the
  chunk bytes (ciphertext) A uploaded plus those B downloaded, per edit, from the mounts'
  own counters (`mountfs status`); JSON requests are not counted.
- `propagation.insert`: 10 bytes inserted at the start of that file (A rewrites it whole,
  as any program must), pushed (`sync` on A only, to know when it is done), then read in
  full by B and checked: the bytes A uploaded and B downloaded for it.

Aims (issue 6): median under 300 ms and p99 under 1 s on loopback; both edits under 2% of
the file on the wire. Each run makes all trials (50, quick 10) and records their median
and p99, so `--runs` multiplies the trials; the table shows the median of the runs.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from .harness import Benchmark, ColumnReference, Metric, Options, Report, Sample, Suite, Table
from .targets import _fuse_unavailable_reason, fuse_unmount, wait_for_mount

__all__ = ["SUITE"]

MiB = 1024 * 1024
COLUMN = "mountfs"
PASSWORD = "bench-password-1"
TRIALS, QUICK_TRIALS = 50, 10
BIG, QUICK_BIG = 100 * MiB, 32 * MiB
SMALL = 1024
EDIT = 4096
POLL_S = 0.002
TRIAL_TIMEOUT_S = 60.0

SMALL_P50 = Metric("small file: close on A → readable on B, median", "ms", False)
SMALL_P99 = Metric("small file, p99", "ms", False)
EDIT_P50 = Metric("4 KiB edit in a big file, median", "ms", False)
EDIT_P99 = Metric("4 KiB edit in a big file, p99", "ms", False)
EDIT_BYTES = Metric("4 KiB edit: bytes on the wire, per edit", "% of file", False)
EDIT_BYTES_MAX = Metric("4 KiB edit: bytes on the wire, worst trial", "% of file", False)
INSERT_BYTES = Metric("10 B inserted at the start: bytes on the wire", "% of file", False)


@dataclass
class Device:
    """One mounted device: its state directory and mountpoint."""

    state: Path
    mountpoint: Path

    def status(self) -> dict[str, Any]:
        from mountfs import control

        answer = control.request(self.state, {"cmd": "status"}, 30)
        status: dict[str, Any] = answer["status"]
        return status

    def moved(self) -> tuple[int, int]:
        """(uploaded, downloaded) chunk bytes since the mount started."""
        status = self.status()
        return int(status["uploaded_bytes"]), int(status["downloaded_bytes"])

    def sync(self) -> None:
        from mountfs import control

        answer = control.request(self.state, {"cmd": "sync", "timeout": 300}, 330)
        if not answer.get("synced"):
            raise RuntimeError(f"sync of {self.state} did not finish: {answer}")


def _mountfs(*args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "mountfs", *args],
        input=PASSWORD,
        text=True,
        check=True,
        capture_output=True,
        timeout=120,
    )


@contextmanager
def two_devices(base: Path) -> Iterator[tuple[Device, Device]]:
    """A backend and two mounted devices of one account; everything released after."""
    from tests.support.backend import BackendProcess

    workdir = Path(tempfile.mkdtemp(prefix="bench-propagation-", dir=base))
    backend = BackendProcess(workdir / "server", workdir / "server.log")
    devices: list[Device] = []
    try:
        backend.start()
        server = backend.base_url
        _mountfs("account", "create", "bench", "--server", server, "--password-stdin")
        for label in ("a", "b"):
            device = Device(workdir / f"{label}-state", workdir / label)
            device.mountpoint.mkdir()
            _mountfs(
                "login", "--server", server, "--user", "bench", "--device", label,
                "--state", str(device.state), "--password-stdin",
            )  # fmt: skip
            devices.append(device)
            _mountfs(
                "mount", str(device.mountpoint), "--state", str(device.state),
                "--log-level", "WARNING", "--no-notify",
            )  # fmt: skip
            wait_for_mount(device.mountpoint)
        yield devices[0], devices[1]
    finally:
        for device in devices:
            subprocess.run(
                [sys.executable, "-m", "mountfs", "umount", str(device.mountpoint)],
                capture_output=True,
                timeout=120,
                check=False,
            )
            fuse_unmount(device.mountpoint)
        backend.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def _wait(condition: Callable[[], bool], what: str) -> float:
    """Poll `condition` every `POLL_S`; the `perf_counter` when it first held."""
    deadline = time.perf_counter() + TRIAL_TIMEOUT_S
    while True:
        if condition():
            return time.perf_counter()
        if time.perf_counter() > deadline:
            raise TimeoutError(f"not within {TRIAL_TIMEOUT_S:g}s: {what}")
        time.sleep(POLL_S)


def _reads(path: Path, expected: bytes, offset: int = 0) -> Callable[[], bool]:
    def check() -> bool:
        try:
            with open(path, "rb") as f:
                if offset:
                    f.seek(offset)
                return f.read(len(expected)) == expected
        except OSError:
            return False

    return check


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))
    return ordered[index]


def _small_trials(a: Device, b: Device, trials: int, run: int) -> list[float]:
    latencies = []
    for n in range(trials):
        name = f"small-{run}-{n}.bin"
        data = os.urandom(SMALL)
        with open(a.mountpoint / name, "wb") as f:
            f.write(data)
        closed = time.perf_counter()
        seen = _wait(_reads(b.mountpoint / name, data), f"{name} on B")
        latencies.append((seen - closed) * 1000)
    return latencies


def _big_file(a: Device, b: Device, size: int) -> Path:
    """The big file, written on A and read once in full on B (set-up, not timed)."""
    name = Path("big.bin")
    with open(a.mountpoint / name, "wb") as f:
        for _ in range(size // MiB):
            f.write(os.urandom(MiB))
    digest = hashlib.sha256((a.mountpoint / name).read_bytes()).hexdigest()

    def whole_on_b() -> bool:
        try:
            return hashlib.sha256((b.mountpoint / name).read_bytes()).hexdigest() == digest
        except OSError:
            return False

    a.sync()
    _wait(whole_on_b, "the big file on B")
    return name


def _edit_trials(
    a: Device, b: Device, name: Path, size: int, trials: int
) -> tuple[list[float], list[tuple[int, int]]]:
    """Latencies (ms), and the bytes on the wire of each edit: (A's upload, B's download).

    The counters are read after each trial, outside the timed part: when B reads the new
    bytes, A has uploaded and committed and B has downloaded what its read needed, so the
    difference between two trials is that edit's cost (anything late, such as B's read-ahead,
    lands in the next trial; the last trial gets what remains after a final `sync`).
    """
    last = (a.moved()[0], b.moved()[1])
    latencies = []
    wire: list[tuple[int, int]] = []
    for n in range(trials):
        offset = random.randrange(size // EDIT) * EDIT
        data = os.urandom(EDIT)
        with open(a.mountpoint / name, "r+b") as f:
            f.seek(offset)
            f.write(data)
        closed = time.perf_counter()
        seen = _wait(_reads(b.mountpoint / name, data, offset), f"edit at {offset} on B")
        latencies.append((seen - closed) * 1000)
        if n == trials - 1:
            a.sync()
        moved = (a.moved()[0], b.moved()[1])
        wire.append((moved[0] - last[0], moved[1] - last[1]))
        last = moved
    return latencies, wire


def _insert(a: Device, b: Device, name: Path) -> tuple[int, int]:
    """Bytes A uploaded and B downloaded for 10 bytes inserted at the file's start."""
    up0, _ = a.moved()
    _, down0 = b.moved()
    content = b"0123456789" + (a.mountpoint / name).read_bytes()
    with open(a.mountpoint / name, "wb") as f:
        f.write(content)
    a.sync()
    digest = hashlib.sha256(content).hexdigest()

    def whole_on_b() -> bool:
        try:
            return hashlib.sha256((b.mountpoint / name).read_bytes()).hexdigest() == digest
        except OSError:
            return False

    _wait(whole_on_b, "the inserted bytes on B")
    up1, _ = a.moved()
    _, down1 = b.moved()
    return up1 - up0, down1 - down0


def run(report: Report, options: Options, selected: tuple[str, ...]) -> None:
    reason = _fuse_unavailable_reason()
    if reason is not None:
        for name in selected:
            report.skip(name, reason)
        return
    trials = QUICK_TRIALS if options.quick else TRIALS
    size = QUICK_BIG if options.quick else BIG
    table = report.table(
        "propagation",
        "Propagation between two devices on loopback (aim: median < 300 ms, p99 < 1 s, "
        "edits < 2% of the file on the wire)",
        ColumnReference(COLUMN),
    )
    with two_devices(options.workdir) as (a, b):
        report.progress(f"two devices mounted at {a.mountpoint.parent}")
        big: Path | None = None
        for run_index in range(options.runs):
            if "propagation.small" in selected:
                small = partial(_small, table, a, b, trials, run_index)
                _guarded(report, "propagation.small", small)
            needs_big = {"propagation.edit", "propagation.insert"} & set(selected)
            if needs_big and big is None:
                report.progress(f"writing the {size // MiB} MiB file and reading it on B")
                big = _big_file(a, b, size)
            if big is not None and "propagation.edit" in selected:
                _guarded(report, "propagation.edit", partial(_edit, table, a, b, big, size, trials))
        if big is not None and "propagation.insert" in selected:
            _guarded(report, "propagation.insert", partial(_inserted, table, a, b, big, size))


def _guarded(report: Report, name: str, measure: Callable[[], None]) -> None:
    try:
        measure()
    except Exception as exc:
        report.error(name, exc)


def _small(table: Table, a: Device, b: Device, trials: int, run_index: int) -> None:
    latencies = _small_trials(a, b, trials, run_index)
    note = f"{trials} trials of a {SMALL} B file"
    table.add("propagation.small", COLUMN, Sample(SMALL_P50, statistics.median(latencies), note))
    table.add("propagation.small", COLUMN, Sample(SMALL_P99, _percentile(latencies, 0.99), note))


def _edit(table: Table, a: Device, b: Device, big: Path, size: int, trials: int) -> None:
    latencies, moved = _edit_trials(a, b, big, size, trials)
    wire = [float(up + down) for up, down in moved]
    note = f"{trials} trials, {size // MiB} MiB file"
    table.add("propagation.edit", COLUMN, Sample(EDIT_P50, statistics.median(latencies), note))
    table.add("propagation.edit", COLUMN, Sample(EDIT_P99, _percentile(latencies, 0.99), note))
    per_edit = statistics.mean(wire)
    spread = ", ".join(
        f"{label} {100 * _percentile(wire, share) / size:.2f}%"
        for label, share in (("median", 0.5), ("p90", 0.9), ("max", 1.0))
    )
    up = statistics.mean(u for u, _ in moved) / 1024
    down = statistics.mean(d for _, d in moved) / 1024
    mean = (
        f"{per_edit / 1024:,.0f} KiB per edit (A up {up:,.0f} + B down {down:,.0f}), "
        f"{size // MiB} MiB file"
    )
    table.add("propagation.edit", COLUMN, Sample(EDIT_BYTES, 100 * per_edit / size, mean))
    worst = f"per trial: {spread}"
    table.add("propagation.edit", COLUMN, Sample(EDIT_BYTES_MAX, 100 * max(wire) / size, worst))


def _inserted(table: Table, a: Device, b: Device, big: Path, size: int) -> None:
    up, down = _insert(a, b, big)
    note = f"A uploaded {up / 1024:,.0f} KiB, B downloaded {down / 1024:,.0f} KiB"
    table.add("propagation.insert", COLUMN, Sample(INSERT_BYTES, 100 * (up + down) / size, note))


SUITE = Suite(
    name="propagation",
    benchmarks=(
        Benchmark("propagation.small", "close() on device A → a new 1 KiB file readable on B"),
        Benchmark("propagation.edit", "a 4 KiB edit in a 100 MiB file: latency and bytes"),
        Benchmark("propagation.insert", "10 bytes inserted at the start of 100 MiB: bytes"),
    ),
    run=run,
)
