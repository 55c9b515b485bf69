"""Operator limits: --max-file-bytes (413 file_too_large), --default-quota-bytes (409)."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import httpx
import pytest

from tests.support.api_client import ApiClient, Chunk, assert_error
from tests.support.backend import BackendProcess, running_backend

MAX_FILE = 4096
QUOTA = 10_000


@pytest.fixture(scope="module")
def limited_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackendProcess]:
    args = ("--max-file-bytes", str(MAX_FILE), "--default-quota-bytes", str(QUOTA))
    with running_backend(tmp_path_factory.mktemp("limits"), args) as backend:
        yield backend


@pytest.fixture
def limited(limited_server: BackendProcess) -> Iterator[ApiClient]:
    with ApiClient.new_account(limited_server.base_url, "limited") as client:
        yield client


def test_me_reports_the_limits(limited: ApiClient) -> None:
    me = limited.me()
    assert me["max_file_bytes"] == MAX_FILE
    assert me["quota_bytes"] == QUOTA
    assert me["used_bytes"] == 0


def test_file_above_max_is_413(limited: ApiClient) -> None:
    node = limited.mkfile(limited.root_id)
    at_limit = limited.commit(node["id"], [Chunk(os.urandom(MAX_FILE))], None)
    assert at_limit["node"]["size"] == MAX_FILE
    chunks = [Chunk(os.urandom(MAX_FILE + 1))]
    limited.upload(chunks)
    body = limited.commit_body(chunks, at_limit["revision"]["id"])
    response = limited.request("POST", f"nodes/{node['id']}/revisions", json=body)
    assert_error(response, 413, "file_too_large")
    assert limited.get_node(node["id"]) == at_limit["node"]


def test_quota_is_enforced_at_commit(limited: ApiClient) -> None:
    committed = []
    for _ in range(3):
        node = limited.mkfile(limited.root_id)
        committed.append(limited.commit(node["id"], [Chunk(os.urandom(3000))], None))
    used = limited.me()["used_bytes"]
    assert 9000 <= used <= QUOTA

    node = limited.mkfile(limited.root_id)
    chunk = Chunk(os.urandom(3000))
    limited.upload([chunk])
    body = limited.commit_body([chunk], None)
    response = limited.request("POST", f"nodes/{node['id']}/revisions", json=body)
    assert_error(response, 409, "quota_exceeded")
    assert limited.get_node(node["id"]) == node
    assert limited.me()["used_bytes"] == used
    # A small file still fits.
    limited.commit(node["id"], [Chunk(b"tiny")], None)


def test_quota_is_per_account(limited_server: BackendProcess, limited: ApiClient) -> None:
    node = limited.mkfile(limited.root_id)
    limited.commit(node["id"], [Chunk(os.urandom(4000))], None)
    with ApiClient.new_account(limited_server.base_url, "other") as other:
        assert other.me()["used_bytes"] == 0
        for _ in range(2):
            n = other.mkfile(other.root_id)
            other.commit(n["id"], [Chunk(os.urandom(4000))], None)


def test_concurrent_commits_cannot_overshoot_the_quota(limited: ApiClient) -> None:
    """Each commit fits alone, not all together: the quota check and the write are atomic."""
    racers = 6
    nodes = [limited.mkfile(limited.root_id) for _ in range(racers)]
    contents = [[Chunk(os.urandom(3000))] for _ in range(racers)]
    for chunks in contents:
        limited.upload(chunks)
    barrier = threading.Barrier(racers)
    responses: list[httpx.Response | None] = [None] * racers

    def commit(i: int) -> None:
        with ApiClient(limited.base_url, limited.token) as own:
            body = own.commit_body(contents[i], None)
            barrier.wait(timeout=30)
            responses[i] = own.request("POST", f"nodes/{nodes[i]['id']}/revisions", json=body)

    threads = [threading.Thread(target=commit, args=(i,)) for i in range(racers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    statuses = [r.status_code if r is not None else None for r in responses]
    accepted = statuses.count(201)
    assert 1 <= accepted <= QUOTA // 3000, [r.text if r else r for r in responses]
    for r in responses:
        assert r is not None
        if r.status_code != 201:
            assert_error(r, 409, "quota_exceeded")
    assert limited.me()["used_bytes"] <= QUOTA
