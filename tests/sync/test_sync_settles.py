"""`mountfs sync` answers once everything that will ever be sent is sent.

A file deleted while a program still has it open keeps its inode (and its cache file) until
the last descriptor is closed and the kernel forgets it, but its content is never committed:
the commit queue (`nodes.dirty_files`) leaves unlinked files out. `mountfs sync` used to
count such a file as still waiting (`status.pending_from_db` counted every dirty row), so it
timed out with `synced: false` as long as the file stayed open, with nothing left to send
and nothing in the log: the stall seed 24 of `test_two_devices_random.py` ran into (a file
the random actor deleted while the kernel still held its inode).
"""

from __future__ import annotations

import os

from tests.support.mount import Devices


def test_sync_completes_while_a_deleted_file_is_still_open(mount_factory: Devices) -> None:
    a = mount_factory("a")
    (a.mountpoint / "kept.txt").write_bytes(b"kept\n")
    path = a.mountpoint / "scratch.bin"
    with open(path, "wb") as f:
        f.write(b"x" * 1000)
        f.flush()
        os.fsync(f.fileno())
        a.synced()
        os.unlink(path)
        f.write(b"y" * 1000)  # dirty again, but the file has no name any more
        f.flush()
        os.fsync(f.fileno())
        a.synced(timeout=15)
        status = a.live_status()
        assert status["pending_files"] == 0, status
    assert sorted(p.name for p in a.mountpoint.iterdir()) == ["kept.txt"]
