"""Fixtures for tests on real FUSE mounts (skipped, with the reason, where FUSE is missing).

- `mount_factory`: mounts of a test's own (remount, crash and CLI tests);
- `shared_mount`: one mount per module for the POSIX and tools suites, each test working
  in its own subdirectory (`work`), next to a directory on the local disk (`local`) that
  serves as the reference where behaviour is compared.

Every mount must end with a log free of unexpected warnings and errors, and a state that
passes `mountfs.vfs.fsck.check` once unmounted. When a test fails, the logs of the mounts
still alive are attached to its report.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mountfs.mount import CACHE_DIR
from mountfs.state.db import DB_FILE, open_state
from mountfs.vfs.fsck import check
from tests.support.mount import MountProcess, fuse_unavailable, make_state

FUSE_PROBLEM = fuse_unavailable()

MountFactory = Callable[..., MountProcess]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.mount)
            if FUSE_PROBLEM is not None:
                item.add_marker(pytest.mark.skip(reason=f"needs FUSE: {FUSE_PROBLEM}"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Iterator[None] | pytest.TestReport:
    report: pytest.TestReport = yield
    if report.failed:
        for mount in list(MountProcess.live):
            report.sections.append((f"mountfs log {mount.mountpoint}", mount.logs()[-20000:]))
    return report


def verify_after_unmount(mount: MountProcess) -> list[str]:
    """The state must be consistent and the log clean once the daemon has stopped."""
    problems = [f"log: {line}" for line in mount.unexpected_log_lines()]
    db_path = mount.state_dir / DB_FILE
    if db_path.exists():
        db = open_state(db_path)
        try:
            problems += [f"fsck: {p}" for p in check(db, mount.state_dir / CACHE_DIR)]
        finally:
            db.close()
    return problems


@pytest.fixture
def mount_factory(tmp_path: Path) -> Iterator[MountFactory]:
    mounts: list[MountProcess] = []

    def factory(
        name: str = "mnt",
        *,
        state_dir: Path | None = None,
        cache_size: int | None = None,
        start: bool = True,
        log_level: str = "INFO",
    ) -> MountProcess:
        state = state_dir or tmp_path / f"{name}-state"
        if not (state / "device.json").exists():
            make_state(state)
        mount = MountProcess(tmp_path / name, state, cache_size=cache_size, log_level=log_level)
        mounts.append(mount)
        if start:
            mount.start()
        return mount

    yield factory
    for mount in mounts:
        mount.cleanup()
    problems = [p for mount in mounts for p in verify_after_unmount(mount)]
    assert problems == []


@pytest.fixture(scope="module")
def shared_mount(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MountProcess]:
    base = tmp_path_factory.mktemp("shared")
    make_state(base / "state")
    mount = MountProcess(base / "mnt", base / "state").start()
    try:
        yield mount
        mount.stop()
    finally:
        mount.cleanup()
    assert verify_after_unmount(mount) == []


@pytest.fixture
def work(shared_mount: MountProcess, request: pytest.FixtureRequest) -> Path:
    """A fresh directory on the shared mount for this test."""
    path = shared_mount.mountpoint / request.node.name[:200]
    path.mkdir()
    return path


@pytest.fixture
def local(tmp_path: Path) -> Path:
    """A directory on the local disk: the reference behaviour."""
    path = tmp_path / "local"
    path.mkdir()
    return path
