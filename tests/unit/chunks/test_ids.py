"""`uuid7()`: RFC 9562 layout, time order, and uniqueness across threads."""

from __future__ import annotations

import threading
import time
import uuid

from mountfs.ids import uuid7


def test_uuid7_layout() -> None:
    before = time.time_ns() // 1_000_000
    value = uuid.UUID(uuid7())
    after = time.time_ns() // 1_000_000
    assert value.version == 7
    assert value.variant == uuid.RFC_4122
    assert before <= value.int >> 80 <= after + 1  # the 48-bit millisecond timestamp
    assert str(value) == str(value).lower()


def test_uuid7_is_strictly_increasing_within_a_process() -> None:
    ids = [uuid7() for _ in range(20_000)]  # many per millisecond
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)


def test_uuid7_is_unique_across_threads() -> None:
    results: list[list[str]] = [[] for _ in range(4)]

    def make(out: list[str]) -> None:
        out.extend(uuid7() for _ in range(5_000))

    threads = [threading.Thread(target=make, args=(out,)) for out in results]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    merged = [value for out in results for value in out]
    assert len(set(merged)) == len(merged)
    assert all(out == sorted(out) for out in results)
