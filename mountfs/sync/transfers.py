"""What every chunk transfer of a device shares: the pause gate, bandwidth limits, the
number of transfers in flight, and the progress that `mountfs status` shows.

- **Pause** (`PauseGate`): `mountfs pause` writes `STATE/transfers.paused` and tells a
  running mount; a paused gate cancels every chunk PUT/GET it runs at once (mid-chunk: the
  request is abandoned and sent again after `mountfs resume`), and holds new ones back. The
  flag file is the truth, so the state survives a restart of the client, and a process that
  was not told (`mountfs cp`) sees it within `POLL_FLAG` seconds (`watch`). Reads that an
  application makes in the mount are *not* paused: a program waiting on `read()` would hang
  until someone resumes; they only obey the bandwidth limit.
- **Bandwidth** (`RateLimit`): a token bucket per direction, in bytes of the wire (the
  ciphertext), taken piece by piece as bodies stream, so the limit holds within a chunk.
- **In flight**: how many chunk requests run at once (`Transfers.slots`).
- **Progress** (`Progress`): one `Transfer` per file being sent or fetched, with the bytes
  done, a rate over the last few seconds and an ETA; `snapshot()` is the stable JSON form.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import trio

__all__ = [
    "DEFAULT_IN_FLIGHT",
    "PAUSE_FLAG",
    "Bandwidth",
    "PauseGate",
    "Progress",
    "RateLimit",
    "Transfer",
    "TransferInfo",
    "Transfers",
    "parse_bwlimit",
]

T = TypeVar("T")
Direction = Literal["upload", "download"]

PAUSE_FLAG = "transfers.paused"
"""The file in the state directory whose existence means "transfers are paused"."""
POLL_FLAG = 0.25
"""Seconds between looks at the flag file by processes that were not told (cp)."""
DEFAULT_IN_FLIGHT = 4
RATE_WINDOW = 5.0
"""Seconds of history behind a transfer's rate (and so its ETA)."""
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


# --- pause ----------------------------------------------------------------------------------


class PauseGate:
    """Stops and restarts every chunk transfer of a device (see the module docstring)."""

    def __init__(self, state_dir: Path | None) -> None:
        self._flag = None if state_dir is None else state_dir / PAUSE_FLAG
        self._paused = self._flag is not None and self._flag.exists()
        self._open = trio.Event()
        if not self._paused:
            self._open.set()
        self._running: set[trio.CancelScope] = set()
        self.stopped_at: float | None = None
        """`time.monotonic()` when the last pause had cancelled every running transfer."""

    @property
    def paused(self) -> bool:
        return self._paused

    def pause(self) -> None:
        """Pause now and persist it; running transfers are cancelled at once."""
        if self._flag is not None:
            write_flag(self._flag, paused=True)
        self._set(paused=True)

    def resume(self) -> None:
        if self._flag is not None:
            write_flag(self._flag, paused=False)
        self._set(paused=False)

    def refresh(self) -> None:
        """Follow the flag file (another process may have paused or resumed)."""
        if self._flag is not None:
            self._set(paused=self._flag.exists())

    async def watch(self) -> None:
        """`refresh` every `POLL_FLAG` seconds until cancelled (for processes no command
        reaches directly)."""
        while True:
            await trio.sleep(POLL_FLAG)
            self.refresh()

    def _set(self, *, paused: bool) -> None:
        if paused == self._paused:
            return
        self._paused = paused
        if paused:
            self._open = trio.Event()
            for scope in self._running:
                scope.cancel()
            self.stopped_at = time.monotonic()
        else:
            self._open.set()

    async def wait_open(self) -> None:
        await self._open.wait()

    @contextlib.contextmanager
    def cancelled_by_pause(self) -> Iterator[trio.CancelScope]:
        """A cancel scope that a pause cancels (at once if paused already): for work that
        should stop and be started over after the resume rather than wait (the mount's
        upload of a file, so that the sync engine stays free for namespace changes)."""
        with trio.CancelScope() as scope:
            if self._paused:
                scope.cancel()
            self._running.add(scope)
            try:
                yield scope
            finally:
                self._running.discard(scope)

    async def run(self, call: Callable[[], Awaitable[T]]) -> T:
        """Run `call` once the gate is open; if a pause comes meanwhile, abandon it and run
        it again after the resume. `call` must be safe to repeat (a chunk PUT or GET is)."""
        while True:
            await self._open.wait()
            done: list[T] = []
            with trio.CancelScope() as scope:
                self._running.add(scope)
                try:
                    done.append(await call())
                finally:
                    self._running.discard(scope)
            if done:
                return done[0]


def write_flag(flag: Path, *, paused: bool) -> None:
    """Create or remove the pause flag durably (it must survive a power cut)."""
    if paused:
        fd = os.open(flag, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    else:
        flag.unlink(missing_ok=True)
    dfd = os.open(flag.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


# --- bandwidth ------------------------------------------------------------------------------


class RateLimit:
    """A token bucket of `rate` bytes per second (None: unlimited).

    Each `take(n)` books the next `n / rate` seconds of the link; a caller whose booking
    lies in the future sleeps until it starts. Up to `burst` seconds of unused time may be
    spent at once, so a link that was idle does not start slower than its limit.
    """

    def __init__(self, rate: float | None, burst: float = 0.25) -> None:
        self.rate = rate
        self._burst = burst
        self._next = 0.0

    async def take(self, n: int) -> None:
        if self.rate is None or n <= 0:
            return
        now = trio.current_time()
        start = max(self._next, now - self._burst)
        self._next = start + n / self.rate
        wait = start - now
        if wait > 0:
            await trio.sleep(wait)


@dataclass(frozen=True, slots=True)
class Bandwidth:
    """Bytes per second for each direction; None is unlimited."""

    up: float | None = None
    down: float | None = None


def parse_bwlimit(text: str | None) -> Bandwidth:
    """`10M` (both directions), `10M:2M` (up:down), `0` or `off` (no limit); K/M/G/T are
    powers of 1024 bytes per second, as in `cache_size=`.

    Raises:
        ValueError: with a message that says what is expected.
    """
    if text is None or text.strip().lower() in ("", "0", "off"):
        return Bandwidth()
    parts = text.split(":")
    if len(parts) > 2:
        raise ValueError(f"--bwlimit {text}: expected RATE or UP:DOWN, e.g. 10M or 10M:50M")
    rates = [_rate(part, text) for part in parts]
    return Bandwidth(rates[0], rates[-1])


def _rate(part: str, whole: str) -> float | None:
    part = part.strip().upper().removesuffix("B").removesuffix("I")
    if part in ("", "0", "OFF"):
        return None
    number, unit = (part[:-1], part[-1]) if part[-1] in _UNITS else (part, "")
    try:
        value = float(number) * _UNITS[unit]
    except ValueError:
        raise ValueError(f"--bwlimit {whole}: {part!r} is not a rate such as 10M") from None
    if value <= 0:
        raise ValueError(f"--bwlimit {whole}: a rate must be positive")
    return value


# --- progress -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TransferInfo:
    """One transfer in `mountfs status --json` (`transfers` list; fields are only added).

    Attributes:
        path: the file (mount path relative to the mount root, or cp's source/target).
        direction: "upload" or "download".
        bytes_done: plaintext bytes of the file already stored (or fetched), skipped
            chunks included.
        bytes_total: the file's size.
        rate_bps: bytes per second over the last few seconds.
        eta_s: seconds left at that rate (None when unknown or paused).
        state: "active", "paused" or "waiting" (queued behind another file).
    """

    path: str
    direction: str
    bytes_done: int
    bytes_total: int
    rate_bps: float
    eta_s: float | None
    state: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class Transfer:
    """A file being moved; `add` as bytes are done."""

    id: int
    path: str
    direction: Direction
    total: int
    done: int = 0
    samples: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=64))

    def add(self, n: int) -> None:
        self.done = min(self.total, max(0, self.done + n))
        now = time.monotonic()
        self.samples.append((now, self.done))
        while len(self.samples) > 2 and now - self.samples[0][0] > RATE_WINDOW:
            self.samples.popleft()

    def rate(self) -> float:
        if len(self.samples) < 2:
            return 0.0
        (t0, d0), (t1, d1) = self.samples[0], self.samples[-1]
        span = max(time.monotonic(), t1) - t0
        return (d1 - d0) / span if span > 0 else 0.0


class Progress:
    """The transfers of this process, for `mountfs status` and progress bars."""

    def __init__(self, gate: PauseGate | None = None) -> None:
        self._gate = gate
        self._live: dict[int, Transfer] = {}
        self._parked: dict[str, Transfer] = {}
        self._ids = itertools.count(1)

    @contextlib.contextmanager
    def track(self, path: str, direction: Direction, total: int) -> Iterator[Transfer]:
        self._parked.pop(path, None)
        transfer = Transfer(next(self._ids), path, direction, total)
        transfer.add(0)
        self._live[transfer.id] = transfer
        try:
            yield transfer
        finally:
            self._live.pop(transfer.id, None)

    def park(self, transfer: Transfer) -> None:
        """Keep showing a transfer that a pause stopped (until it starts again)."""
        self._parked[transfer.path] = transfer

    def unpark(self, path: str) -> None:
        self._parked.pop(path, None)

    def snapshot(self) -> list[TransferInfo]:
        paused = self._gate is not None and self._gate.paused
        if not paused:
            self._parked.clear()
        result = []
        every = [*self._live.values(), *self._parked.values()]
        for t in sorted(every, key=lambda t: t.id):
            rate = 0.0 if paused else t.rate()
            left = t.total - t.done
            eta = left / rate if rate > 0 else (0.0 if left == 0 else None)
            state = "paused" if paused and t.direction == "upload" else "active"
            result.append(
                TransferInfo(t.path, t.direction, t.done, t.total, round(rate, 1), eta, state)
            )
        return result


# --- all of it --------------------------------------------------------------------------------


class Transfers:
    """The gate, the limits and the progress of one process (a mount, or one `cp`).

    Args:
        state_dir: where the pause flag lives (None: never paused, for tests and tools).
        bandwidth: bytes per second per direction.
        in_flight: chunk requests at once, all files and both directions together.
    """

    def __init__(
        self,
        state_dir: Path | None = None,
        bandwidth: Bandwidth = Bandwidth(),
        in_flight: int = DEFAULT_IN_FLIGHT,
    ) -> None:
        if in_flight < 1:
            raise ValueError("at least one transfer must be allowed in flight")
        self.gate = PauseGate(state_dir)
        self.up = RateLimit(bandwidth.up)
        self.down = RateLimit(bandwidth.down)
        self.in_flight = in_flight
        self.slots = trio.CapacityLimiter(in_flight)
        self.progress = Progress(self.gate)
