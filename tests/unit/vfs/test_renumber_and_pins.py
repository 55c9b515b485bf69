"""New inode numbers for remote content (`nodes.renumber`) and pins against eviction,
without FUSE: the state rules that the mount tests in `tests/sync` rely on."""

from __future__ import annotations

import os

import pytest

from mountfs.cache.block_cache import CacheLimits
from mountfs.state import nodes, pins
from mountfs.state.nodes import Node
from tests.unit.vfs.conftest import CALLER, ROOT, Env, EnvFactory

MiB = 1 << 20


async def _write_file(env: Env, parent: int, name: bytes, data: bytes) -> Node:
    node = env.vfs.tree.create_file(parent, name, 0o644, CALLER)
    fh = (await env.vfs.files.open(node.ino, os.O_WRONLY)).fh
    await env.vfs.files.write(fh, 0, data)
    env.vfs.files.release(fh)
    return env.vfs.tree.get(node.ino)


def _uploaded(env: Env, node: Node) -> None:
    """As if the sync engine had pushed the create and committed the content."""
    env.mark_synced(node.ino)
    assert env.vfs.files.mark_clean(node.ino, node.content_gen, f"rev-{node.ino}", node.size)


@pytest.mark.trio
async def test_renumber_moves_the_name_and_keeps_the_old_bytes_for_open_handles(
    env: Env,
) -> None:
    node = await _write_file(env, ROOT, b"f", b"old content")
    _uploaded(env, node)
    env.vfs.xattrs.set(node.ino, b"user.tag", b"x")
    env.vfs.inodes.remember(node.ino)  # the kernel knows it
    fh = (await env.vfs.files.open(node.ino, os.O_RDONLY)).fh

    with env.db.transaction() as conn:
        new = nodes.renumber(conn, node.ino)

    assert new.ino > node.ino
    assert (new.node_id, new.name, new.parent_ino) == (node.node_id, "f", ROOT)
    assert env.vfs.tree.lookup(ROOT, b"f").ino == new.ino
    assert env.vfs.xattrs.get(new.ino, b"user.tag") == b"x"
    old = env.vfs.tree.get(node.ino)
    assert not old.linked
    assert old.node_id == nodes.retired_id(node.node_id, node.ino)
    assert env.vfs.tree.nlink(old) == 0
    assert await env.vfs.files.read(fh, 0, 100) == b"old content"  # the open handle

    env.vfs.files.release(fh)
    assert env.vfs.cache.path(node.ino).exists()  # the kernel still has it
    env.vfs.inodes.forget(node.ino, 1)
    assert nodes.get(env.db.conn, node.ino) is None
    assert not env.vfs.cache.path(node.ino).exists()
    assert env.problems() == []


@pytest.mark.trio
async def test_pinned_content_is_never_evicted(make_env: EnvFactory) -> None:
    env = make_env(limits=CacheLimits(cache_size=3 * MiB, min_free=0))
    folder = env.vfs.tree.mkdir(ROOT, b"keep", 0o755, CALLER)
    env.mark_synced(folder.ino)
    kept = await _write_file(env, folder.ino, b"kept", b"k" * (2 * MiB))
    loose = await _write_file(env, ROOT, b"loose", b"l" * MiB)
    moved = await _write_file(env, ROOT, b"moved", b"m" * MiB)
    for node in (kept, loose, moved):
        _uploaded(env, node)
    with env.db.transaction() as conn:
        assert pins.add(conn, folder.node_id, 1)
    env.vfs.tree.rename(ROOT, b"moved", folder.ino, b"moved", 0)  # covered from now on

    assert pins.covered(env.db.conn, [kept.ino, loose.ino, moved.ino]) == {kept.ino, moved.ino}
    totals = pins.totals(env.db.conn)
    assert (totals.files, totals.bytes, totals.missing_bytes) == (2, 3 * MiB, 0)

    await _write_file(env, ROOT, b"new", b"n" * (2 * MiB))  # needs room: evicts what it may
    assert env.vfs.cache.path(kept.ino).exists()
    assert env.vfs.cache.path(moved.ino).exists()
    assert not env.vfs.cache.path(loose.ino).exists()
    assert not env.vfs.tree.get(loose.ino).complete

    with env.db.transaction() as conn:
        assert pins.remove(conn, folder.node_id)
    assert pins.covered(env.db.conn, [kept.ino]) == set()
    assert env.vfs.cache.evict(MiB) >= MiB  # unpinned: ordinary cache again
