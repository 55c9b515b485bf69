"""One process at a time per state directory: the mount daemon, or an unmounted `sync`.

The lock is an `flock` on `mountfs.pid`, held for the process's life and released by the
kernel when it dies (a `kill -9` leaves no stale lock). The file holds the holder's pid so
that `mountfs umount` can wait for it and an error can name it.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

PID_FILE = "mountfs.pid"


class StateBusy(RuntimeError):
    """Another mountfs process holds the state directory."""


def lock_state(state_dir: Path) -> IO[str]:
    """Lock `state_dir` for this process; keep the returned file open to keep the lock.

    Raises:
        StateBusy: another process holds it (the message names its pid).
    """
    lock = open(state_dir / PID_FILE, "a+")  # noqa: SIM115  (held by the caller)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip() or "?"
        lock.close()
        raise StateBusy(
            f"{state_dir} is in use by another mountfs process (pid {holder})"
        ) from None
    lock.seek(0)
    lock.truncate()
    lock.write(f"{os.getpid()}\n")
    lock.flush()
    return lock
