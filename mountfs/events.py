"""`mountfs events`: the journal told as what people did -- added, edited, moved, deleted.

The journal (protocol.md, "Journal") records every accepted change as the node's state
after it. To say "renamed a.txt to b.txt" or name the folder a deleted file was in, this
module replays the namespace's journal from its start (`Replay`): it keeps, per node, the
parent, name and kind, and turns each entry into at most one `Change`:

- `create` → added (files, folders, links);
- `commit` → edited; except the first content of a file committed by the device that
  created it within `FIRST_CONTENT_S` seconds, which is part of adding it (a new file
  reaches the backend as an empty create followed by its content);
- `update` → moved (other folder) or renamed (same folder); a change of mode or mtime
  alone is not listed. An update that takes the name of a file its device deleted in the
  entry just before is an atomic save (`rename()` over the old file, what editors do):
  one "edited" for that path, and the delete is not listed;
- `delete` → deleted;
- `share` (a share offered to the account, its role changed, or the share ended,
  docs/protocol.md § Shares) → `offered` (waiting for `mountfs shares accept`), `shared`
  (accepted at once: the account accepts shares automatically), `role` (now viewer or
  editor), `unshared` (the owner ended it) or `left` (the account left it). The line names
  the account that did it and the role; the share's place is not part of the tree replay.

Device labels come from the account's device list (`GET /devices`); a device of another
account (shared folders, later) is shown by the start of its id. The whole history is read
once per run: cheap for the journals of personal accounts (1,000 entries per request),
slower for very long ones.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mountfs.transport.api import ApiClient, JournalEntry

__all__ = ["Change", "Replay", "ShareNews", "format_change", "read_changes"]

FIRST_CONTENT_S = 60.0
"""A file's first content this soon after its creation (same device) is part of adding it."""


@dataclass(frozen=True, slots=True)
class Change:
    """One change a user made, as `mountfs events` shows it.

    Attributes:
        seq: the journal position of the entry that made it.
        at: when the backend accepted it (ISO-8601, UTC).
        action: `added`, `edited`, `moved`, `renamed` or `deleted`.
        kind: `file`, `dir` or `symlink`.
        path: where the node is after the change (for `deleted`: where it was), from the
            account's root, starting with `/`.
        from_path: for `moved` and `renamed`, where it was before; else None.
        device_id: the device that made the change (None if the backend does not say).
        size: the file's size after the change (files only, not for `deleted`).
        share: for the share actions, what the journal entry says about the share.
    """

    seq: int
    at: str
    action: str
    kind: str
    path: str
    from_path: str | None
    device_id: str | None
    size: int | None
    share: ShareNews | None = None

    def to_json(self, device: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "seq": self.seq,
            "at": self.at,
            "action": self.action,
            "kind": self.kind,
            "path": self.path,
            "device_id": self.device_id,
            "device": device,
        }
        if self.from_path is not None:
            body["from_path"] = self.from_path
        if self.size is not None:
            body["size"] = self.size
        if self.share is not None:
            body["share"] = {
                "id": self.share.id,
                "owner": self.share.owner,
                "by": self.share.by,
                "role": self.share.role,
                "state": self.share.state,
            }
        return body


@dataclass(frozen=True, slots=True)
class ShareNews:
    """What a `share` journal entry says (protocol.md § Shares): which share, whose, who
    changed it, the role and the state after the change."""

    id: str
    owner: str
    by: str
    change: str
    role: str
    state: str

    @classmethod
    def of(cls, entry: JournalEntry) -> ShareNews | None:
        body = entry.share
        if entry.op != "share" or not isinstance(body, dict):
            return None
        try:
            return cls(
                str(body["id"]),
                str(body["owner"]),
                str(body.get("by") or body["owner"]),
                str(body.get("change") or "offered"),
                str(body["role"]),
                str(body["state"]),
            )
        except KeyError:
            return None

    @property
    def action(self) -> str:
        """The `Change.action` of this news."""
        if self.change == "ended":
            return "left" if self.by != self.owner else "unshared"
        if self.change == "role":
            return "role"
        return "shared" if self.state == "accepted" else "offered"


@dataclass(slots=True)
class _Known:
    parent_id: str | None
    name: str
    kind: str
    has_content: bool
    created_at: str
    created_by: str | None


class Replay:
    """The tree as the journal builds it, turning entries into `Change`s (module docstring).

    Args:
        root_id: the namespace's root node (it has no journal entry).
    """

    def __init__(self, root_id: str) -> None:
        self._root_id = root_id
        self._nodes: dict[str, _Known] = {}
        self.cursor = 0
        """The last journal position fed."""

    def feed(self, entries: Sequence[JournalEntry]) -> list[Change]:
        """The changes of one page of entries (in order); the replay moves past them."""
        changes: list[Change] = []
        saved_over: dict[int, str] = self._atomic_saves(entries)
        for entry in entries:
            if entry.seq in saved_over:  # the delete half of an atomic save
                self._forget(entry)
                continue
            change = self._change(entry, saved_over)
            if change is not None:
                changes.append(change)
            self.cursor = max(self.cursor, entry.seq)
        return changes

    def _atomic_saves(self, entries: Sequence[JournalEntry]) -> dict[int, str]:
        """{seq of a delete: path} for deletes immediately followed by the same device's
        move of another node onto the deleted one's name."""
        found: dict[int, str] = {}
        for first, second in zip(entries, entries[1:], strict=False):
            if (
                first.op == "delete"
                and second.op == "update"
                and second.seq == first.seq + 1
                and second.device_id == first.device_id
                and second.node.id != first.node.id
                and (second.node.parent_id, second.node.name)
                == (first.node.parent_id, first.node.name)
            ):
                found[first.seq] = self._path(first.node.parent_id, first.node.name)
        return found

    def _change(self, entry: JournalEntry, saved_over: dict[int, str]) -> Change | None:
        node = entry.node
        known = self._nodes.get(node.id)
        path = self._path(node.parent_id, node.name)
        size = node.size if node.kind == "file" else None

        def made(action: str, from_path: str | None = None, size: int | None = size) -> Change:
            return Change(
                entry.seq, entry.at, action, node.kind, path, from_path, entry.device_id, size
            )

        if entry.op == "share":  # news about a share, not a change of this tree
            news = ShareNews.of(entry)
            if news is None:
                return None
            at = "/" + node.name if node.parent_id is None else path
            return Change(
                entry.seq, entry.at, news.action, node.kind, at, None, entry.device_id, None, news
            )
        if entry.op == "create":
            self._nodes[node.id] = _Known(
                node.parent_id, node.name, node.kind, False, entry.at, entry.device_id
            )
            return made("added")
        if entry.op == "delete":
            self._nodes.pop(node.id, None)
            return made("deleted", size=None)
        if known is None:  # a node from before what we know (or from another namespace)
            self._nodes[node.id] = _Known(
                node.parent_id, node.name, node.kind, True, entry.at, entry.device_id
            )
            return made("edited") if entry.op == "commit" else None
        if entry.op == "commit":
            first = not known.has_content
            known.has_content = True
            if (
                first
                and entry.device_id == known.created_by
                and _seconds_between(known.created_at, entry.at) <= FIRST_CONTENT_S
            ):
                return None
            return made("edited")
        # update: a move, a rename, or only attributes
        before = (known.parent_id, known.name)
        old_path = self._path(*before)
        known.parent_id, known.name = node.parent_id, node.name
        if entry.seq - 1 in saved_over and saved_over[entry.seq - 1] == path:
            return made("edited")
        if before == (node.parent_id, node.name):
            return None
        action = "moved" if before[0] != node.parent_id else "renamed"
        return made(action, old_path)

    def _forget(self, entry: JournalEntry) -> None:
        self._nodes.pop(entry.node.id, None)
        self.cursor = max(self.cursor, entry.seq)

    def _path(self, parent_id: str | None, name: str) -> str:
        parts = [name]
        seen = 0
        while parent_id is not None and parent_id != self._root_id:
            parent = self._nodes.get(parent_id)
            seen += 1
            if parent is None or seen > 4096:  # outside what we know (or a bad cycle)
                return "…/" + "/".join(reversed(parts))
            parts.append(parent.name)
            parent_id = parent.parent_id
        return "/" + "/".join(reversed(parts))


def _seconds_between(earlier: str, later: str) -> float:
    try:
        return (datetime.fromisoformat(later) - datetime.fromisoformat(earlier)).total_seconds()
    except ValueError:
        return float("inf")


async def read_changes(
    api: ApiClient, namespace_id: str, replay: Replay, emit: Callable[[Change], None]
) -> None:
    """Feed every journal entry past `replay.cursor` into `replay`, emitting its changes."""
    while True:
        page = await api.journal(namespace_id, replay.cursor, limit=1000)
        for change in replay.feed(page.entries):
            emit(change)
        replay.cursor = max(replay.cursor, page.cursor)
        if not page.has_more:
            return


class DeviceNames:
    """Labels of the account's devices, re-read when an unknown device shows up."""

    def __init__(self, api: ApiClient) -> None:
        self._api = api
        self._labels: dict[str, str] = {}
        self._asked_for: set[str] = set()

    async def refresh(self) -> None:
        self._labels = {d.id: d.label for d in await self._api.devices()}

    async def learn(self, device_ids: Iterable[str | None]) -> None:
        """Re-read the list once for device ids not seen before."""
        unknown = {d for d in device_ids if d and d not in self._labels} - self._asked_for
        if unknown:
            self._asked_for |= unknown
            await self.refresh()

    def label(self, device_id: str | None) -> str:
        if device_id is None:
            return "?"
        return self._labels.get(device_id) or f"device {device_id[:8]}"


def format_change(change: Change, device: str, as_json: bool) -> str:
    """One line of `mountfs events` output (human, or one JSON object)."""
    if as_json:
        return json.dumps(change.to_json(device), ensure_ascii=False)
    when = _local_time(change.at)
    what = change.path if change.from_path is None else f"{change.from_path} → {change.path}"
    if change.kind == "dir":
        what += "/"
    if change.share is not None:
        news = change.share
        detail = f"{news.by}, {news.role}"
        if news.state == "pending":
            detail += f"; accept: mountfs shares accept {news.id}"
        return f"{when}  {change.action:<8} {what}  ({detail})"
    return f"{when}  {change.action:<8} {what}  ({device})"


def _local_time(at: str) -> str:
    try:
        return datetime.fromisoformat(at).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return at
