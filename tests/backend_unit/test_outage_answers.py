"""Which failures of the database and the S3 store the backend answers 503 `unavailable`
with `Retry-After` (an outage the client waits out) and which stay 500 (a bug). The
outages themselves are run for real in tests/cluster/test_faults.py; this pins the
classification of the errors that are hard to provoke there (a refused S3 connection,
SlowDown, a deadlock)."""

from __future__ import annotations

import json

import anyio
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError
from sqlalchemy.exc import IntegrityError, OperationalError
from starlette.requests import Request

from backend.app import _database_unavailable, _store_unavailable


class _PgError(Exception):
    def __init__(self, sqlstate: str | None) -> None:
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


def _request() -> Request:
    return Request({"type": "http", "method": "POST", "path": "/api/v1/x", "headers": []})


def _answer(handler: object, exc: Exception) -> tuple[int, dict[str, object], str | None]:
    async def run() -> tuple[int, dict[str, object], str | None]:
        response = await handler(_request(), exc)  # type: ignore[operator]
        return response.status_code, json.loads(response.body), response.headers.get("retry-after")

    return anyio.run(run)


@pytest.mark.parametrize("sqlstate", [None, "08006", "57P01", "40P01"])
def test_lost_connections_and_deadlocks_are_503(sqlstate: str | None) -> None:
    error = OperationalError("SELECT 1", {}, _PgError(sqlstate))
    status, body, retry_after = _answer(_database_unavailable, error)
    assert (status, body["error"], retry_after) == (503, "unavailable", "2")


def test_other_database_errors_stay_bugs() -> None:
    with pytest.raises(IntegrityError):
        _answer(_database_unavailable, IntegrityError("INSERT", {}, _PgError("23503")))
    with pytest.raises(OperationalError):
        _answer(_database_unavailable, OperationalError("x", {}, _PgError("42P01")))


@pytest.mark.parametrize(
    "error",
    [
        EndpointConnectionError(endpoint_url="https://s3.example"),
        ClientError(
            {"Error": {"Code": "SlowDown"}, "ResponseMetadata": {"HTTPStatusCode": 503}},
            "HeadObject",
        ),
        ClientError(
            {"Error": {"Code": "InternalError"}, "ResponseMetadata": {"HTTPStatusCode": 500}},
            "CopyObject",
        ),
    ],
)
def test_an_unreachable_or_overloaded_store_is_503(error: Exception) -> None:
    status, body, retry_after = _answer(_store_unavailable, error)
    assert (status, body["error"], retry_after) == (503, "unavailable", "5")


def test_store_misconfiguration_stays_a_bug() -> None:
    with pytest.raises(NoCredentialsError):
        _answer(_store_unavailable, NoCredentialsError())
    denied = ClientError(
        {"Error": {"Code": "AccessDenied"}, "ResponseMetadata": {"HTTPStatusCode": 403}},
        "HeadObject",
    )
    with pytest.raises(ClientError):
        _answer(_store_unavailable, denied)
