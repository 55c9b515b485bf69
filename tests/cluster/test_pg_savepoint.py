"""`tests/backend_unit/test_savepoint.py` on PostgreSQL (a database of its own per test,
`db` in `tests/cluster/conftest.py`): a savepoint rolled back inside a longer transaction
takes back its journal entry, its seq and its announcement there too.
"""

from tests.backend_unit.test_savepoint import *  # noqa: F403
