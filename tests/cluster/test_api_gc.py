"""`tests/api/test_gc.py` on the cluster profile: garbage collection and scrub on
PostgreSQL and the S3 store, next to serving instances.

The embedded tests inspect a SQLite file and a block directory, so they cannot be imported
unchanged; these are the same scenarios against the cluster's database and bucket, through
the real `mountfs admin gc|scrub --config backend.toml` and, for the race, `gc.collect` run
in this process while a client commits through the load balancer. They collect with a zero
grace, which would delete other tests' uploads in flight: they hold `cluster_exclusive`.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from backend.db.engine import Database, make_engine
from backend.services import gc
from backend.store.s3 import S3BlockStore, S3Location, make_client
from tests.api.test_gc import commit_like_a_client, delete_and_purge
from tests.support.api_client import ApiClient, Chunk, Json, chunks_of, new_id
from tests.support.cluster import Cluster
from tests.support.mount import run_cli

MiB = 1024 * 1024


@pytest.fixture
def aws_env(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    """The S3 credentials and CA the instances use, for this process and the CLI."""
    secrets = cluster.state["secrets"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", secrets["s3_access_key"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secrets["s3_secret_key"])
    monkeypatch.setenv("AWS_CA_BUNDLE", cluster.ca_file)


@pytest.fixture
def direct(cluster_exclusive: Cluster, aws_env: None) -> Iterator[tuple[Database, S3BlockStore]]:
    """The cluster's database and S3 store, opened by this process."""
    location = S3Location.from_url(str(cluster_exclusive.state["blockstore"]))
    db = Database(make_engine(cluster_exclusive.db_url))
    yield db, S3BlockStore(make_client(location), location, 300)
    db.close()


@pytest.fixture
def api(cluster: Cluster) -> Iterator[ApiClient]:
    with ApiClient.new_account(cluster.url, "gc") as client:
        yield client


def admin(cluster: Cluster, *args: str) -> tuple[int, Json]:
    """`mountfs admin ARGS --config backend.toml --json` as an operator runs it."""
    config, data = Path(cluster.directory) / "backend.toml", Path(cluster.directory) / "admin"
    data.mkdir(exist_ok=True)
    result = run_cli("admin", *args, "--config", config, "--data", data, "--json", timeout=180)
    assert result.stdout, result.stderr
    answer: Json = json.loads(result.stdout)
    return result.returncode, answer


def test_gc_frees_what_purges_release_and_nothing_else(
    cluster_exclusive: Cluster, direct: tuple[Database, S3BlockStore], api: ApiClient
) -> None:
    _, store = direct
    shared = os.urandom(MiB // 2)
    keep, _ = api.write_file(api.root_id, "keep", shared)
    drop, _ = api.write_file(api.root_id, "drop", shared[: MiB // 4] + os.urandom(MiB // 4))
    revision = api.revision(api.get_node(drop["id"])["head_revision"])
    dropped_objects = {c["object"] for c in revision["chunks"]}
    kept_objects = {c["object"] for c in api.revision(keep["head_revision"])["chunks"]}
    delete_and_purge(api, drop)
    code, young = admin(cluster_exclusive, "gc", "--no-retention")  # the default grace: a day
    assert code == 0
    assert young["gc"]["objects_deleted"] == 0
    code, answer = admin(cluster_exclusive, "gc", "--no-retention", "--grace", "0")
    assert code == 0, answer
    freed = dropped_objects - kept_objects
    assert answer["gc"]["objects_deleted"] >= len(freed) == 1
    for obj in freed:
        assert not store.exists(obj)
    for obj in kept_objects:
        assert store.exists(obj)
    assert api.download(next(iter(kept_objects)))


def test_gc_racing_a_commit_of_a_just_released_chunk_never_loses_it(
    direct: tuple[Database, S3BlockStore], api: ApiClient
) -> None:
    """The chunk of a just-purged file is collected on PostgreSQL while a client commits a
    new file with the same content through the load balancer: every answer is 201 or 409
    `missing_chunks` (never a 500), and no revision names a missing object."""
    db, store = direct
    folder = api.mkdir(api.root_id, "race")
    committed: list[tuple[str, list[Chunk]]] = []
    deleted_by_gc = 0
    for round_ in range(8):
        data = os.urandom(300_000 + round_)
        chunks = chunks_of(data)
        old, _ = api.write_file(folder["id"], f"old-{round_}", data)
        delete_and_purge(api, old)
        start = threading.Barrier(2)
        reports: list[gc.GcReport] = []
        failures: list[BaseException] = []

        def collect(
            start: threading.Barrier, reports: list[gc.GcReport], failures: list[BaseException]
        ) -> None:
            start.wait()
            try:
                for _ in range(3):
                    reports.append(gc.collect(db, store, grace=timedelta(0)))
            except BaseException as exc:
                failures.append(exc)

        collector = threading.Thread(target=collect, args=(start, reports, failures))
        collector.start()
        node = api.create_node(folder["id"], f"new-{round_}", node_id=new_id())
        start.wait()
        try:
            commit_like_a_client(api, node["id"], chunks)
        finally:
            collector.join()
        assert failures == []
        deleted_by_gc += sum(r.objects_deleted for r in reports)
        committed.append((node["id"], chunks))
    gc.collect(db, store, grace=timedelta(0))
    for node_id, chunks in committed:
        head = api.revision(api.get_node(node_id)["head_revision"])
        for ref, chunk in zip(head["chunks"], chunks, strict=True):
            assert store.exists(ref["object"]), "a revision lost its chunk"
            assert api.download(ref["object"]) == chunk.ciphertext
    assert deleted_by_gc > 0


def test_scrub_on_s3_reports_missing_and_repairs(
    cluster_exclusive: Cluster, direct: tuple[Database, S3BlockStore], api: ApiClient
) -> None:
    _, store = direct
    node, rev = api.write_file(api.root_id, "victim", os.urandom(MiB))
    lost = rev["chunks"][0]["object"]
    saved = store.read_object(lost)
    assert saved is not None
    store.delete(lost)
    code, report = admin(cluster_exclusive, "scrub")
    assert code == 1
    assert lost in report["missing"]
    assert report["bad_manifests"] == []
    code, repaired = admin(cluster_exclusive, "scrub", "--repair")
    assert repaired["repair"]["revisions_damaged"] >= 1
    versions = api.call("GET", f"nodes/{node['id']}/versions")["items"]
    assert versions[0]["damaged"] is True
    # The chunk row stays (the next upload of that content re-creates the object). Put it
    # back, so that later tests' scrubs of this shared cluster find nothing missing.
    location = S3Location.from_url(str(cluster_exclusive.state["blockstore"]))
    key = f"{location.prefix}objects/{lost}"
    make_client(location).put_object(Bucket=location.bucket, Key=key, Body=saved)
    code, restored = admin(cluster_exclusive, "scrub")
    assert lost not in restored["missing"]
