"""The pure parts of the push channel's client side: the SSE reader and the notice rules."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import trio

from mountfs.desktop import MAX_PER_BATCH, conflict_notices
from mountfs.transport.api import JournalEntry, RemoteNode
from mountfs.transport.sse import Event, events

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


async def _lines(*lines: str) -> AsyncIterator[str]:
    for line in lines:
        yield line


def _read(*lines: str) -> list[Event]:
    async def collect() -> list[Event]:
        return [event async for event in events(_lines(*lines))]

    return trio.run(collect)


def test_sse_reader_joins_data_skips_comments_and_drops_a_cut_event() -> None:
    assert _read(
        ": watching",
        "retry: 1000",
        "",
        'data: {"position": 1}',
        "id: 1",
        "",
        "event: other",
        "data:a",
        "data: b",
        "",
        "data: cut off",
    ) == [Event("message", '{"position": 1}', "1"), Event("other", "a\nb", None)]


def _entry(name: str, device: str = "other", age_s: float = 5, op: str = "create") -> JournalEntry:
    node = RemoteNode(
        id=f"id-{name}",
        parent_id="root",
        name=name,
        kind="file",
        mode=0o644,
        mtime_ns=0,
        size=1,
        version=1,
        head_revision=None,
        target=None,
        deleted=False,
        namespace_id="ns",
    )
    at = (NOW - timedelta(seconds=age_s)).isoformat()
    return JournalEntry(seq=1, op=op, node=node, revision=None, device_id=device, at=at)


def test_conflict_notices_name_whose_version_the_copy_holds() -> None:
    copy = "a (conflicted copy from laptop 2026-11-24).txt"
    seen: set[str] = set()
    (theirs,) = conflict_notices([_entry(copy)], "me", seen, NOW)
    assert "a.txt was changed on two devices" in theirs.body
    assert "The other version is kept as “" + copy + "”" in theirs.body
    mine_copy = "b (conflicted copy from me 2026-11-24 2)"
    (mine,) = conflict_notices([_entry(mine_copy, device="me")], "me", seen, NOW)
    assert mine.body.startswith("b was changed on another device")
    assert "Your version" in mine.body
    # Each node once; ordinary names, deletes, old news and folders never.
    assert conflict_notices([_entry(copy, op="update")], "me", seen, NOW) == []
    old = _entry("c (conflicted copy from x 2026-11-01).txt", age_s=7200)
    assert conflict_notices([_entry("plain.txt"), old], "me", seen, NOW) == []


def test_a_burst_of_conflicts_ends_in_one_summary() -> None:
    entries = [_entry(f"f{n} (conflicted copy from x 2026-11-24).txt") for n in range(10)]
    notices = conflict_notices(entries, "me", set(), NOW)
    assert len(notices) == MAX_PER_BATCH
    more = 10 - MAX_PER_BATCH + 1
    assert notices[-1].body == f"{more} more files were changed on two devices at once"
