"""Fixtures for the data path through a real backend (skipped, with the reason, without FUSE).

- `mount_factory` (from `tests.support.mount`): devices of a fresh account on the session's
  backend; `roundtrip_check(mount)` syncs and compares with a fresh second device.
- `private`: the same on a backend of the test's own (`backend_server`), for tests that stop
  and restart it or damage its block store.
- `inspector`: an API client of another device of the account, to look at the backend.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.api_client import ApiClient
from tests.support.backend import BackendProcess
from tests.support.mount import (
    Account,
    Devices,
    account,
    check_backend_logs,
    mark_mount_tests,
    mount_factory,
    pytest_runtest_makereport,
)

__all__ = [
    "account",
    "check_backend_logs",
    "mount_factory",
    "pytest_runtest_makereport",
]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    mark_mount_tests(Path(__file__).parent, items)


@pytest.fixture
def private(tmp_path: Path, backend_server: BackendProcess) -> Iterator[Devices]:
    """Devices of an account on this test's own backend (`private.account.server`)."""
    devices = Devices(Account.register(backend_server.base_url), tmp_path / "devices")
    yield devices
    problems = devices.close()
    assert not problems, "\n".join(problems)


@pytest.fixture
def inspector(mount_factory: Devices) -> Iterator[ApiClient]:
    """A device of the test's account that only talks to the API."""
    with mount_factory.account.api() as client:
        yield client
