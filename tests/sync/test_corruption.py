"""A damaged chunk in the block store is an I/O error, never wrong bytes."""

from __future__ import annotations

import errno
import os

import pytest

from tests.support.backend import BackendProcess
from tests.support.mount import Devices, remote_node


def _flip_a_byte(path: os.PathLike[str]) -> None:
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))


@pytest.mark.embedded_only("damages a chunk file in the embedded block directory")
def test_a_corrupted_chunk_reads_as_eio_on_a_fresh_device(
    private: Devices, backend_server: BackendProcess
) -> None:
    writer = private("writer")
    data = os.urandom(6 << 20)
    (writer.mountpoint / "doc.bin").write_bytes(data)
    writer.synced()
    with private.account.api() as api:
        node = remote_node(api, "doc.bin")
        assert node is not None
        chunks = api.revision(node["head_revision"])["chunks"]
    assert len(chunks) >= 3, "the file should span several chunks"
    bad = chunks[len(chunks) // 2]
    obj = bad["object"]
    _flip_a_byte(backend_server.data_dir / "blocks" / "objects" / obj[:2] / obj)

    reader = private("reader")
    reader.allowed_log += ["failed verification", obj, "read: "]
    reader.synced()
    with open(reader.mountpoint / "doc.bin", "rb") as f:
        assert f.read(4096) == data[:4096]  # the first chunk is fine
        for _ in range(2):  # and the bad one stays bad: nothing wrong was cached
            f.seek(bad["offset"] + bad["size"] // 2)
            with pytest.raises(OSError, match="Input/output error") as exc_info:
                f.read(4096)
            assert exc_info.value.errno == errno.EIO
    with pytest.raises(OSError, match="Input/output error") as whole:
        (reader.mountpoint / "doc.bin").read_bytes()
    assert whole.value.errno == errno.EIO
    errors = [line for line in reader.logs().splitlines() if " ERROR " in line and obj in line]
    assert errors, "the damaged object is named in an error in the log"
    assert (writer.mountpoint / "doc.bin").read_bytes() == data  # the writer's copy is local
