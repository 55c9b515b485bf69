"""When the kernel last sent a request: lets background work yield to a burst of them.

Every FUSE request and the sync engine's rounds share one trio thread. During a burst
(`tar x`, `git clone`, `rm -r`) a push round that runs at the same time takes a large
share of that thread. `lull()` is the hook the sync engine awaits before each push round
of its loop: it returns once no request has arrived for `QUIET_S`, or after `MAX_DEFER_S`
at the latest, so a burst is served first while a new file still reaches the backend well
within a second of `close()`. Pulls do not wait (`SyncEngine._yielding_push` says why).
"""

from __future__ import annotations

import time

import trio

__all__ = ["MAX_DEFER_S", "QUIET_S", "RequestActivity"]

QUIET_S = 0.02
"""A pause this long between two requests ends a burst (back-to-back requests of one
process come well under a millisecond apart)."""

MAX_DEFER_S = 0.3
"""The longest a round waits for a pause: bounds the close -> backend delay it adds."""


class RequestActivity:
    """The time of the latest FUSE request (`touch`), and `lull` to wait for a pause.

    Attributes:
        last: `time.monotonic()` of the latest request (0 before the first).
    """

    def __init__(self, quiet_s: float = QUIET_S, max_defer_s: float = MAX_DEFER_S) -> None:
        self.last = 0.0
        self._quiet_s = quiet_s
        self._max_defer_s = max_defer_s

    def touch(self) -> None:
        self.last = time.monotonic()

    async def lull(self) -> None:
        """Return once requests pause for `quiet_s`, or after `max_defer_s` at the latest."""
        deadline = time.monotonic() + self._max_defer_s
        while True:
            now = time.monotonic()
            quiet_for = now - self.last
            if quiet_for >= self._quiet_s or now >= deadline:
                return
            await trio.sleep(min(self._quiet_s - quiet_for, deadline - now))
