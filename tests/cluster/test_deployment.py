"""The cluster deployment itself: TLS, presigned S3 URLs, metrics, health, fail-over,
fan-out between instances and PostgreSQL specifics, all against `scripts/cluster`."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import anyio
import httpx
import pytest
from sqlalchemy import text

from backend.db.engine import Database, make_engine
from backend.db.migrate import current_revision, head_revision, upgrade
from backend.services.notify_pg import PgNotifier
from backend.services.types import NamespaceId
from tests.backend_unit.test_migrations import differences
from tests.support.api_client import ApiClient, Chunk, UnexpectedStatus, new_id
from tests.support.cluster import INSTANCES, Cluster, drop_database, metric_sum

MiB = 1024 * 1024


@pytest.fixture
def scratch_db(cluster: Cluster) -> Iterator[str]:
    """A new, empty database on the cluster's PostgreSQL; dropped afterwards."""
    name = f"scratch_{uuid.uuid4().hex[:12]}"
    admin = make_engine(cluster.db_url).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = cluster.db_url.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        drop_database(admin, name)
        admin.dispose()


def test_tls_is_verified_against_the_cluster_ca(cluster: Cluster) -> None:
    assert cluster.url.startswith("https://")
    trusting = ssl.create_default_context(cafile=cluster.ca_file)
    with httpx.Client(verify=trusting) as client:
        assert client.get(f"{cluster.url}/api/v1/health").status_code == 200
    public_only = httpx.Client(verify=True, trust_env=False)  # certifi's CAs, not ours
    with public_only, pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        public_only.get(f"{cluster.url}/api/v1/health")


def test_chunk_bytes_go_to_s3_not_to_the_backends(cluster: Cluster) -> None:
    """Presigned URLs name the S3 endpoint and carry the checksum; S3 refuses other bytes;
    the backends serve no block route at all, so no file byte can pass through them."""
    with ApiClient.new_account(cluster.url, "s3") as api:
        chunks = [Chunk(bytes([i]) * (256 * 1024)) for i in range(3)]
        api.prepare(c.hash for c in chunks)
        urls = api.upload_urls(chunks)
        for entry in urls:
            parts = urlsplit(entry["url"])
            assert f"{parts.scheme}://{parts.netloc}" == cluster.s3_endpoint, entry["url"]
            signed = parse_qs(parts.query)["X-Amz-SignedHeaders"][0].split(";")
            assert "x-amz-checksum-sha256" in signed
            assert entry["headers"]["x-amz-checksum-sha256"]
        wrong = api.send_block(urls[0], b"other bytes than the object's name says")
        assert wrong.status_code == 400, wrong.text
        api.upload(chunks)
        node = api.mkfile(api.root_id, "f")
        api.commit(node["id"], chunks, None)
        for entry in api.read_urls(c.object for c in chunks)["urls"]:
            assert entry["url"].startswith(cluster.s3_endpoint + "/")
        assert api.download(chunks[1].object) == chunks[1].ciphertext
        block = api.request("PUT", f"/api/v1/blocks/{chunks[0].object}", content=b"x")
        assert block.status_code in (404, 405)
    for index in range(INSTANCES):
        text_ = cluster.metrics(index)
        assert (
            metric_sum(text_, "mountfs_http_requests_total", route="/api/v1/blocks/{object}") == 0
        )


def test_metrics_count_requests_and_commits_and_stay_private(cluster: Cluster) -> None:
    def commits() -> float:
        return sum(
            metric_sum(cluster.metrics(i), "mountfs_journal_entries_total", op="commit")
            for i in range(INSTANCES)
        )

    def total(name: str, **labels: str) -> float:
        return sum(metric_sum(cluster.metrics(i), name, **labels) for i in range(INSTANCES))

    before = commits()
    finished = total(
        "mountfs_blockstore_operation_duration_seconds_count", store="s3", operation="finish_upload"
    )
    fanned_out = total("mountfs_journal_fanout_lag_seconds_count")
    with ApiClient.new_account(cluster.url, "metrics") as api:
        for n in range(3):
            node = api.mkfile(api.root_id, f"m{n}")
            api.commit(node["id"], [Chunk(f"metrics {n}".encode() * 30000)], None)
    assert commits() - before == 3
    # Each upload was confirmed with S3 (timed per operation), and every journal entry was
    # heard by the instances' listeners (the fan-out lag has a sample per NOTIFY heard).
    after = total(
        "mountfs_blockstore_operation_duration_seconds_count", store="s3", operation="finish_upload"
    )
    assert after - finished >= 3
    deadline = time.monotonic() + 10
    while total("mountfs_journal_fanout_lag_seconds_count") - fanned_out < 6:  # 3 creates+commits
        assert time.monotonic() < deadline, "the instances heard no NOTIFY"
        time.sleep(0.2)
    text_ = cluster.metrics(0)
    assert "mountfs_http_request_duration_seconds_bucket" in text_
    assert 'route="/api/v1/nodes/{node_id}/revisions"' in "".join(
        cluster.metrics(i) for i in range(INSTANCES)
    )
    assert "mountfs_blockstore_request_duration_seconds" in "".join(
        cluster.metrics(i) for i in range(INSTANCES)
    )
    with httpx.Client() as client:  # SSL_CERT_FILE (the fixture's) names the cluster's CA
        assert client.get(f"{cluster.url}/metrics").status_code == 404  # not through nginx
        assert client.get(f"{cluster.url}/readyz").status_code == 200
    assert httpx.get(f"{cluster.instance_url(1)}/healthz").json() == {"status": "ok"}


def test_instances_log_json_and_echo_the_request_id(cluster: Cluster) -> None:
    """On PostgreSQL the default log format is JSON; answers echo the client's request id
    through nginx (tests/api/test_request_logs.py checks the ids in the log lines); an open
    watch counts as a push connection."""
    with ApiClient.new_account(cluster.url, "logs") as api:
        answer = api.request("GET", "me", headers={"X-Request-Id": "cluster-log-1"})
        assert answer.headers["x-request-id"] == "cluster-log-1"
        watch = f"{cluster.instance_url(0)}/api/v1/journal/{api.namespace_id}/watch"
        with httpx.stream("GET", watch, headers=api.auth_headers(), timeout=30) as stream:
            assert stream.status_code == 200
            assert metric_sum(cluster.metrics(0), "mountfs_push_connections") >= 1
    records = [
        json.loads(line)
        for line in cluster.instance_log(0).read_text(errors="replace").splitlines()
        if line.startswith("{")
    ]
    ready = [r for r in records if r["message"].startswith("backend ready")]
    assert ready
    assert {"time", "level", "logger", "message"} <= set(ready[-1])


def test_migrations_build_tables_py_on_postgresql_and_go_down_and_up(scratch_db: str) -> None:
    from alembic import command

    from backend.db.migrate import alembic_config

    upgrade(scratch_db)
    upgrade(scratch_db)  # idempotent
    assert current_revision(scratch_db) == head_revision()
    assert differences(scratch_db) == []
    engine = make_engine(scratch_db)
    try:
        with engine.begin() as conn:
            config = alembic_config()
            config.attributes["connection"] = conn
            command.downgrade(config, "base")
    finally:
        engine.dispose()
    assert current_revision(scratch_db) is None
    result = subprocess.run(
        [sys.executable, "-m", "mountfs", "admin", "migrate", "--db", scratch_db],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert f"to {head_revision()}" in result.stdout
    assert differences(scratch_db) == []


def test_concurrent_migrations_wait_for_each_other(scratch_db: str) -> None:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            upgrade(scratch_db)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert differences(scratch_db) == []


def test_listen_notify_reaches_another_instance_without_the_recheck(cluster: Cluster) -> None:
    """Two notifiers on one PostgreSQL, re-check off: a publish on one wakes the other's
    waiter through NOTIFY alone."""
    db = Database(make_engine(cluster.db_url))
    namespace = NamespaceId(str(uuid.uuid4()))

    async def main() -> int | None:
        sender, receiver = PgNotifier(db, recheck=3600), PgNotifier(db, recheck=3600)
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(sender.run)
            tasks.start_soon(receiver.run)
            with anyio.fail_after(30):
                await sender.listening.wait()
                await receiver.listening.wait()
            result: list[int | None] = []

            async def wait() -> None:
                result.append(await receiver.wait_past(namespace, 4, timeout=20))

            tasks.start_soon(wait)
            await anyio.sleep(0.2)
            await sender.publish(namespace, 7)
            with anyio.fail_after(25):
                while not result:
                    await anyio.sleep(0.01)
            tasks.cancel_scope.cancel()
        return result[0]

    try:
        assert anyio.run(main, backend="asyncio") == 7
    finally:
        db.close()


def test_killing_an_instance_loses_no_acknowledged_write(cluster_exclusive: Cluster) -> None:
    """Creates and commits through the load balancer while instance 0 is SIGKILLed:
    every request answered 2xx is in the database afterwards, the journal has no gap, and
    the requests cut off were retried (with the same ids) until they succeeded."""
    cluster = cluster_exclusive
    api = ApiClient.new_account(cluster.url, "failover")
    acknowledged: list[str] = []
    folder = api.mkdir(api.root_id, "work")["id"]
    try:

        def create(n: int) -> None:
            node_id = new_id()
            body = {
                "id": node_id,
                "parent_id": folder,
                "name": f"f{n}",
                "kind": "file",
                "mode": 0o644,
                "mtime_ns": time.time_ns(),
            }
            for _ in range(50):
                try:
                    response = api.request("POST", "nodes", json=body)
                except httpx.TransportError:
                    time.sleep(0.1)
                    continue
                if response.status_code in (200, 201):  # 200: a replay of one applied
                    acknowledged.append(node_id)
                    return
                if response.status_code in (502, 503, 504):
                    time.sleep(0.1)
                    continue
                raise UnexpectedStatus(f"{response.status_code} {response.text}")
            raise AssertionError("no instance took the create")

        for n in range(40):
            if n == 15:
                cluster.kill_instance(0)
            create(n)
        cluster.up()  # instance 0 back, so later tests find two
        for n in range(40, 50):
            create(n)
        listed = {c["id"] for c in api.list_children(folder)}
        assert set(acknowledged) <= listed
        assert len(listed) == 50
        seqs = [e["seq"] for e in api.journal_all()]
        assert seqs == list(range(1, len(seqs) + 1))
    finally:
        api.close()
        if not httpx.get(f"{cluster.instance_url(0)}/healthz").is_success:
            cluster.up()


def test_a_missing_setting_fails_start_in_one_line(cluster: Cluster, tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    bad = subprocess.run(
        [sys.executable, "-m", "backend", "--data", str(tmp_path), "--blockstore", "s3://"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert bad.returncode == 2
    assert "--blockstore: " in bad.stderr.splitlines()[-1]
    no_secret = subprocess.run(
        [sys.executable, "-m", "backend", "--data", str(tmp_path), "--db", cluster.db_url],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert no_secret.returncode == 2
    (line,) = no_secret.stderr.strip().splitlines()[-1:]
    assert line.startswith("error: the convergence secret is missing"), no_secret.stderr
