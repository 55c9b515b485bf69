"""A fresh state database per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mountfs.state.db import StateDb, open_state


@pytest.fixture
def db(tmp_path: Path) -> Iterator[StateDb]:
    state = open_state(tmp_path / "state.db")
    yield state
    state.close()
