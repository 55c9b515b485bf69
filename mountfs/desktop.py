"""Desktop notifications (freedesktop, through `notify-send`) about what the mount pulled.

What is announced:
- a conflicted copy appearing in the tree (a file whose name holds `(conflicted copy
  from`, see `sync.conflicts`), i.e. two devices changed the same file at once and both
  versions were kept. The copy is made by the device whose change lost, so the text says
  whose version sits in the copy: another device's (seen here through the journal) or
  this device's own;
- a share offered to the account (with the command that accepts it), accepted at once
  (the account accepts shares automatically), its role changed, or ended by its owner
  (the `share` entries of the account's journal, docs/protocol.md § Shares). The
  account's own leaving is not announced: the user did it.

Notifications are a view of the journal, nothing more: nothing waits for one, a failure to
show one is logged at debug level, and the files are there whether or not anyone saw the
bubble. To stay quiet, they are only sent when a desktop session can show them (a D-Bus
session bus in `DBUS_SESSION_BUS_ADDRESS` and `notify-send` on the PATH), only for changes
at most `MAX_AGE_S` old (a device catching up after a week offline does not replay a week
of bubbles), each node at most once per mount, and at most `MAX_PER_BATCH` per pulled
page (then one summary). `mountfs mount --no-notify` turns them off.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import trio

from mountfs.events import ShareNews
from mountfs.transport.api import JournalEntry

__all__ = [
    "CONFLICT_MARKER",
    "DesktopNotifier",
    "Notice",
    "conflict_notices",
    "notify_send_command",
    "share_notices",
]

log = logging.getLogger(__name__)

CONFLICT_MARKER = "(conflicted copy from"
MAX_AGE_S = 3600.0
MAX_PER_BATCH = 3
SEND_TIMEOUT_S = 5.0
QUEUE = 32
APP_NAME = "mountfs"


@dataclass(frozen=True, slots=True)
class Notice:
    """One desktop notification: a one-line summary and a body."""

    summary: str
    body: str
    icon: str = "dialog-warning"


def notify_send_command(env: Mapping[str, str] | None = None) -> str | None:
    """The `notify-send` to use, or None when no desktop session can show notifications."""
    env = os.environ if env is None else env
    if not env.get("DBUS_SESSION_BUS_ADDRESS"):
        return None
    return shutil.which("notify-send", path=env.get("PATH"))


def conflict_notices(
    entries: Sequence[JournalEntry],
    own_device_id: str,
    seen: set[str],
    now: datetime,
) -> list[Notice]:
    """The notices for the conflicted copies among `entries`; adds their nodes to `seen`."""
    found: list[tuple[JournalEntry, str]] = []
    for entry in entries:
        node = entry.node
        if entry.op not in ("create", "update") or node.kind != "file" or node.deleted:
            continue
        if CONFLICT_MARKER not in node.name or node.id in seen:
            continue
        if _age_s(entry.at, now) > MAX_AGE_S:
            continue
        seen.add(node.id)
        found.append((entry, node.name))
    notices = [_conflict_notice(name, entry.device_id == own_device_id) for entry, name in found]
    if len(notices) > MAX_PER_BATCH:
        extra = len(notices) - MAX_PER_BATCH + 1
        notices = notices[: MAX_PER_BATCH - 1] + [
            Notice("Conflicting changes", f"{extra} more files were changed on two devices at once")
        ]
    return notices


def share_notices(entries: Sequence[JournalEntry], seen: set[str], now: datetime) -> list[Notice]:
    """The notices for the `share` entries among `entries` (at most `MAX_PER_BATCH`, then
    a summary); each entry at most once (`seen` holds `share:<id>:<seq>`)."""
    notices: list[Notice] = []
    for entry in entries:
        news = ShareNews.of(entry)
        key = f"share:{news.id}:{entry.seq}" if news is not None else ""
        if news is None or key in seen or _age_s(entry.at, now) > MAX_AGE_S:
            continue
        seen.add(key)
        notice = _share_notice(news, entry.node.name, entry.node.kind)
        if notice is not None:
            notices.append(notice)
    if len(notices) > MAX_PER_BATCH:
        extra = len(notices) - MAX_PER_BATCH + 1
        notices = notices[: MAX_PER_BATCH - 1] + [
            Notice("Shared with you", f"{extra} more shares changed", "folder-remote")
        ]
    return notices


def _share_notice(news: ShareNews, name: str, kind: str) -> Notice | None:
    what = f"the folder “{name}”" if kind == "dir" else f"“{name}”"
    if news.action == "offered":
        return Notice(
            f"{news.owner} shared {what} with you",
            f"You can {_can(news.role)}. Accept it with: mountfs shares accept {news.id}",
            "folder-remote",
        )
    if news.action == "shared":
        return Notice(
            f"{news.owner} shared {what} with you",
            f"It is in your drive as “{name}”; you can {_can(news.role)}.",
            "folder-remote",
        )
    if news.action == "role":
        return Notice(
            f"{news.owner} changed your access to {what}",
            f"You can now {_can(news.role)}.",
            "folder-remote",
        )
    if news.action == "unshared":
        return Notice(
            f"{news.owner} stopped sharing {what} with you",
            "It is no longer in your drive; edits not yet synced are kept in a copy of yours.",
            "folder-remote",
        )
    return None  # "left": the user did it


def _can(role: str) -> str:
    return "view and edit it" if role == "editor" else "view it"


def _conflict_notice(copy_name: str, made_here: bool) -> Notice:
    original = _original_name(copy_name)
    if made_here:
        body = (
            f"{original} was changed on another device at the same time. "
            f"Your version is kept as “{copy_name}”."
        )
    else:
        body = (
            f"{original} was changed on two devices at the same time. "
            f"The other version is kept as “{copy_name}”."
        )
    return Notice("Conflicting changes", body)


def _original_name(copy_name: str) -> str:
    """`report (conflicted copy from laptop 2026-11-24).pdf` → `report.pdf`."""
    stem, _, rest = copy_name.partition(f" {CONFLICT_MARKER}")
    closing = rest.find(")")
    return stem + (rest[closing + 1 :] if closing >= 0 else "")


def _age_s(at: str, now: datetime) -> float:
    try:
        when = datetime.fromisoformat(at)
    except ValueError:
        return 0.0
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return (now - when).total_seconds()


class DesktopNotifier:
    """Decides on pulled journal pages (`observe`) and shows the notices (`run`).

    Args:
        command: the `notify-send` executable (`notify_send_command()`).
        own_device_id: this device, to word notices about its own copies.
    """

    def __init__(self, command: str, own_device_id: str) -> None:
        self._command = command
        self._own_device_id = own_device_id
        self._seen: set[str] = set()
        self._send, self._receive = trio.open_memory_channel[Notice](QUEUE)

    @classmethod
    def if_available(cls, own_device_id: str) -> DesktopNotifier | None:
        command = notify_send_command()
        if command is None:
            log.debug("no desktop session (D-Bus, notify-send): no desktop notifications")
            return None
        return cls(command, own_device_id)

    def observe(self, entries: list[JournalEntry]) -> None:
        """An `SyncEngine.pulled` observer: queue the notices for one applied page."""
        now = datetime.now(UTC)
        found = conflict_notices(entries, self._own_device_id, self._seen, now)
        found += share_notices(entries, self._seen, now)
        for notice in found:
            try:
                self._send.send_nowait(notice)
            except trio.WouldBlock:
                log.debug("desktop notification dropped (queue full): %s", notice.body)

    async def run(self) -> None:
        """Show the queued notices, one after another, until cancelled."""
        async for notice in self._receive:
            await self._show(notice)

    async def _show(self, notice: Notice) -> None:
        argv = [
            self._command,
            f"--app-name={APP_NAME}",
            f"--icon={notice.icon}",
            notice.summary,
            notice.body,
        ]
        with trio.move_on_after(SEND_TIMEOUT_S):
            try:
                result = await trio.run_process(
                    argv, capture_stdout=True, capture_stderr=True, check=False
                )
            except OSError as exc:
                log.debug("notify-send failed: %s", exc)
                return
            if result.returncode != 0:
                log.debug("notify-send exited %d: %s", result.returncode, result.stderr[-500:])
