"""Running a few transfers at once so that they fail like one call.

trio nurseries raise what their children raised wrapped in an `ExceptionGroup` (strict
exception groups, the default since trio 0.25). The callers of the sync parts expect the
errors of a single call -- `Offline` or `ApiError` to back off on, `CorruptChunk` to report
-- so `run_all` raises the first child's error itself. The others are failures of the same
batch (usually the same outage); the first is enough to decide what to do next.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

import trio

__all__ = ["run_all"]


async def run_all(calls: Iterable[Callable[[], Awaitable[object]]]) -> None:
    """Run every call concurrently; if any fails, cancel the rest and raise its error.

    A group that holds anything other than ordinary exceptions (trio's `Cancelled` from an
    outer scope, `KeyboardInterrupt`) is re-raised whole, so cancellation works as usual.
    """
    try:
        async with trio.open_nursery() as nursery:
            for call in calls:
                nursery.start_soon(call)
    except BaseExceptionGroup as group:
        first = _first_error(group)
        if first is None:
            raise
        raise first from None


def _first_error(group: BaseExceptionGroup[BaseException]) -> Exception | None:
    """The first leaf of `group` if every leaf is an ordinary `Exception`, else None."""
    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        exc = pending.pop(0)
        if isinstance(exc, BaseExceptionGroup):
            pending[:0] = list(exc.exceptions)
        else:
            leaves.append(exc)
    if not leaves or not all(isinstance(leaf, Exception) for leaf in leaves):
        return None
    first = leaves[0]
    assert isinstance(first, Exception)
    return first
