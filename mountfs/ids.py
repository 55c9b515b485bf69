"""Client-generated ids: UUIDv7 (RFC 9562).

Nodes, revisions and batched ops are named by the client so that a device can create them
offline and replay them safely. UUIDv7 puts a millisecond Unix timestamp in the top 48 bits,
so ids sort by creation time, which keeps B-tree inserts on the backend local and makes logs
readable. Python 3.11 has no `uuid.uuid7`, hence this module.

Within one process the ids are strictly increasing, even when many are made in the same
millisecond or the wall clock steps back (RFC 9562 §6.2, method 2: the 74 bits below the
timestamp act as a counter seeded with random bits). Across devices they are only roughly
ordered, which is all that is needed; uniqueness comes from the 74 random bits.
"""

from __future__ import annotations

import secrets
import threading
import time
import uuid

__all__ = ["uuid7"]

_RANDOM_BITS = 74  # 12 bits rand_a + 62 bits rand_b
_RAND_B_BITS = 62
_state_lock = threading.Lock()
_last = 0  # (timestamp_ms << 74) | random part of the newest id handed out


def _next_value() -> int:
    """The next 122-bit (timestamp, random) value, strictly above the previous one."""
    global _last
    candidate = (time.time_ns() // 1_000_000) << _RANDOM_BITS | secrets.randbits(_RANDOM_BITS)
    with _state_lock:
        # Same millisecond (or the clock went back): count up from the last id instead. The
        # carry may move the timestamp one millisecond ahead, which keeps the order intact.
        _last = candidate if candidate > _last else _last + 1
        return _last


def uuid7() -> str:
    """A new UUIDv7 as a lowercase hyphenated string, e.g. `0190a6b4-…`.

    Thread-safe; wrap the result in the NewType you need (`NodeId(uuid7())`).
    """
    value = _next_value()
    timestamp_ms = value >> _RANDOM_BITS
    rand_a = (value >> _RAND_B_BITS) & 0xFFF
    rand_b = value & ((1 << _RAND_B_BITS) - 1)
    as_int = (timestamp_ms << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b
    return str(uuid.UUID(int=as_int))
