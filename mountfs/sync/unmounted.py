"""The state of a device whose mount is not running, opened as the mount would open it.

`mountfs sync`, `mountfs cancel` and friends work on the state directory itself when no
mount runs: they take its lock (so a mount cannot start meanwhile), open the database and
the block cache, and repair the state first, exactly as a mount does at start.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from mountfs.cache.block_cache import CACHE_DIR, BlockCache, CacheLimits
from mountfs.state.db import DB_FILE, StateDb, open_state
from mountfs.state.lock import lock_state
from mountfs.transport.auth import DeviceInfo, load_device
from mountfs.vfs.fsck import repair


@dataclass(frozen=True, slots=True)
class UnmountedState:
    device: DeviceInfo
    db: StateDb
    cache: BlockCache


@contextmanager
def unmounted_state(state_dir: Path) -> Iterator[UnmountedState]:
    """Lock, open and repair the state of `state_dir`; close and unlock on the way out."""
    lock = lock_state(state_dir)
    try:
        device = load_device(state_dir)
        db = open_state(state_dir / DB_FILE)
        try:
            cache_root = state_dir / CACHE_DIR
            cache_root.mkdir(exist_ok=True, mode=0o700)
            cache = BlockCache(cache_root, CacheLimits.for_disk(cache_root, None), db)
            repair(db, cache, root_id=device.root_id, uid=os.getuid(), gid=os.getgid())
            yield UnmountedState(device, db, cache)
        finally:
            db.close()
    finally:
        lock.close()
