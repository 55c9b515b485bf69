"""`tests/api/test_revisions.py` on the cluster profile (commits and revision history).

Through nginx and TLS, to two backend instances on PostgreSQL and SeaweedFS. The tests
are imported unchanged; `tests/cluster/conftest.py` points their `server`, `api`,
`shared` and `box` fixtures at the cluster.
"""

from tests.api.test_revisions import *  # noqa: F403
