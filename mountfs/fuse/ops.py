"""The FUSE adapter: each handler is guards, one vfs call, and conversion of the reply.

Every handler is wrapped by `fuse_errors`, so only `FUSEError` ever reaches pyfuse3.
`forget` must not raise at all and logs instead. Lookup counts are taken here, at the one
place that knows a reply created a kernel reference: after a successful lookup, create,
mkdir, mknod, symlink, and for each readdirplus entry the kernel accepted (except `.` and
`..`).

Each handler also stamps `activity` (`mountfs.fuse.activity`), which the sync engine
consults to run its rounds in the pauses between bursts of requests.

Control interface: `getxattr(mountpoint, "user.mountfs.pid")` answers the daemon's pid,
which is how `mountfs umount` finds the process to wait for. It is not listed by
`listxattr` and cannot be set.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Concatenate, ParamSpec, TypeVar

import pyfuse3

from mountfs.fuse.activity import RequestActivity
from mountfs.fuse.attrs import entry_attributes
from mountfs.fuse.errno_map import fuse_errors
from mountfs.state.nodes import Node
from mountfs.state.schema import ROOT_INO
from mountfs.vfs import Vfs
from mountfs.vfs.errors import Unimplemented
from mountfs.vfs.tree import AttrChange, Caller

__all__ = ["CONTROL_PID_XATTR", "Operations"]

log = logging.getLogger(__name__)

CONTROL_PID_XATTR = b"user.mountfs.pid"


P = ParamSpec("P")
R = TypeVar("R")
_monotonic = time.monotonic


def _request(
    handler: Callable[Concatenate[Operations, P], Coroutine[Any, Any, R]],
) -> Callable[Concatenate[Operations, P], Coroutine[Any, Any, R]]:
    """`fuse_errors`, plus the stamp of `Operations.activity` (one attribute store).

    The stamp is what lets the sync engine start its rounds in pauses between requests
    (`mountfs.fuse.activity`); errnos are still mapped only by `fuse_errors`.
    """
    mapped = fuse_errors(handler)

    @functools.wraps(handler)
    async def wrapper(self: Operations, /, *args: P.args, **kwargs: P.kwargs) -> R:
        self.activity.last = _monotonic()
        return await mapped(self, *args, **kwargs)

    return wrapper


def _caller(ctx: pyfuse3.RequestContext) -> Caller:
    return Caller(uid=ctx.uid, gid=ctx.gid)


class Operations(pyfuse3.Operations):
    """pyfuse3 request handlers over a `Vfs`.

    Attributes:
        vfs: the filesystem the requests are about.
        activity: when the latest request arrived (the sync engine's `before_round`).
    """

    supports_dot_lookup = True
    enable_writeback_cache = True  # shared writable mmap, merged writes (PYFUSE3-NOTES §2)
    enable_acl = False

    def __init__(self, vfs: Vfs) -> None:
        super().__init__()
        self.vfs = vfs
        self.activity = RequestActivity()

    def _attrs(self, node: Node) -> pyfuse3.EntryAttributes:
        return entry_attributes(node, self.vfs.tree.nlink(node))

    def _new_entry(self, node: Node) -> pyfuse3.EntryAttributes:
        """Attributes for a reply that gives the kernel a reference (lookup count + 1)."""
        attrs = self._attrs(node)
        self.vfs.inodes.remember(node.ino)
        return attrs

    # --- namespace -----------------------------------------------------------------------

    @_request
    async def lookup(
        self, parent_inode: pyfuse3.InodeT, name: pyfuse3.FileNameT, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        return self._new_entry(self.vfs.tree.lookup(parent_inode, name))

    async def forget(self, inode_list: Sequence[tuple[pyfuse3.InodeT, int]]) -> None:
        self.activity.last = _monotonic()
        for ino, count in inode_list:
            try:
                self.vfs.inodes.forget(ino, count)
            except Exception:
                log.exception("forget(%d, %d) failed", ino, count)

    @_request
    async def getattr(
        self, inode: pyfuse3.InodeT, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        return self._attrs(self.vfs.tree.get(inode))

    @_request
    async def setattr(
        self,
        inode: pyfuse3.InodeT,
        attr: pyfuse3.EntryAttributes,
        fields: pyfuse3.SetattrFields,
        fh: pyfuse3.FileHandleT | None,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        change = AttrChange(
            mode=attr.st_mode if fields.update_mode else None,
            uid=attr.st_uid if fields.update_uid else None,
            gid=attr.st_gid if fields.update_gid else None,
            atime_ns=attr.st_atime_ns if fields.update_atime else None,
            mtime_ns=attr.st_mtime_ns if fields.update_mtime else None,
            ctime_ns=attr.st_ctime_ns if fields.update_ctime else None,
        )
        size = attr.st_size if fields.update_size else None
        return self._attrs(await self.vfs.files.setattr(inode, change, size))

    @_request
    async def readlink(
        self, inode: pyfuse3.InodeT, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.FileNameT:
        return self.vfs.tree.readlink(inode)

    @_request
    async def mknod(
        self,
        parent_inode: pyfuse3.InodeT,
        name: pyfuse3.FileNameT,
        mode: pyfuse3.ModeT,
        rdev: int,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        return self._new_entry(self.vfs.tree.mknod(parent_inode, name, mode, _caller(ctx)))

    @_request
    async def mkdir(
        self,
        parent_inode: pyfuse3.InodeT,
        name: pyfuse3.FileNameT,
        mode: pyfuse3.ModeT,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        return self._new_entry(self.vfs.tree.mkdir(parent_inode, name, mode, _caller(ctx)))

    @_request
    async def unlink(
        self, parent_inode: pyfuse3.InodeT, name: pyfuse3.FileNameT, ctx: pyfuse3.RequestContext
    ) -> None:
        self.vfs.tree.unlink(parent_inode, name)

    @_request
    async def rmdir(
        self, parent_inode: pyfuse3.InodeT, name: pyfuse3.FileNameT, ctx: pyfuse3.RequestContext
    ) -> None:
        self.vfs.tree.rmdir(parent_inode, name)

    @_request
    async def symlink(
        self,
        parent_inode: pyfuse3.InodeT,
        name: pyfuse3.FileNameT,
        target: pyfuse3.FileNameT,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        return self._new_entry(self.vfs.tree.symlink(parent_inode, name, target, _caller(ctx)))

    @_request
    async def rename(
        self,
        parent_inode_old: pyfuse3.InodeT,
        name_old: pyfuse3.FileNameT,
        parent_inode_new: pyfuse3.InodeT,
        name_new: pyfuse3.FileNameT,
        flags: pyfuse3.FlagT,
        ctx: pyfuse3.RequestContext,
    ) -> None:
        self.vfs.tree.rename(parent_inode_old, name_old, parent_inode_new, name_new, flags)

    @_request
    async def link(
        self,
        inode: pyfuse3.InodeT,
        new_parent_inode: pyfuse3.InodeT,
        new_name: pyfuse3.FileNameT,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        self.vfs.tree.link(inode, new_parent_inode, new_name)

    # --- files ---------------------------------------------------------------------------

    @_request
    async def open(
        self, inode: pyfuse3.InodeT, flags: pyfuse3.FlagT, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.FileInfo:
        handle = await self.vfs.files.open(inode, flags)
        # keep_cache: the page cache stays valid across opens; only the kernel changes a
        # file's content (remote revisions get new inodes, see vfs.invalidate).
        return pyfuse3.FileInfo(fh=pyfuse3.FileHandleT(handle.fh), keep_cache=True)

    @_request
    async def create(
        self,
        parent_inode: pyfuse3.InodeT,
        name: pyfuse3.FileNameT,
        mode: pyfuse3.ModeT,
        flags: pyfuse3.FlagT,
        ctx: pyfuse3.RequestContext,
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        node = self.vfs.tree.create_file(parent_inode, name, mode, _caller(ctx))
        handle = await self.vfs.files.open(node.ino, flags)
        info = pyfuse3.FileInfo(fh=pyfuse3.FileHandleT(handle.fh), keep_cache=True)
        return info, self._new_entry(node)

    @_request
    async def read(self, fh: pyfuse3.FileHandleT, off: int, size: int) -> bytes:
        return await self.vfs.files.read(fh, off, size)

    @_request
    async def write(self, fh: pyfuse3.FileHandleT, off: int, buf: bytes) -> int:
        return await self.vfs.files.write(fh, off, buf)

    @_request
    async def flush(self, fh: pyfuse3.FileHandleT) -> None:
        """ENOSYS, so that the kernel never sends FLUSH again (one request fewer per
        close(), a fifth of the requests of creating a file).

        Nothing is lost: with the writeback cache the kernel writes a file's dirty pages
        (and reports their errors to close()) before it would send FLUSH, and close() must
        not wait for uploads anyway; the commit follows the last RELEASE. FLUSH's other
        use, dropping a process's POSIX locks, is the kernel's own here (no lock handlers).
        """
        raise Unimplemented("FLUSH has nothing to do here")

    @_request
    async def release(self, fh: pyfuse3.FileHandleT) -> None:
        self.vfs.files.release(fh)

    @_request
    async def fsync(self, fh: pyfuse3.FileHandleT, datasync: bool) -> None:
        await self.vfs.files.fsync(fh)

    # --- directories ---------------------------------------------------------------------

    @_request
    async def opendir(
        self, inode: pyfuse3.InodeT, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.FileHandleT:
        directory = self.vfs.tree.opendir(inode)
        return pyfuse3.FileHandleT(self.vfs.handles.open_dir(directory.ino).fh)

    @_request
    async def readdir(
        self, fh: pyfuse3.FileHandleT, start_id: int, token: pyfuse3.ReaddirToken
    ) -> None:
        ino = self.vfs.handles.dir(fh).ino
        for entry in self.vfs.tree.readdir(ino, start_id):
            if not pyfuse3.readdir_reply(token, entry.name, self._attrs(entry.node), entry.offset):
                return
            if entry.counted:
                self.vfs.inodes.remember(entry.node.ino)

    @_request
    async def releasedir(self, fh: pyfuse3.FileHandleT) -> None:
        self.vfs.handles.close_dir(fh)

    @_request
    async def fsyncdir(self, fh: pyfuse3.FileHandleT, datasync: bool) -> None:
        self.vfs.handles.dir(fh)
        await self.vfs.files.sync_state()

    @_request
    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        stats = self.vfs.statfs.stats()
        data = pyfuse3.StatvfsData()
        data.f_bsize = data.f_frsize = stats.block_size
        data.f_blocks = stats.blocks
        data.f_bfree = stats.blocks_free
        data.f_bavail = stats.blocks_avail
        data.f_files = stats.files
        data.f_ffree = data.f_favail = stats.files_free
        data.f_namemax = stats.name_max
        return data

    # --- extended attributes -------------------------------------------------------------

    @_request
    async def setxattr(
        self,
        inode: pyfuse3.InodeT,
        name: pyfuse3.XAttrNameT,
        value: bytes,
        ctx: pyfuse3.RequestContext,
    ) -> None:
        self.vfs.xattrs.set(inode, name, value)

    @_request
    async def getxattr(
        self, inode: pyfuse3.InodeT, name: pyfuse3.XAttrNameT, ctx: pyfuse3.RequestContext
    ) -> bytes:
        if inode == ROOT_INO and name == CONTROL_PID_XATTR:
            return str(os.getpid()).encode()
        return self.vfs.xattrs.get(inode, name)

    @_request
    async def listxattr(
        self, inode: pyfuse3.InodeT, ctx: pyfuse3.RequestContext
    ) -> Sequence[pyfuse3.XAttrNameT]:
        return self.vfs.xattrs.list(inode)

    @_request
    async def removexattr(
        self, inode: pyfuse3.InodeT, name: pyfuse3.XAttrNameT, ctx: pyfuse3.RequestContext
    ) -> None:
        self.vfs.xattrs.remove(inode, name)
