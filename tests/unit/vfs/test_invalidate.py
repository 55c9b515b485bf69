"""The invalidation notifier: queued on the trio thread, delivered from a worker thread."""

from __future__ import annotations

import errno
import threading

import pytest
import trio

from mountfs.vfs.invalidate import Invalidator


@pytest.mark.trio
async def test_notices_are_delivered_off_the_trio_thread_and_enoent_is_ignored() -> None:
    calls: list[tuple[str, object, object, object, bool]] = []
    main = threading.get_ident()

    def entry(parent: int, name: bytes, deleted: int) -> None:
        calls.append(("entry", parent, name, deleted, threading.get_ident() != main))
        if name == b"unknown":
            raise FileNotFoundError(errno.ENOENT, "not cached")

    def inode(ino: int, attr_only: bool) -> None:
        calls.append(("inode", ino, attr_only, None, threading.get_ident() != main))

    invalidator = Invalidator(entry, inode)
    invalidator.entry(1, b"unknown")  # queued before the notifier runs
    async with trio.open_nursery() as nursery:
        await nursery.start(invalidator.run)
        invalidator.entry(1, "doc.txt", deleted=5)
        invalidator.inode(7)
        await trio.to_thread.run_sync(invalidator.inode_from_thread, 8, True)
        while len(calls) < 4:
            await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert calls == [
        ("entry", 1, b"unknown", 0, True),
        ("entry", 1, b"doc.txt", 5, True),
        ("inode", 7, True, None, True),
        ("inode", 8, False, None, True),
    ]
