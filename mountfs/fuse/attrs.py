"""Node rows -> `pyfuse3.EntryAttributes`, and the kernel cache timeouts.

Timeouts are long: every change made through the mount goes through the kernel, which
keeps its caches right by itself, and changes from other devices will be announced by the
sync engine through `mountfs.vfs.invalidate`. Failed lookups raise ENOENT, which the kernel
does not cache, so a name created remotely shows up at the next lookup.
"""

from __future__ import annotations

import stat

import pyfuse3

from mountfs.state.nodes import Node

__all__ = ["ATTR_TIMEOUT_S", "BLOCK_SIZE_HINT", "ENTRY_TIMEOUT_S", "entry_attributes"]

ENTRY_TIMEOUT_S = 300.0
"""How long the kernel may trust a name -> inode mapping without asking again."""

ATTR_TIMEOUT_S = 300.0
"""How long the kernel may trust an inode's attributes without asking again."""

BLOCK_SIZE_HINT = 128 * 1024
"""`st_blksize`: the I/O size `cp` and stdio use; FUSE requests up to 1 MiB are cheaper."""

_TYPE_BITS = {"file": stat.S_IFREG, "dir": stat.S_IFDIR, "symlink": stat.S_IFLNK}


def entry_attributes(node: Node, nlink: int) -> pyfuse3.EntryAttributes:
    """The attributes the kernel caches for `node` (`nlink` is computed by the tree)."""
    attrs = pyfuse3.EntryAttributes()
    attrs.st_ino = pyfuse3.InodeT(node.ino)
    attrs.generation = 0  # inode numbers are never reused, so one generation suffices
    attrs.entry_timeout = ENTRY_TIMEOUT_S
    attrs.attr_timeout = ATTR_TIMEOUT_S
    attrs.st_mode = pyfuse3.ModeT(_TYPE_BITS[node.kind] | node.mode)
    attrs.st_nlink = nlink
    attrs.st_uid = node.uid
    attrs.st_gid = node.gid
    attrs.st_rdev = 0
    attrs.st_size = node.size
    attrs.st_blksize = BLOCK_SIZE_HINT
    attrs.st_blocks = (node.size + 511) // 512  # logical size: what `du` should count
    attrs.st_atime_ns = node.atime_ns
    attrs.st_mtime_ns = node.mtime_ns
    attrs.st_ctime_ns = node.ctime_ns
    return attrs
