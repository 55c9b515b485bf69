"""fsync helpers for files and directories that must survive a crash once acknowledged.

A rename or link is durable only once its *directory* is fsynced, and a file's bytes only
once the file is; both are needed before the backend answers 2xx for something on disk.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["fsync_dir", "makedirs_durably"]


def fsync_dir(directory: Path) -> None:
    """Flush a directory's entries (new names, renames, unlinks) to stable storage."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def makedirs_durably(directory: Path) -> None:
    """`mkdir -p` that fsyncs each parent whose entry list it changed."""
    if directory.is_dir():
        return
    makedirs_durably(directory.parent)
    try:
        directory.mkdir()
    except FileExistsError:
        return
    fsync_dir(directory.parent)
