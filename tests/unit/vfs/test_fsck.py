"""Start-up repair after clean and unclean stops (the crash-state table of docs/client.md)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mountfs.cache.block_cache import BlockCache, CacheLimits
from mountfs.state import outbox
from mountfs.state.db import open_state
from mountfs.vfs.errors import NotFound
from mountfs.vfs.fsck import WrongAccount, repair
from tests.unit.vfs.conftest import CALLER, ROOT, Env, EnvFactory


async def _file(env: Env, name: bytes, data: bytes, *, keep_open: bool = False) -> tuple[int, int]:
    node = env.vfs.tree.create_file(ROOT, name, 0o644, CALLER)
    fh = (await env.vfs.files.open(node.ino, os.O_RDWR)).fh
    await env.vfs.files.write(fh, 0, data)
    if not keep_open:
        env.vfs.files.release(fh)
    return node.ino, fh


def _reopen(make_env: EnvFactory, env: Env) -> Env:
    return make_env(path=env.path, root_id=env.root_id)


@pytest.mark.trio
async def test_clean_remount_keeps_everything(make_env: EnvFactory) -> None:
    env = make_env()
    ino, _ = await _file(env, b"f", b"content")
    env.vfs.tree.mkdir(ROOT, b"d", 0o755, CALLER)
    env.close()
    again = _reopen(make_env, env)
    fh = (await again.vfs.files.open(ino, os.O_RDONLY)).fh
    assert await again.vfs.files.read(fh, 0, 100) == b"content"
    again.vfs.files.release(fh)
    assert again.vfs.tree.lookup(ROOT, b"d").kind == "dir"
    assert len(outbox.pending(again.db.conn)) == 2


@pytest.mark.trio
async def test_crash_with_an_unlinked_open_file(make_env: EnvFactory) -> None:
    env = make_env()
    ino, _ = await _file(env, b"tmp", b"scratch", keep_open=True)
    env.vfs.inodes.remember(ino)
    env.vfs.tree.unlink(ROOT, b"tmp")
    with env.db.transaction() as conn:  # the sync engine had the first op in flight
        outbox.claim(conn, [op.seq for op in outbox.pending(conn)])
    env.crash()
    again = _reopen(make_env, env)
    with pytest.raises(NotFound):
        again.vfs.tree.get(ino)
    assert not again.vfs.cache.path(ino).exists()
    assert outbox.pending(again.db.conn) == []  # create+delete cancelled on unlink


@pytest.mark.trio
async def test_repair_report_of_a_damaged_state(make_env: EnvFactory, tmp_path: Path) -> None:
    env = make_env()
    lost, _ = await _file(env, b"lost", b"only copy")
    short, _ = await _file(env, b"short", b"0123456789")
    env.vfs.tree.create_file(ROOT, b"queued", 0o644, CALLER)
    with env.db.transaction() as conn:
        outbox.claim(conn, [outbox.pending(conn)[0].seq])
    env.crash()
    cache = env.path / "cache"
    (cache / str(lost)).unlink()  # e.g. a power loss before the cache file reached disk
    os.truncate(cache / str(short), 4)
    (cache / "999").write_bytes(b"orphan")
    (cache / "junk.tmp").write_bytes(b"?")

    db = open_state(env.path / "state.db")
    report = repair(
        db,
        BlockCache(cache, CacheLimits(cache_size=1 << 30, min_free=0), db),
        root_id=env.root_id,
        uid=CALLER.uid,
        gid=CALLER.gid,
    )
    db.close()
    assert report.released_claims == 1
    assert report.stray_cache_files == 1  # "999"; junk.tmp is removed by the scan itself
    assert report.resized_cache_files == 1
    assert len(report.lost_content) == 1
    assert not (cache / "junk.tmp").exists()

    again = _reopen(make_env, env)
    assert again.vfs.tree.get(lost).size == 0
    fh = (await again.vfs.files.open(short, os.O_RDONLY)).fh
    assert await again.vfs.files.read(fh, 0, 100) == b"0123" + bytes(6)
    again.vfs.files.release(fh)


def test_state_of_another_account_is_refused(make_env: EnvFactory) -> None:
    env = make_env()
    env.close()
    with pytest.raises(WrongAccount):
        make_env(path=env.path, root_id="some-other-root")
