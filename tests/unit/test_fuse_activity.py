"""`RequestActivity.lull`: sync rounds wait for a pause in FUSE requests, but not for long.

Bounds are generous (a loaded CI machine); the figures themselves are in `scripts/bench`.
"""

from __future__ import annotations

import time

import trio

from mountfs.fuse.activity import RequestActivity


def _lull_seconds(activity: RequestActivity, requests_for: float, every: float = 0.002) -> float:
    """Seconds `lull()` took while a task stamped a request every `every` s for a while."""

    async def run() -> float:
        async with trio.open_nursery() as nursery:

            async def burst() -> None:
                end = time.monotonic() + requests_for
                while time.monotonic() < end:
                    activity.touch()
                    await trio.sleep(every)

            activity.touch()
            nursery.start_soon(burst)
            start = time.monotonic()
            await activity.lull()
            took = time.monotonic() - start
            nursery.cancel_scope.cancel()
        return took

    return trio.run(run)


def test_lull_is_immediate_without_requests() -> None:
    activity = RequestActivity(quiet_s=0.05, max_defer_s=5.0)

    async def run() -> float:
        start = time.monotonic()
        await activity.lull()
        return time.monotonic() - start

    assert trio.run(run) < 1.0


def test_lull_waits_for_the_end_of_a_burst() -> None:
    took = _lull_seconds(RequestActivity(quiet_s=0.05, max_defer_s=10.0), requests_for=0.3)
    assert 0.3 <= took < 5.0


def test_lull_never_waits_longer_than_its_bound() -> None:
    took = _lull_seconds(RequestActivity(quiet_s=0.05, max_defer_s=0.2), requests_for=10.0)
    assert 0.2 <= took < 5.0
