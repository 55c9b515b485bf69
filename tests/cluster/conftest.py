"""Fixtures of the cluster profile: the API, mounts and faults against `scripts/cluster`.

Every test here is marked `cluster` (select with `-m cluster`, leave out with
`-m "not cluster"`) and runs against the session's cluster (`tests.support.cluster`):
PostgreSQL, SeaweedFS, two backend instances and nginx with TLS, all real. The directory
runs only in the cluster profile (`scripts/test --profile cluster`, which runs it in a
session of its own after the rest of the suite, so that its faults never break an instance
under another test); the embedded profile skips it.

Since the whole suite runs on the cluster in that profile, an API test module is not
imported here unchanged (it would run twice); the fixtures below serve the modules that
import tests which need a cluster-specific set-up (`test_api_gc`, `test_pg_*`).

The API suite's fixtures are re-pointed at the cluster: `server` is an object whose
`base_url` is the load balancer's HTTPS URL, and `shared`/`box` make their account there,
so the black-box tests imported from `tests/api` run unchanged through nginx and TLS.

The service tests imported from `tests/backend_unit` get a `db` on the cluster's
PostgreSQL instead of SQLite: one migrated database per module, emptied after each test.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import text

from backend.db.engine import Database, make_engine
from backend.db.migrate import upgrade
from backend.db.tables import metadata
from tests.api.conftest import anon, api, new_account
from tests.backend_unit.conftest import alice, make_account, store
from tests.support.api_client import ApiClient
from tests.support.cluster import Cluster, drop_database
from tests.support.mount import FUSE_PROBLEM, pytest_runtest_makereport

__all__ = [
    "alice",
    "anon",
    "api",
    "make_account",
    "new_account",
    "pytest_runtest_makereport",
    "store",
]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(autouse=True)
def _no_fault_meanwhile(request: pytest.FixtureRequest) -> None:
    """Every cluster test holds the shared side of the faults lock, except those that
    cause a fault themselves (they hold the exclusive side, `cluster_exclusive`)."""
    if "cluster_exclusive" not in request.fixturenames:
        request.getfixturevalue("cluster_shared")


@dataclass(frozen=True)
class Endpoint:
    """What the API tests need of a server: its base URL."""

    base_url: str


@pytest.fixture
def server(cluster: Cluster) -> Endpoint:
    return Endpoint(cluster.url)


@pytest.fixture(scope="module")
def shared(cluster: Cluster) -> Iterator[ApiClient]:
    with ApiClient.new_account(cluster.url, "shared") as client:
        yield client


@pytest.fixture
def box(shared: ApiClient) -> str:
    return str(shared.mkdir(shared.root_id)["id"])


@pytest.fixture
def needs_fuse() -> None:
    if FUSE_PROBLEM is not None:
        pytest.skip(f"needs FUSE: {FUSE_PROBLEM}")


def _admin(cluster: Cluster) -> Database:
    engine = make_engine(cluster.db_url).execution_options(isolation_level="AUTOCOMMIT")
    return Database(engine)


def _url(cluster: Cluster, name: str) -> str:
    return cluster.db_url.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture(scope="module")
def pg_database(cluster: Cluster) -> Iterator[Database]:
    """A migrated database of this module's own on the cluster's PostgreSQL."""
    name = f"svc_{uuid.uuid4().hex[:12]}"
    admin = _admin(cluster)
    try:
        with admin.engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        upgrade(_url(cluster, name))
        database = Database(make_engine(_url(cluster, name)))
        try:
            yield database
        finally:
            database.close()
    finally:
        drop_database(admin.engine, name)
        admin.close()


@pytest.fixture
def db(pg_database: Database) -> Iterator[Database]:
    """The module's PostgreSQL database, emptied after each test (every table of
    tables.py truncated at once), so each test starts as on a fresh SQLite file."""
    yield pg_database
    names = ", ".join(f'"{t.name}"' for t in metadata.sorted_tables)
    with pg_database.write() as conn:
        conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
