"""FUSE handlers that keep a viewer's shares read-only in the mount.

`SharesOperations` is `VersionsOperations` plus one rule: a change of a node that lies in
(or is) a share the account may only read — creating, removing, renaming into or out of,
opening for writing, truncating, changing attributes or extended attributes — fails with
EROFS (`ReadOnly`) before anything changes locally, exactly as the backend would refuse
it with 403. Reading is untouched.

Two more rules keep the mount from diverging from what the backend accepts: a rename
between two namespaces (into or out of any shared folder, or between two of them) fails
with EXDEV (`CrossDevice`), on which `mv` and file managers copy and delete instead (the
backend refuses such moves with 409 `cross_share`); and a member cannot rename or move the
folder of a share it accepted (EROFS: its placement is `mountfs shares accept`).

Which nodes are share roots comes from the sync engine (`mountfs.sync.shared`); a node is
in a share if the node itself or one of its local ancestors is that share's root.
"""

from __future__ import annotations

import os
from typing import Protocol

import pyfuse3

from mountfs.fuse.errno_map import fuse_errors
from mountfs.fuse.versions import VersionsOperations
from mountfs.state import nodes
from mountfs.vfs import Vfs
from mountfs.vfs.errors import CrossDevice, ReadOnly
from mountfs.vfs.tree import lookup_name
from mountfs.vfs.versions import VersionsView

__all__ = ["ShareRoots", "SharesOperations"]

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND


class ShareRoots(Protocol):
    """Which nodes are roots of followed shares (`mountfs.sync.shared.SharedNamespaces`)."""

    def read_only_roots(self) -> frozenset[str]: ...
    def share_roots(self) -> frozenset[str]: ...
    def member_roots(self) -> frozenset[str]: ...


class SharesOperations(VersionsOperations):
    """`VersionsOperations` that refuse changes in read-only shares (module docstring)."""

    def __init__(self, vfs: Vfs, versions: VersionsView, shares: ShareRoots) -> None:
        super().__init__(vfs, versions)
        self._shares = shares

    def _nearest(self, ino: int, roots: frozenset[str]) -> str | None:
        """The first of `roots` at or above the inode (its node id), or None."""
        if not roots:
            return None
        conn = self.vfs.db.conn
        node = nodes.get(conn, ino)
        for _ in range(4096):
            if node is None:
                return None
            if node.node_id in roots:
                return node.node_id
            node = nodes.get(conn, node.parent_ino) if node.parent_ino is not None else None
        return None

    def _guard(self, *inodes: int) -> None:
        roots = self._shares.read_only_roots()
        for ino in inodes:
            if self._nearest(ino, roots) is not None:
                raise ReadOnly("this shared folder is read-only for you (viewer)")

    @fuse_errors
    async def setattr(
        self,
        inode: pyfuse3.InodeT,
        attr: pyfuse3.EntryAttributes,
        fields: pyfuse3.SetattrFields,
        fh: pyfuse3.FileHandleT | None,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        self._guard(inode)
        return await super().setattr(inode, attr, fields, fh, ctx)

    @fuse_errors
    async def mknod(
        self,
        parent_inode: pyfuse3.InodeT,
        name: pyfuse3.FileNameT,
        mode: pyfuse3.ModeT,
        rdev: int,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        self._guard(parent_inode)
        return await super().mknod(parent_inode, name, mode, rdev, ctx)

    @fuse_errors
    async def mkdir(
        self,
        parent_inode: pyfuse3.InodeT,
        name: pyfuse3.FileNameT,
        mode: pyfuse3.ModeT,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        self._guard(parent_inode)
        return await super().mkdir(parent_inode, name, mode, ctx)

    @fuse_errors
    async def unlink(
        self, parent_inode: pyfuse3.InodeT, name: pyfuse3.FileNameT, ctx: pyfuse3.RequestContext
    ) -> None:
        self._guard(parent_inode)
        await super().unlink(parent_inode, name, ctx)

    @fuse_errors
    async def rmdir(
        self, parent_inode: pyfuse3.InodeT, name: pyfuse3.FileNameT, ctx: pyfuse3.RequestContext
    ) -> None:
        self._guard(parent_inode)
        await super().rmdir(parent_inode, name, ctx)

    @fuse_errors
    async def symlink(
        self,
        parent_inode: pyfuse3.InodeT,
        name: pyfuse3.FileNameT,
        target: pyfuse3.FileNameT,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        self._guard(parent_inode)
        return await super().symlink(parent_inode, name, target, ctx)

    @fuse_errors
    async def rename(
        self,
        parent_inode_old: pyfuse3.InodeT,
        name_old: pyfuse3.FileNameT,
        parent_inode_new: pyfuse3.InodeT,
        name_new: pyfuse3.FileNameT,
        flags: pyfuse3.FlagT,
        ctx: pyfuse3.RequestContext,
    ) -> None:
        self._guard(parent_inode_old, parent_inode_new)
        roots = self._shares.share_roots()
        if self._nearest(parent_inode_old, roots) != self._nearest(parent_inode_new, roots):
            raise CrossDevice("a move into or out of a shared folder: copy, then delete")
        text = lookup_name(name_old)
        moved = nodes.by_name(self.vfs.db.conn, parent_inode_old, text) if text else None
        if moved is not None and moved.node_id in self._shares.member_roots():
            raise ReadOnly("place a share with `mountfs shares accept ID --into --name`")
        await super().rename(parent_inode_old, name_old, parent_inode_new, name_new, flags, ctx)

    @fuse_errors
    async def link(
        self,
        inode: pyfuse3.InodeT,
        new_parent_inode: pyfuse3.InodeT,
        new_name: pyfuse3.FileNameT,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        self._guard(new_parent_inode)
        return await super().link(inode, new_parent_inode, new_name, ctx)

    @fuse_errors
    async def open(
        self, inode: pyfuse3.InodeT, flags: pyfuse3.FlagT, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.FileInfo:
        if flags & _WRITE_FLAGS:
            self._guard(inode)
        return await super().open(inode, flags, ctx)

    @fuse_errors
    async def create(
        self,
        parent_inode: pyfuse3.InodeT,
        name: pyfuse3.FileNameT,
        mode: pyfuse3.ModeT,
        flags: pyfuse3.FlagT,
        ctx: pyfuse3.RequestContext,
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        self._guard(parent_inode)
        return await super().create(parent_inode, name, mode, flags, ctx)

    @fuse_errors
    async def setxattr(
        self,
        inode: pyfuse3.InodeT,
        name: pyfuse3.XAttrNameT,
        value: bytes,
        ctx: pyfuse3.RequestContext,
    ) -> None:
        self._guard(inode)
        await super().setxattr(inode, name, value, ctx)

    @fuse_errors
    async def removexattr(
        self, inode: pyfuse3.InodeT, name: pyfuse3.XAttrNameT, ctx: pyfuse3.RequestContext
    ) -> None:
        self._guard(inode)
        await super().removexattr(inode, name, ctx)
