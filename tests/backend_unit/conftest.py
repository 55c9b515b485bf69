"""Fixtures for in-process tests of the backend's services and stores.

Everything is real: a migrated SQLite database and a local block store in a temp
directory; nothing is mocked. Each test that changes state ends with
`consistency.check(db)`, the backend's fsck: it proves the invariants of tables.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from backend.db.engine import Database, make_engine
from backend.db.migrate import upgrade
from backend.services import accounts
from backend.services.types import Principal
from backend.store.local import LocalBlockStore
from backend.store.signing import UrlSigner

PASSWORD = "correct horse battery staple"
MiB = 1024 * 1024

MakeAccount = Callable[..., Principal]


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    url = f"sqlite:///{tmp_path / 'meta.sqlite3'}"
    upgrade(url)
    database = Database(make_engine(url))
    yield database
    database.close()


@pytest.fixture
def store(tmp_path: Path) -> LocalBlockStore:
    local = LocalBlockStore(
        root=tmp_path / "blocks",
        signer=UrlSigner(b"k" * 32),
        ttl=60,
        max_object_bytes=16 * MiB,
        base_url="http://backend.test",
    )
    local.open()
    return local


@pytest.fixture
def make_account(db: Database) -> MakeAccount:
    """Register an account, log one device in, return its Principal."""

    def make(quota_bytes: int | None = None) -> Principal:
        name = f"u-{uuid.uuid4().hex[:12]}"
        accounts.create_account(db, name, PASSWORD, quota_bytes)
        login = accounts.login(db, name, PASSWORD, "device")
        return accounts.authenticate(db, login.token)

    return make


@pytest.fixture
def alice(make_account: MakeAccount) -> Principal:
    return make_account()
