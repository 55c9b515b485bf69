"""Only what changed moves: a 4 KiB edit of a 64 MiB file uploads one or two chunks, and a
4 KiB read of it on another device downloads one or two. Figures are printed (`-s`).

The content and the patch are fixed (SHAKE-256 of a seed, `pseudo_random`), not random: under
the v2 boundaries about 1 edit in 150 at a random offset re-cuts more than two chunks (up to
~10, a few MiB; docs/chunk-format.md), and a test must not fail by that chance. For these
bytes the edit re-cuts exactly one chunk."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from mountfs.chunks.cdc import MAX_CHUNK_SIZE
from tests.support.api_client import ApiClient
from tests.support.backend import BackendProcess
from tests.support.mount import Account, Devices, MountProcess, remote_node
from tests.unit.chunks.vectors import pseudo_random

SIZE = 64 << 20
MIDDLE = 32 << 20
EDIT = 4096


@dataclass
class BigFile:
    devices: Devices
    writer: MountProcess
    api: ApiClient
    data: bytearray

    def manifest(self) -> list[dict[str, Any]]:
        """The chunk refs of the file's head revision in the backend."""
        node = remote_node(self.api, "big.bin")
        assert node is not None
        chunks: list[dict[str, Any]] = self.api.revision(node["head_revision"])["chunks"]
        return chunks


@pytest.fixture(scope="module")
def big(
    tmp_path_factory: pytest.TempPathFactory, backend_session: BackendProcess
) -> Iterator[BigFile]:
    """A 64 MiB file of pseudo-random bytes, written on one device and synced."""
    devices = Devices(
        Account.register(backend_session.base_url, "big"), tmp_path_factory.mktemp("big")
    )
    try:
        writer = devices("writer")
        data = bytearray(pseudo_random("large-file-test", SIZE))
        (writer.mountpoint / "big.bin").write_bytes(data)
        writer.synced()
        with devices.account.api() as api:
            yield BigFile(devices, writer, api, data)
        devices.stop_all()
    finally:
        problems = devices.close()
    assert not problems, "\n".join(problems)


def test_a_4_kib_edit_of_a_64_mib_file_uploads_one_or_two_chunks(big: BigFile) -> None:
    before = big.manifest()
    uploaded = big.writer.live_status()["uploaded_bytes"]
    patch = pseudo_random("large-file-patch", EDIT)
    fd = os.open(big.writer.mountpoint / "big.bin", os.O_WRONLY)
    try:
        os.pwrite(fd, patch, MIDDLE)
    finally:
        os.close(fd)
    big.data[MIDDLE : MIDDLE + EDIT] = patch
    big.writer.synced()
    sent = big.writer.live_status()["uploaded_bytes"] - uploaded

    after = big.manifest()
    new_objects = {c["object"] for c in after} - {c["object"] for c in before}
    print(f"4 KiB edit: {len(new_objects)} new chunk(s), {sent} bytes uploaded")
    assert 1 <= len(new_objects) <= 2, (
        [(c["offset"], c["size"]) for c in after if c["object"] in new_objects],
        [(c["offset"], c["size"]) for c in before if abs(c["offset"] - MIDDLE) < 8 << 20],
    )
    assert sent == sum(c["stored_size"] for c in after if c["object"] in new_objects)
    assert sum(c["size"] for c in after) == SIZE
    # A device that has never seen the file reads the edited bytes, all of them.
    reader = big.devices("edit-reader")
    reader.synced()
    content = (reader.mountpoint / "big.bin").read_bytes()
    assert hashlib.sha256(content).digest() == hashlib.sha256(big.data).digest()
    reader.stop()


def test_a_4_kib_read_downloads_only_the_chunks_that_hold_it(big: BigFile) -> None:
    reader = big.devices("small-reader")
    reader.synced()
    before = reader.live_status()["downloaded_bytes"]
    offset = MIDDLE + 3 * EDIT  # inside the 64 MiB, away from the start
    with open(reader.mountpoint / "big.bin", "rb") as f:
        f.seek(offset)
        assert f.read(EDIT) == bytes(big.data[offset : offset + EDIT])
    fetched = reader.live_status()["downloaded_bytes"] - before
    print(f"4 KiB read from a remote 64 MiB file: {fetched} bytes downloaded")
    chunks = big.manifest()
    largest_two = sorted((c["stored_size"] for c in chunks), reverse=True)[:2]
    assert 0 < fetched <= sum(largest_two) <= 2 * (MAX_CHUNK_SIZE + 4096)
    reader.stop()
