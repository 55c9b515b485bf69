"""What `mountfs status` reports, gathered in one place for the daemon and the CLI.

A running mount answers with live figures over the control socket; without one, the CLI
reads the state database directly (SQLite WAL lets a second process read while the mount
writes) and reports the device as not mounted.
"""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mountfs.cache.block_cache import CACHE_DIR
from mountfs.state import pins
from mountfs.state.db import DB_FILE
from mountfs.sync.transfers import PAUSE_FLAG


@dataclass(frozen=True, slots=True)
class Status:
    """The stable `--json` form of `mountfs status` (fields are only ever added)."""

    mounted: bool
    online: bool
    pending_files: int
    pending_bytes: int
    pending_changes: int
    cache_bytes: int
    cache_limit_bytes: int
    dirty_bytes: int
    last_sync: str | None
    uploaded_bytes: int = 0
    downloaded_bytes: int = 0
    pinned_files: int = 0
    """Files kept downloaded for offline use (`mountfs pin`)."""
    pinned_bytes: int = 0
    pinned_missing_bytes: int = 0
    """Pinned bytes not downloaded yet (0: everything pinned is on this device)."""
    paused: bool = False
    """Transfers are paused (`mountfs pause`; persists across restarts)."""
    transfers: list[dict[str, Any]] = field(default_factory=list)
    """One object per file being uploaded or downloaded now (`TransferInfo.to_json`:
    path, direction, bytes_done, bytes_total, rate_bps, eta_s, state); [] when idle."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def iso_from_ns(value: str | None) -> str | None:
    if not value:
        return None
    return dt.datetime.fromtimestamp(int(value) / 1e9, tz=dt.UTC).isoformat(timespec="seconds")


def pending_from_db(conn: sqlite3.Connection) -> tuple[int, int, int]:
    """(dirty files, their bytes, queued namespace changes).

    Only linked files count, as in the commit queue (`nodes.dirty_files`): a file deleted
    while still open keeps a dirty row until the kernel forgets it, but nothing of it will
    ever be sent, and counting it kept `mountfs sync` waiting for it until its timeout.
    """
    files, size = conn.execute(
        "SELECT count(*), coalesce(sum(size), 0) FROM nodes "
        "WHERE dirty = 1 AND parent_ino IS NOT NULL"
    ).fetchone()
    changes = conn.execute("SELECT count(*) FROM outbox").fetchone()[0]
    return int(files), int(size), int(changes)


def offline_status(state_dir: Path, cache_limit: int) -> Status:
    """Status of a device whose mount is not running, read from its files."""
    db_path = state_dir / DB_FILE
    files = size = changes = 0
    last_sync = None
    pinned = pins.Totals(0, 0, 0, 0)
    if db_path.exists():
        conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
        try:
            files, size, changes = pending_from_db(conn)
            row = conn.execute("SELECT value FROM meta WHERE key = 'last_sync_ns'").fetchone()
            last_sync = iso_from_ns(row[0] if row else None)
            if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'pins'").fetchone():
                pinned = pins.totals(conn)
        finally:
            conn.close()
    cache_bytes = 0
    cache_dir = state_dir / CACHE_DIR
    if cache_dir.is_dir():
        for entry in os.scandir(cache_dir):
            if entry.is_file(follow_symlinks=False):
                cache_bytes += entry.stat(follow_symlinks=False).st_blocks * 512
    return Status(
        mounted=False,
        online=False,
        pending_files=files,
        pending_bytes=size,
        pending_changes=changes,
        cache_bytes=cache_bytes,
        cache_limit_bytes=cache_limit,
        dirty_bytes=size,
        last_sync=last_sync,
        pinned_files=pinned.files,
        pinned_bytes=pinned.bytes,
        pinned_missing_bytes=pinned.missing_bytes,
        paused=(state_dir / PAUSE_FLAG).exists(),
    )
