"""Garbage collection and scrub against a real backend process and its data directory.

The GC runs in this process, against the server's own SQLite file and block directory,
while the server serves: exactly what `mountfs admin gc` does next to a running server
(which is run here too, through the real CLI). Nothing is mocked.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from backend.db.engine import Database, make_engine
from backend.services import gc
from backend.store.local import LocalBlockStore
from backend.store.signing import UrlSigner
from tests.support.api_client import ApiClient, Chunk, Json, chunks_of, new_id
from tests.support.backend import BackendFactory, BackendProcess
from tests.support.mount import run_cli

MiB = 1024 * 1024


pytestmark = pytest.mark.embedded_only(
    "opens the SQLite file and block directory (tests/cluster/test_api_gc.py: on S3)"
)


@pytest.fixture
def server(backend_factory: BackendFactory) -> BackendProcess:
    """A backend of this test's own (its data directory is inspected and damaged)."""
    return backend_factory("--maintenance-interval", "0")


@pytest.fixture
def api(server: BackendProcess) -> Iterator[ApiClient]:
    with ApiClient.new_account(server.base_url, "gc") as client:
        yield client


@pytest.fixture
def direct(server: BackendProcess) -> Iterator[tuple[Database, LocalBlockStore]]:
    """The server's database and block store, opened by this process."""
    db = Database(make_engine(f"sqlite:///{server.data_dir / 'meta.sqlite3'}"))
    store = LocalBlockStore(server.data_dir / "blocks", UrlSigner(b"k" * 32), 60, 16 * MiB)
    yield db, store
    db.close()


def object_path(server: BackendProcess, obj: str) -> Path:
    return server.data_dir / "blocks" / "objects" / obj[:2] / obj


def delete_and_purge(api: ApiClient, node: Json) -> None:
    api.delete_node(node["id"], api.get_node(node["id"])["version"])
    api.call("POST", "trash/purge", json={"node_ids": [node["id"]]})


def admin(server: BackendProcess, *args: str) -> tuple[int, Json]:
    result = run_cli("admin", *args, "--data", server.data_dir, "--json", timeout=120)
    assert result.stdout, result.stderr
    answer: Json = json.loads(result.stdout)
    return result.returncode, answer


def commit_like_a_client(api: ApiClient, node_id: str, chunks: list[Chunk]) -> Json:
    """What the sync engine does: skip chunks `prepare` says the account has, commit, and
    upload (then commit again) whatever the backend answers as missing."""
    owned = {p["hash"] for p in api.prepare([c.hash for c in chunks]) if p.get("object")}
    api.upload([c for c in chunks if c.hash not in owned])
    for _ in range(5):
        body = api.commit_body(chunks, None)
        response = api.request("POST", f"nodes/{node_id}/revisions", json=body)
        if response.status_code == 201:
            result: Json = response.json()
            return result
        assert response.status_code == 409, response.text
        assert response.json()["error"] == "missing_chunks", response.text
        missing = set(response.json()["missing"])
        api.upload([c for c in chunks if c.object in missing])
    raise AssertionError("the commit kept missing chunks")


def test_gc_frees_what_purges_release_and_nothing_else(
    server: BackendProcess, api: ApiClient
) -> None:
    shared = os.urandom(MiB // 2)
    keep, _ = api.write_file(api.root_id, "keep", shared)
    drop, _ = api.write_file(api.root_id, "drop", shared[: MiB // 4] + os.urandom(MiB // 4))
    revision = api.revision(api.get_node(drop["id"])["head_revision"])
    dropped_objects = {c["object"] for c in revision["chunks"]}
    kept_objects = {c["object"] for c in api.revision(keep["head_revision"])["chunks"]}
    delete_and_purge(api, drop)
    code, young = admin(server, "gc")  # the default grace: a day
    assert code == 0
    assert young["gc"]["objects_deleted"] == 0
    code, answer = admin(server, "gc", "--grace", "0")
    assert code == 0
    freed = dropped_objects - kept_objects
    assert answer["gc"]["objects_deleted"] == len(freed) == 1
    for obj in freed:
        assert not object_path(server, obj).exists()
    for obj in kept_objects:
        assert object_path(server, obj).exists()
    assert api.download(next(iter(kept_objects)))


def test_gc_racing_an_upload_of_a_just_released_chunk_never_loses_it(
    server: BackendProcess, api: ApiClient, direct: tuple[Database, LocalBlockStore]
) -> None:
    """The chunk a just-deleted (and purged) file held is collected while a client commits
    a new file with the same content: the new revision must never name a missing object."""
    db, store = direct
    folder = api.mkdir(api.root_id, "race")
    committed: list[tuple[str, list[Chunk]]] = []
    deleted_by_gc = 0
    for round_ in range(12):
        data = os.urandom(300_000 + round_)
        chunks = chunks_of(data)
        old, _ = api.write_file(folder["id"], f"old-{round_}", data)
        delete_and_purge(api, old)
        start = threading.Barrier(2)
        reports: list[gc.GcReport] = []

        def collect(start: threading.Barrier, reports: list[gc.GcReport]) -> None:
            start.wait()
            for _ in range(3):
                reports.append(gc.collect(db, store, grace=timedelta(0)))

        collector = threading.Thread(target=collect, args=(start, reports))
        collector.start()
        node = api.create_node(folder["id"], f"new-{round_}", node_id=new_id())
        start.wait()
        commit_like_a_client(api, node["id"], chunks)
        collector.join()
        deleted_by_gc += sum(r.objects_deleted for r in reports)
        committed.append((node["id"], chunks))
    gc.collect(db, store, grace=timedelta(0))  # and once more, after everything
    for node_id, chunks in committed:
        head = api.revision(api.get_node(node_id)["head_revision"])
        for ref, chunk in zip(head["chunks"], chunks, strict=True):
            assert object_path(server, ref["object"]).is_file(), "a revision lost its chunk"
            assert api.download(ref["object"]) == chunk.ciphertext
    assert deleted_by_gc > 0  # the race was real: the GC did delete released chunks


def test_scrub_reports_corrupt_missing_and_orphaned_then_repairs(
    server: BackendProcess, api: ApiClient
) -> None:
    node, rev = api.write_file(api.root_id, "victim", os.urandom(MiB))
    first, second = (c["object"] for c in rev["chunks"][:2])
    path = object_path(server, first)
    data = bytearray(path.read_bytes())
    data[100] ^= 0x01
    path.write_bytes(bytes(data))
    object_path(server, second).unlink()
    stray = Chunk(os.urandom(1000))
    api.upload([stray])  # uploaded, never committed
    code, report = admin(server, "scrub")
    assert code == 1
    assert report["corrupt"] == [first]
    assert report["missing"] == [second]
    assert report["orphaned"] == [stray.object]
    assert report["manifests_checked"] >= 1
    assert report["bad_manifests"] == []
    assert report["objects_checked"] >= 3
    code, repaired = admin(server, "scrub", "--repair")
    assert repaired["repair"]["revisions_damaged"] == 1
    assert repaired["repair"]["corrupt_deleted"] == 1
    assert repaired["repair"]["orphans_deleted"] == 0  # younger than the grace: kept
    versions = api.call("GET", f"nodes/{node['id']}/versions")["items"]
    assert versions[0]["damaged"] is True


def test_the_server_collects_by_itself(backend_factory: BackendFactory) -> None:
    server = backend_factory("--maintenance-interval", "1", "--gc-grace", "1", "--url-ttl", "1")
    with ApiClient.new_account(server.base_url, "auto") as api:
        node, rev = api.write_file(api.root_id, "temp", os.urandom(5000))
        (obj,) = (c["object"] for c in rev["chunks"])
        delete_and_purge(api, node)
        deadline = time.monotonic() + 30
        while object_path(server, obj).exists():
            assert time.monotonic() < deadline, "the periodic GC never deleted the chunk"
            time.sleep(0.2)


def test_admin_stats_counts_dedup_per_account_and_deployment(
    server: BackendProcess, api: ApiClient
) -> None:
    data = os.urandom(MiB)
    api.write_file(api.root_id, "one", data)
    api.write_file(api.mkdir(api.root_id, "copy")["id"], "one", data)
    with ApiClient.new_account(server.base_url, "other") as other:
        other.write_file(other.root_id, "same", data)
        code, rows = admin(server, "stats")
    assert code == 0
    by_name = {r["name"]: r for r in rows}
    mine, deployment = by_name[api.name], by_name["(deployment)"]
    assert (mine["live_files"], mine["live_bytes"], mine["logical_bytes"]) == (2, 2 * MiB, 2 * MiB)
    assert mine["unique_plain_bytes"] == MiB
    assert mine["dedup_ratio"] == pytest.approx(2.0)
    assert deployment["logical_bytes"] == 3 * MiB
    assert deployment["unique_plain_bytes"] == MiB
    assert deployment["dedup_ratio"] == pytest.approx(3.0)
    assert deployment["stored_bytes"] == sum(c.stored_size for c in chunks_of(data))
