"""Composition root of the mount: build the layers, mount, serve, and shut down cleanly.

`mount()` checks the mountpoint (a dead mount left by a crashed daemon -- "Transport
endpoint is not connected" -- is lazily unmounted first), then either serves in the
foreground or forks a daemon *before any thread exists*. The daemon opens and repairs the
state, mounts (`pyfuse3.init`), and only then reports "ready" to the waiting parent over a
pipe, so `mountfs mount` returns 0 exactly when the folder is usable, or 1 with the
daemon's reason.

The daemon's lifetime, in order: lock the state directory (`mountfs.pid`, flock'ed: one
daemon per state), load the device login, open the database, repair it against the cache
directory (`vfs.fsck.repair`), mount, run `pyfuse3.main()` beside the invalidation notifier
and the WAL checkpointer in one nursery, and on unmount or SIGTERM/SIGINT: close the FUSE
session, drop leftover lookup counts (purging unlinked inodes), checkpoint and close the
database, remove the pid file.

`umount()` asks the mount for its daemon's pid (`user.mountfs.pid` on the mountpoint),
unmounts with `fusermount3 -u` (the kernel writes back dirty pages first) and waits for
the daemon to finish its shutdown.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import errno
import faulthandler
import logging
import logging.handlers
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO

import pyfuse3
import trio

from mountfs import control
from mountfs.cache.block_cache import CACHE_DIR, BlockCache, CacheLimits
from mountfs.desktop import DesktopNotifier
from mountfs.fuse.activity import RequestActivity
from mountfs.fuse.ops import CONTROL_PID_XATTR
from mountfs.fuse.shares import SharesOperations
from mountfs.state import pins
from mountfs.state.db import DB_FILE, SchemaError, StateDb, open_state
from mountfs.state.grouping import GroupCommitter
from mountfs.state.lock import PID_FILE, StateBusy, lock_state
from mountfs.status import Status, iso_from_ns, pending_from_db
from mountfs.sync import controls
from mountfs.sync.carry import Carrier
from mountfs.sync.engine import SyncEngine
from mountfs.sync.listen import Listener, engine_listener
from mountfs.sync.pinning import PIN_COMMANDS, Pinner
from mountfs.sync.reads import OFFLINE_READ_TIMEOUT, ReadFetcher
from mountfs.sync.session import Transport, build_engine, build_fetcher
from mountfs.sync.transfers import DEFAULT_IN_FLIGHT, Bandwidth, Transfers
from mountfs.transport.api import ApiError, Offline
from mountfs.transport.auth import NotLoggedIn, load_device
from mountfs.types import InodeNo
from mountfs.vfs import Vfs, build_vfs
from mountfs.vfs.fsck import StateCorrupt, WrongAccount, repair
from mountfs.vfs.versions import VersionsView

__all__ = ["CACHE_DIR", "LOG_FILE", "PID_FILE", "MountOptions", "mount", "umount"]

log = logging.getLogger(__name__)

LOG_FILE = "mountfs.log"
FINAL_FLUSH_S = 20.0
"""At unmount, how long the daemon keeps pushing before it leaves the rest for next time."""

_CHECKPOINT_EVERY_S = 0.5
_CHECKPOINT_QUIET_S = 1.0
_READY = b"ready\n"
_LOG_BYTES = 16 << 20  # per log file; three old ones are kept

Notify = Callable[[str | None], None]
"""Tells whoever waits for the mount: None = mounted and ready, else the failure reason."""


class MountFailure(Exception):
    """A reason not to mount that the user can act on (logged without a traceback)."""


_KNOWN_FAILURES = (MountFailure, NotLoggedIn, WrongAccount, StateCorrupt, SchemaError, StateBusy)


@dataclass(frozen=True, slots=True)
class MountOptions:
    """What `mountfs mount` asked for.

    Attributes:
        mountpoint: an existing directory.
        state_dir: the device's state directory (login, database, cache, log).
        foreground: serve in this process instead of forking a daemon; logs also to stderr.
        log_level: logging level name for `STATE/mountfs.log`.
        cache_size: cache limit in bytes; None = a sensible share of free disk
            (`CacheLimits.for_disk`).
        offline_read_timeout: seconds a read of uncached bytes waits for a backend that
            does not answer before it fails with EIO (`mountfs.sync.reads`).
        bandwidth: `--bwlimit`, bytes per second per direction.
        in_flight: `--transfers`, chunk requests at once.
        notify: show desktop notifications (conflicts) when a desktop session can
            (`mountfs.desktop`; `--no-notify` turns them off).
    """

    mountpoint: Path
    state_dir: Path
    foreground: bool = False
    log_level: str = "INFO"
    cache_size: int | None = None
    offline_read_timeout: float = OFFLINE_READ_TIMEOUT
    bandwidth: Bandwidth = Bandwidth()
    in_flight: int = DEFAULT_IN_FLIGHT
    notify: bool = True


# --- mount -------------------------------------------------------------------------------


def mount(opts: MountOptions) -> int:
    """Mount the account of `opts.state_dir` at `opts.mountpoint`; see the module docstring.

    Returns:
        0 once mounted (or, in the foreground, after a clean unmount); 1 with a message on
        stderr if the mount could not be made.
    """
    opts = replace(opts, mountpoint=opts.mountpoint.absolute(), state_dir=opts.state_dir.absolute())
    problem = _prepare_mountpoint(opts.mountpoint)
    if problem is None:
        try:
            load_device(opts.state_dir)
        except NotLoggedIn as exc:
            problem = str(exc)
    if problem is not None:
        print(f"mountfs: {problem}", file=sys.stderr)
        return 1
    if opts.foreground:
        return _serve(opts, _notify_stderr)
    return _daemonize(opts)


def _prepare_mountpoint(mountpoint: Path) -> str | None:
    """None if `mountpoint` can be mounted on; else why not. Cleans up a dead mount."""
    try:
        if _is_dead_mount(mountpoint):
            print(f"mountfs: cleaning up a dead mount at {mountpoint}", file=sys.stderr)
            _lazy_unmount(mountpoint)
        os.stat(mountpoint)
    except OSError as exc:
        return f"{mountpoint}: {exc.strerror}"
    if not mountpoint.is_dir():
        return f"{mountpoint} is not a directory"
    if os.path.ismount(mountpoint):
        return f"{mountpoint} is already a mount point"
    return None


def _is_dead_mount(mountpoint: Path) -> bool:
    """True if a FUSE daemon died without unmounting `mountpoint`.

    `statvfs`, unlike `stat`, is never answered from the kernel's attribute cache, so it
    reaches the (dead) connection and fails with ENOTCONN.
    """
    try:
        os.statvfs(mountpoint)
    except OSError as exc:
        if exc.errno == errno.ENOTCONN:
            return True
        if exc.errno == errno.ENOENT:
            return False
        raise
    return False


def _lazy_unmount(mountpoint: Path) -> bool:
    result = subprocess.run(
        ["fusermount3", "-u", "-z", str(mountpoint)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        log.warning("fusermount3 -u -z %s: %s", mountpoint, result.stderr.strip())
    return result.returncode == 0


def _notify_stderr(problem: str | None) -> None:
    if problem is not None:
        print(f"mountfs: {problem}", file=sys.stderr)


def _daemonize(opts: MountOptions) -> int:
    """Fork (no thread exists yet); the parent waits for the child's verdict on a pipe."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the daemon
        os.close(read_end)
        code = 1
        try:
            os.setsid()
            os.chdir("/")  # hold no directory busy; every path in opts is absolute
            code = _serve(opts, _pipe_notifier(write_end))
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        verdict = pipe.read()
    if verdict == _READY:
        return 0
    os.waitpid(pid, 0)
    reason = verdict.decode(errors="replace").strip() or "the daemon exited before mounting"
    print(f"mountfs: {reason} (log: {opts.state_dir / LOG_FILE})", file=sys.stderr)
    return 1


def _pipe_notifier(fd: int) -> Notify:
    def notify(problem: str | None) -> None:
        with contextlib.suppress(OSError), os.fdopen(fd, "wb") as pipe:
            pipe.write(_READY if problem is None else problem.encode() + b"\n")

    return notify


# --- the daemon ----------------------------------------------------------------------------


@dataclass(slots=True)
class _Daemon:
    """What the daemon opened, for orderly shutdown."""

    vfs: Vfs
    lock: IO[str]
    fsync_limiter: trio.CapacityLimiter
    transport: Transport
    engine: SyncEngine
    state_dir: Path
    pinner: Pinner
    carrier: Carrier
    listener: Listener
    desktop: DesktopNotifier | None
    activity: RequestActivity


def _serve(opts: MountOptions, notify: Notify) -> int:
    """Open, mount, report, serve until unmounted; the exit status of the mount."""
    _setup_logging(opts)
    try:
        daemon = _start(opts)
    except _KNOWN_FAILURES as exc:
        log.error("cannot mount %s: %s", opts.mountpoint, exc)
        notify(f"cannot mount {opts.mountpoint}: {exc}")
        return 1
    except Exception as exc:
        log.exception("cannot mount %s", opts.mountpoint)
        notify(f"cannot mount {opts.mountpoint}: {exc}")
        return 1
    log.info("mounted %s (state %s, pid %d)", opts.mountpoint, opts.state_dir, os.getpid())
    notify(None)
    code = 0
    try:
        trio.run(_main, daemon)
    except BaseException:
        log.exception("the filesystem loop failed")
        code = 1
    finally:
        _stop(opts, daemon)
    return code


def _setup_logging(opts: MountOptions) -> None:
    """Log to `STATE/mountfs.log` always, and to stderr in the foreground or under systemd.

    Under systemd stderr is the journal (`mountfs.systemd_journal`): the records go there
    too, with syslog priorities, and a daemon keeps its stderr instead of pointing it at
    the log file, so what libfuse or Python print reaches the journal. The file stays in
    both cases: it is where `mountfs mount` points when the daemon fails to start.
    """
    from mountfs.systemd_journal import JournalFormatter, stderr_is_journal

    opts.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    root = logging.getLogger()
    root.setLevel(opts.log_level.upper())
    formatter = logging.Formatter("%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s")
    os.close(os.open(opts.state_dir / LOG_FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
    handler: logging.Handler = logging.handlers.RotatingFileHandler(
        opts.state_dir / LOG_FILE, maxBytes=_LOG_BYTES, backupCount=3
    )
    handler.setFormatter(formatter)
    root.addHandler(handler)
    # One line per HTTP request is noise at INFO; our own modules log what matters.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, root.level))
    journal = stderr_is_journal()
    if opts.foreground or journal:
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(JournalFormatter() if journal else formatter)
        root.addHandler(console)
    if not opts.foreground:
        # Whatever libfuse or Python itself prints lands in the log (or the journal),
        # not in /dev/null.
        null_fd = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null_fd, 0)
        os.close(null_fd)
        if not journal:
            log_fd = os.open(opts.state_dir / LOG_FILE, os.O_WRONLY | os.O_APPEND)
            os.dup2(log_fd, 1)
            os.dup2(log_fd, 2)
            os.close(log_fd)
    faulthandler.enable(file=sys.stderr, all_threads=True)
    faulthandler.register(signal.SIGUSR1, file=sys.stderr, all_threads=True)


def _start(opts: MountOptions) -> _Daemon:
    lock = lock_state(opts.state_dir)
    try:
        device = load_device(opts.state_dir)
        db = open_state(opts.state_dir / DB_FILE)
        fsync_limiter = trio.CapacityLimiter(2)
        cache_root = opts.state_dir / CACHE_DIR
        cache_root.mkdir(exist_ok=True, mode=0o700)
        cache = BlockCache(
            cache_root,
            CacheLimits.for_disk(cache_root, opts.cache_size),
            db,
            io_limiter=trio.CapacityLimiter(4),
            fsync_limiter=fsync_limiter,
        )
        report = repair(db, cache, root_id=device.root_id, uid=os.getuid(), gid=os.getgid())
        cache.limits = CacheLimits.for_disk(cache_root, opts.cache_size, cache.stats().used)
        log.info("state checked (%s); cache %s", report, cache.stats())
        transport = Transport.open(
            device, Transfers(opts.state_dir, opts.bandwidth, opts.in_flight)
        )
        fetcher = build_fetcher(transport, db, cache)
        reads = ReadFetcher(fetcher, db, opts.offline_read_timeout)
        vfs = build_vfs(db, cache, fetcher=reads, fsync_limiter=fsync_limiter)
        pinner = Pinner(db, cache, fetcher, mountpoint=opts.mountpoint)
        carrier = Carrier(
            db, cache, fetcher, vfs.inodes.hold, vfs.inodes.release, on_done=pinner.kick
        )
        engine = build_engine(
            transport,
            db,
            cache,
            fetcher,
            invalidator=vfs.invalidator,
            purge_if_unused=vfs.inodes.maybe_purge,
            is_open_for_write=_writers(vfs),
            in_use=vfs.inodes.in_use,
            on_content=pinner.kick,
            carry=carrier.submit,
        )
        vfs.files.on_settled = lambda ino: engine.kick()
        listener = engine_listener(transport.api, engine, db, device.namespace_id)
        desktop = DesktopNotifier.if_available(device.device_id) if opts.notify else None
        if desktop is not None:
            engine.pulled.append(desktop.observe)
        options = set(pyfuse3.default_options)  # keeps default_permissions: the kernel checks
        options |= {f"fsname=mountfs:{device.account_name}", "subtype=mountfs"}
        try:
            # `.versions` at the root (mountfs.vfs.versions) on top of the ordinary handlers.
            view = VersionsView(transport.api, device.root_id, fetcher.chunk_plaintext)
            # ... and viewers' shares read-only (mountfs.fuse.shares).
            ops = SharesOperations(vfs, view, engine.shared)
            engine.before_round = ops.activity.lull  # rounds yield to request bursts
            pyfuse3.init(ops, str(opts.mountpoint), options)
        except RuntimeError as exc:  # libfuse has printed its reason to stderr (the log)
            raise MountFailure(f"the kernel refused the mount ({exc})") from exc
    except BaseException:
        lock.close()
        raise
    return _Daemon(
        vfs=vfs,
        lock=lock,
        fsync_limiter=fsync_limiter,
        transport=transport,
        engine=engine,
        state_dir=opts.state_dir,
        pinner=pinner,
        carrier=carrier,
        listener=listener,
        desktop=desktop,
        activity=ops.activity,
    )


def _writers(vfs: Vfs) -> Callable[[InodeNo], bool]:
    """Whether a handle that may write is open on an inode (the engine waits for those)."""

    def is_open_for_write(ino: InodeNo) -> bool:
        return any(
            h.ino == ino and h.flags & os.O_ACCMODE != os.O_RDONLY for h in vfs.handles.open_files()
        )

    return is_open_for_write


async def _main(daemon: _Daemon) -> None:
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_terminate_on_signals)
            nursery.start_soon(_checkpointer, daemon.vfs.db, daemon.fsync_limiter, daemon.activity)
            committer = GroupCommitter(daemon.vfs.db, lambda: daemon.activity.last)
            await nursery.start(committer.run)
            await nursery.start(daemon.vfs.invalidator.run)
            await nursery.start(control.serve, daemon.state_dir, _control_handler(daemon))
            nursery.start_soon(daemon.engine.run)
            nursery.start_soon(daemon.listener.run)  # the push channel
            if daemon.desktop is not None:
                nursery.start_soon(daemon.desktop.run)
            nursery.start_soon(daemon.transport.transfers.gate.watch)
            await nursery.start(daemon.pinner.run)
            await nursery.start(daemon.carrier.run)
            await pyfuse3.main()
            nursery.cancel_scope.cancel()
        if daemon.transport.transfers.gate.paused:
            log.info("transfers are paused: what waits is left for after `mountfs resume`")
        else:
            await _final_flush(daemon.engine)
    finally:
        await daemon.transport.aclose()


async def _final_flush(engine: SyncEngine) -> None:
    """Push what can be pushed before exiting; the rest resumes at the next mount."""
    with trio.move_on_after(FINAL_FLUSH_S) as scope:
        try:
            await engine.flush(pull=False)
        except (Offline, ApiError) as exc:
            log.info("unmounted with changes still waiting (%s); they resume next mount", exc)
    if scope.cancelled_caught:
        log.info("unmounted with changes still waiting; they resume next mount")


def _control_handler(daemon: _Daemon) -> control.Handler:
    async def handle(request: dict[str, object]) -> dict[str, object]:
        command = request.get("cmd")
        if command == "status":
            return {"ok": True, "status": _status(daemon).to_json()}
        if command == "sync":
            seconds = float(request.get("timeout", 300))  # type: ignore[arg-type]
            deadline = trio.current_time() + seconds
            synced = await daemon.engine.sync_within(seconds)
            # Up to date also means: the kernel was told, and pinned content is here.
            with trio.move_on_at(deadline) as told:
                await daemon.vfs.invalidator.drained()
                await daemon.carrier.drained()
            synced = synced and not told.cancelled_caught
            left = max(deadline - trio.current_time(), 0.0)
            synced = synced and await daemon.pinner.settle(left)
            return {"ok": True, "synced": synced}
        if command in PIN_COMMANDS:
            return await daemon.pinner.handle(request)
        if command in controls.COMMANDS:
            transfers = daemon.transport.transfers
            uploader = daemon.engine.uploader
            return await controls.handle(request, daemon.vfs, uploader, transfers, daemon.state_dir)
        return {"ok": False, "error": f"unknown command {command!r}"}

    return handle


def _status(daemon: _Daemon) -> Status:
    db = daemon.vfs.db
    files, size, changes = pending_from_db(db.conn)
    cache = daemon.vfs.cache.stats()
    pinned = pins.totals(db.conn)
    return Status(
        mounted=True,
        online=daemon.engine.online,
        pending_files=files,
        pending_bytes=size,
        pending_changes=changes,
        cache_bytes=cache.used,
        cache_limit_bytes=cache.limit,
        dirty_bytes=cache.dirty,
        last_sync=iso_from_ns(db.get_meta("last_sync_ns")),
        uploaded_bytes=daemon.engine.uploaded_bytes,
        downloaded_bytes=daemon.engine.downloaded_bytes,
        pinned_files=pinned.files,
        pinned_bytes=pinned.bytes,
        pinned_missing_bytes=pinned.missing_bytes,
        paused=daemon.transport.transfers.gate.paused,
        transfers=[t.to_json() for t in daemon.transport.transfers.progress.snapshot()],
    )


async def _terminate_on_signals() -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("signal %d: unmounting", signum)
            pyfuse3.terminate()


async def _checkpointer(
    db: StateDb, limiter: trio.CapacityLimiter, activity: RequestActivity
) -> None:
    """Copy the WAL into the database now and then, off the trio thread (see state.db).

    Never in the middle of a burst of FUSE requests if it can wait: a checkpoint fsyncs the
    WAL that the burst's commits append to, and measured on `rm` of 3,000 files it made
    the median commit 6x slower (60 -> 360 us) and unlink 1.4x slower. So it runs once
    requests have paused for `_CHECKPOINT_QUIET_S`, or during a burst only once the WAL
    has outgrown its size limit (`StateDb.wal_overgrown`, which bounds it).
    """
    done = 0
    while True:
        await trio.sleep(_CHECKPOINT_EVERY_S)
        pending = db.commits - done
        quiet = time.monotonic() - activity.last >= _CHECKPOINT_QUIET_S
        if pending and (quiet or db.wal_overgrown()):
            db.commit_group()  # a group held open would keep the WAL from restarting
            done = db.commits
            try:
                await trio.to_thread.run_sync(db.checkpoint, limiter=limiter)
            except Exception:
                log.exception("WAL checkpoint failed (will retry)")


def _stop(opts: MountOptions, daemon: _Daemon) -> None:
    try:
        pyfuse3.close(unmount=True)
    except Exception:
        log.exception("closing the FUSE session failed")
    try:
        purged = daemon.vfs.inodes.forget_all()
        daemon.vfs.db.close()
        log.info("unmounted %s (purged %d unlinked inodes)", opts.mountpoint, purged)
    finally:
        with contextlib.suppress(OSError):
            (opts.state_dir / PID_FILE).unlink()
        daemon.lock.close()


# --- umount ------------------------------------------------------------------------------


def umount(mountpoint: Path, timeout: float = 60.0) -> int:
    """Unmount a mountfs mount and wait (up to `timeout` s) for its daemon to exit.

    A dead mount is lazily unmounted. Returns 0 on success, 1 with a message on stderr.
    """
    try:
        dead = _is_dead_mount(mountpoint)
    except OSError as exc:
        print(f"mountfs: {mountpoint}: {exc.strerror}", file=sys.stderr)
        return 1
    if dead:
        ok = _lazy_unmount(mountpoint)
        print(f"mountfs: {mountpoint}: cleaned up a dead mount", file=sys.stderr)
        return 0 if ok else 1
    if not os.path.ismount(mountpoint):
        print(f"mountfs: {mountpoint} is not mounted", file=sys.stderr)
        return 1
    pid = _daemon_pid(mountpoint, min(timeout, 10.0))
    if pid is None:
        print(f"mountfs: {mountpoint} is not a mountfs mount (or does not answer)", file=sys.stderr)
        return 1
    result = subprocess.run(
        ["fusermount3", "-u", str(mountpoint)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        print(f"mountfs: {result.stderr.strip() or 'fusermount3 -u failed'}", file=sys.stderr)
        return 1
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            print(f"mountfs: daemon {pid} still running after {timeout:g}s", file=sys.stderr)
            return 1
        time.sleep(0.05)
    return 0


def _daemon_pid(mountpoint: Path, timeout: float) -> int | None:
    """Ask the mount for its daemon's pid; None if it is not ours or hangs."""
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    future = pool.submit(os.getxattr, mountpoint, CONTROL_PID_XATTR.decode())
    try:
        return int(future.result(timeout=timeout))
    except (OSError, ValueError, concurrent.futures.TimeoutError):
        return None
    finally:
        pool.shutdown(wait=False)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"
