"""Files and folders kept downloaded for offline use: `mountfs pin` / `mountfs unpin`.

Content is normally fetched on first read and may be evicted again. A *pin* (a row of
`pins`, by node id, see `mountfs.state.pins`) changes both for everything it covers: the
pinned node and, for a folder, every file below it, including files that arrive later and
new remote revisions of pinned files.

- **Kept downloaded.** The `Pinner` task of a mount downloads every byte of every covered
  file that is not cached, after a pin, whenever remote content arrives
  (`RemoteApplier.on_content` -> `kick()`), and every `PIN_POLL` seconds (files moved into a
  pinned folder, retries after an outage). `mountfs sync` waits for it (`settle`), so a
  synced device holds every pinned byte.
- **Never evicted.** `BlockCache.evict` skips covered files (`pins.covered`).

The control socket carries `{"cmd": "pin" | "unpin", "path": ..., "abs": ...}` and
`{"cmd": "pins"}` to a running mount (`handle`). Without a mount, the CLI changes the
`pins` table itself (`pin_unmounted`, `unpin_unmounted`, `list_unmounted`) and the content
comes at the next mount or `mountfs sync`.

Paths: `abs` is the path the user typed, made absolute by the CLI. If it lies inside the
mount point (the running mount's, or the last one recorded in `meta.mountpoint`) it is
taken relative to it; otherwise the path as typed is a path inside the account (`docs`,
`/docs/a.txt`), so pins can be managed without a mount.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import trio

from mountfs.cache.block_cache import BlockCache
from mountfs.errors import CorruptChunk
from mountfs.state import nodes, pins
from mountfs.state.db import DB_FILE, StateDb, open_state
from mountfs.state.lock import lock_state
from mountfs.state.schema import ROOT_INO
from mountfs.sync.fetch import Fetcher
from mountfs.transport.blocks import ObjectMismatch
from mountfs.transport.retry import RetryPolicy, is_temp_failure
from mountfs.types import InodeNo

__all__ = [
    "PIN_COMMANDS",
    "PinError",
    "PinInfo",
    "Pinner",
    "list_unmounted",
    "pin_unmounted",
    "unpin_unmounted",
]

log = logging.getLogger(__name__)

PIN_COMMANDS = frozenset({"pin", "unpin", "pins"})
"""Control-socket commands that `Pinner.handle` answers."""

PIN_POLL = 30.0
"""Seconds between passes when nothing kicks the pinner."""

DOWNLOAD_WINDOW = 64 << 20
"""Bytes of one file fetched per step (bounds the memory of a pass over a huge file)."""

BAD_RETRY = 300.0
"""A pinned file whose chunks fail verification is tried again after this many seconds."""

BACKOFF = RetryPolicy(attempts=None, base=1.0, cap=30.0)

MOUNTPOINT_META = "mountpoint"
"""`meta` key: the mount point of the last mount (to resolve paths without a mount)."""


class PinError(Exception):
    """A pin request the user must correct (no such path, not pinned)."""


@dataclass(frozen=True, slots=True)
class PinInfo:
    """One pin as `mountfs pin` lists it.

    Attributes:
        path: inside the account, `/`-separated, `/` for the root (None if the node is gone).
        missing_bytes: covered bytes not downloaded yet (0 = fully downloaded).
    """

    path: str | None
    node_id: str
    kind: str
    files: int
    bytes: int
    missing_bytes: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# --- paths ---------------------------------------------------------------------------------


def account_path(typed: str, absolute: str | None, mountpoint: str | None) -> str:
    """The path inside the account that the user means (see the module docstring)."""
    if absolute and mountpoint:
        inside = os.path.relpath(absolute, mountpoint)
        if inside == ".":
            return "/"
        if not inside.startswith(".."):
            return "/" + inside
    return "/" + typed.strip("/")


def resolve(conn: sqlite3.Connection, path: str) -> nodes.Node:
    """The linked node at `path` (inside the account).

    Raises:
        PinError: no such path.
    """
    node = nodes.get(conn, ROOT_INO)
    for part in PurePosixPath(path).parts:
        if part == "/" or part == ".":
            continue
        if node is None or node.kind != "dir":
            node = None
            break
        node = nodes.by_name(conn, node.ino, part)
    if node is None:
        raise PinError(f"no such file or folder in the account: {path}")
    return node


def path_of(conn: sqlite3.Connection, node: nodes.Node) -> str | None:
    """The node's path inside the account, or None if it has no name any more."""
    parts: list[str] = []
    current: nodes.Node | None = node
    while current is not None and current.ino != ROOT_INO:
        if current.parent_ino is None or current.name is None:
            return None
        parts.append(current.name)
        current = nodes.get(conn, current.parent_ino)
    return "/" + "/".join(reversed(parts))


def _info(conn: sqlite3.Connection, node: nodes.Node) -> PinInfo:
    totals = pins.totals(conn, node.node_id)
    return PinInfo(
        path=path_of(conn, node),
        node_id=node.node_id,
        kind=node.kind,
        files=totals.files,
        bytes=totals.bytes,
        missing_bytes=totals.missing_bytes,
    )


def listing(conn: sqlite3.Connection) -> list[PinInfo]:
    """Every pin whose node still exists, oldest first."""
    result = []
    for node_id in pins.node_ids(conn):
        node = nodes.by_node_id(conn, node_id)
        if node is not None and node.linked:
            result.append(_info(conn, node))
    return result


def add_pin(db: StateDb, path: str, now_ns: int) -> PinInfo:
    """Pin the node at `path` (idempotent)."""
    node = resolve(db.conn, path)
    with db.transaction() as conn:
        pins.add(conn, node.node_id, now_ns)
    return _info(db.conn, node)


def remove_pin(db: StateDb, path: str) -> PinInfo:
    """Unpin the node at `path`; its content becomes ordinary cache (evictable).

    Raises:
        PinError: the node is not pinned itself (a file inside a pinned folder cannot be
            unpinned alone: unpin the folder).
    """
    node = resolve(db.conn, path)
    info = _info(db.conn, node)
    with db.transaction() as conn:
        if not pins.remove(conn, node.node_id):
            raise PinError(f"{path} is not pinned" + _covering_hint(conn, node))
    return info


def _covering_hint(conn: sqlite3.Connection, node: nodes.Node) -> str:
    current = node
    while current.parent_ino is not None:
        parent = nodes.get(conn, current.parent_ino)
        if parent is None:
            break
        if parent.node_id in set(pins.node_ids(conn)):
            return f" (it is inside the pinned folder {path_of(conn, parent)})"
        current = parent
    return ""


def drop_vanished(db: StateDb) -> int:
    """Forget pins whose node was deleted; return how many."""
    with db.transaction() as conn:
        return conn.execute(
            "DELETE FROM pins WHERE node_id NOT IN (SELECT node_id FROM nodes "
            f"WHERE parent_ino IS NOT NULL OR ino = {ROOT_INO})"
        ).rowcount


# --- the task of a mount ---------------------------------------------------------------------


class Pinner:
    """Keeps pinned content downloaded and answers the pin commands of a running mount.

    Args:
        fetcher: the unbounded `Fetcher` (a pinned download may take as long as it needs).
        mountpoint: where this mount is (recorded in `meta` for use without a mount).
    """

    def __init__(
        self,
        db: StateDb,
        cache: BlockCache,
        fetcher: Fetcher,
        *,
        mountpoint: Path | None = None,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self._db = db
        self._cache = cache
        self._fetcher = fetcher
        self._clock = clock
        self._kicked = trio.Event()
        self._lock = trio.Lock()
        self._bad: dict[InodeNo, float] = {}
        self._mountpoint = str(mountpoint) if mountpoint is not None else None
        if self._mountpoint is not None:
            with db.transaction():
                db.set_meta(MOUNTPOINT_META, self._mountpoint)

    def kick(self, ino: InodeNo | None = None) -> None:
        """Look for missing pinned content now (remote content arrived, a pin was added)."""
        self._kicked.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Download missing pinned content until cancelled (start it with `nursery.start`)."""
        task_status.started()
        failures = 0
        while True:
            try:
                await self.download_missing()
                failures = 0
            except Exception as exc:
                failures += 1
                if is_temp_failure(exc):
                    log.log(
                        logging.DEBUG if failures > 1 else logging.INFO,
                        "pinned downloads wait for the backend (%s)",
                        exc,
                    )
                else:
                    log.error("pinned download failed", exc_info=exc)
            wait = PIN_POLL if failures == 0 else BACKOFF.delay(failures)
            with trio.move_on_after(wait):
                await self._kicked.wait()
            self._kicked = trio.Event()

    async def download_missing(self) -> int:
        """One pass: fetch every missing byte of every covered file; return files left.

        Files whose chunks failed verification are skipped for `BAD_RETRY` seconds (the
        fetcher has logged the error) and not counted as left.

        Raises:
            Offline / ApiError: the backend could not deliver; the pass stops there.
        """
        if not pins.any_pins(self._db.conn):
            return 0
        async with self._lock:
            drop_vanished(self._db)
            now = time.monotonic()
            left = 0
            for pinned in pins.files(self._db.conn, only_missing=True):
                if self._bad.get(pinned.ino, 0) > now:
                    continue
                try:
                    await self._download(pinned.ino)
                except (CorruptChunk, ObjectMismatch):
                    self._bad[pinned.ino] = now + BAD_RETRY
                    continue
                node = nodes.get(self._db.conn, pinned.ino)
                if node is not None and node.linked and not node.complete:
                    left += 1  # renamed out of reach meanwhile, or written past the fetch
            return left

    async def _download(self, ino: InodeNo) -> None:
        offset = 0
        while True:
            node = nodes.get(self._db.conn, ino)  # re-read: it may change at every await
            if node is None or node.complete or not node.linked:
                return  # done, or retired by new remote content (the next pass gets that)
            end = min(node.size, node.remote_size)
            if offset >= end:
                break
            step = min(end, offset + DOWNLOAD_WINDOW)
            await self._fetcher.ensure_present(ino, offset, step)
            offset = step
        self._mark_complete(ino)

    def _mark_complete(self, ino: InodeNo) -> None:
        """Every byte is cached: the cache file is the content (as `Files` does on reads)."""
        with self._db.transaction() as conn:
            nodes.complete_if_whole(conn, ino)

    async def settle(self, seconds: float) -> bool:
        """Download what is missing, for at most `seconds`; True if nothing is left.

        What `mountfs sync` adds to its push and pull: a synced device holds every pinned
        byte. An unreachable backend is retried until the time is up.
        """
        if not pins.any_pins(self._db.conn):
            return True
        with trio.move_on_after(seconds):
            while True:
                try:
                    if await self.download_missing() == 0:
                        return True
                except Exception as exc:
                    if not is_temp_failure(exc):
                        raise
                await trio.sleep(0.25)
        return False

    # --- control commands ------------------------------------------------------------------

    async def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        """Answer `pin`, `unpin` and `pins` from the control socket."""
        command = request.get("cmd")
        try:
            if command == "pins":
                return self._answer(None)
            path = account_path(
                str(request.get("path", "")), _opt_str(request.get("abs")), self._mountpoint
            )
            if command == "pin":
                add_pin(self._db, path, self._clock())
                self.kick()
                wait = float(request.get("wait") or 0)
                if wait > 0 and not await self.settle(wait):
                    return {"ok": False, "error": f"not fully downloaded after {wait:g}s"}
                return self._answer(_info(self._db.conn, resolve(self._db.conn, path)))
            if command == "unpin":
                return self._answer(remove_pin(self._db, path))
        except PinError as exc:
            return {"ok": False, "error": str(exc)}
        return {"ok": False, "error": f"unknown command {command!r}"}

    def _answer(self, changed: PinInfo | None) -> dict[str, Any]:
        conn = self._db.conn
        answer: dict[str, Any] = {
            "ok": True,
            "pins": [p.to_json() for p in listing(conn)],
            "totals": asdict(pins.totals(conn)),
        }
        if changed is not None:
            answer["changed"] = changed.to_json()
        return answer


def _opt_str(value: object) -> str | None:
    return None if value is None else str(value)


# --- without a mount -------------------------------------------------------------------------


def _open_unmounted(state_dir: Path) -> StateDb:
    return open_state(state_dir / DB_FILE)


def pin_unmounted(state_dir: Path, typed: str, absolute: str | None) -> PinInfo:
    """Record a pin in the state of a device whose mount is not running.

    The content is downloaded at the next mount or `mountfs sync`.
    """
    lock = lock_state(state_dir)
    try:
        db = _open_unmounted(state_dir)
        try:
            path = account_path(typed, absolute, db.get_meta(MOUNTPOINT_META))
            return add_pin(db, path, time.time_ns())
        finally:
            db.close()
    finally:
        lock.close()


def unpin_unmounted(state_dir: Path, typed: str, absolute: str | None) -> PinInfo:
    """Remove a pin from the state of a device whose mount is not running."""
    lock = lock_state(state_dir)
    try:
        db = _open_unmounted(state_dir)
        try:
            path = account_path(typed, absolute, db.get_meta(MOUNTPOINT_META))
            return remove_pin(db, path)
        finally:
            db.close()
    finally:
        lock.close()


def list_unmounted(state_dir: Path) -> tuple[list[PinInfo], pins.Totals]:
    """The pins of a device whose mount is not running, read from its state."""
    db = _open_unmounted(state_dir)
    try:
        return listing(db.conn), pins.totals(db.conn)
    finally:
        db.close()
