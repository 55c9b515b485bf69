"""FUSE handlers for `.versions` (`mountfs.vfs.versions`) on top of the ordinary ones.

`VersionsOperations` is `Operations` plus one rule: a request about a virtual inode (or
handle), or about the name `.versions` in the root, is answered by the `VersionsView`;
everything else goes to `Operations` unchanged. The root's listing never contains
`.versions` (it is no node of the tree), so `ls -a` does not show it, while a lookup of
the name finds it: reachable by path, hidden from listings.

Every change under `.versions` (create, write, truncate, rename, unlink, xattrs …) fails
with EROFS (`ReadOnly`); the modes say read-only too (0555 folders, 0444 files), so for a
user other than root the kernel's own permission check may answer EACCES first.
Lookup counts are not kept for virtual inodes: they are never purged (numbers are never
reused, see the view), so the kernel's `forget`s for them are simply dropped.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Sequence

import pyfuse3

from mountfs.fuse.errno_map import fuse_errors
from mountfs.fuse.ops import Operations
from mountfs.state.schema import ROOT_INO
from mountfs.vfs import Vfs
from mountfs.vfs.errors import AlreadyExists, InvalidArgument, NoAttribute, ReadOnly
from mountfs.vfs.tree import lookup_name
from mountfs.vfs.versions import VERSIONS_NAME, VersionsView, VirtualNode

__all__ = ["VersionsOperations"]

_NAME = VERSIONS_NAME.encode()
_FOLDER_TIMEOUT_S = 1.0  # new versions appear within a second of a fresh lookup
_VERSION_TIMEOUT_S = 300.0  # a version never changes


class VersionsOperations(Operations):
    """`Operations` with `.versions` (see the module docstring)."""

    def __init__(self, vfs: Vfs, versions: VersionsView) -> None:
        super().__init__(vfs)
        self.versions = versions
        self._dirs: dict[int, tuple[int, list[tuple[str, VirtualNode]] | None]] = {}
        self._started_ns = time.time_ns()

    # --- helpers -------------------------------------------------------------------------

    def _virtual(self, ino: int) -> bool:
        return self.versions.is_virtual(ino)

    def _is_name(self, parent: int, name: bytes) -> bool:
        return parent == ROOT_INO and name == _NAME

    def _vattrs(self, node: VirtualNode) -> pyfuse3.EntryAttributes:
        attrs = pyfuse3.EntryAttributes()
        attrs.st_ino = pyfuse3.InodeT(node.ino)
        attrs.generation = 0
        folder = node.kind == "dir"
        timeout = _FOLDER_TIMEOUT_S if folder else _VERSION_TIMEOUT_S
        attrs.entry_timeout = attrs.attr_timeout = timeout
        attrs.st_mode = pyfuse3.ModeT((stat.S_IFDIR | 0o555) if folder else (stat.S_IFREG | 0o444))
        attrs.st_nlink = 2 if folder else 1
        attrs.st_uid = os.getuid()
        attrs.st_gid = os.getgid()
        attrs.st_size = node.size
        attrs.st_blksize = 128 * 1024
        attrs.st_blocks = (node.size + 511) // 512
        when = node.mtime_ns if not folder else self._started_ns
        attrs.st_atime_ns = attrs.st_mtime_ns = attrs.st_ctime_ns = when
        return attrs

    def _parent_attrs(self, node: VirtualNode) -> pyfuse3.EntryAttributes:
        if node.ino == self.versions.root.ino:
            return self._attrs(self.vfs.tree.get(ROOT_INO))
        parent = self.versions.folder_at(node.path[:-1])
        return self._vattrs(parent)

    # --- namespace -----------------------------------------------------------------------

    @fuse_errors
    async def lookup(
        self, parent_inode: pyfuse3.InodeT, name: pyfuse3.FileNameT, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        if self._is_name(parent_inode, name):
            return self._vattrs(self.versions.root)
        if not self._virtual(parent_inode):
            return await super().lookup(parent_inode, name, ctx)
        folder = self.versions.get(parent_inode)
        if name == b".":
            return self._vattrs(folder)
        if name == b"..":
            return self._parent_attrs(folder)
        text = lookup_name(name)
        if text is None:
            raise InvalidArgument(f"{name!r} is not UTF-8")
        return self._vattrs(await self.versions.lookup(parent_inode, text))

    async def forget(self, inode_list: Sequence[tuple[pyfuse3.InodeT, int]]) -> None:
        await super().forget([(ino, n) for ino, n in inode_list if not self._virtual(ino)])

    @fuse_errors
    async def getattr(
        self, inode: pyfuse3.InodeT, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        if self._virtual(inode):
            return self._vattrs(self.versions.get(inode))
        return await super().getattr(inode, ctx)

    @fuse_errors
    async def setattr(
        self,
        inode: pyfuse3.InodeT,
        attr: pyfuse3.EntryAttributes,
        fields: pyfuse3.SetattrFields,
        fh: pyfuse3.FileHandleT | None,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        if self._virtual(inode):
            raise ReadOnly(f"{VERSIONS_NAME} is read-only")
        return await super().setattr(inode, attr, fields, fh, ctx)

    @fuse_errors
    async def readlink(
        self, inode: pyfuse3.InodeT, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.FileNameT:
        if self._virtual(inode):
            raise InvalidArgument("not a symlink")
        return await super().readlink(inode, ctx)

    def _refuse_new(self, parent: int, name: bytes) -> None:
        if self._virtual(parent):
            raise ReadOnly(f"{VERSIONS_NAME} is read-only")
        if self._is_name(parent, name):
            raise AlreadyExists(f"{VERSIONS_NAME} is reserved in the root")

    @fuse_errors
    async def mknod(
        self,
        parent_inode: pyfuse3.InodeT,
        name: pyfuse3.FileNameT,
        mode: pyfuse3.ModeT,
        rdev: int,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        self._refuse_new(parent_inode, name)
        return await super().mknod(parent_inode, name, mode, rdev, ctx)

    @fuse_errors
    async def mkdir(
        self,
        parent_inode: pyfuse3.InodeT,
        name: pyfuse3.FileNameT,
        mode: pyfuse3.ModeT,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        self._refuse_new(parent_inode, name)
        return await super().mkdir(parent_inode, name, mode, ctx)

    @fuse_errors
    async def symlink(
        self,
        parent_inode: pyfuse3.InodeT,
        name: pyfuse3.FileNameT,
        target: pyfuse3.FileNameT,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        self._refuse_new(parent_inode, name)
        return await super().symlink(parent_inode, name, target, ctx)

    @fuse_errors
    async def create(
        self,
        parent_inode: pyfuse3.InodeT,
        name: pyfuse3.FileNameT,
        mode: pyfuse3.ModeT,
        flags: pyfuse3.FlagT,
        ctx: pyfuse3.RequestContext,
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        self._refuse_new(parent_inode, name)
        return await super().create(parent_inode, name, mode, flags, ctx)

    def _refuse_change(self, parent: int, name: bytes) -> None:
        if self._virtual(parent) or self._is_name(parent, name):
            raise ReadOnly(f"{VERSIONS_NAME} is read-only")

    @fuse_errors
    async def unlink(
        self, parent_inode: pyfuse3.InodeT, name: pyfuse3.FileNameT, ctx: pyfuse3.RequestContext
    ) -> None:
        self._refuse_change(parent_inode, name)
        await super().unlink(parent_inode, name, ctx)

    @fuse_errors
    async def rmdir(
        self, parent_inode: pyfuse3.InodeT, name: pyfuse3.FileNameT, ctx: pyfuse3.RequestContext
    ) -> None:
        self._refuse_change(parent_inode, name)
        await super().rmdir(parent_inode, name, ctx)

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
        self._refuse_change(parent_inode_old, name_old)
        self._refuse_change(parent_inode_new, name_new)
        await super().rename(parent_inode_old, name_old, parent_inode_new, name_new, flags, ctx)

    @fuse_errors
    async def link(
        self,
        inode: pyfuse3.InodeT,
        new_parent_inode: pyfuse3.InodeT,
        new_name: pyfuse3.FileNameT,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        if self._virtual(inode):
            raise ReadOnly(f"{VERSIONS_NAME} is read-only")
        self._refuse_new(new_parent_inode, new_name)
        return await super().link(inode, new_parent_inode, new_name, ctx)

    # --- files ---------------------------------------------------------------------------

    @fuse_errors
    async def open(
        self, inode: pyfuse3.InodeT, flags: pyfuse3.FlagT, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.FileInfo:
        if not self._virtual(inode):
            return await super().open(inode, flags, ctx)
        if flags & os.O_ACCMODE != os.O_RDONLY or flags & os.O_TRUNC:
            raise ReadOnly(f"{VERSIONS_NAME} is read-only")
        fh = self.versions.open(inode)
        return pyfuse3.FileInfo(fh=pyfuse3.FileHandleT(fh), keep_cache=True)

    @fuse_errors
    async def read(self, fh: pyfuse3.FileHandleT, off: int, size: int) -> bytes:
        if self.versions.owns_handle(fh):
            return await self.versions.read(fh, off, size)
        return await super().read(fh, off, size)

    @fuse_errors
    async def write(self, fh: pyfuse3.FileHandleT, off: int, buf: bytes) -> int:
        if self.versions.owns_handle(fh):
            raise ReadOnly(f"{VERSIONS_NAME} is read-only")
        return await super().write(fh, off, buf)

    @fuse_errors
    async def release(self, fh: pyfuse3.FileHandleT) -> None:
        if self.versions.owns_handle(fh):
            self.versions.release(fh)
            return
        await super().release(fh)

    @fuse_errors
    async def fsync(self, fh: pyfuse3.FileHandleT, datasync: bool) -> None:
        if not self.versions.owns_handle(fh):
            await super().fsync(fh, datasync)

    # --- directories ---------------------------------------------------------------------

    @fuse_errors
    async def opendir(
        self, inode: pyfuse3.InodeT, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.FileHandleT:
        if not self._virtual(inode):
            return await super().opendir(inode, ctx)
        await self.versions.list(inode)  # fail here (ENOTDIR, ENETUNREACH), not in readdir
        fh = self.versions.new_handle()
        self._dirs[fh] = (inode, None)
        return pyfuse3.FileHandleT(fh)

    @fuse_errors
    async def readdir(
        self, fh: pyfuse3.FileHandleT, start_id: int, token: pyfuse3.ReaddirToken
    ) -> None:
        if fh not in self._dirs:
            await super().readdir(fh, start_id, token)
            return
        ino, entries = self._dirs[fh]
        if entries is None or start_id == 0:  # one snapshot per listing: stable offsets
            entries = list((await self.versions.list(ino)).items())
            self._dirs[fh] = (ino, entries)
        folder = self.versions.get(ino)
        listing: list[tuple[bytes, pyfuse3.EntryAttributes]] = [
            (b".", self._vattrs(folder)),
            (b"..", self._parent_attrs(folder)),
            *((name.encode(), self._vattrs(node)) for name, node in entries),
        ]
        for offset, (name, attrs) in enumerate(listing[start_id:], start=start_id + 1):
            if not pyfuse3.readdir_reply(token, name, attrs, offset):
                return

    @fuse_errors
    async def releasedir(self, fh: pyfuse3.FileHandleT) -> None:
        if self._dirs.pop(fh, None) is None:
            await super().releasedir(fh)

    @fuse_errors
    async def fsyncdir(self, fh: pyfuse3.FileHandleT, datasync: bool) -> None:
        if fh not in self._dirs:
            await super().fsyncdir(fh, datasync)

    # --- extended attributes -------------------------------------------------------------

    @fuse_errors
    async def setxattr(
        self,
        inode: pyfuse3.InodeT,
        name: pyfuse3.XAttrNameT,
        value: bytes,
        ctx: pyfuse3.RequestContext,
    ) -> None:
        if self._virtual(inode):
            raise ReadOnly(f"{VERSIONS_NAME} is read-only")
        await super().setxattr(inode, name, value, ctx)

    @fuse_errors
    async def getxattr(
        self, inode: pyfuse3.InodeT, name: pyfuse3.XAttrNameT, ctx: pyfuse3.RequestContext
    ) -> bytes:
        if self._virtual(inode):
            raise NoAttribute(f"{VERSIONS_NAME} has no extended attributes")
        return await super().getxattr(inode, name, ctx)

    @fuse_errors
    async def listxattr(
        self, inode: pyfuse3.InodeT, ctx: pyfuse3.RequestContext
    ) -> Sequence[pyfuse3.XAttrNameT]:
        if self._virtual(inode):
            return []
        return await super().listxattr(inode, ctx)

    @fuse_errors
    async def removexattr(
        self, inode: pyfuse3.InodeT, name: pyfuse3.XAttrNameT, ctx: pyfuse3.RequestContext
    ) -> None:
        if self._virtual(inode):
            raise ReadOnly(f"{VERSIONS_NAME} is read-only")
        await super().removexattr(inode, name, ctx)
