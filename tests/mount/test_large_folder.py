"""A folder of 100,000 entries: listed (with attributes) and looked up in seconds.

The entries are put into the state the way the sync engine's pull would (nodes the backend
already knows), so the test measures the filesystem, not 100,000 creates.
"""

from __future__ import annotations

import os
import time

from mountfs.cache.block_cache import BlockCache, CacheLimits
from mountfs.ids import uuid7
from mountfs.mount import CACHE_DIR
from mountfs.state import nodes
from mountfs.state.db import DB_FILE, open_state
from mountfs.state.nodes import NewNode
from mountfs.state.schema import ROOT_INO
from mountfs.transport.auth import load_device
from mountfs.types import InodeNo, NodeId
from mountfs.vfs.fsck import repair
from tests.mount.conftest import MountFactory

ENTRIES = 100_000


def test_a_folder_of_100000_entries(mount_factory: MountFactory) -> None:
    mount = mount_factory(start=False)
    device = load_device(mount.state_dir)
    db = open_state(mount.state_dir / DB_FILE)
    cache = BlockCache(mount.state_dir / CACHE_DIR, CacheLimits(1 << 30, 0), db)
    repair(db, cache, root_id=device.root_id, uid=os.getuid(), gid=os.getgid())
    with db.transaction() as conn:
        folder = nodes.insert(conn, _remote("big", InodeNo(ROOT_INO), "dir"))
        for i in range(ENTRIES):
            nodes.insert(conn, _remote(f"file-{i:06}.txt", folder.ino, "file"))
    db.close()
    mount.start()
    big = mount.mountpoint / "big"

    started = time.monotonic()
    names = os.listdir(big)
    listed = time.monotonic() - started
    assert len(names) == ENTRIES

    started = time.monotonic()
    with os.scandir(big) as entries:  # `ls -l`: names and attributes
        sizes = sum(entry.stat().st_size for entry in entries)
    listed_with_stat = time.monotonic() - started
    assert sizes == 0

    started = time.monotonic()
    for i in range(0, ENTRIES, 97):
        os.stat(big / f"file-{i:06}.txt")
    looked_up = time.monotonic() - started

    print(
        f"listdir {listed:.2f}s, scandir+stat {listed_with_stat:.2f}s, ~1000 stats {looked_up:.3f}s"
    )
    assert listed < 15
    assert listed_with_stat < 15
    assert looked_up < 5
    mount.stop()


def _remote(name: str, parent: InodeNo, kind: str) -> NewNode:
    return NewNode(
        node_id=NodeId(uuid7()),
        parent_ino=parent,
        name=name,
        kind="dir" if kind == "dir" else "file",
        mode=0o755 if kind == "dir" else 0o644,
        uid=os.getuid(),
        gid=os.getgid(),
        time_ns=time.time_ns(),
        remote_version=1,
    )
