"""Browser tests of the public-link pages fail if a backend logged an unexpected error."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _server_logs_stay_clean(backend_logs_clean: None) -> None:
    """See tests/support/backend.py."""
