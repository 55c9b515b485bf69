"""Writes reach the backend by themselves: soon after close, and while a writer keeps a file
open once it goes idle. Latencies are printed (run with `-s` to see them)."""

from __future__ import annotations

import functools
import os
import statistics
import time
from typing import Any

from mountfs.sync.engine import IDLE_COMMIT
from tests.support.api_client import ApiClient
from tests.support.mount import Devices, remote_node, wait_for


def _committed(api: ApiClient, path: str, size: int) -> dict[str, Any] | None:
    """The node at `path` once the backend has a revision of `size` bytes for it."""
    node = remote_node(api, path)
    if node is None or node["head_revision"] is None or node["size"] != size:
        return None
    return node


def test_a_new_small_file_is_in_the_backend_within_a_second(
    mount_factory: Devices, inspector: ApiClient
) -> None:
    mount = mount_factory()
    latencies = []
    for i in range(5):
        data = os.urandom(1000 + i)
        with open(mount.mountpoint / f"small-{i}", "wb") as f:
            f.write(data)
        closed = time.monotonic()
        wait_for(functools.partial(_committed, inspector, f"small-{i}", len(data)), 10, "commit")
        latencies.append(time.monotonic() - closed)
    print(
        f"close -> revision in the backend: median {statistics.median(latencies) * 1000:.0f} ms,"
        f" max {max(latencies) * 1000:.0f} ms"
    )
    assert max(latencies) < 1.0
    mount_factory.roundtrip_check(mount)


def test_a_file_still_open_for_writing_is_uploaded_once_idle(
    mount_factory: Devices, inspector: ApiClient
) -> None:
    mount = mount_factory()
    with open(mount.mountpoint / "growing.log", "wb") as log:
        for round_, line in enumerate([b"first line\n", b"second line\n"]):
            log.write(line)
            log.flush()
            os.fsync(log.fileno())  # with the writeback cache, bytes reach the mount here
            written = time.monotonic()
            size = log.tell()
            wait_for(functools.partial(_committed, inspector, "growing.log", size), 15, "idle")
            waited = time.monotonic() - written
            print(f"round {round_}: committed {waited:.2f}s after the last write, still open")
            assert waited < IDLE_COMMIT + 3
        log.write(b"last line, then close\n")
    mount_factory.roundtrip_check(mount)
