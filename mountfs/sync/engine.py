"""The sync engine: one supervisor that keeps the local state and the backend in step.

It runs two loops in the mount's nursery:
- **push**: drains the outbox (namespace changes, in order) and commits dirty files. A file
  is committed as soon as no handle has it open for writing, or once its content has not
  changed for `IDLE_COMMIT` seconds while open (a long-running writer still gets its data
  uploaded). The loop polls every `POLL_PUSH` seconds; `kick()` wakes it at once (the vfs
  calls it through `Files.on_settled` when a writable handle is released or fsynced).
- **pull**: follows the account's journal from the cursor and applies each entry.
  `mountfs sync` and the push channel (later) call `kick_pull()`; otherwise it polls.

Offline handling: any `Offline` (or 5xx) puts the engine in the offline state and backs off
(capped); the local mount keeps working, the outbox keeps growing, and both loops resume
by themselves when the backend answers again. Any other failure of a round (a refusal, a
bug) is logged as an error and retried after the same backoff: the engine never takes the
mount down, and one file that cannot be committed never holds back the others. Status
figures go into the state database's `meta` table, where `mountfs status` reads them from
another process.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from mountfs.state import nodes, outbox
from mountfs.state.db import StateDb
from mountfs.status import pending_from_db
from mountfs.sync.apply import RemoteApplier
from mountfs.sync.conflicts import CommitConflict, Resolver
from mountfs.sync.push import Pusher
from mountfs.sync.shared import SharedNamespaces
from mountfs.sync.upload import CommitRefused, Uploader
from mountfs.transport.api import ApiClient, JournalEntry
from mountfs.transport.retry import RetryPolicy, is_temp_failure
from mountfs.types import InodeNo
from mountfs.vfs.files import MAX_FILE_META

log = logging.getLogger(__name__)

POLL_PUSH = 0.25
POLL_PULL = 2.0
IDLE_COMMIT = 2.0
SYNC_RETRY = 0.25
BACKOFF = RetryPolicy(attempts=None, base=0.5, cap=15.0)
REFUSED_RETRY = 300.0
"""A file whose commit was refused (quota, size) is tried again after this many seconds."""
FAILED_RETRY = 30.0
"""A file whose commit failed unexpectedly is tried again after this many seconds."""
_LAST_SYNC_EVERY_S = 1.0


class _Wakeup:
    """A re-armable signal: `set()` wakes the current or next `wait(timeout)`."""

    def __init__(self) -> None:
        self._event = trio.Event()

    def set(self) -> None:
        self._event.set()

    async def wait(self, seconds: float) -> None:
        with trio.move_on_after(seconds):
            await self._event.wait()
        self._event = trio.Event()


@dataclass(slots=True)
class _Watch:
    gen: int
    since: float


class SyncEngine:
    """Supervises push and pull; see the module docstring.

    Args:
        is_open_for_write: True while some handle may still write to the inode.
        namespace_id: the journal to follow.
    """

    def __init__(
        self,
        db: StateDb,
        api: ApiClient,
        pusher: Pusher,
        uploader: Uploader,
        applier: RemoteApplier,
        namespace_id: str,
        is_open_for_write: Callable[[InodeNo], bool],
    ) -> None:
        self._db = db
        self._api = api
        self._pusher = pusher
        self._uploader = uploader
        self._applier = applier
        self._namespace_id = namespace_id
        self.shared = SharedNamespaces(db, api, applier, namespace_id)
        """The shared folders' journals this device follows too (mountfs.sync.shared)."""
        self._is_open_for_write = is_open_for_write
        self._push_wakeup = _Wakeup()
        self._pull_wakeup = _Wakeup()
        self._push_lock = trio.Lock()
        self._pull_lock = trio.Lock()
        self._watch: dict[InodeNo, _Watch] = {}
        self._refused: dict[InodeNo, float] = {}
        self.online = False
        self._recorded: bool | None = None  # what the database says (`_set_online`)
        self._last_sync_written = 0.0
        self.resolver: Resolver | None = None
        """Keeps both sides of a refused commit; set by the composition root."""
        self.before_round: Callable[[], Awaitable[None]] | None = None
        """Awaited before each push round of the loop: the mount points it at
        `mountfs.fuse.activity.RequestActivity.lull`, so a round starts in a pause of a
        burst of FUSE requests (bounded) instead of competing with it."""
        self.pull_interval = POLL_PULL
        self.pulled: list[Callable[[list[JournalEntry]], None]] = []
        """Called with each page of journal entries once applied (desktop notices)."""
        """Seconds between two polls of the journal; the push channel (`sync.listen`)
        lengthens it while it is connected, since it kicks the pull on news."""

    def kick(self) -> None:
        """Push now (a file was closed or fsynced, or the user asked)."""
        self._push_wakeup.set()

    def kick_pull(self) -> None:
        """Pull now (the push channel said there is news, or the user asked)."""
        self._pull_wakeup.set()

    async def run(self) -> None:
        """Run both loops until cancelled."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                self._loop, "push", self._yielding_push, lambda: POLL_PUSH, self._push_wakeup
            )
            nursery.start_soon(
                self._loop, "pull", self.pull_all, self._pull_every, self._pull_wakeup
            )
            nursery.start_soon(self._learn_limits)

    async def _loop(
        self,
        name: str,
        step: Callable[[], Awaitable[object]],
        poll: Callable[[], float],
        wakeup: _Wakeup,
    ) -> None:
        failures = 0
        while True:
            try:
                await step()
            except Exception as exc:
                failures += 1
                wait = BACKOFF.delay(failures)
                if is_temp_failure(exc):
                    self._set_online(False)
                    log.log(
                        logging.INFO if failures < 3 else logging.WARNING,
                        "%s: backend unavailable (%s); retry in %.1fs",
                        name,
                        exc,
                        wait,
                    )
                else:  # a refusal or a bug: the mount must keep serving; try again later
                    log.error("%s failed; retry in %.1fs", name, wait, exc_info=exc)
                await trio.sleep(wait)
                continue
            failures = 0
            self._set_online(True)
            await wakeup.wait(poll())

    def _set_online(self, online: bool, *, force: bool = False) -> None:
        """Record the link's state and the time of the last good round (`mountfs status`).

        Written when the recorded state differs, and otherwise at most every
        `_LAST_SYNC_EVERY_S`: a burst runs hundreds of rounds a second, and a transaction
        each was a tenth of the commits of an `rm -r`.
        """
        if online != self.online:
            log.info("sync is %s", "online" if online else "offline")
        self.online = online
        now = time.monotonic()
        if (
            not force
            and online == self._recorded
            and (not online or now - self._last_sync_written < _LAST_SYNC_EVERY_S)
        ):
            return
        with self._db.transaction():
            self._db.set_meta("online", "1" if online else "0")
            if online:
                self._db.set_meta("last_sync_ns", str(time.time_ns()))
                self._last_sync_written = now
        self._recorded = online

    async def _yielding_push(self) -> None:
        """A push round of the loop: it starts in a pause of a burst of FUSE requests
        (`before_round`). Pull rounds do not wait: another device's change must show here
        at once, and a reader polling the mount (an editor, a build) would hold them back
        by the whole bound (measured: close on A to readable on B, median 53 ms without the
        wait on pulls against 305 ms with it)."""
        if self.before_round is not None:
            await self.before_round()
        await self._push_round()

    async def _push_round(self, *, force: bool = False) -> None:
        """Push the outbox, then commit the dirty files that are ready (all if `force`)."""
        async with self._push_lock:
            while await self._pusher.push():
                pass
            for node in nodes.dirty_files(self._db.conn, limit=1000):
                if self._uploader.transfers.gate.paused:
                    break  # `mountfs pause`: content waits for `mountfs resume`
                if node.remote_version is None or not (force or self._ready(node)):
                    continue
                await self._commit(node.ino)
            while await self._pusher.push():  # commits may have unblocked queued ops
                pass

    async def flush(self, *, pull: bool = True) -> bool:
        """Push everything now and pull what is new; True if nothing is left waiting.

        For `mountfs sync` and unmount: files still open for writing are committed too,
        because the user asked for everything. Unmount passes `pull=False`: with the kernel
        gone there is nobody to show remote changes to (and nobody to invalidate).
        Raises like the loops do when offline.
        """
        await self._push_round(force=True)
        if pull:
            await self.pull_all()
        files, _, changes = pending_from_db(self._db.conn)
        if files == 0 and changes == 0:
            self._set_online(True, force=True)
            return True
        return False

    def _ready(self, node: nodes.Node) -> bool:
        """Commit now, or let a writer finish first? (see module docstring)."""
        now = time.monotonic()
        if self._refused.get(node.ino, 0) > now:
            return False
        if not self._is_open_for_write(node.ino):
            return True
        watch = self._watch.get(node.ino)
        if watch is None or watch.gen != node.content_gen:
            self._watch[node.ino] = _Watch(node.content_gen, now)
            return False
        return now - watch.since >= IDLE_COMMIT

    async def _commit(self, ino: InodeNo) -> None:
        try:
            if await self._uploader.commit(ino):
                self._watch.pop(ino, None)
                self._refused.pop(ino, None)
        except CommitRefused as exc:
            log.error("backend refused the content of inode %d: %s", ino, exc)
            self._refused[ino] = time.monotonic() + REFUSED_RETRY
        except CommitConflict as conflict:
            await self._resolve_content(ino, conflict)
        except Exception as exc:
            if is_temp_failure(exc):
                raise  # the loop goes offline and retries every file
            # One file's failure (a 4xx, a bug) must not hold back the others.
            log.error("committing inode %d failed; retry in %.0fs", ino, FAILED_RETRY, exc_info=exc)
            self._refused[ino] = time.monotonic() + FAILED_RETRY

    async def _resolve_content(self, ino: InodeNo, conflict: CommitConflict) -> None:
        """Another device's commit won: keep both (`conflicts.Resolver.content_conflict`).

        The file is committed again by a later round (the copy once its create is pushed).
        """
        if self.resolver is None:
            log.warning("inode %d changed on another device; it stays unsent", ino)
            self._refused[ino] = time.monotonic() + REFUSED_RETRY
            return
        try:
            await self.resolver.content_conflict(ino, conflict)
        except Exception as exc:
            if is_temp_failure(exc):
                raise
            log.error("resolving the conflict on inode %d failed", ino, exc_info=exc)
            self._refused[ino] = time.monotonic() + FAILED_RETRY

    async def pull_all(self) -> int:
        """Apply every journal entry past the cursor; return how many were applied."""
        applied = 0
        async with self._pull_lock:
            applied += self._applier.apply_deferred()  # files whose writers have closed
            while True:
                cursor = int(self._db.get_meta("cursor") or 0)
                page = await self._api.journal(self._namespace_id, cursor)
                self._applier.apply_page(page.entries)
                applied += len(page.entries)
                self._tell_pulled(page.entries)
                self.shared.note(page.entries)
                if not page.has_more:
                    break
            shared = await self.shared.pull()
            self._tell_pulled(shared)
            await self._refresh_places()
            return applied + len(shared)

    async def _refresh_places(self) -> None:
        """Folders the applier took out of a loop on its own (crossing moves,
        `RemoteApplier.stale_places`) go where the backend has them, once no queued op of
        ours is about them: the backend's tree is the truth and the journal alone would
        never move them back."""
        if self.resolver is None:
            return
        for node_id in self._applier.stale_places():
            if outbox.references(self._db.conn, node_id):
                continue  # our ops first: a move's answer (or `cycle`), a delete, ...
            await self.resolver.refresh(node_id)
            self._applier.settled(node_id)

    def _pull_every(self) -> float:
        """Seconds between polls: `pull_interval`, unless shares are followed that the push
        channel does not announce (`SharedNamespaces.poll_every`)."""
        return self.shared.poll_every(self.pull_interval, POLL_PULL)

    def _tell_pulled(self, entries: list[JournalEntry]) -> None:
        """Show applied entries to the `pulled` observers; their failure is only logged."""
        for observer in self.pulled:
            try:
                observer(entries)
            except Exception:
                log.exception("an observer of pulled changes failed")

    async def sync_within(self, seconds: float) -> bool:
        """`flush()` until it reports nothing waiting, for at most `seconds`.

        What `mountfs sync` waits for, mounted or not. An unreachable backend is retried
        every `SYNC_RETRY` seconds until the time is up; the answer is then False.
        """
        with trio.move_on_after(seconds):
            while True:
                try:
                    if await self.flush():
                        return True
                except Exception as exc:
                    if not is_temp_failure(exc):
                        raise
                    log.info("sync: the backend is unavailable (%s); retrying", exc)
                await trio.sleep(SYNC_RETRY)
        return False

    async def _learn_limits(self) -> None:
        """Record the largest file the backend stores (`meta.max_file_bytes`), so that the
        mount refuses bigger files with EFBIG at once; retried until the backend answers."""
        wait = 1.0
        while True:
            try:
                me = await self._api.me()
            except Exception as exc:
                if not is_temp_failure(exc):  # e.g. a revoked device: the loops say so
                    log.info("could not learn the largest file size: %s", exc)
                    return
                await trio.sleep(wait)
                wait = min(wait * 2, 60.0)
                continue
            with self._db.transaction():
                self._db.set_meta(MAX_FILE_META, str(me.max_file_bytes))
            return

    @property
    def uploader(self) -> Uploader:
        """For `mountfs cancel` (abandon one file's upload) and transfer progress."""
        return self._uploader

    @property
    def uploaded_bytes(self) -> int:
        return self._uploader.stats.bytes_uploaded

    @property
    def downloaded_bytes(self) -> int:
        return self._uploader.fetched_bytes
