"""Durability: whatever the backend answered 2xx survives `kill -9` and a restart."""

from __future__ import annotations

import os
import threading
import time

from tests.support.api_client import MIN_CHUNK_BYTES, ApiClient, Chunk, Json, new_id, unique_name
from tests.support.backend import BackendFactory, BackendProcess


def build_state(api: ApiClient) -> dict[str, Json]:
    """A tree with content, made through single routes and one batch."""
    root = api.root_id
    docs = api.mkdir(root, "docs")
    nodes: dict[str, Json] = {"docs": docs}
    for i in range(3):
        node, _ = api.write_file(docs["id"], f"file-{i}.bin", bytes([i]) * (50_000 + i))
        nodes[f"file-{i}"] = node
    # Edit one file twice (history), rename another, delete a third.
    f0 = nodes["file-0"]
    for text in (b"second", b"third"):
        f0 = api.commit(f0["id"], [Chunk(text)], f0["head_revision"])["node"]
    nodes["file-0"] = f0
    nodes["file-1"] = api.update_node(
        nodes["file-1"]["id"], nodes["file-1"]["version"], name="renamed.bin"
    )
    nodes["file-2"] = api.delete_node(nodes["file-2"]["id"], nodes["file-2"]["version"])
    ops = [
        {
            "op": "create",
            "op_id": new_id(),
            "id": new_id(),
            "parent_id": docs["id"],
            "name": f"batched-{i}",
            "kind": "dir",
            "mode": 0o755,
            "mtime_ns": 1,
        }
        for i in range(5)
    ]
    for i, result in enumerate(api.changes(ops)):
        assert result["status"] == 201
        nodes[f"batched-{i}"] = result["node"]
    return nodes


def observe(api: ApiClient, nodes: dict[str, Json]) -> Json:
    """What the account sees: nodes, listings, histories with manifests, journal, content."""
    histories = {}
    for key, node in nodes.items():
        if node["kind"] == "file":
            revs = api.revisions(node["id"])
            histories[key] = [api.revision(r["id"]) for r in revs]
    contents = {
        ref["object"]: api.download(ref["object"])
        for revs in histories.values()
        for rev in revs
        for ref in rev.get("chunks") or []
    }
    return {
        "nodes": {k: api.get_node(n["id"]) for k, n in nodes.items()},
        "root": api.list_children(api.root_id),
        "docs": api.list_children(nodes["docs"]["id"]),
        "histories": histories,
        "journal": api.journal_all(),
        "contents": contents,
        "me": {k: v for k, v in api.me().items() if k != "used_bytes"}
        | {"used": api.me()["used_bytes"]},
    }


def test_state_survives_kill_9(backend_server: BackendProcess) -> None:
    with ApiClient.new_account(backend_server.base_url, "durable") as api:
        nodes = build_state(api)
        before = observe(api, nodes)
        backend_server.kill()
        backend_server.start()
        # Same token (devices are durable), same everything.
        after = observe(api, nodes)
        assert after == before
        # The journal continues where it stopped, without a gap.
        last = before["journal"][-1]["seq"]
        api.mkfile(api.root_id, "after-restart")
        (entry,) = api.journal_all(after=last)
        assert entry["seq"] == last + 1


def test_acknowledged_writes_survive_a_crash_under_load(backend_server: BackendProcess) -> None:
    """Kill -9 while a writer is busy: every create answered 201 is there after restart."""
    api = ApiClient.new_account(backend_server.base_url, "crash")
    root = api.root_id
    acknowledged: list[str] = []
    stop = threading.Event()

    def writer() -> None:
        with ApiClient(api.base_url, api.token, timeout=5) as client:
            while not stop.is_set():
                node_id = new_id()
                try:
                    response = client.request(
                        "POST",
                        "nodes",
                        json={
                            "id": node_id,
                            "parent_id": root,
                            "name": unique_name("w"),
                            "kind": "file",
                            "mode": 0o644,
                            "mtime_ns": 1,
                        },
                    )
                except Exception:  # the server vanished mid-request: not acknowledged
                    return
                if response.status_code == 201:
                    acknowledged.append(node_id)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while len(acknowledged) < 30 and time.monotonic() < deadline:
            time.sleep(0.02)
        backend_server.kill()
    finally:
        stop.set()
        thread.join(30)
    assert len(acknowledged) >= 30
    backend_server.start()
    with api:
        present = {c["id"] for c in api.list_children(root, 1000)}
        assert set(acknowledged) <= present
        entries = api.journal_all()
        assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))
        created = {e["node"]["id"] for e in entries if e["op"] == "create"}
        assert present <= created


def test_restart_on_same_data_dir_with_new_flags(backend_factory: BackendFactory) -> None:
    first = backend_factory()
    with ApiClient.new_account(first.base_url, "flags") as api:
        node, _ = api.write_file(api.root_id, "kept", b"kept across restarts")
        name, password = api.name, api.password
    first.stop()
    second = backend_factory("--default-quota-bytes", "1000000", data_dir=first.data_dir)
    with ApiClient.login(second.base_url, name, password, "after") as api:
        assert api.get_node(node["id"]) == node
        assert api.me()["quota_bytes"] in (None, 1_000_000)


def test_uploads_and_urls_survive_a_restart(backend_server: BackendProcess) -> None:
    """An acknowledged PUT is durable, and a URL stays valid until it expires, restart or
    not (the signing key and the upload record are on disk, as with a real object store)."""
    with ApiClient.new_account(backend_server.base_url, "uploads") as api:
        uploaded, later = Chunk(os.urandom(MIN_CHUNK_BYTES)), Chunk(os.urandom(1000))
        api.upload([uploaded])
        (entry,) = api.upload_urls([later])
        backend_server.kill()
        backend_server.start()
        assert api.send_block(entry, later.ciphertext).is_success
        node = api.mkfile(api.root_id)
        result = api.commit(node["id"], [uploaded, later], None, upload=False)
        assert result["node"]["size"] == MIN_CHUNK_BYTES + 1000
        assert api.download(uploaded.object) == uploaded.ciphertext
