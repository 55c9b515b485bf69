"""`/metrics` of a real backend: the block store's timings (whichever store the profile
runs: local or S3), push connections, and the garbage collector's and the periodic
scrub's counters move when the things they count happen."""

from __future__ import annotations

import os
import time

import httpx

from tests.support.api_client import ApiClient
from tests.support.backend import BackendFactory, BackendProcess
from tests.support.cluster import metric_sum


def scrape(server: BackendProcess) -> str:
    response = httpx.get(f"{server.base_url}/metrics", timeout=10)
    response.raise_for_status()
    return response.text


def test_store_push_and_gc_metrics_move(backend_factory: BackendFactory) -> None:
    server = backend_factory(
        "--maintenance-interval", "1", "--scrub-interval", "1", "--gc-grace", "1", "--url-ttl", "1"
    )
    with ApiClient.new_account(server.base_url, "metrics") as api:
        assert metric_sum(scrape(server), "mountfs_push_connections") == 0
        path = f"/api/v1/journal/{api.namespace_id}/watch"
        with httpx.Client(base_url=server.base_url, headers=api.auth_headers(), timeout=30) as web:
            with web.stream("GET", path, params={"heartbeat": 1}) as stream:
                assert stream.status_code == 200
                assert metric_sum(scrape(server), "mountfs_push_connections") == 1
            deadline = time.monotonic() + 20
            while metric_sum(scrape(server), "mountfs_push_connections") != 0:
                assert time.monotonic() < deadline, "the closed watch still counts"
                time.sleep(0.1)

        api.write_file(api.root_id, "kept", os.urandom(3000))
        node, _ = api.write_file(api.root_id, "temp", os.urandom(5000))
        text = scrape(server)
        finished = metric_sum(
            text,
            "mountfs_blockstore_operation_duration_seconds_count",
            operation="finish_upload",
            outcome="ok",
        )
        assert finished >= 1
        api.delete_node(node["id"], api.get_node(node["id"])["version"])
        api.call("POST", "trash/purge", json={"node_ids": [node["id"]]})
        deadline = time.monotonic() + 30
        while metric_sum(scrape(server), "mountfs_gc_objects_deleted_total") < 1:
            assert time.monotonic() < deadline, "the periodic GC never counted a deletion"
            time.sleep(0.2)
        text = scrape(server)
        assert metric_sum(text, "mountfs_gc_runs_total", outcome="ok") >= 1
        assert metric_sum(text, "mountfs_gc_bytes_deleted_total") > 5000
        assert metric_sum(text, "mountfs_gc_runs_total", outcome="failed") == 0
        deleted = metric_sum(
            text,
            "mountfs_blockstore_operation_duration_seconds_count",
            operation="delete",
        )
        assert deleted >= 1
        deadline = time.monotonic() + 30  # --scrub-interval: the loop scrubs too
        while metric_sum(scrape(server), "mountfs_scrub_objects_checked_total") < 1:
            assert time.monotonic() < deadline, "the periodic scrub never counted an object"
            time.sleep(0.2)
        text = scrape(server)
        assert metric_sum(text, "mountfs_scrub_runs_total", outcome="ok") >= 1
        assert metric_sum(text, "mountfs_scrub_bytes_checked_total") >= 3000
        assert metric_sum(text, "mountfs_scrub_problems_total", kind="missing") == 0
        assert metric_sum(text, "mountfs_scrub_problems_total", kind="corrupt") == 0
        assert 'mountfs_scrub_last_problems{kind="missing"} 0.0' in text
