"""Open file and directory handles.

A handle number (`fh`) names one `open()`/`opendir()` until its `release`. Numbers come from
one counter and are not reused within a mount, so a stray late request for a released
handle is caught (`BadHandle`) instead of reaching another file.

Content state is per inode, never per handle: with the writeback cache the kernel sends a
file's writes with the handle of *any* writable open of that inode (PYFUSE3-NOTES §2), so a
handle only tells which inode a request is about.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass

from mountfs.types import InodeNo
from mountfs.vfs.errors import BadHandle

__all__ = ["DirHandle", "FileHandle", "Handles"]


@dataclass(frozen=True, slots=True)
class FileHandle:
    fh: int
    ino: InodeNo
    flags: int

    @property
    def writable(self) -> bool:
        return self.flags & os.O_ACCMODE in (os.O_WRONLY, os.O_RDWR)


@dataclass(frozen=True, slots=True)
class DirHandle:
    fh: int
    ino: InodeNo


class Handles:
    """The handle tables and the number of open file handles per inode."""

    def __init__(self) -> None:
        self._next = itertools.count(1)
        self._files: dict[int, FileHandle] = {}
        self._dirs: dict[int, DirHandle] = {}
        self._open: dict[InodeNo, int] = {}
        self._writers: dict[InodeNo, int] = {}

    def open_file(self, ino: InodeNo, flags: int) -> FileHandle:
        handle = FileHandle(next(self._next), ino, flags)
        self._files[handle.fh] = handle
        self._open[ino] = self._open.get(ino, 0) + 1
        if handle.writable:
            self._writers[ino] = self._writers.get(ino, 0) + 1
        return handle

    def file(self, fh: int) -> FileHandle:
        try:
            return self._files[fh]
        except KeyError:
            raise BadHandle(f"no open file handle {fh}") from None

    def close_file(self, fh: int) -> FileHandle:
        handle = self.file(fh)
        del self._files[fh]
        _decrement(self._open, handle.ino)
        if handle.writable:
            _decrement(self._writers, handle.ino)
        return handle

    def open_count(self, ino: int) -> int:
        return self._open.get(InodeNo(ino), 0)

    def open_for_write(self, ino: int) -> bool:
        """True while a writable handle of `ino` is open (writes may still arrive).

        The sync engine waits for this to turn False (or for a quiet period) before it
        uploads, so as not to commit every intermediate state of a file being written.
        """
        return InodeNo(ino) in self._writers

    def open_dir(self, ino: InodeNo) -> DirHandle:
        handle = DirHandle(next(self._next), ino)
        self._dirs[handle.fh] = handle
        return handle

    def dir(self, fh: int) -> DirHandle:
        try:
            return self._dirs[fh]
        except KeyError:
            raise BadHandle(f"no open directory handle {fh}") from None

    def close_dir(self, fh: int) -> DirHandle:
        handle = self.dir(fh)
        del self._dirs[fh]
        return handle

    def open_files(self) -> list[FileHandle]:
        return list(self._files.values())


def _decrement(counts: dict[InodeNo, int], ino: InodeNo) -> None:
    left = counts[ino] - 1
    if left:
        counts[ino] = left
    else:
        del counts[ino]
