"""`mountfs pause`, `resume` and `cancel PATH`: what they do to a device's transfers.

A running mount answers them over its control socket (`mountfs.control`; the daemon's
handler passes `COMMANDS` here); without a mount the CLI calls the same functions on the
state directory (under its lock), so they work either way:

- **pause / resume** flip the device's `PauseGate` (persisted as `STATE/transfers.paused`,
  so a paused device stays paused across restarts of the mount); see
  `mountfs.sync.transfers`.
- **cancel PATH** drops the pending upload of one file: a running upload of it is
  abandoned, its local content moves to `STATE/trash/` (kept `TRASH_DAYS` days, named in
  the answer), and the file goes back to its last synced revision (read on demand from the
  backend again), or goes away if it never had one. A file still open for writing is
  refused (the kernel would write the old bytes back), and so is one whose commit is
  already on its way (too late: the revision exists).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mountfs.state import extents, nodes
from mountfs.state.schema import EXTENT_DIRTY, EXTENT_PRESENT
from mountfs.sync import manifests
from mountfs.sync.pinning import MOUNTPOINT_META, account_path
from mountfs.sync.transfers import Transfers
from mountfs.sync.unmounted import unmounted_state
from mountfs.sync.upload import Uploader
from mountfs.types import InodeNo, Manifest
from mountfs.vfs import Vfs, build_vfs
from mountfs.vfs.errors import FsError

__all__ = [
    "COMMANDS",
    "TRASH_DAYS",
    "TRASH_DIR",
    "CancelError",
    "Cancelled",
    "cancel",
    "cancel_unmounted",
    "handle",
]

log = logging.getLogger(__name__)

COMMANDS = frozenset({"pause", "resume", "cancel"})
TRASH_DIR = "trash"
TRASH_DAYS = 7
ROOT_INO = 1


class CancelError(Exception):
    """Nothing to cancel, or not now (the message says why)."""


@dataclass(frozen=True, slots=True)
class Cancelled:
    """The answer of `mountfs cancel` (`--json`).

    Attributes:
        path: the file, below the mount root.
        outcome: "reverted" (back to its last synced revision) or "removed" (it had none).
        trash: where the discarded local content was put.
        revision: the revision the file is back at ("reverted" only).
    """

    path: str
    outcome: str
    trash: str
    revision: str | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


async def handle(
    request: dict[str, Any],
    vfs: Vfs,
    uploader: Uploader,
    transfers: Transfers,
    state_dir: Path,
) -> dict[str, Any]:
    """Answer one of `COMMANDS` for a running mount."""
    command = request.get("cmd")
    if command == "pause":
        transfers.gate.pause()
        return {"ok": True, "paused": True}
    if command == "resume":
        transfers.gate.resume()
        return {"ok": True, "paused": False}
    if command == "cancel":
        path = _account_path(vfs, str(request["path"]), request.get("abs"))
        try:
            done = cancel(vfs, uploader, state_dir, path)
        except CancelError as exc:
            return {"ok": False, "error": str(exc)}
        return {"ok": True, "cancelled": done.to_json()}
    return {"ok": False, "error": f"unknown command {command!r}"}


def cancel(vfs: Vfs, uploader: Uploader | None, state_dir: Path, path: str) -> Cancelled:
    """Drop the pending upload of `path` (below the mount root); see the module docstring.

    Synchronous on purpose: no other request may run between the checks and the change.
    """
    parent, node = _resolve(vfs, path)
    ino = node.ino
    if node.kind != "file":
        raise CancelError(f"{path}: not a file")
    if not node.dirty:
        raise CancelError(f"{path}: no pending upload (it is in sync)")
    if uploader is not None and uploader.committing(ino):
        raise CancelError(f"{path}: too late, its revision is being committed")
    if any(h.ino == ino for h in vfs.handles.open_files()):
        raise CancelError(f"{path}: still open; close it first")
    if uploader is not None:
        uploader.cancel(ino)
    trash = _to_trash(vfs, state_dir, ino, node.name or str(ino))
    name = node.name or ""
    if node.remote_head_revision is None:
        vfs.tree.unlink(parent, name.encode())
        vfs.invalidator.entry(parent, name)
        log.info("cancel %s: never synced; removed (content in %s)", path, trash)
        return Cancelled(path, "removed", str(trash), None)
    # With the writeback cache the kernel owns the size and pages of an inode it knows:
    # the synced content comes back under a new inode number, as a remote change does
    # (`nodes.renumber`, see `mountfs.sync.apply`).
    renumbered = vfs.inodes.in_use(ino)
    with vfs.db.transaction() as conn:
        target = ino
        if renumbered:
            chunk_map = manifests.load(conn, ino)
            target = nodes.renumber(conn, ino).ino
            manifest = Manifest(node.remote_size, tuple(ref for ref, _ in chunk_map))
            manifests.replace(conn, target, manifest, {r.hash: k for r, k in chunk_map})
        extents.clear(conn, target, EXTENT_DIRTY)
        extents.clear(conn, target, EXTENT_PRESENT)
        conn.execute(
            "UPDATE nodes SET size = remote_size, complete = (remote_size = 0), dirty = 0, "
            "content_gen = content_gen + 1 WHERE ino = ?",
            (target,),
        )
    if renumbered:
        vfs.invalidator.entry(parent, name, deleted=ino)
        vfs.inodes.maybe_purge(ino)
    else:
        vfs.invalidator.inode(ino, True)
    revision = node.remote_head_revision
    log.info("cancel %s: back to revision %s (content in %s)", path, revision, trash)
    return Cancelled(path, "reverted", str(trash), node.remote_head_revision)


def _account_path(vfs: Vfs, typed: str, absolute: object) -> str:
    """What the user names: a path on the mount, `cloud:/a/b`, or `a/b` in the account."""
    if typed.startswith("cloud:"):
        return "/" + typed.removeprefix("cloud:").strip("/")
    shown = absolute if isinstance(absolute, str) else None
    return account_path(typed, shown, vfs.db.get_meta(MOUNTPOINT_META))


def cancel_unmounted(state_dir: Path, typed: str, absolute: str | None) -> Cancelled:
    """`cancel` on the state of a device whose mount is not running (under its lock)."""
    with unmounted_state(state_dir) as state:
        vfs = build_vfs(state.db, state.cache)
        return cancel(vfs, None, state_dir, _account_path(vfs, typed, absolute))


def _resolve(vfs: Vfs, path: str) -> tuple[int, nodes.Node]:
    parts = [p for p in path.split("/") if p and p != "."]
    if not parts:
        raise CancelError("cancel needs a file, not the root")
    parent = ROOT_INO
    node = None
    for i, part in enumerate(parts):
        try:
            node = vfs.tree.lookup(parent, part.encode())
        except FsError as exc:
            raise CancelError(f"{path}: no such file ({exc})") from exc
        if i < len(parts) - 1:
            parent = node.ino
    assert node is not None
    return parent, node


def _to_trash(vfs: Vfs, state_dir: Path, ino: InodeNo, name: str) -> Path:
    """Move the file's cache file (its local content) into the trash; return its path."""
    trash_dir = state_dir / TRASH_DIR
    trash_dir.mkdir(mode=0o700, exist_ok=True)
    prune_trash(trash_dir)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    target = trash_dir / f"{stamp}-{ino}-{name}"
    source = vfs.cache.path(ino)
    try:
        os.rename(source, target)
    except FileNotFoundError:  # never written (an empty file): keep an empty copy
        target.touch(mode=0o600)
    os.utime(target)  # the trash keeps it TRASH_DAYS from now, not from its last write
    vfs.cache.drop(ino)  # the cache file is gone: forget its space
    return target


def prune_trash(trash_dir: Path, days: float = TRASH_DAYS) -> None:
    """Delete trashed content older than `days`."""
    limit = time.time() - days * 86400
    for entry in os.scandir(trash_dir):
        if entry.is_file(follow_symlinks=False) and entry.stat().st_mtime < limit:
            Path(entry.path).unlink(missing_ok=True)
