"""A network link between one device and the backend that a test can cut and restore.

Two mounts of one account on one machine stand for two devices; to make them change the
same thing *at the same time* (before either has heard of the other's change), each
device talks to the backend through its own `Link`, a TCP relay on a loopback port. `cut()`
stops listening and closes every relayed connection, as pulling the device's network
cable would (the device goes offline: its engine backs off, the mount keeps working);
`restore()` listens again on the same port. The backend and the other devices notice
nothing.

The relay runs in threads of the test process: one accept loop, two pumps per connection.
`close()` (the fixture's teardown) cuts the link and joins every thread.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from tests.support.ports import LOOPBACK, free_port

ACCEPT_POLL_S = 0.05
CHUNK = 256 * 1024


class Link:
    """A relay from `url` (a loopback port of its own) to `target_host:target_port`."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port(LOOPBACK)
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._listener: socket.socket | None = None
        self._accepting = threading.Event()
        self.restore()

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def is_up(self) -> bool:
        return self._listener is not None

    def restore(self) -> None:
        """Listen again (no-op if up)."""
        if self._listener is not None:
            return
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((LOOPBACK, self.port))
        listener.listen(64)
        listener.settimeout(ACCEPT_POLL_S)
        self._listener = listener
        with self._lock:
            self._accepting.set()
            self._start(self._accept_loop, listener)

    def cut(self) -> None:
        """Refuse new connections and break every open one (no-op if already cut)."""
        listener, self._listener = self._listener, None
        with self._lock:
            self._accepting.clear()
            open_sockets = list(self._sockets)
            threads, self._threads = self._threads, []
        for sock in open_sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread in threads:
            thread.join(10)
        if listener is not None:
            listener.close()
        with self._lock:
            for sock in self._sockets:
                sock.close()
            self._sockets.clear()

    def close(self) -> None:
        self.cut()

    @contextmanager
    def down(self) -> Iterator[None]:
        """Cut for the length of the block."""
        self.cut()
        try:
            yield
        finally:
            self.restore()

    def _start(self, target: object, *args: object) -> None:
        """Start a relay thread (called with `_lock` held, so `cut()` joins it)."""
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        self._threads.append(thread)
        thread.start()

    def _accept_loop(self, listener: socket.socket) -> None:
        while self._accepting.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            client.settimeout(None)
            with self._lock:
                if not self._accepting.is_set():
                    client.close()
                    upstream.close()
                    return
                self._sockets.update((client, upstream))
                self._start(self._pump, client, upstream)
                self._start(self._pump, upstream, client)

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                data = source.recv(CHUNK)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)
