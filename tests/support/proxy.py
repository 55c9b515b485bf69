"""A TCP proxy on loopback that counts bytes and can cut the network, for transfer tests.

Clients talk to the backend through it (the embedded store builds presigned URLs on the
request's own origin, so block PUTs and GETs go through it too). It counts the bytes each
way, and `cut()` (or `cut_after(n)`, once `n` more bytes went up) drops every connection
and refuses new ones until `restore()`: a network that went away mid-transfer.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
from collections.abc import Iterator

__all__ = ["CutProxy", "cut_proxy"]

_PIECE = 64 * 1024


class CutProxy:
    """See the module docstring. Thread-safe; `close()` stops it."""

    def __init__(self, target_port: int) -> None:
        self._target = ("127.0.0.1", target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._down = False
        self._cut_at: int | None = None
        self._cut_down_at: int | None = None
        self._closed = False
        self.up_bytes = 0
        """Bytes from clients to the backend."""
        self.down_bytes = 0
        """Bytes from the backend to clients."""
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def is_down(self) -> bool:
        return self._down

    def cut(self) -> None:
        """Drop every connection now and refuse new ones."""
        with self._lock:
            self._down = True
            self._cut_at = self._cut_down_at = None
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def cut_after(self, more_up_bytes: int) -> None:
        """`cut()` once `more_up_bytes` more bytes have gone up."""
        with self._lock:
            self._cut_at = self.up_bytes + more_up_bytes

    def cut_after_down(self, more_down_bytes: int) -> None:
        """`cut()` once `more_down_bytes` more bytes have come down."""
        with self._lock:
            self._cut_down_at = self.down_bytes + more_down_bytes

    def restore(self) -> None:
        with self._lock:
            self._down = False

    def close(self) -> None:
        self._closed = True
        self.cut()
        self._listener.close()
        self._thread.join(5)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._down:
                client.close()
                continue
            try:
                server = socket.create_connection(self._target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns |= {client, server}
            threading.Thread(target=self._pump, args=(client, server), daemon=True).start()

    def _pump(self, client: socket.socket, server: socket.socket) -> None:
        sel = selectors.DefaultSelector()
        sel.register(client, selectors.EVENT_READ, server)
        sel.register(server, selectors.EVENT_READ, client)
        try:
            while not self._down:
                for key, _ in sel.select(0.1):
                    source: socket.socket = key.fileobj  # type: ignore[assignment]
                    data = source.recv(_PIECE)
                    if not data:
                        return
                    upward = source is client
                    with self._lock:
                        if self._down:
                            return
                        if upward:
                            self.up_bytes += len(data)
                            if self._cut_at is not None and self.up_bytes >= self._cut_at:
                                self._down = True
                                self._cut_at = None
                        else:
                            self.down_bytes += len(data)
                            if self._cut_down_at is not None and (
                                self.down_bytes >= self._cut_down_at
                            ):
                                self._down = True
                                self._cut_down_at = None
                    key.data.sendall(data)
        except OSError:
            return
        finally:
            sel.close()
            with self._lock:
                self._conns -= {client, server}
            for sock in (client, server):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()


@contextlib.contextmanager
def cut_proxy(target_port: int) -> Iterator[CutProxy]:
    proxy = CutProxy(target_port)
    try:
        yield proxy
    finally:
        proxy.close()
