"""A `Vfs` over a fresh state directory, driven without FUSE.

Every test that uses `env` ends with `mountfs.vfs.fsck.check`: whatever the test did, the
state must still satisfy every invariant of the schema.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mountfs.cache.block_cache import BlockCache, CacheLimits
from mountfs.ids import uuid7
from mountfs.state.db import StateDb, open_state
from mountfs.state.schema import ROOT_INO
from mountfs.vfs import Vfs, build_vfs
from mountfs.vfs.files import ContentFetcher
from mountfs.vfs.fsck import check, repair
from mountfs.vfs.tree import Caller

CALLER = Caller(uid=1000, gid=1000)
ROOT = ROOT_INO


@dataclass
class Env:
    """One state directory and the vfs over it."""

    path: Path
    root_id: str
    vfs: Vfs
    closed: bool = False

    @property
    def db(self) -> StateDb:
        return self.vfs.db

    def problems(self) -> list[str]:
        in_use = set(self.vfs.inodes.lookups) | {h.ino for h in self.vfs.handles.open_files()}
        return check(self.db, self.vfs.cache.root, in_use=in_use)

    def close(self) -> None:
        """End of this "mount": forget kernel references, check, close the database."""
        self.vfs.inodes.forget_all()
        problems = self.problems()
        self.db.close()
        self.closed = True
        assert problems == [], "state inconsistent at close"

    def crash(self) -> None:
        """End of this "mount" by a crash: nothing is purged or forgotten first."""
        self.db.conn.close()
        self.closed = True

    def mark_synced(self, ino: int, version: int = 1) -> None:
        """Pretend the sync engine pushed every queued op of `ino` (it is now remote)."""
        node = self.vfs.tree.get(ino)
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM outbox WHERE node_id = ?", (node.node_id,))
            conn.execute("UPDATE nodes SET remote_version = ? WHERE ino = ?", (version, ino))


EnvFactory = Callable[..., Env]


@pytest.fixture
def make_env(tmp_path: Path) -> Iterator[EnvFactory]:
    made: list[Env] = []

    def factory(
        *,
        fetcher: ContentFetcher | None = None,
        limits: CacheLimits | None = None,
        path: Path | None = None,
        root_id: str | None = None,
    ) -> Env:
        where = path or tmp_path / f"state{len(made)}"
        where.mkdir(exist_ok=True)
        db = open_state(where / "state.db")
        cache = BlockCache(
            where / "cache", limits or CacheLimits(cache_size=1 << 30, min_free=0), db
        )
        rid = root_id or uuid7()
        try:
            repair(db, cache, root_id=rid, uid=CALLER.uid, gid=CALLER.gid)
        except BaseException:
            db.close()
            raise
        env = Env(where, rid, build_vfs(db, cache, fetcher=fetcher))
        made.append(env)
        return env

    yield factory
    for env in made:
        if env.closed:
            continue
        problems = env.problems()
        env.db.close()
        assert problems == [], "state inconsistent at the end of the test"


@pytest.fixture
def env(make_env: EnvFactory) -> Env:
    return make_env()
