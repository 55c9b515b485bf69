"""`tests/backend_unit/test_tree.py` on PostgreSQL: the same service tests, each on a
database of its own on the cluster's PostgreSQL (`db` in `tests/cluster/conftest.py`),
so the schema and every query are proven portable, consistency checks included.
"""

from tests.backend_unit.test_tree import *  # noqa: F403
