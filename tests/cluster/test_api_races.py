"""`tests/api/test_races.py` on the cluster profile: concurrent changes, one wins.

Through nginx and TLS, to two backend instances on PostgreSQL and SeaweedFS. The tests
are imported unchanged; `tests/cluster/conftest.py` points their `server`, `api`,
`shared` and `box` fixtures at the cluster.
"""

from tests.api.test_races import *  # noqa: F403
