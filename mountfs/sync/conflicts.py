"""Conflicts: the first change the backend accepts wins, and nobody loses work.

The backend decides who won: every change carries a precondition (`base_version` for tree
ops, `base_revision` for commits) and exactly one of two racing changes passes it. This
module is what the *losing* device does with the refusal, so that its work survives next
to the winner's. The rules (docs/sync.md, "Conflicts"):

- **Content** (a commit refused because the head moved): if the head already holds exactly
  our bytes (a replay of our own commit, or the same edit made twice), or if our bytes are
  still the base's (a save without change), there is no conflict: the head is adopted. If
  the newer revisions were all made by this device (our commit was accepted but its answer
  lost), our commit is rebased on them. Otherwise the local file becomes a new file,
  `name (conflicted copy from DEVICE YYYY-MM-DD).ext`, queued as a create and committed
  like any new file (its chunks are already uploaded), and the name gets the winner's
  content under a new inode number. All of that is one SQLite transaction.
- **Edit vs delete**: an edit (a dirty file, or a folder with new children here) beats a
  concurrent delete. The device that still has work in a deleted node asks the backend to
  `restore` it (and its deleted parents) in place, with the same id, takes the restored
  node's place from the backend (moves made elsewhere before the delete included), then
  sends its change again. The device whose delete meets a concurrent edit (the head
  revision moved and not by us) or a folder that is not empty any more drops its delete
  and adopts the node as the backend has it (a folder with its listing, less what it
  removed inside and has not sent yet: those removals still go out).
- **Metadata** (rename, chmod, touch) is last writer wins, field by field: a stale
  `base_version` is refreshed (the node adopts the backend's state except what our queued
  ops set: a move to another folder keeps a name given elsewhere) and the op sent again.
  A metadata change to a node deleted elsewhere loses (nothing is lost: the content was
  the other device's to delete).
- **Names**: a create or move onto a name another device took first is renamed to the
  next conflicted-copy name, here and in the op; so two devices that create the same name
  keep both files.
- **Crossing moves**: a move refused as a `cycle` is dropped and the node goes back to
  where the backend has it; both folders stay.
- **Rename over a node** (`replace_id`) that moved, was deleted, or was edited meanwhile:
  the replace is dropped (the other node stays where the backend has it, with its edit)
  and the move goes on as a plain move (renamed if the name is taken). A rename-over that
  is itself dropped (its node was deleted elsewhere) replaces nothing: the node it would
  have replaced is adopted back as the backend has it. The same rename-over made on another device
  first leaves nothing to send (the node is at its destination already): the op is done,
  and the replaced node is purged here as it was there.

A crash in the middle is safe: every local step is one transaction that leaves the change
queued until the backend has answered, and every backend step is idempotent (ops carry
`op_id`, a restore of a live node changes nothing), so a replay after a restart takes the
same path again or finds it already taken.

Names: the extension stays last so the copy opens with the same program; a second copy
on the same day counts up (`... 2026-11-24 2).pdf`). Names stay within 255 bytes by
shortening the stem, never the marker or the extension.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import logging
import re
import sqlite3
import time
from collections.abc import Callable
from typing import Any, Protocol

from mountfs.ids import uuid7
from mountfs.state import nodes, outbox
from mountfs.state.db import StateDb
from mountfs.state.outbox import OutboxOp
from mountfs.sync import manifests
from mountfs.transport.api import ApiClient, ApiError, OpResult, RemoteNode
from mountfs.transport.retry import TEMPORARY_STATUSES
from mountfs.types import InodeNo, Manifest, keys_from_wire

log = logging.getLogger(__name__)

NAME_MAX = 255
MAX_RESTORE_DEPTH = 256

_MARKER = re.compile(
    r" \(conflicted copy from (?P<device>.+) (?P<day>\d{4}-\d{2}-\d{2})(?: (?P<n>\d+))?\)$"
)


def _split(name: str) -> tuple[str, str]:
    dot = name.rfind(".")
    if dot <= 0 or dot == len(name) - 1:  # ".bashrc", "name." and "name" have no extension
        return name, ""
    return name[:dot], name[dot:]


def conflicted_name(name: str, device: str, day: str, n: int = 1) -> str:
    """The name of the `n`-th conflicted copy of `name` made by `device` on `day`."""
    stem, ext = _split(name)
    marker = f" (conflicted copy from {device} {day}{'' if n == 1 else f' {n}'})"
    budget = NAME_MAX - len(marker.encode()) - len(ext.encode())
    encoded = stem.encode()[: max(budget, 1)]
    stem = encoded.decode(errors="ignore")
    return f"{stem}{marker}{ext}"


def next_conflicted_name(name: str, device: str, day: str, taken: Callable[[str], bool]) -> str:
    """The first conflicted-copy name of `name` that `taken` says is free.

    A name that already is this device's copy of the day counts up (`... 2)`) rather than
    nesting a second marker: a conflicted copy never makes another copy of itself.
    """
    stem, ext = _split(name)
    base, first = name, 1
    found = _MARKER.search(stem)
    if found and found["device"] == device and found["day"] == day:
        base, first = stem[: found.start()] + ext, int(found["n"] or 1) + 1
    for n in range(first, first + 10_000):
        candidate = conflicted_name(base, device, day, n)
        if not taken(candidate):
            return candidate
    raise RuntimeError(f"no free conflicted-copy name for {name!r}")


def today() -> str:
    """The day in conflicted-copy names (UTC, so every device agrees)."""
    return time.strftime("%Y-%m-%d", time.gmtime())


class Verdict(enum.Enum):
    """What the pusher does with a refused op after the resolver looked at it."""

    RETRY = "retry"
    """Send it again (its body or the node's version may have changed)."""
    DONE = "done"
    """The resolver completed it (dropped, or the backend already has its effect)."""
    GIVE_UP = "give_up"
    """Nothing to resolve: the backend will never take it (the pusher drops it)."""


class Adopter(Protocol):
    """What the resolver needs of the journal applier (`RemoteApplier`)."""

    def adopt(
        self,
        remote: RemoteNode,
        revision: dict[str, object] | None,
        prepare: Callable[[sqlite3.Connection], list[tuple[InodeNo, str]]] | None = None,
    ) -> bool: ...

    def changed(self, entries: list[tuple[InodeNo, str]], unlinked: list[InodeNo]) -> None: ...


class ContentSource(Protocol):
    """What the resolver needs of the uploader: a look at the local bytes."""

    async def content_equals(self, ino: InodeNo, manifest: Manifest) -> bool: ...


class CommitConflict(Exception):
    """Another device committed first: the file's base revision is no longer the head.

    Attributes:
        current: the node as the backend has it now (wire form).
        base_revision: the revision our commit was based on.
        attempted: the manifest we tried to commit.
        base: the manifest of `base_revision` (our chunk map).
    """

    def __init__(
        self,
        current: dict[str, Any],
        base_revision: str | None = None,
        attempted: Manifest | None = None,
        base: Manifest | None = None,
    ) -> None:
        super().__init__("the file changed on another device")
        self.current = current
        self.base_revision = base_revision
        self.attempted = attempted
        self.base = base


class Resolver:
    """Turns the backend's refusals into local changes that keep both sides.

    Args:
        applier: applies node states the backend answered (and tells the kernel).
        content: reads local bytes to compare them with a revision.
        device_label / device_id: this device (copy names; "was it our own change?").
    """

    def __init__(
        self,
        db: StateDb,
        api: ApiClient,
        applier: Adopter,
        content: ContentSource,
        device_label: str,
        device_id: str,
    ) -> None:
        self._db = db
        self._api = api
        self._applier = applier
        self._content = content
        self._label = device_label
        self._device_id = device_id
        self.conflicted_copies = 0

    # --- refused ops (the pusher) ---------------------------------------------------------

    async def refused(self, op: OutboxOp, result: OpResult) -> Verdict:
        """Decide what to do with an op the backend refused with a 409 (see module doc).

        The op is still claimed (nothing local can merge into it meanwhile); the verdict
        says whether the pusher sends it again or it is done.
        """
        verdict = await self._refused(op, result)
        replace_id = op.body.get("replace_id")
        if verdict is not Verdict.RETRY and isinstance(replace_id, str):
            # A rename-over that will never happen (its node was deleted elsewhere, the
            # move closed a cycle, ...) did not replace anything either, and one that is
            # done elsewhere already replaced it there: the node it would have replaced is
            # here only as a tombstone, and goes back to the backend's state (live: back
            # in its place, with its content; deleted: purged).
            body = {k: v for k, v in op.body.items() if k not in ("replace_id", "replace_version")}
            with self._db.transaction() as conn:  # no longer a removal of it (`_adopt_listing`)
                _rewrite(conn, op, body, replace_id=None)
            await self._adopt_replaced(op, replace_id)
        return verdict

    async def _adopt_replaced(self, op: OutboxOp, replace_id: str) -> None:
        """The node a rename-over of ours named takes the backend's state here (the op no
        longer replaces it)."""
        try:
            replaced = await self._api.node(replace_id)
        except ApiError as exc:
            if exc.status != 404:
                raise
            return  # gone for good: its tombstone is purged at the next start
        await self._adopt(replaced)
        log.info("%s, named by a rename of %s, is as the backend has it", replace_id, op.node_id)

    async def _refused(self, op: OutboxOp, result: OpResult) -> Verdict:
        error = result.body.get("error")
        raw = result.body.get("current")
        current = RemoteNode.from_wire(raw) if isinstance(raw, dict) else None
        if error == "name_taken" and current is not None:
            return await self._name_taken(op, current)
        if error == "cycle" and current is not None:
            self._complete(op)
            await self._adopt(current)
            log.info("move of %s refused (crossing moves): it stays where it is", op.node_id)
            return Verdict.DONE
        if error == "not_a_directory" and current is not None and current.deleted:
            if await self.restore(current.id):
                return Verdict.RETRY
            return Verdict.GIVE_UP
        if error == "not_empty" and current is not None:
            return await self._not_empty(op, current)
        if error == "conflict" and current is not None:
            return await self._conflict(op, current)
        return Verdict.GIVE_UP

    async def _conflict(self, op: OutboxOp, current: RemoteNode) -> Verdict:
        replace_id = op.body.get("replace_id")
        if replace_id and current.id == replace_id:
            return await self._replaced_moved(op, current)
        if op.op == "delete":
            return await self._delete_refused(op, current)
        if current.deleted:
            local = nodes.by_node_id(self._db.conn, op.node_id)
            if local is not None and self._has_work(local):
                return Verdict.RETRY if await self.restore(current.id) else Verdict.GIVE_UP
            # A rename or chmod of something deleted elsewhere: the delete wins.
            self._complete(op)
            await self._adopt(current)
            return Verdict.DONE
        if replace_id and _renames_to(op.body, current):
            return await self._renamed_elsewhere(op, current, str(replace_id))
        local = nodes.by_node_id(self._db.conn, op.node_id)
        if local is not None and local.linked:
            # Take what changed elsewhere (a rename, new content) before ours goes on top:
            # a bare version bump would make the pull skip those changes.
            await self._adopt(current)
        elif local is not None and await self._edited_since(local.remote_head_revision, current):
            # Removed here after this change (its delete is queued behind it): the edit
            # made elsewhere beats the delete. A bare version bump would let the delete
            # through on the fresh version, edit and all; so every queued op of the node
            # is dropped and it comes back as the backend has it.
            with self._db.transaction() as conn:
                rows = conn.execute("SELECT seq FROM outbox WHERE node_id = ?", (op.node_id,))
                for (seq,) in rows.fetchall():
                    outbox.complete(conn, seq)
            await self._adopt(current)
            log.info("changes to %s dropped: it was edited on another device", op.node_id)
            return Verdict.DONE
        else:
            self._set_version(current)
        return Verdict.RETRY

    async def _edited_since(self, known: str | None, current: RemoteNode) -> bool:
        """True if the file's head moved past `known` (the head this device last saw), and
        not by us."""
        return (
            current.kind == "file"
            and current.head_revision != known
            and not await self._own_since(current.id, current.head_revision, known)
        )

    async def _renamed_elsewhere(
        self, op: OutboxOp, current: RemoteNode, replace_id: str
    ) -> Verdict:
        """Our rename-over is done already (the same rename made on another device).

        Sent again on the fresh version it would not move the node, which the backend
        refuses (`bad_request`): only the attributes the op also sets are left to send.
        The node it replaced takes the backend's state (deleted there: purged here).
        """
        rest = {k: v for k, v in op.body.items() if k not in _RENAME_OVER_FIELDS}
        if not set(rest) - {"id", "base_version"}:
            self._complete(op)
            await self._adopt(current)
            log.info("rename of %s over %s: done elsewhere already", op.node_id, replace_id)
            return Verdict.DONE  # `refused` adopts the replaced node
        with self._db.transaction() as conn:
            _rewrite(conn, op, rest, replace_id=None)
            conn.execute("UPDATE outbox SET parent_id = NULL WHERE seq = ?", (op.seq,))
        await self._adopt(current)
        await self._adopt_replaced(op, replace_id)
        return Verdict.RETRY

    async def _delete_refused(self, op: OutboxOp, current: RemoteNode) -> Verdict:
        if current.deleted:
            self._set_version(current)
            self._complete(op)
            return Verdict.DONE
        local = nodes.by_node_id(self._db.conn, op.node_id)
        known = local.remote_head_revision if local is not None else None
        if await self._edited_since(known, current):
            # Edited elsewhere since we last saw it: the edit beats our delete.
            self._complete(op)
            await self._adopt(current)
            log.info("delete of %s dropped: it was edited on another device", op.node_id)
            return Verdict.DONE
        self._set_version(current)
        return Verdict.RETRY

    async def _not_empty(self, op: OutboxOp, current: RemoteNode) -> Verdict:
        if op.op == "delete" and current.id == op.node_id:
            # Another device put something in the folder we deleted: keep the folder.
            self._complete(op)
            await self._adopt(current)
            await self._adopt_listing(current.id)
            log.info("delete of folder %s dropped: another device added to it", op.node_id)
            return Verdict.DONE
        if op.body.get("replace_id") == current.id:
            return await self._replaced_moved(op, current)
        return Verdict.GIVE_UP

    async def _replaced_moved(self, op: OutboxOp, replaced: RemoteNode) -> Verdict:
        """The node our rename should replace changed: keep it, and move without replacing."""
        local = nodes.by_node_id(self._db.conn, replaced.id)
        known = local.remote_head_revision if local is not None else None
        edited = (
            replaced.kind == "file"
            and not replaced.deleted
            and replaced.head_revision != known
            and not await self._own_since(replaced.id, replaced.head_revision, known)
        )
        destination = (op.body.get("parent_id"), op.body.get("name"))
        at_destination = not replaced.deleted and (
            destination[0] in (None, replaced.parent_id) and destination[1] in (None, replaced.name)
        )
        if at_destination and not edited and replaced.kind != "dir":
            self._set_version(replaced)  # only its attributes changed: replace it still
            return Verdict.RETRY
        body = {k: v for k, v in op.body.items() if k not in ("replace_id", "replace_version")}
        with self._db.transaction() as conn:
            _rewrite(conn, op, body, replace_id=None)
        log.info(
            "rename of %s no longer replaces %s: it changed meanwhile", op.node_id, replaced.id
        )
        await self._adopt(replaced)
        return Verdict.RETRY

    async def _name_taken(self, op: OutboxOp, occupant: RemoteNode) -> Verdict:
        if op.body.get("replace_id"):
            replaced = await self._api.node(str(op.body["replace_id"]))
            return await self._replaced_moved(op, replaced)
        wanted = op.body.get("name")
        if not isinstance(wanted, str):
            wanted = (await self._api.node(op.node_id)).name
        parent_id = op.body.get("parent_id") or occupant.parent_id
        renamed: list[tuple[InodeNo, str]] = []
        with self._db.transaction() as conn:
            parent = nodes.by_node_id(conn, str(parent_id))
            local = nodes.by_node_id(conn, op.node_id)

            def taken(name: str) -> bool:
                return name == occupant.name or (
                    parent is not None and nodes.by_name(conn, parent.ino, name) is not None
                )

            new_name = next_conflicted_name(wanted, self._label, today(), taken)
            _rewrite(conn, op, {**op.body, "name": new_name})
            if (
                local is not None
                and parent is not None
                and local.parent_ino == parent.ino
                and local.name == wanted
            ):
                nodes.set_fields(conn, local.ino, {"name": new_name})
                renamed = [(parent.ino, wanted), (parent.ino, new_name)]
        self._applier.changed(renamed, [])
        log.info("name %r was taken on the backend: %s is now %r", wanted, op.node_id, new_name)
        return Verdict.RETRY

    async def refresh(self, node_id: str) -> None:
        """Give the node the backend's state here (a place only this device had, see
        `RemoteApplier.stale_places`); a node the backend does not know is left alone."""
        try:
            remote = await self._api.node(node_id)
        except ApiError as exc:
            if exc.status != 404:
                raise
            return
        await self._adopt(remote)
        log.info("%s is where the backend has it again", node_id)

    # --- restores -------------------------------------------------------------------------

    async def restore(self, node_id: str, depth: int = 0) -> bool:
        """Bring a deleted node (and its deleted parents) back on the backend, in place.

        Returns False if the backend will not (the node is gone for good); raises like the
        API does when offline.
        """
        if depth > MAX_RESTORE_DEPTH:
            raise RuntimeError(f"restore of {node_id}: deeper than {MAX_RESTORE_DEPTH}")
        name: str | None = None
        for _ in range(16):
            op: dict[str, Any] = {"op": "restore", "op_id": uuid7(), "id": node_id}
            if name is not None:
                op["name"] = name
            (result,) = await self._api.push_changes([op])
            raw = result.body.get("current")
            current = RemoteNode.from_wire(raw) if isinstance(raw, dict) else None
            if result.ok:
                await self._restored(RemoteNode.from_wire(result.body["node"]))
                return True
            if result.status in TEMPORARY_STATUSES:
                raise ApiError(result.status, str(result.body.get("error")), "restore", {})
            error = result.body.get("error")
            if error == "not_a_directory" and current is not None and current.deleted:
                if not await self.restore(current.id, depth + 1):
                    return False
                continue
            if error == "name_taken" and current is not None:
                name = self._restore_name(node_id, name, current.name)
                continue
            log.error("restore of %s refused: %s", node_id, result.body)
            return False
        return False

    def _restore_name(self, node_id: str, tried: str | None, occupant: str) -> str:
        """The name to restore a node under when its own (or `tried`) is taken."""
        conn = self._db.conn
        local = nodes.by_node_id(conn, node_id)
        wanted = tried or (local.name if local is not None and local.name else occupant)
        parent = None if local is None else local.parent_ino

        def taken(candidate: str) -> bool:
            return candidate == occupant or (
                parent is not None and nodes.by_name(conn, parent, candidate) is not None
            )

        return next_conflicted_name(wanted, self._label, today(), taken)

    async def _restored(self, remote: RemoteNode) -> None:
        """Our node is live again on the backend: take its state there (place included).

        The restore's version is past every journal entry about the node (the moves,
        renames and the delete made elsewhere before it), so the pull skips them all: the
        node must go where the backend restored it (the place it had when deleted, maybe
        under a new name), unless our queued moves set its place (`adopt` keeps those).
        Taking only the version left it where it was here, for good (a regression).
        A node this device no longer has (a folder restored as the parent of what we
        restore, deleted and purged here) is created: the pull skips the restore, an entry
        of this device's about a node it does not have (seed 50 of the randomized run:
        the folder stayed on the backend and the other device, and never came back here).
        """
        await self._adopt(remote)
        log.info("restored %s on the backend: this device still had work in it", remote.id)

    # --- content (the uploader's commit was refused) --------------------------------------

    async def content_conflict(self, ino: InodeNo, conflict: CommitConflict) -> None:
        """Keep both sides of a refused commit (see the module docstring)."""
        node = nodes.get(self._db.conn, ino)
        if node is None or not node.linked or node.kind != "file":
            return
        current = RemoteNode.from_wire(conflict.current)
        if current.deleted:
            await self.restore(current.id)  # the edit beats the delete; commit again
            return
        head = current.head_revision
        revision = await self._api.revision(head) if head is not None else None
        theirs = Manifest.from_wire(revision) if revision is not None else Manifest(0, ())
        gen = node.content_gen
        if await self._content.content_equals(ino, theirs):
            self._adopt_head_as_ours(ino, gen, current, theirs, revision)
            return
        if head is not None and await self._own_since(current.id, head, node.remote_head_revision):
            with self._db.transaction() as conn:  # our earlier commit, its answer lost
                nodes.set_fields(
                    conn,
                    ino,
                    {"remote_head_revision": head, "remote_version": current.version},
                )
            log.info("inode %d: the head is our own earlier commit; committing on top", ino)
            return
        if conflict.base is not None and await self._content.content_equals(ino, conflict.base):
            # Saved without a change: nothing of ours to keep; take theirs.
            with self._db.transaction() as conn:
                conn.execute(
                    "UPDATE nodes SET dirty = 0 WHERE ino = ? AND content_gen = ?", (ino, gen)
                )
                conn.execute("DELETE FROM extents WHERE ino = ? AND kind = 1", (ino,))
            self._applier.adopt(current, revision)
            return
        self._split(ino, current, revision)

    def _adopt_head_as_ours(
        self,
        ino: InodeNo,
        gen: int,
        current: RemoteNode,
        theirs: Manifest,
        revision: dict[str, Any] | None,
    ) -> None:
        """The head has our bytes already: record it as our committed state."""
        with self._db.transaction() as conn:
            if revision is not None:
                chunks = revision.get("chunks")
                keys = keys_from_wire(chunks if isinstance(chunks, list) else [])
                manifests.replace(conn, ino, theirs, keys)
            nodes.set_fields(conn, ino, {"remote_version": current.version})
            nodes.mark_clean(conn, ino, gen, current.head_revision or "", theirs.size)
            if current.head_revision is None:
                conn.execute("UPDATE nodes SET remote_head_revision = NULL WHERE ino = ?", (ino,))
        log.info("inode %d: the head already has our content; no conflict", ino)

    def _split(self, ino: InodeNo, current: RemoteNode, revision: dict[str, Any] | None) -> None:
        """Our bytes become a new file beside the name; the name gets the winner's content.

        One transaction: the local row keeps its inode number, bytes, chunk map (the base,
        for bytes still to fetch) and dirty extents, and takes a new node id and the
        conflicted-copy name, with its create queued; the winner gets a new row (a new
        inode number: the kernel's pages of the old one are our bytes).
        """
        made: list[str] = []
        current = self._winner_place(ino, current)

        def prepare(conn: sqlite3.Connection) -> list[tuple[InodeNo, str]]:
            node = nodes.get(conn, ino)
            if node is None or node.parent_ino is None or node.name is None:
                return []
            parent = nodes.get(conn, node.parent_ino)
            assert parent is not None
            parent_ino = parent.ino

            def taken(name: str) -> bool:
                return nodes.by_name(conn, parent_ino, name) is not None

            copy = next_conflicted_name(node.name, self._label, today(), taken)
            new_id = uuid7()
            conn.execute(
                "UPDATE nodes SET node_id = ?, name = ?, remote_version = NULL, "
                "remote_head_revision = NULL WHERE ino = ?",
                (new_id, copy, ino),
            )
            conn.execute("DELETE FROM deferred_content WHERE node_id = ?", (node.node_id,))
            outbox.append_create(
                conn,
                node_id=new_id,
                parent_id=parent.node_id,
                name=copy,
                kind="file",
                mode=node.mode,
                mtime_ns=node.mtime_ns,
                target=None,
            )
            made.append(copy)
            return [(parent_ino, copy)]

        self._applier.adopt(current, revision, prepare)
        if made:
            self.conflicted_copies += 1
            log.info("conflict on %s: our version is kept as %r", current.id, made[0])

    def _winner_place(self, ino: InodeNo, current: RemoteNode) -> RemoteNode:
        """Where the winner's new row goes: where our queued moves of the node id put it.

        The queued ops (a rename made here before the commit was refused) stay with the
        node id, i.e. with the winner, and the backend applies them once they are sent: the
        winner must already be there here, or nothing would ever move it (their answers
        only move the version). Seed 1 of the randomized run: "edit c, rename c to b.txt"
        here against an edit of c elsewhere left this device with c, the others with b.txt.
        """
        conn = self._db.conn
        node = nodes.get(conn, ino)
        own = queued_place(conn, current.id)
        if node is None or node.parent_ino is None or node.name is None or not own:
            return current
        parent = nodes.get(conn, node.parent_ino)
        if parent is None:
            return current
        return dataclasses.replace(
            current,
            parent_id=parent.node_id if "parent" in own else current.parent_id,
            name=node.name if "name" in own else current.name,
        )

    # --- helpers ----------------------------------------------------------------------------

    async def _own_since(self, node_id: str, head: str | None, base: str | None) -> bool:
        """True if every revision after `base` up to `head` was made by this device."""
        if head is None or head == base:
            return head == base
        history = {r["id"]: r for r in await self._api.revisions(node_id)}
        cursor: str | None = head
        for _ in range(len(history) + 1):
            if cursor == base:
                return True
            rev = history.get(cursor) if cursor is not None else None
            if rev is None or rev.get("device_id") != self._device_id:
                return False
            if rev.get("kind") != "content":
                return False
            cursor = rev.get("base_revision")
        return False

    def _has_work(self, local: nodes.Node) -> bool:
        """True if the node holds something of ours that a delete elsewhere must not take."""
        if local.kind == "file":
            return local.dirty
        if local.kind == "dir":
            return local.linked and nodes.has_children(self._db.conn, local.ino)
        return False

    def _set_version(self, current: RemoteNode) -> None:
        with self._db.transaction() as conn:
            conn.execute(
                "UPDATE nodes SET remote_version = ? WHERE node_id = ?",
                (current.version, current.id),
            )

    def _complete(self, op: OutboxOp) -> None:
        with self._db.transaction() as conn:
            outbox.complete(conn, op.seq)

    async def _adopt(self, remote: RemoteNode) -> None:
        """Make the local node (and, if needed, its parents) agree with the backend.

        A node deleted there may leave its folder empty here, where the pull kept that
        folder only for it (`apply.py`: a folder deleted elsewhere that still has children
        here is kept): the folder then follows the backend too (`_drop_emptied`)."""
        local = nodes.by_node_id(self._db.conn, remote.id) if remote.deleted else None
        folder = local.parent_ino if local is not None and local.linked else None
        await self._adopt_chain(remote)
        if folder is not None:
            await self._drop_emptied(folder)

    async def _drop_emptied(self, ino: InodeNo) -> None:
        """Folders (from `ino` up) that are empty here, with nothing of ours queued about
        them, and deleted on the backend go here too.

        The pull keeps a folder deleted elsewhere while something of ours is in it (a
        queued rename of a file in it, say); when the resolver then lets the delete win
        for that file, nothing else would ever remove the folder (seed 33 of the
        randomized run: a rename in z here, `rm -r z` elsewhere, pulled before the push).
        """
        conn = self._db.conn
        for _ in range(MAX_RESTORE_DEPTH):
            folder = nodes.get(conn, ino)
            if (
                folder is None
                or not folder.linked
                or folder.kind != "dir"
                or folder.parent_ino is None
                or nodes.has_children(conn, ino)
                or outbox.references(conn, folder.node_id)
            ):
                return
            try:
                remote = await self._api.node(folder.node_id)
            except ApiError as exc:
                if exc.status != 404:
                    raise
                return
            if not remote.deleted:
                return
            self._applier.adopt(remote, None)
            log.info("folder %s, deleted elsewhere, is empty here now: gone", folder.node_id)
            ino = folder.parent_ino

    async def _adopt_chain(self, remote: RemoteNode) -> None:
        chain = [remote]
        adopted: set[str] = set()
        for _ in range(MAX_RESTORE_DEPTH):
            revision = await self._head(chain[-1])
            if self._applier.adopt(chain[-1], revision):
                chain.pop()
                if not chain:
                    return
                continue
            parent_id = chain[-1].parent_id
            if parent_id is None:
                return
            if parent_id in adopted:
                # Adopted, and still no place for it here: the folder is removed here with
                # its removal queued (`apply.py` keeps it so). That removal meets this node
                # on the backend (`not_empty`), and its resolution lists the folder again,
                # this node included; until then it waits.
                log.info("%s waits for its folder %s, removed here", chain[-1].id, parent_id)
                return
            adopted.add(parent_id)
            chain.append(await self._api.node(parent_id))
        raise RuntimeError(f"adopting {remote.id}: no known ancestor")

    async def _head(self, remote: RemoteNode) -> dict[str, Any] | None:
        if remote.kind != "file" or remote.deleted or remote.head_revision is None:
            return None
        local = nodes.by_node_id(self._db.conn, remote.id)
        if (
            local is not None
            and local.linked  # an unlinked row comes back as a new inode: it needs content
            and local.remote_head_revision == remote.head_revision
        ):
            return None
        return await self._api.revision(remote.head_revision)

    async def _adopt_listing(self, folder_id: str) -> None:
        """Adopt everything below a folder that came back (entries skipped meanwhile)."""
        pending = [folder_id]
        while pending:
            parent = pending.pop()
            cursor: str | None = None
            while True:
                items, cursor = await self._api.children(parent, cursor)
                for item in items:
                    if removal_queued(self._db.conn, item.id):
                        # Removed here, the removal not sent yet: it is ours to decide (a
                        # folder's delete meets what was added to it elsewhere). Brought
                        # back now, it would stay here after the removal landed.
                        continue
                    self._applier.adopt(item, await self._head(item))
                    if item.kind == "dir":
                        pending.append(item.id)
                if cursor is None:
                    break


def _rewrite(
    conn: sqlite3.Connection,
    op: OutboxOp,
    body: dict[str, Any],
    *,
    replace_id: str | None | bool = False,
) -> None:
    """Store a new body for a queued op (and its `replace_id` column if given)."""
    text = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
    if replace_id is False:
        conn.execute("UPDATE outbox SET body = ? WHERE seq = ?", (text, op.seq))
    else:
        conn.execute(
            "UPDATE outbox SET body = ?, replace_id = ? WHERE seq = ?", (text, replace_id, op.seq)
        )


_RENAME_OVER_FIELDS = frozenset({"parent_id", "name", "replace_id", "replace_version"})


def _renames_to(body: dict[str, Any], current: RemoteNode) -> bool:
    """True if the op's move would leave `current` where it is (its place already)."""
    return body.get("parent_id") in (None, current.parent_id) and body.get("name") in (
        None,
        current.name,
    )


PLACE = frozenset({"parent", "name"})
"""Both parts of a node's place (what `queued_place` answers when a create is queued)."""


def queued_place(conn: sqlite3.Connection, node_id: str) -> frozenset[str]:
    """Which parts of the node's place (`parent`, `name`) its queued ops set.

    A create sets both, and so does a rename-over (the replaced node's place), even if its
    body should lack them. Used by the applier (the pull keeps what our queued ops set) and
    by `Resolver._split` (the winner's row goes where our queued moves will put it)."""
    rows = conn.execute(
        "SELECT op = 'create' OR replace_id IS NOT NULL, parent_id IS NOT NULL, "
        "json_extract(body, '$.name') IS NOT NULL "
        "FROM outbox WHERE node_id = ? AND op != 'delete'",
        (node_id,),
    ).fetchall()
    parts: set[str] = set()
    for create, parent, name in rows:
        if create or parent:
            parts.add("parent")
        if create or name:
            parts.add("name")
    return frozenset(parts)


def removal_queued(conn: sqlite3.Connection, node_id: str) -> bool:
    """True if a queued op removes the node: its delete, or a rename over it."""
    row = conn.execute(
        "SELECT 1 FROM outbox WHERE (node_id = ? AND op = 'delete') OR replace_id = ? LIMIT 1",
        (node_id, node_id),
    ).fetchone()
    return row is not None


def content_digest(data: bytes) -> str:
    """The plaintext hash a `ChunkRef` carries (SHA-256, hex)."""
    return hashlib.sha256(data).hexdigest()


__all__ = [
    "PLACE",
    "CommitConflict",
    "Resolver",
    "Verdict",
    "conflicted_name",
    "content_digest",
    "next_conflicted_name",
    "queued_place",
    "removal_queued",
    "today",
]
