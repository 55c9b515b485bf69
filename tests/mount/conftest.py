"""Fixtures for tests on real FUSE mounts (skipped, with the reason, where FUSE is missing).

Every mount is a device of a real account on the session's backend (`tests.support.mount`).

- `mount_factory`: mounts of a test's own account (remount, crash and CLI tests); its
  `roundtrip_check(mount)` syncs and compares with a fresh second device;
- `shared_mount`: one mount per module for the POSIX and tools suites, each test working
  in its own subdirectory (`work`), next to a directory on the local disk (`local`) that
  serves as the reference where behaviour is compared; `roundtrip()` checks `work` on a
  second device of the module's account (`reader`, mounted once per module: each test's
  files are new to it, so it reads nothing it has cached).

Every mount must end with a log free of unexpected warnings and errors, and a state that
passes `mountfs.vfs.fsck.check` once unmounted. When a test fails, the logs of the mounts
still alive are attached to its report.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.backend import BackendProcess
from tests.support.mount import (
    Account,
    Devices,
    MountProcess,
    account,
    check_backend_logs,
    mark_mount_tests,
    mount_factory,
    pytest_runtest_makereport,
)

__all__ = [
    "check_backend_logs",
    "account",
    "mount_factory",
    "pytest_runtest_makereport",
]

MountFactory = Devices
Roundtrip = Callable[[], object]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    mark_mount_tests(Path(__file__).parent, items)


class SharedDevices(Devices):
    """The module's account: the shared mount, and a reader device started at first need."""

    _reader: MountProcess | None = None

    @property
    def reader(self) -> MountProcess:
        if self._reader is None:
            self._reader = self("reader")
        return self._reader


@pytest.fixture(scope="module")
def shared_devices(
    tmp_path_factory: pytest.TempPathFactory, backend_session: BackendProcess
) -> Iterator[SharedDevices]:
    devices = SharedDevices(
        Account.register(backend_session.base_url, "shared"), tmp_path_factory.mktemp("shared")
    )
    try:
        devices("mnt")
        yield devices
        devices.stop_all()
    finally:
        problems = devices.close()
    assert not problems, "\n".join(problems)


@pytest.fixture(scope="module")
def shared_mount(shared_devices: SharedDevices) -> MountProcess:
    return shared_devices.mounts[0]


@pytest.fixture
def work(shared_mount: MountProcess, request: pytest.FixtureRequest) -> Path:
    """A fresh directory on the shared mount for this test."""
    path: Path = shared_mount.mountpoint / str(request.node.name)[:200]
    path.mkdir()
    return path


@pytest.fixture
def roundtrip(shared_devices: SharedDevices, work: Path) -> Roundtrip:
    """Check `work` after a round trip through the backend (see `Devices.roundtrip_check`)."""
    return lambda: shared_devices.roundtrip_check(
        shared_devices.mounts[0], work, reader=shared_devices.reader
    )


@pytest.fixture
def local(tmp_path: Path) -> Path:
    """A directory on the local disk: the reference behaviour."""
    path = tmp_path / "local"
    path.mkdir()
    return path
