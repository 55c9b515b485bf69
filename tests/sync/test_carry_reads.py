"""A read right after a remote edit never downloads bytes this device has cached.

When A edits a big file that B has cached, B gives the new revision a new inode and a
`Carrier` copies the unchanged chunks over from the old one, in the background. A reader on
B that comes before the carry reaches its chunk (a poll for the change, the kernel's
read-ahead crossing into the next chunk) used to download that chunk, and quick successive
edits used to plan each carry from a half-filled inode, so chunks went missing from the
cache and were downloaded again: about 1.5x the changed bytes on B in the propagation
benchmark. Now the fetcher takes such chunks from the pending carry (`Carrier.supply`), and
a carry planned from an inode that is still being filled also brings what that inode is
about to get (chained carries). B's downloads are then the chunks A uploaded (exactly, but
for a rare race that the assertion allows one chunk for).
"""

from __future__ import annotations

import os
import time

from mountfs.chunks.cdc import MAX_CHUNK_SIZE
from tests.support.mount import Devices, MountProcess, wait_for
from tests.unit.chunks.vectors import pseudo_random

SIZE = 32 << 20
EDITS = 8


def _moved(a: MountProcess, b: MountProcess) -> tuple[int, int]:
    return int(a.live_status()["uploaded_bytes"]), int(b.live_status()["downloaded_bytes"])


def _reads(path: os.PathLike[str], offset: int, expected: bytes) -> bool:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read(len(expected)) == expected
    except OSError:
        return False


def test_reads_during_carries_download_only_the_changed_chunks(mount_factory: Devices) -> None:
    a = mount_factory("a")
    b = mount_factory("b")
    content = pseudo_random("carry-reads", SIZE)
    (a.mountpoint / "big.bin").write_bytes(content)
    a.synced()
    b.synced()
    on_b = b.mountpoint / "big.bin"
    wait_for(lambda: on_b.read_bytes() == content or None, 60, "the whole file cached on B")

    up0, down0 = _moved(a, b)
    for n in range(EDITS):
        # Spread over the file, 4 KiB aligned, each in a chunk of its own most likely.
        offset = ((n * 2 + 1) * SIZE // (EDITS * 2)) // 4096 * 4096
        patch = pseudo_random(f"carry-reads-{n}", 4096)
        with open(a.mountpoint / "big.bin", "r+b") as f:
            f.seek(offset)
            f.write(patch)
        # Read as soon as the change shows, as a user watching the file would: this lands
        # while B is still carrying the previous revisions' chunks.
        deadline = time.monotonic() + 60
        while not _reads(on_b, offset, patch):
            assert time.monotonic() < deadline, f"edit {n} did not reach B"
            time.sleep(0.002)
    a.synced()
    b.synced()
    up1, down1 = _moved(a, b)
    uploaded, downloaded = up1 - up0, down1 - down0
    print(f"{EDITS} edits of 4 KiB: A uploaded {uploaded} bytes, B downloaded {downloaded}")
    assert 0 < uploaded < EDITS * (4 << 20)
    # Exactly equal in 98 of 100 benchmark trials; one chunk of slack for the remaining
    # race (docs/benchmarks.md, "Issue 6 bytes aim"). Without the fix B downloaded about
    # twice A's upload here (10.8 and 11.6 MB against 5.4 MB), far beyond it.
    slack = MAX_CHUNK_SIZE + 29
    assert downloaded <= uploaded + slack, "B downloaded chunks it had cached"
