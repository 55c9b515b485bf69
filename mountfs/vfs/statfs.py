"""What `statfs` (and so `df`) reports for the mount.

- Sizes: the account's quota and use, as the sync engine last stored them in `meta`
  (`quota_bytes`, `used_bytes`). Without a quota (unlimited, or not known yet) the local
  disk that holds the cache stands in: it is what bounds writes until they are uploaded.
- `f_namemax` = 255: an unset field would say 0, and file managers then refuse every name
  (PYFUSE3-NOTES §4). `f_bsize` = `f_frsize`, or `df` miscomputes.
- Inodes: a large nominal total minus the nodes we know.

The answer is cached for a short time: some programs call statfs in a loop, and counting
nodes is O(n) in SQLite.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mountfs.state import nodes
from mountfs.state.db import StateDb

__all__ = ["BLOCK_SIZE", "FILES_MAX", "FsStats", "StatFs"]

BLOCK_SIZE = 4096
FILES_MAX = 1 << 32
_TTL_S = 2.0


@dataclass(frozen=True, slots=True)
class FsStats:
    block_size: int
    blocks: int
    blocks_free: int
    blocks_avail: int
    files: int
    files_free: int
    name_max: int


class StatFs:
    def __init__(
        self, db: StateDb, cache_root: Path, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._db = db
        self._cache_root = cache_root
        self._clock = clock
        self._cached: tuple[float, FsStats] | None = None

    def stats(self) -> FsStats:
        now = self._clock()
        if self._cached is not None and now - self._cached[0] < _TTL_S:
            return self._cached[1]
        result = self._compute()
        self._cached = (now, result)
        return result

    def _compute(self) -> FsStats:
        quota = self._db.get_meta("quota_bytes")
        if quota is not None:
            total = int(quota)
            free = max(0, total - int(self._db.get_meta("used_bytes") or 0))
        else:
            st = os.statvfs(self._cache_root)
            total = st.f_blocks * st.f_frsize
            free = st.f_bavail * st.f_frsize
        known = nodes.count(self._db.conn)
        return FsStats(
            block_size=BLOCK_SIZE,
            blocks=total // BLOCK_SIZE,
            blocks_free=free // BLOCK_SIZE,
            blocks_avail=free // BLOCK_SIZE,
            files=FILES_MAX,
            files_free=max(0, FILES_MAX - known),
            name_max=255,
        )
