"""Why a filesystem operation was refused, in the filesystem's own words.

The vfs layer raises these; `mountfs.fuse.errno_map` is the one place that turns them into
errnos. Each class names one POSIX condition, independent of how FUSE reports it:

    MountfsError
    └── FsError
        ├── NotFound            no such name, inode or handle target
        ├── AlreadyExists       the name is taken (create, mkdir, RENAME_NOREPLACE)
        ├── NotADirectory       a directory was needed
        ├── IsADirectory        a non-directory was needed
        ├── NotEmpty            directory still has entries
        ├── NameTooLong         a name over 255 bytes, a symlink target over 4096
        ├── InvalidArgument     a request that can never succeed as asked
        │   └── InvalidName     a name the backend cannot store (not UTF-8)
        ├── NotPermitted        the backend cannot represent it (hard links, devices)
        ├── NotSupported        an xattr namespace other than user.*
        ├── NoAttribute         no such extended attribute
        ├── BadHandle           a file handle the kernel never got from us (a bug)
        ├── ReadOnly            the node cannot be changed (reserved for read-only views)
        ├── CrossDevice         a rename between two shared folders' trees (copy instead)
        └── ContentUnavailable  bytes not cached and the fetch failed (offline, server)
"""

from __future__ import annotations

from mountfs.errors import MountfsError

__all__ = [
    "AlreadyExists",
    "BadHandle",
    "ContentUnavailable",
    "CrossDevice",
    "FileTooLarge",
    "FsError",
    "InvalidArgument",
    "InvalidName",
    "IsADirectory",
    "NameTooLong",
    "NoAttribute",
    "NotADirectory",
    "NotEmpty",
    "NotFound",
    "NotPermitted",
    "NotSupported",
    "ReadOnly",
    "Unreachable",
]


class FsError(MountfsError):
    """A filesystem operation refused for a reason the caller can understand."""


class NotFound(FsError):
    pass


class AlreadyExists(FsError):
    pass


class NotADirectory(FsError):
    pass


class IsADirectory(FsError):
    pass


class NotEmpty(FsError):
    pass


class NameTooLong(FsError):
    pass


class InvalidArgument(FsError):
    pass


class InvalidName(InvalidArgument):
    """A name (or symlink target) that is not valid UTF-8.

    Local filesystems accept any bytes but `/` and NUL; the backend stores names as UTF-8
    text (JSON), shared with devices whose filesystems use Unicode names, so such a name
    could never be synced. Refusing it at once is better than a file that silently never
    reaches the cloud.
    """


class NotPermitted(FsError):
    pass


class NotSupported(FsError):
    pass


class Unimplemented(FsError):
    """ENOSYS: the kernel stops sending this kind of request for the rest of the mount
    (for FLUSH: `Operations.flush`)."""


class NoAttribute(FsError):
    pass


class BadHandle(FsError):
    pass


class CrossDevice(FsError):
    """A rename would move a node into or out of a shared folder, which lives in another
    namespace: answered like a rename across filesystems, so `mv` copies and deletes."""


class ReadOnly(FsError):
    pass


class FileTooLarge(FsError):
    """The file would grow past the largest size the backend stores (`max_file_bytes`)."""


class ContentUnavailable(FsError):
    """The bytes are not in the cache and could not be fetched."""


class Unreachable(FsError):
    """The answer needs the backend and it cannot be reached (`.versions` listings, which
    are not kept locally)."""
