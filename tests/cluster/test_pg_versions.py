"""`tests/backend_unit/test_versions.py` on PostgreSQL: retention, restores, purges, GC and
scrub as services, each test on the cluster's PostgreSQL (`db` in
`tests/cluster/conftest.py`), which checks foreign keys at each statement where SQLite
did not catch an ordering mistake; consistency checks included.
"""

from tests.backend_unit.test_versions import *  # noqa: F403
