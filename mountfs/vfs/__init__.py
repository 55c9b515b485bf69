"""The filesystem's rules, independent of FUSE: namespace, content, handles, inodes.

`mountfs.fuse.ops` is a thin adapter over a `Vfs`; unit tests drive a `Vfs` directly.
Layering: vfs -> state (SQLite) and cache (files on disk); nothing here talks to the
backend. The sync engine plugs in through `ContentFetcher` (missing bytes),
`Invalidator` (kernel caches) and the state functions named in `docs/client.md`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import trio

from mountfs.cache.block_cache import BlockCache
from mountfs.state.db import StateDb
from mountfs.vfs.files import ContentFetcher, Files, NoFetcher
from mountfs.vfs.handles import Handles
from mountfs.vfs.inodes import Inodes
from mountfs.vfs.invalidate import Invalidator
from mountfs.vfs.statfs import StatFs
from mountfs.vfs.tree import Tree
from mountfs.vfs.xattrs import Xattrs

__all__ = ["Vfs", "build_vfs"]


@dataclass(frozen=True, slots=True)
class Vfs:
    """The parts of one mounted filesystem, wired together (see `build_vfs`)."""

    db: StateDb
    cache: BlockCache
    handles: Handles
    inodes: Inodes
    tree: Tree
    files: Files
    xattrs: Xattrs
    statfs: StatFs
    invalidator: Invalidator


def build_vfs(
    db: StateDb,
    cache: BlockCache,
    *,
    fetcher: ContentFetcher | None = None,
    invalidator: Invalidator | None = None,
    fsync_limiter: trio.CapacityLimiter | None = None,
    clock: Callable[[], int] = time.time_ns,
) -> Vfs:
    """Wire the vfs parts over an open state database and a scanned cache."""
    handles = Handles()
    inodes = Inodes(db, cache, handles)
    tree = Tree(db, inodes, clock)
    files = Files(
        db,
        cache,
        handles,
        inodes,
        tree,
        fetcher or NoFetcher(),
        fsync_limiter=fsync_limiter,
        clock=clock,
    )
    return Vfs(
        db=db,
        cache=cache,
        handles=handles,
        inodes=inodes,
        tree=tree,
        files=files,
        xattrs=Xattrs(db, clock),
        statfs=StatFs(db, cache.root),
        invalidator=invalidator or Invalidator(),
    )
