"""`tests/backend_unit/test_upload_evidence.py` on PostgreSQL: a confirmation cut after
the store confirmed, retried, with PostgreSQL's row locks (`db` in
`tests/cluster/conftest.py`; the store is the local one, S3 has its own cluster tests)."""

from tests.backend_unit.test_upload_evidence import *  # noqa: F403
