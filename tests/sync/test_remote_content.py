"""Remote content changes reach a device whose kernel has the file cached, without a remount.

Two devices of one account, A and B. B reads and stats a file (the kernel caches its pages
and, with the writeback cache, owns its size), A rewrites it, both sync: B's `cat` and
`stat` show the new bytes and size at once, while a descriptor B opened before keeps
reading the old bytes (as after an atomic replace by rename). A file B has open for
writing or has changed itself is never overwritten by the remote content.
"""

from __future__ import annotations

import mmap
import os
import sqlite3
from pathlib import Path

from mountfs.state.db import DB_FILE
from tests.support.mount import Devices, MountProcess, wait_for


def _cursor(mount: MountProcess) -> int:
    """How far `mount` has applied the journal (read from its state, read-only)."""
    conn = sqlite3.connect(f"file:{mount.state_dir / DB_FILE}?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'cursor'").fetchone()
    finally:
        conn.close()
    return int(row[0]) if row else 0


def _pattern(tag: bytes, size: int) -> bytes:
    return (tag * (size // len(tag) + 1))[:size]


def _settle(a: MountProcess, b: MountProcess) -> None:
    a.synced()
    b.synced()


def test_cached_file_shows_remote_rewrites_and_old_descriptors_keep_old_bytes(
    mount_factory: Devices,
) -> None:
    a = mount_factory("a")
    b = mount_factory("b")
    first = _pattern(b"first-", 300_000)
    (a.mountpoint / "doc.txt").write_bytes(first)
    _settle(a, b)
    on_b = b.mountpoint / "doc.txt"
    assert on_b.read_bytes() == first  # the kernel caches pages and size now
    assert on_b.stat().st_size == len(first)
    old_fd = os.open(on_b, os.O_RDONLY)
    try:
        # Shrink: a different, smaller content.
        second = _pattern(b"second!", 5_000)
        (a.mountpoint / "doc.txt").write_bytes(second)
        _settle(a, b)
        assert on_b.stat().st_size == len(second)
        assert on_b.read_bytes() == second
        assert [e.stat().st_size for e in os.scandir(b.mountpoint) if e.name == "doc.txt"] == [
            len(second)
        ]
        # The descriptor opened before the change still reads the whole old content.
        assert os.pread(old_fd, len(first) + 10, 0) == first
        assert os.fstat(old_fd).st_size == len(first)
    finally:
        os.close(old_fd)

    # Grow, twice in a row, with B reading in between.
    for tag, size in ((b"third.", 1_500_000), (b"fourth", 2_000_123)):
        content = _pattern(tag, size)
        (a.mountpoint / "doc.txt").write_bytes(content)
        _settle(a, b)
        assert on_b.stat().st_size == size
        assert on_b.read_bytes() == content

    # And back: B's own edit reaches A, whose kernel has the file cached too.
    mine = b"written on b\n"
    on_b.write_bytes(mine)
    _settle(b, a)
    assert (a.mountpoint / "doc.txt").read_bytes() == mine
    assert (a.mountpoint / "doc.txt").stat().st_size == len(mine)


def test_mmap_of_a_remotely_shrunk_file_keeps_the_old_bytes(mount_factory: Devices) -> None:
    a = mount_factory("a")
    b = mount_factory("b")
    old = _pattern(b"mapped-", 200_000)
    (a.mountpoint / "m.bin").write_bytes(old)
    _settle(a, b)
    with open(b.mountpoint / "m.bin", "rb") as f:
        view = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
    try:
        assert view[:7] == b"mapped-"
        new = b"tiny"
        (a.mountpoint / "m.bin").write_bytes(new)
        _settle(a, b)
        assert (b.mountpoint / "m.bin").read_bytes() == new
        assert view[: len(old)] == old  # the mapping reads the revision it mapped, no SIGBUS
    finally:
        view.close()


def test_file_open_for_writing_waits_for_its_close(mount_factory: Devices) -> None:
    a = mount_factory("a")
    b = mount_factory("b")
    (a.mountpoint / "w.txt").write_bytes(b"version one\n")
    _settle(a, b)
    on_b = b.mountpoint / "w.txt"
    with open(on_b, "r+b") as writer:  # open for writing, nothing written
        (a.mountpoint / "w.txt").write_bytes(b"version two, longer\n")
        _settle(a, b)
        assert writer.read() == b"version one\n"
        assert on_b.read_bytes() == b"version one\n"  # not pulled from under the writer
    # Closed and still unchanged here: the remote revision lands now.
    b.synced()
    assert on_b.read_bytes() == b"version two, longer\n"
    assert on_b.stat().st_size == len(b"version two, longer\n")


def test_unsent_local_changes_are_not_overwritten(mount_factory: Devices) -> None:
    a = mount_factory("a")
    b = mount_factory("b")
    for mount in (a, b):
        mount.allowed_log += ["changed on another device", "conflict"]
    (a.mountpoint / "d.txt").write_bytes(b"base\n")
    _settle(a, b)
    on_b = b.mountpoint / "d.txt"
    with open(on_b, "r+b") as writer:
        writer.write(b"B's edit, not sent yet\n")
        writer.flush()
        os.fsync(writer.fileno())
        before = _cursor(b)
        (a.mountpoint / "d.txt").write_bytes(b"A's edit\n")
        a.synced()
        wait_for(lambda: _cursor(b) > before, 30, "B pulled A's change by itself")
        writer.seek(0)
        assert writer.read() == b"B's edit, not sent yet\n"
        assert on_b.read_bytes() == b"B's edit, not sent yet\n"
        assert on_b.stat().st_size == len(b"B's edit, not sent yet\n")


def test_a_remote_rewrite_of_an_uncached_file_needs_no_new_inode(mount_factory: Devices) -> None:
    """The cheap path: a file B never looked at is replaced in place."""
    a = mount_factory("a")
    b = mount_factory("b")
    (a.mountpoint / "u.txt").write_bytes(b"one")
    _settle(a, b)
    (a.mountpoint / "u.txt").write_bytes(b"two, and more")
    _settle(a, b)
    assert Path(b.mountpoint / "u.txt").read_bytes() == b"two, and more"


def test_cached_chunks_are_carried_over_not_downloaded_again(mount_factory: Devices) -> None:
    """A small edit (or insert) of a big file B has cached moves only the changed chunks."""
    a = mount_factory("a")
    b = mount_factory("b")
    size = 16 << 20
    content = bytearray(os.urandom(size))
    (a.mountpoint / "big.bin").write_bytes(content)
    _settle(a, b)
    on_b = b.mountpoint / "big.bin"
    assert on_b.read_bytes() == content  # all cached on B now
    edits = [
        lambda data: data[: 7 << 20] + os.urandom(4096) + data[(7 << 20) + 4096 :],  # overwrite
        lambda data: b"0123456789" + data,  # insert at the start
    ]
    for edit in edits:
        content = bytearray(edit(bytes(content)))
        with open(a.mountpoint / "big.bin", "wb") as f:
            f.write(content)
        _settle(a, b)
        before = b.live_status()["downloaded_bytes"]
        assert on_b.read_bytes() == content
        assert on_b.stat().st_size == len(content)
        moved = b.live_status()["downloaded_bytes"] - before
        assert moved < size // 2, f"B downloaded {moved} bytes of a {size}-byte file again"
