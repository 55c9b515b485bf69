"""Structured logs and request ids (`backend/logs.py`), against a real backend process.

The backend logs one JSON object per line with the request id the client sent (or one it
made), echoes the id in the answer, and the mountfs client sends an id with every request,
shares it across the retries of one call, and names it in its errors.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import trio

from mountfs.transport.api import ApiError, open_api, request_id_scope
from mountfs.transport.retry import RetryPolicy, with_retry
from tests.support.api_client import ApiClient
from tests.support.backend import BackendFactory, BackendProcess


@pytest.fixture
def server(backend_factory: BackendFactory) -> BackendProcess:
    return backend_factory("--log-format", "json", "--access-log")


def log_lines_once(server: BackendProcess, done: Callable[[list[str]], bool]) -> list[str]:
    """The backend's log lines once `done` holds for them (or after 10 s): an access line is
    written after its answer is sent, so a fast client can look before it is there."""
    deadline = time.monotonic() + 10
    while True:
        lines = server.log_text().splitlines()
        if done(lines) or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def json_lines(server: BackendProcess, *ids: str) -> list[dict[str, Any]]:
    """The JSON records of the backend's log, once a line for each of `ids` is in it."""

    def records(lines: list[str]) -> list[dict[str, Any]]:
        return [json.loads(line) for line in lines if line.startswith("{")]

    def all_seen(lines: list[str]) -> bool:
        seen = {r.get("request_id") for r in records(lines)}
        return all(i in seen for i in ids)

    return records(log_lines_once(server, all_seen))


def test_every_line_is_json_and_requests_carry_their_id(server: BackendProcess) -> None:
    with ApiClient.new_account(server.base_url, "logs") as api:
        answer = api.request("GET", f"nodes/{api.root_id}", headers={"X-Request-Id": "op-1.a:b"})
        assert answer.status_code == 200
        assert answer.headers["x-request-id"] == "op-1.a:b"
        invalid = api.request("GET", "me", headers={"X-Request-Id": "x" * 200})
        made = invalid.headers["x-request-id"]
        assert re.fullmatch(r"[0-9a-f]{32}", made)
        missing = api.request("GET", f"nodes/{uuid.uuid4()}", headers={"X-Request-Id": "op-2"})
        assert missing.status_code == 404
        assert missing.headers["x-request-id"] == "op-2"
        me = api.me()
    lines = server.log_text().splitlines()
    started = next(i for i, line in enumerate(lines) if line.startswith("{"))
    assert all(line.startswith("{") for line in lines[started:]), lines[started:]
    records = json_lines(server, "op-1.a:b", "op-2", made)
    assert any(r["logger"].startswith("uvicorn") for r in records)  # uvicorn's too
    (access,) = [r for r in records if r.get("request_id") == "op-1.a:b"]
    assert access["logger"] == "backend.access"
    assert access["level"] == "info"
    assert access["route"] == "/api/v1/nodes/{node_id}"
    assert access["status"] == 200
    assert access["duration_ms"] >= 0
    assert access["account_id"] == me["account_id"]
    assert access["device_id"] == me["device_id"]
    assert access["time"].endswith("+00:00")
    (refused,) = [r for r in records if r.get("request_id") == "op-2"]
    assert refused["status"] == 404
    assert [r for r in records if r.get("request_id") == made]


def test_the_client_sends_ids_shares_them_across_retries_and_names_them(
    server: BackendProcess,
) -> None:
    with ApiClient.new_account(server.base_url, "client") as api:
        token = api.token
    errors: list[ApiError] = []

    async def main() -> str:
        async with open_api(server.base_url, token) as client:
            await client.me()  # an id of its own
            with request_id_scope() as shared:
                await client.me()
                await client.me()

            async def lost() -> None:
                await client.node(str(uuid.uuid4()))

            try:
                await with_retry(lost, RetryPolicy(attempts=2, base=0.01))
            except ApiError as exc:
                errors.append(exc)
            return shared

    shared = trio.run(main)
    (error,) = errors
    assert error.status == 404
    assert error.request_id
    assert f"request {error.request_id}" in str(error)
    records = json_lines(server, shared, error.request_id)
    assert len([r for r in records if r.get("request_id") == shared]) == 2
    assert [r["status"] for r in records if r.get("request_id") == error.request_id] == [404]
    me_lines = [r for r in records if r.get("route") == "/api/v1/me"]
    assert len({r["request_id"] for r in me_lines}) == 2  # the lone call, the shared pair


@pytest.mark.embedded_only("on PostgreSQL (the cluster profile) the default format is JSON")
def test_text_is_the_default_on_sqlite(backend_factory: BackendFactory) -> None:
    server = backend_factory("--access-log")
    with ApiClient.new_account(server.base_url, "text") as api:
        api.request("GET", "me", headers={"X-Request-Id": "plain-1"})
    tagged = log_lines_once(server, lambda lines: any("[request plain-1]" in x for x in lines))
    lines = [line for line in tagged if "[request plain-1]" in line]
    assert len(lines) == 1
    assert re.match(
        r"\S+ \S+ INFO backend\.access: GET /api/v1/me 200 \[request plain-1\]$", lines[0]
    )
