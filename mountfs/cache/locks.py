"""A keyed trio lock: one lock per key, created on demand and dropped when nobody holds it.

Used two ways:
- per inode, to serialise everything that changes a file's content (write, truncate,
  filling fetched bytes), so that an `await` inside one of them (a threaded `pwrite`)
  cannot let another change of the same file interleave;
- as a *single-flight* for cache misses: every reader of a missing block takes the block's
  lock, then re-checks whether the block is still missing. The first one fetches; the
  others wake up to find the bytes present and fetch nothing. A failed fetch wakes the next
  waiter, which tries again itself, so an error is never shared or cached.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import trio

__all__ = ["KeyedLock"]

K = TypeVar("K", bound=Hashable)


@dataclass(slots=True)
class _Entry:
    lock: trio.Lock = field(default_factory=trio.Lock)
    users: int = 0


class KeyedLock(Generic[K]):
    """Mutual exclusion per key; memory use is proportional to the keys in use.

    Cancellation: a task cancelled while waiting never holds the lock; one cancelled while
    holding it releases it on the way out (it is an async context manager).
    """

    def __init__(self) -> None:
        self._entries: dict[K, _Entry] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: K) -> AsyncIterator[None]:
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry()
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self._entries[key]

    def locked(self, key: K) -> bool:
        """True if some task holds or waits for `key`."""
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)
