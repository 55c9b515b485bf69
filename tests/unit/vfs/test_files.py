"""File content through `Files`: writes, truncation, unlink-while-open, on-demand fetch,
eviction and the space budget -- all without FUSE."""

from __future__ import annotations

import errno
import os

import pytest
import trio
import trio.testing

from mountfs.cache.block_cache import CacheLimits
from mountfs.ids import uuid7
from mountfs.state import extents, nodes
from mountfs.state.nodes import NewNode, Node
from mountfs.state.schema import EXTENT_DIRTY, EXTENT_PRESENT
from mountfs.types import InodeNo, NodeId
from mountfs.vfs.errors import ContentUnavailable, NotFound
from tests.unit.vfs.conftest import CALLER, ROOT, Env, EnvFactory

MiB = 1 << 20


class RemoteStub:
    """A `ContentFetcher` serving bytes from memory, following the fetcher contract:
    gaps are checked, written and recorded with no await in between."""

    def __init__(self) -> None:
        self.env: Env | None = None
        self.content: dict[int, bytes] = {}
        self.calls: list[tuple[int, int, int]] = []
        self.gate: trio.Event | None = None

    async def ensure_present(self, ino: InodeNo, start: int, end: int) -> None:
        self.calls.append((ino, start, end))
        if self.gate is not None:
            await self.gate.wait()
        assert self.env is not None
        data = self.content[ino]
        with self.env.db.transaction() as conn:
            fd = os.open(self.env.vfs.cache.path(ino), os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                for gap_start, gap_end in extents.gaps(conn, ino, EXTENT_PRESENT, start, end):
                    os.pwrite(fd, data[gap_start:gap_end], gap_start)
                    extents.add(conn, ino, EXTENT_PRESENT, gap_start, gap_end)
            finally:
                os.close(fd)


def _remote_file(env: Env, stub: RemoteStub, name: str, content: bytes) -> Node:
    """A file that came from the backend: known, clean, nothing cached yet."""
    with env.db.transaction() as conn:
        node = nodes.insert(
            conn,
            NewNode(
                node_id=NodeId(uuid7()),
                parent_ino=InodeNo(ROOT),
                name=name,
                kind="file",
                mode=0o644,
                uid=CALLER.uid,
                gid=CALLER.gid,
                time_ns=1,
                size=len(content),
                remote_version=1,
            ),
        )
        nodes.set_fields(
            conn,
            node.ino,
            {"remote_head_revision": "rev-1", "remote_size": len(content), "complete": 0},
        )
    stub.content[node.ino] = content
    return env.vfs.tree.get(node.ino)


@pytest.mark.trio
async def test_write_read_truncate(env: Env) -> None:
    files, tree = env.vfs.files, env.vfs.tree
    node = tree.create_file(ROOT, b"f", 0o644, CALLER)
    fh = (await files.open(node.ino, os.O_RDWR)).fh
    assert await files.write(fh, 0, b"hello world") == 11
    assert await files.write(fh, 20, b"!") == 1  # past the end: a gap of zeros
    assert await files.read(fh, 0, 100) == b"hello world" + bytes(9) + b"!"
    node = tree.get(node.ino)
    assert (node.size, node.dirty, node.content_gen) == (21, True, 2)
    assert extents.intervals(env.db.conn, node.ino, EXTENT_DIRTY) == [(0, 21)]
    await files.truncate(node.ino, 5)
    assert await files.read(fh, 0, 100) == b"hello"
    await files.truncate(node.ino, 8)
    assert await files.read(fh, 0, 100) == b"hello\0\0\0"
    big = os.urandom(3 * MiB)  # above INLINE_IO_MAX: goes through a worker thread
    await files.write(fh, 0, big)
    assert await files.read(fh, 0, 3 * MiB) == big
    await files.fsync(fh)
    files.release(fh)


@pytest.mark.trio
async def test_emptying_a_new_file_makes_it_clean_again(env: Env) -> None:
    files, tree = env.vfs.files, env.vfs.tree
    node = tree.create_file(ROOT, b"f", 0o644, CALLER)
    fh = (await files.open(node.ino, os.O_WRONLY)).fh
    await files.write(fh, 0, b"data")
    await files.truncate(node.ino, 0)
    assert not tree.get(node.ino).dirty
    files.release(fh)


@pytest.mark.trio
async def test_unlinked_open_file_stays_readable_until_release(env: Env) -> None:
    files, tree = env.vfs.files, env.vfs.tree
    node = tree.create_file(ROOT, b"f", 0o644, CALLER)
    env.vfs.inodes.remember(node.ino)
    fh = (await files.open(node.ino, os.O_RDWR)).fh
    await files.write(fh, 0, b"still here")
    tree.unlink(ROOT, b"f")
    with pytest.raises(NotFound):
        tree.lookup(ROOT, b"f")
    assert await files.read(fh, 0, 64) == b"still here"
    assert tree.nlink(tree.get(node.ino)) == 0
    files.release(fh)
    assert tree.get(node.ino)  # the kernel still holds a reference
    env.vfs.inodes.forget(node.ino, 1)
    with pytest.raises(NotFound):
        tree.get(node.ino)
    assert not env.vfs.cache.path(node.ino).exists()


@pytest.mark.trio
async def test_missing_bytes_are_fetched_once(make_env: EnvFactory) -> None:
    stub = RemoteStub()
    env = stub.env = make_env(fetcher=stub)
    content = os.urandom(3 * MiB + 17)
    node = _remote_file(env, stub, "remote", content)
    fh = (await env.vfs.files.open(node.ino, os.O_RDONLY)).fh
    assert await env.vfs.files.read(fh, MiB, 4096) == content[MiB : MiB + 4096]
    assert await env.vfs.files.read(fh, MiB + 100, 100) == content[MiB + 100 : MiB + 200]
    assert len(stub.calls) == 1
    assert await env.vfs.files.read(fh, 0, len(content) + 10) == content
    assert env.vfs.tree.get(node.ino).complete  # everything is here now
    env.vfs.files.release(fh)


@pytest.mark.trio
async def test_a_local_write_beats_a_slower_fetch(make_env: EnvFactory) -> None:
    stub = RemoteStub()
    env = stub.env = make_env(fetcher=stub)
    node = _remote_file(env, stub, "remote", b"R" * 10_000)
    files = env.vfs.files
    fh = (await files.open(node.ino, os.O_RDWR)).fh
    stub.gate = trio.Event()
    result: list[bytes] = []

    async def reader() -> None:
        result.append(await files.read(fh, 0, 10_000))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        await files.write(fh, 100, b"LOCAL")  # lands while the download is in flight
        stub.gate.set()
    assert result[0][100:105] == b"LOCAL"
    assert result[0][:100] == b"R" * 100
    assert await files.read(fh, 95, 15) == b"RRRRRLOCALRRRRR"
    files.release(fh)


@pytest.mark.trio
async def test_read_of_uncached_bytes_without_a_fetcher_fails(make_env: EnvFactory) -> None:
    env = make_env()
    node = _remote_file(env, RemoteStub(), "remote", b"x" * 100)
    fh = (await env.vfs.files.open(node.ino, os.O_RDONLY)).fh
    with pytest.raises(ContentUnavailable):
        await env.vfs.files.read(fh, 0, 10)
    env.vfs.files.release(fh)


async def _write_file(env: Env, name: bytes, data: bytes) -> Node:
    node = env.vfs.tree.create_file(ROOT, name, 0o644, CALLER)
    fh = (await env.vfs.files.open(node.ino, os.O_WRONLY)).fh
    await env.vfs.files.write(fh, 0, data)
    env.vfs.files.release(fh)
    return env.vfs.tree.get(node.ino)


@pytest.mark.trio
async def test_clean_content_is_evicted_dirty_never(make_env: EnvFactory) -> None:
    stub = RemoteStub()
    env = stub.env = make_env(fetcher=stub, limits=CacheLimits(cache_size=3 * MiB, min_free=0))
    first = await _write_file(env, b"first", b"1" * (2 * MiB))
    second = await _write_file(env, b"second", b"2" * (2 * MiB))  # over the limit, but dirty
    assert env.vfs.cache.stats().used >= 4 * MiB
    for node in (first, second):
        env.mark_synced(node.ino)
    # The sync engine uploads the first file and records the revision.
    assert env.vfs.files.mark_clean(first.ino, first.content_gen, "rev-1", first.size)
    stub.content[first.ino] = b"1" * (2 * MiB)
    await _write_file(env, b"third", b"3" * MiB)
    assert not env.vfs.cache.path(first.ino).exists()
    assert not env.vfs.tree.get(first.ino).complete
    assert env.vfs.cache.path(second.ino).exists()
    fh = (await env.vfs.files.open(first.ino, os.O_RDONLY)).fh
    assert await env.vfs.files.read(fh, MiB, 10) == b"1" * 10  # fetched again
    env.vfs.files.release(fh)


@pytest.mark.trio
async def test_dirty_budget_gives_enospc_and_loses_nothing(make_env: EnvFactory) -> None:
    env = make_env(limits=CacheLimits(cache_size=MiB, min_free=0, dirty_size=2 * MiB))
    node = env.vfs.tree.create_file(ROOT, b"f", 0o644, CALLER)
    fh = (await env.vfs.files.open(node.ino, os.O_WRONLY)).fh
    written = 0
    refused: OSError | None = None
    while refused is None:
        try:
            await env.vfs.files.write(fh, written, b"x" * 65536)
        except OSError as exc:
            refused = exc
        else:
            written += 65536
    assert refused.errno == errno.ENOSPC
    assert MiB <= written <= 2 * MiB
    assert env.vfs.tree.get(node.ino).size == written
    assert await env.vfs.files.read(fh, 0, written) == b"x" * written
    env.vfs.files.release(fh)


@pytest.mark.trio
async def test_a_write_racing_with_an_upload_keeps_the_file_dirty(env: Env) -> None:
    node = await _write_file(env, b"f", b"v1")
    env.mark_synced(node.ino)
    snapshot = env.vfs.tree.get(node.ino).content_gen
    fh = (await env.vfs.files.open(node.ino, os.O_WRONLY)).fh
    await env.vfs.files.write(fh, 0, b"v2")  # during the upload of v1
    env.vfs.files.release(fh)
    assert not env.vfs.files.mark_clean(node.ino, snapshot, "rev-of-v1", 2)
    after = env.vfs.tree.get(node.ino)
    assert after.dirty
    assert after.remote_head_revision == "rev-of-v1"
    assert env.vfs.files.mark_clean(node.ino, after.content_gen, "rev-of-v2", 2)
    assert not env.vfs.tree.get(node.ino).dirty
