"""The one place where exceptions become errnos.

Every FUSE handler is wrapped by `fuse_errors`: pyfuse3 can only handle `FUSEError`, and any
other exception escaping a handler stops its main loop and leaves a dead mount
(PYFUSE3-NOTES §0). The mapping:

- `FsError` subclasses (`mountfs.vfs.errors`) by the table below: expected outcomes,
  logged at DEBUG (ContentUnavailable at WARNING: the user will want to know);
- `OSError` from a local call keeps its errno (a full disk is ENOSPC, as it should be);
  ENOSPC/EDQUOT are logged as warnings, anything else as an error with its traceback;
- SQLite "database or disk is full" is ENOSPC; any other SQLite error is a failure;
- everything else is a bug: logged with its traceback, answered EIO.

`trio.Cancelled` and other BaseExceptions pass through untouched (they are not errors of
the request, and only happen when the whole loop shuts down).
"""

from __future__ import annotations

import errno
import functools
import logging
import sqlite3
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

import pyfuse3

from mountfs.vfs.errors import (
    AlreadyExists,
    BadHandle,
    ContentUnavailable,
    CrossDevice,
    FileTooLarge,
    FsError,
    InvalidArgument,
    IsADirectory,
    NameTooLong,
    NoAttribute,
    NotADirectory,
    NotEmpty,
    NotFound,
    NotPermitted,
    NotSupported,
    ReadOnly,
    Unimplemented,
    Unreachable,
)

__all__ = ["ERRNOS", "fuse_errors", "to_fuse_error"]

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

_SQLITE_FULL = 13

ERRNOS: dict[type[FsError], int] = {
    NotFound: errno.ENOENT,
    AlreadyExists: errno.EEXIST,
    NotADirectory: errno.ENOTDIR,
    IsADirectory: errno.EISDIR,
    NotEmpty: errno.ENOTEMPTY,
    NameTooLong: errno.ENAMETOOLONG,
    InvalidArgument: errno.EINVAL,  # also InvalidName (a subclass): non-UTF-8 names
    # The backend has no hard links, devices, FIFOs or sockets. EPERM is what link(2) and
    # mknod(2) answer on filesystems that cannot make them (e.g. FAT, vfat).
    NotPermitted: errno.EPERM,
    # ext4's answer for an xattr namespace it does not handle.
    NotSupported: errno.EOPNOTSUPP,
    Unimplemented: errno.ENOSYS,
    NoAttribute: pyfuse3.ENOATTR,  # ENODATA on Linux
    BadHandle: errno.EBADF,
    ReadOnly: errno.EROFS,
    # Into or out of a shared folder (another namespace): rename(2)'s answer across
    # filesystems, on which `mv` and file managers copy and delete instead.
    CrossDevice: errno.EXDEV,
    # The bytes are not here and could not be fetched: an I/O error in POSIX terms.
    ContentUnavailable: errno.EIO,
    # Past the largest file the backend stores: what write(2) and truncate(2) answer past
    # RLIMIT_FSIZE or a filesystem's maximum, so `cp` says "File too large" at once.
    FileTooLarge: errno.EFBIG,
    # Needs the backend, which cannot be reached: "Network is unreachable" says why.
    Unreachable: errno.ENETUNREACH,
}


def _fs_errno(exc: FsError) -> int:
    for cls in type(exc).__mro__:
        code = ERRNOS.get(cls)
        if code is not None:
            return code
    log.error("no errno for %r; answering EIO", exc)
    return errno.EIO


def to_fuse_error(exc: Exception, op: str) -> pyfuse3.FUSEError:
    """The FUSEError to answer for `exc` raised while handling `op`, after logging it."""
    if isinstance(exc, pyfuse3.FUSEError):
        return exc
    if isinstance(exc, FsError):
        code = _fs_errno(exc)
        if isinstance(exc, ContentUnavailable):
            log.warning("%s: %s", op, exc)
        elif isinstance(exc, BadHandle):
            log.error("%s: %s", op, exc)
        else:
            log.debug("%s: %s (%s)", op, type(exc).__name__, exc)
        return pyfuse3.FUSEError(code)
    if isinstance(exc, sqlite3.Error) and getattr(exc, "sqlite_errorcode", None) == _SQLITE_FULL:
        log.warning("%s: state database: %s", op, exc)
        return pyfuse3.FUSEError(errno.ENOSPC)
    if isinstance(exc, OSError) and exc.errno:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            log.warning("%s: %s", op, exc)
        else:
            log.error("%s failed", op, exc_info=exc)
        return pyfuse3.FUSEError(exc.errno)
    log.error("%s failed unexpectedly", op, exc_info=exc)
    return pyfuse3.FUSEError(errno.EIO)


def _brief(args: tuple[object, ...]) -> str:
    """Request arguments for the access log: payloads as sizes, no request contexts."""
    shown = []
    for arg in args:
        if isinstance(arg, bytes) and len(arg) > 64:
            shown.append(f"<{len(arg)} bytes>")
        elif isinstance(arg, pyfuse3.RequestContext):
            continue
        elif isinstance(arg, pyfuse3.EntryAttributes | pyfuse3.SetattrFields):
            shown.append(type(arg).__name__)
        else:
            shown.append(repr(arg))
    return ", ".join(shown)


def fuse_errors(
    handler: Callable[P, Coroutine[Any, Any, R]],
) -> Callable[P, Coroutine[Any, Any, R]]:
    """Wrap an async FUSE handler so that only FUSEError ever leaves it."""
    op = handler.__name__

    @functools.wraps(handler)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        if log.isEnabledFor(logging.DEBUG):  # the access log (--log-level DEBUG)
            log.debug("%s(%s)", op, _brief(args[1:]))
        try:
            return await handler(*args, **kwargs)
        except Exception as exc:
            raise to_fuse_error(exc, op) from None

    return wrapper
