"""The task that commits the state database's open group of transactions (state.db).

A group opens with the first transaction after a commit and is committed once FUSE
requests pause for `QUIET_S`, and after `MAX_AGE_S` at the latest during a burst. So a
burst (`rm -r`, `tar x`, `git checkout`) pays one commit per few hundred requests instead of
one each, and a lone change is committed within milliseconds. Everything that must not
wait for it (a push, `fsync`, ...) calls `StateDb.commit_group()` itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import trio

from mountfs.state.db import StateDb

__all__ = ["MAX_AGE_S", "QUIET_S", "GroupCommitter"]

log = logging.getLogger(__name__)

QUIET_S = 0.002
"""A pause this long between FUSE requests commits the group (a process's back-to-back
requests come well under a millisecond apart)."""

MAX_AGE_S = 0.02
"""The oldest change a group holds during a burst: bounds what a `kill -9` may take."""

_RETRY_S = 1.0


class GroupCommitter:
    """Switches `db` to grouped commits and commits each group in time (`run`).

    Args:
        db: the mount's state database.
        last_request: `time.monotonic()` of the latest FUSE request.
    """

    def __init__(self, db: StateDb, last_request: Callable[[], float]) -> None:
        self._db = db
        self._last_request = last_request
        self._opened = trio.Event()

    def _on_open(self) -> None:
        self._opened.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Group until cancelled; the group open then is committed on the way out."""
        self._db.on_group_open = self._on_open
        self._db.grouping = True
        task_status.started()
        try:
            while True:
                await self._opened.wait()
                self._opened = trio.Event()
                await self._commit_when_due()
        finally:
            self._db.on_group_open = None
            self._db.commit_group()
            self._db.grouping = False

    async def _commit_when_due(self) -> None:
        while self._db.group_open:
            now = time.monotonic()
            age = now - self._db.group_started
            quiet = now - self._last_request()
            if quiet >= QUIET_S or age >= MAX_AGE_S:
                try:
                    self._db.commit_group()
                except Exception:
                    log.exception("committing the state failed (will retry)")
                    await trio.sleep(_RETRY_S)
                    continue
                return
            await trio.sleep(min(QUIET_S - quiet, MAX_AGE_S - age))
