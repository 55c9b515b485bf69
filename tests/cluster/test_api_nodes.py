"""`tests/api/test_nodes.py` on the cluster profile: create, list, rename, move, delete.

Through nginx and TLS, to two backend instances on PostgreSQL and SeaweedFS. The tests
are imported unchanged; `tests/cluster/conftest.py` points their `server`, `api`,
`shared` and `box` fixtures at the cluster.
"""

from tests.api.test_nodes import *  # noqa: F403
