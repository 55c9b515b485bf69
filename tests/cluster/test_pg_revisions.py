"""`tests/backend_unit/test_revisions.py` on PostgreSQL: the same service tests, each on a
database of its own on the cluster's PostgreSQL (`db` in `tests/cluster/conftest.py`),
so the schema and every query are proven portable, consistency checks included.
"""

import pytest

from tests.backend_unit.test_revisions import *  # noqa: F403

pytestmark = pytest.mark.slow  # about a minute here; test_pg_tree.py covers PG in CI
