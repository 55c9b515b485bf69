"""Suite-wide pytest set-up: generic switches only (area fixtures live in sub-conftests).

- `--runslow`: tests marked `@pytest.mark.slow` are skipped unless it is given.
- faulthandler is on, and `kill -USR1 <pytest pid>` dumps every thread's stack, which is
  how a hung test is diagnosed without killing it.
- `gc.collect()` after each test, so a leaked resource's warning surfaces in the test that
  leaked it rather than in some later one.
- The backend-process fixtures of `tests.support.backend` are registered for every test.
"""

from __future__ import annotations

import faulthandler
import gc
import signal
from collections.abc import Iterator

import pytest

pytest_plugins = ("tests.support.backend",)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--runslow", action="store_true", default=False, help="also run tests marked slow"
    )


def pytest_configure(config: pytest.Config) -> None:
    if not faulthandler.is_enabled():
        faulthandler.enable()
    faulthandler.register(signal.SIGUSR1, all_threads=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--runslow"):
        return
    skip_slow = pytest.mark.skip(reason="slow: pass --runslow to run it")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)


@pytest.fixture(autouse=True)
def _collect_garbage_after_test() -> Iterator[None]:
    yield
    gc.collect()
