"""A minimal pyfuse3 passthrough filesystem: the price of the Python FUSE stack alone.

`bindfs` shows what FUSE costs in C. mountfs is written with pyfuse3 and trio, so the
fair question for its metadata figures is also: what does the same stack cost when a
handler does nothing but call the local disk? This daemon answers it. It mounts SOURCE at
MOUNTPOINT with the kernel settings mountfs uses (`default_permissions`, the writeback
cache, 300 s entry and attribute timeouts) and forwards every request to the same call on
the path below SOURCE, with no local state, no sync and no cache logic.

Run by the `pyfuse3` target of `scripts/bench` (targets.py):
`python -m scripts.benchmarks.passthrough SOURCE MOUNTPOINT`; it stays in the foreground
until unmounted. Inode numbers are the source's own (`st_ino`), mapped to every path seen
for them; hard links and renames are followed as `lookup` and `rename` report them.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
from collections.abc import Callable, Sequence
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import pyfuse3
import trio

TIMEOUT_S = 300.0
F = TypeVar("F", bound=Callable[..., Any])


def _errno(handler: F) -> F:
    """Turn an OSError of the local call into the FUSE error the kernel expects."""

    @wraps(handler)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return await handler(*args, **kwargs)
        except OSError as exc:
            raise pyfuse3.FUSEError(exc.errno or errno.EIO) from None

    return wrapper  # type: ignore[return-value]


class Passthrough(pyfuse3.Operations):
    """Every request forwarded to the path of its inode below the source directory."""

    enable_writeback_cache = True

    def __init__(self, source: Path) -> None:
        super().__init__()
        self._paths: dict[int, str] = {pyfuse3.ROOT_INODE: str(source)}
        self._lookups: dict[int, int] = {}

    def _path(self, inode: int) -> str:
        try:
            return self._paths[inode]
        except KeyError:
            raise pyfuse3.FUSEError(errno.ESTALE) from None

    def _child(self, parent: int, name: bytes) -> str:
        return os.path.join(self._path(parent), os.fsdecode(name))

    def _entry(self, path: str) -> pyfuse3.EntryAttributes:
        """Attributes for a reply that gives the kernel a lookup reference to `path`."""
        st = os.lstat(path)
        self._remember(path, st.st_ino)
        return _attributes(st)

    def _remember(self, path: str, inode: int) -> None:
        self._paths[inode] = path
        self._lookups[inode] = self._lookups.get(inode, 0) + 1

    @_errno
    async def lookup(self, parent_inode: int, name: bytes, ctx: Any = None) -> Any:
        return self._entry(self._child(parent_inode, name))

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        for inode, count in inode_list:
            left = self._lookups.get(inode, 0) - count
            if left > 0:
                self._lookups[inode] = left
            else:
                self._lookups.pop(inode, None)
                if inode != pyfuse3.ROOT_INODE:
                    self._paths.pop(inode, None)

    @_errno
    async def getattr(self, inode: int, ctx: Any = None) -> Any:
        return _attributes(os.lstat(self._path(inode)))

    @_errno
    async def setattr(self, inode: int, attr: Any, fields: Any, fh: Any, ctx: Any) -> Any:
        path = self._path(inode)
        if fields.update_size:
            os.truncate(path, attr.st_size)
        if fields.update_mode:
            os.chmod(path, stat.S_IMODE(attr.st_mode))
        if fields.update_uid or fields.update_gid:
            uid = attr.st_uid if fields.update_uid else -1
            gid = attr.st_gid if fields.update_gid else -1
            os.chown(path, uid, gid, follow_symlinks=False)
        if fields.update_atime or fields.update_mtime:
            st = os.lstat(path)
            atime = attr.st_atime_ns if fields.update_atime else st.st_atime_ns
            mtime = attr.st_mtime_ns if fields.update_mtime else st.st_mtime_ns
            os.utime(path, ns=(atime, mtime), follow_symlinks=False)
        return _attributes(os.lstat(path))

    @_errno
    async def readlink(self, inode: int, ctx: Any) -> bytes:
        return os.fsencode(os.readlink(self._path(inode)))

    @_errno
    async def opendir(self, inode: int, ctx: Any) -> int:
        self._path(inode)
        return inode

    @_errno
    async def readdir(self, fh: int, start_id: int, token: Any) -> None:
        base = self._path(fh)
        names = sorted(os.listdir(base))
        for index in range(start_id, len(names)):
            path = os.path.join(base, names[index])
            st = os.lstat(path)
            if not pyfuse3.readdir_reply(
                token, os.fsencode(names[index]), _attributes(st), index + 1
            ):
                return
            self._remember(path, st.st_ino)  # each accepted entry is a lookup reference

    @_errno
    async def mkdir(self, parent_inode: int, name: bytes, mode: int, ctx: Any) -> Any:
        path = self._child(parent_inode, name)
        os.mkdir(path, mode)
        return self._entry(path)

    @_errno
    async def rmdir(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        os.rmdir(self._child(parent_inode, name))

    @_errno
    async def unlink(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        os.unlink(self._child(parent_inode, name))

    @_errno
    async def symlink(self, parent_inode: int, name: bytes, target: bytes, ctx: Any) -> Any:
        path = self._child(parent_inode, name)
        os.symlink(os.fsdecode(target), path)
        return self._entry(path)

    @_errno
    async def link(self, inode: int, new_parent_inode: int, new_name: bytes, ctx: Any) -> Any:
        path = self._child(new_parent_inode, new_name)
        os.link(self._path(inode), path)
        return self._entry(path)

    @_errno
    async def rename(
        self,
        parent_old: int,
        name_old: bytes,
        parent_new: int,
        name_new: bytes,
        flags: int,
        ctx: Any,
    ) -> None:
        if flags:
            raise pyfuse3.FUSEError(errno.EINVAL)
        old, new = self._child(parent_old, name_old), self._child(parent_new, name_new)
        os.rename(old, new)
        inode = os.lstat(new).st_ino
        if inode in self._paths:
            self._paths[inode] = new
        if stat.S_ISDIR(os.lstat(new).st_mode):  # paths below a moved folder move with it
            prefix = old + os.sep
            for known, path in list(self._paths.items()):
                if path.startswith(prefix):
                    self._paths[known] = new + path[len(old) :]

    @_errno
    async def open(self, inode: int, flags: int, ctx: Any) -> Any:
        flags &= ~(os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_TRUNC)
        if flags & os.O_ACCMODE == os.O_WRONLY:  # the writeback cache reads to fill pages
            flags = (flags & ~os.O_ACCMODE) | os.O_RDWR
        return pyfuse3.FileInfo(fh=os.open(self._path(inode), flags))

    @_errno
    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: Any) -> Any:
        path = self._child(parent_inode, name)
        flags = (flags & ~(os.O_ACCMODE | os.O_APPEND)) | os.O_RDWR | os.O_CREAT
        fd = os.open(path, flags, mode)
        return pyfuse3.FileInfo(fh=fd), self._entry(path)

    @_errno
    async def read(self, fh: int, off: int, size: int) -> bytes:
        return os.pread(fh, size, off)

    @_errno
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        return os.pwrite(fh, buf, off)

    async def flush(self, fh: int) -> None:
        return None

    @_errno
    async def release(self, fh: int) -> None:
        os.close(fh)

    @_errno
    async def fsync(self, fh: int, datasync: bool) -> None:
        (os.fdatasync if datasync else os.fsync)(fh)

    @_errno
    async def statfs(self, ctx: Any) -> Any:
        st = os.statvfs(self._paths[pyfuse3.ROOT_INODE])
        out = pyfuse3.StatvfsData()
        for name in ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail"):
            setattr(out, name, getattr(st, name))
        for name in ("f_files", "f_ffree", "f_favail", "f_namemax"):
            setattr(out, name, getattr(st, name))
        return out


def _attributes(st: os.stat_result) -> pyfuse3.EntryAttributes:
    attrs = pyfuse3.EntryAttributes()
    for name in ("st_ino", "st_mode", "st_nlink", "st_uid", "st_gid", "st_rdev", "st_size"):
        setattr(attrs, name, getattr(st, name))
    attrs.st_atime_ns, attrs.st_mtime_ns = st.st_atime_ns, st.st_mtime_ns
    attrs.st_ctime_ns = st.st_ctime_ns
    attrs.st_blksize, attrs.st_blocks = st.st_blksize, st.st_blocks
    attrs.generation = 0
    attrs.entry_timeout = attrs.attr_timeout = TIMEOUT_S
    return attrs


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m scripts.benchmarks.passthrough SOURCE MOUNTPOINT", file=sys.stderr)
        return 2
    source, mountpoint = Path(argv[0]).resolve(), argv[1]
    options = set(pyfuse3.default_options) | {"fsname=passthrough", "subtype=pyfuse3"}
    pyfuse3.init(Passthrough(source), mountpoint, options)
    try:
        trio.run(pyfuse3.main)
    finally:
        pyfuse3.close(unmount=False)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
