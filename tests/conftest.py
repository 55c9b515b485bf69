"""Suite-wide pytest set-up: generic switches only (area fixtures live in sub-conftests).

- `--runslow`: tests marked `@pytest.mark.slow` are skipped unless it is given.
- `--profile embedded|cluster` (what `scripts/test --profile` passes): which deployment the
  backend fixtures of `tests.support.backend` stand for. `embedded` (the default): backend
  processes on SQLite and the embedded block store. `cluster`: the session's backend is
  `scripts/cluster` (PostgreSQL, SeaweedFS S3, two instances behind nginx with TLS), and a
  test's own backend is a process on a database and an S3 prefix of its own there. Tests
  marked `embedded_only("why")` are skipped in the cluster profile with that reason;
  `tests/cluster` runs only in the cluster profile.
- faulthandler is on, and `kill -USR1 <pytest pid>` dumps every thread's stack, which is
  how a hung test is diagnosed without killing it.
- `gc.collect()` after each test, so a leaked resource's warning surfaces in the test that
  leaked it rather than in some later one.
- The backend-process fixtures of `tests.support.backend` and the cluster fixtures of
  `tests.support.cluster` are registered for every test.
"""

from __future__ import annotations

import faulthandler
import gc
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest_plugins = ("tests.support.cluster", "tests.support.backend")

PROFILES = ("embedded", "cluster")
CLUSTER_DIR = Path(__file__).parent / "cluster"

_S3_ANSWERS = (
    "S3 answers the block URLs on the cluster, in XML: the access is refused there too, but "
    "not with the embedded block routes' JSON error"
)
EMBEDDED_ONLY: dict[str, str] = {
    "tests/api/test_isolation.py::test_foreign_account_cannot_reach_or_change"
    "[GET /api/v1/blocks/{}]": _S3_ANSWERS,
    "tests/api/test_isolation.py::test_foreign_account_cannot_reach_or_change"
    "[PUT /api/v1/blocks/{}]": _S3_ANSWERS,
    "tests/api/test_isolation.py::test_foreign_account_cannot_reach_or_change"
    "[POST /api/v1/chunks/upload-urls]": _S3_ANSWERS,
    "tests/api/test_metrics.py::test_store_push_and_gc_metrics_move": (
        'counts the operations of the embedded store (store="local")'
    ),
    "tests/web/test_link_browser.py": (
        "Chromium trusts only its own certificate store (NSS), not SSL_CERT_FILE: it refuses "
        "the cluster's TLS certificate (a user adds the cluster's CA to the browser)"
    ),
}
"""Tests skipped in the cluster profile that cannot carry an `embedded_only` marker of
their own (one case of a parametrized test; a module without pytest imported; a module
whose tests all need the embedded profile), by node id or module path, with the reason."""

CLUSTER_XFAIL: dict[str, str] = {
    "tests/api/test_watch.py::test_stopping_the_server_ends_open_streams_at_once": (
        "product bug: with TLS (`--tls-cert`), a graceful stop waits the whole 10 s "
        "`timeout_graceful_shutdown` when a client holds an idle keep-alive connection "
        "(asyncio waits for the client's TLS close_notify) and logs an ERROR; plain HTTP "
        "stops at once"
    ),
}
"""Failures the cluster profile reveals in the product, expected (strictly) until fixed."""


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--runslow", action="store_true", default=False, help="also run tests marked slow"
    )
    parser.addoption(
        "--profile",
        choices=PROFILES,
        default="embedded",
        help="the deployment the backend fixtures stand for (default: embedded)",
    )


def pytest_configure(config: pytest.Config) -> None:
    if not faulthandler.is_enabled():
        faulthandler.enable()
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    config.addinivalue_line(
        "markers",
        "embedded_only(reason): needs a backend of the embedded profile (its SQLite file or "
        "block directory, a proxy that carries the chunk bytes); skipped with the reason in "
        "the cluster profile",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    cluster_profile = config.getoption("--profile") == "cluster"
    skip_slow = pytest.mark.skip(reason="slow: pass --runslow to run it")
    skip_cluster = pytest.mark.skip(
        reason="cluster profile only: run by scripts/test --profile cluster"
    )
    for item in items:
        if "slow" in item.keywords and not config.getoption("--runslow"):
            item.add_marker(skip_slow)
        in_cluster_dir = CLUSTER_DIR in Path(str(item.fspath)).parents
        if in_cluster_dir and not cluster_profile:
            item.add_marker(skip_cluster)
        if not cluster_profile:
            continue
        module = item.nodeid.split("::", 1)[0]
        marker = item.get_closest_marker("embedded_only")
        why = EMBEDDED_ONLY.get(item.nodeid, EMBEDDED_ONLY.get(module))
        if marker is not None:
            why = marker.args[0] if marker.args else marker.kwargs.get("reason", "")
        if why is not None:
            item.add_marker(pytest.mark.skip(reason=f"embedded profile only: {why}"))
        bug = CLUSTER_XFAIL.get(item.nodeid)
        if bug is not None:
            item.add_marker(pytest.mark.xfail(reason=bug, strict=True))


@pytest.fixture(autouse=True)
def _collect_garbage_after_test() -> Iterator[None]:
    yield
    gc.collect()
