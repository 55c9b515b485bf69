"""`mountfs sync` for a device whose mount is not running.

It takes the state directory's lock (so a mount cannot start meanwhile), checks the state
as the mount would, pushes everything pending, pulls everything new, and returns. Nothing
is in the kernel's caches, so invalidations are dropped, and nothing is open, so deleted
nodes are purged at once. Pinned content that is missing is downloaded before it returns.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import trio

from mountfs.cache.block_cache import BlockCache
from mountfs.state import nodes
from mountfs.state.db import StateDb
from mountfs.sync.pinning import Pinner
from mountfs.sync.session import Transport, build_engine, build_fetcher
from mountfs.sync.transfers import Transfers
from mountfs.sync.unmounted import unmounted_state
from mountfs.transport.auth import DeviceInfo
from mountfs.types import InodeNo

log = logging.getLogger(__name__)


class _NoKernel:
    """Invalidator for a state that no kernel has cached."""

    def entry(self, parent: InodeNo, name: str, deleted: int = 0) -> None:
        return None

    def inode(self, ino: InodeNo, data: bool) -> None:
        return None


def _purger(db: StateDb, cache: BlockCache) -> Callable[[InodeNo], None]:
    def purge(ino: InodeNo) -> None:
        node = nodes.get(db.conn, ino)
        if node is None or node.linked:
            return
        with db.transaction() as conn:
            if conn.execute("SELECT 1 FROM outbox WHERE node_id = ?", (node.node_id,)).fetchone():
                return
            nodes.delete(conn, ino)
        cache.drop(ino)

    return purge


def sync_unmounted(state_dir: Path, timeout: float) -> bool:
    """Push and pull until up to date; False on timeout or if the backend is unreachable."""
    with unmounted_state(state_dir) as state:
        return trio.run(_flush, state.device, state.db, state.cache, timeout, Transfers(state_dir))


async def _flush(
    device: DeviceInfo, db: StateDb, cache: BlockCache, seconds: float, transfers: Transfers
) -> bool:
    transport = Transport.open(device, transfers)  # honours `mountfs pause`
    try:
        fetcher = build_fetcher(transport, db, cache)
        purge = _purger(db, cache)
        engine = build_engine(
            transport,
            db,
            cache,
            fetcher,
            invalidator=_NoKernel(),
            purge_if_unused=purge,
            is_open_for_write=lambda ino: False,
        )
        deadline = trio.current_time() + seconds
        if not await engine.sync_within(seconds):
            return False
        # Up to date includes pinned content (`mountfs pin`): download what is missing.
        pinner = Pinner(db, cache, fetcher)
        return await pinner.settle(max(deadline - trio.current_time(), 0.0))
    finally:
        await transport.aclose()
