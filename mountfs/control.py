"""The control channel between the CLI and a running mount: a Unix socket in the state dir.

`mountfs sync`, `mountfs status` and `mountfs umount` ask the mount daemon of a state
directory for things only it can do (flush now, report live figures) by sending one JSON
line and reading one JSON line back. The socket is created with mode 0600 inside the 0700
state directory: only the device's owner can talk to it.

Requests: `{"cmd": "status"}`, `{"cmd": "sync", "timeout": seconds}`; `pause`, `resume`
and `{"cmd": "cancel", "path": …, "abs": …}` (`mountfs.sync.controls`); the pin commands
(`mountfs.sync.pinning`).
Answers: `{"ok": true, ...}` or `{"ok": false, "error": "..."}`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import trio

log = logging.getLogger(__name__)

SOCKET_NAME = "control.sock"
MAX_LINE = 1 << 20
_SUN_PATH_MAX = 108  # sizeof(sockaddr_un.sun_path) on Linux, the terminating NUL included

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class NoDaemon(Exception):
    """No mount daemon is listening on this state directory."""


def socket_path(state_dir: Path) -> Path:
    return state_dir / SOCKET_NAME


@contextlib.contextmanager
def _addressable(path: Path) -> Iterator[str]:
    """An address for `path` that fits `sockaddr_un` (108 bytes).

    A state directory deep in a home directory easily makes a longer path, which bind and
    connect refuse ("AF_UNIX path too long"). Then the directory is opened and the socket
    named through `/proc/self/fd/N/`, which the kernel resolves like the real path (with
    the same permission checks) for as long as the descriptor is open.
    """
    if len(os.fsencode(path)) < _SUN_PATH_MAX:
        yield str(path)
        return
    fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


async def serve(
    state_dir: Path, handler: Handler, task_status: Any = trio.TASK_STATUS_IGNORED
) -> None:
    """Answer control requests until cancelled (one task per connection)."""
    path = socket_path(state_dir)
    path.unlink(missing_ok=True)
    listener = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        with _addressable(path) as address:
            await listener.bind(address)
    finally:
        os.umask(old_umask)
    listener.listen(16)
    task_status.started()
    try:
        async with trio.open_nursery() as nursery:
            while True:
                conn, _ = await listener.accept()
                nursery.start_soon(_answer, trio.SocketStream(conn), handler)
    finally:
        listener.close()
        path.unlink(missing_ok=True)


async def _answer(stream: trio.SocketStream, handler: Handler) -> None:
    async with stream:
        try:
            request = json.loads(await _read_line(stream))
            if not isinstance(request, dict):
                raise ValueError("request must be a JSON object")
            reply = await handler(request)
        except (ValueError, KeyError) as exc:
            reply = {"ok": False, "error": f"bad request: {exc}"}
        except Exception as exc:  # a broken request must not take the mount down
            log.exception("control request failed")
            reply = {"ok": False, "error": str(exc)}
        with contextlib.suppress(trio.BrokenResourceError):
            await stream.send_all(json.dumps(reply).encode() + b"\n")


async def _read_line(stream: trio.SocketStream) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        piece = await stream.receive_some(65536)
        if not piece:
            break
        data += piece
        if len(data) > MAX_LINE:
            raise ValueError("request too long")
    return data


def request(state_dir: Path, body: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Send one request to the daemon of `state_dir` and return its answer (blocking).

    Raises:
        NoDaemon: nothing listens there (no mount of this state is running).
        TimeoutError: no answer within `timeout` seconds.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            with _addressable(socket_path(state_dir)) as address:
                sock.connect(address)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise NoDaemon(f"no mount is running for {state_dir}") from exc
        sock.sendall(json.dumps(body).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            piece = sock.recv(65536)
            if not piece:
                break
            data += piece
    except TimeoutError as exc:
        raise TimeoutError(f"the mount did not answer within {timeout:.0f}s") from exc
    finally:
        sock.close()
    answer: dict[str, Any] = json.loads(data)
    return answer
