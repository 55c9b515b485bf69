"""Two devices racing on one node: exactly one wins, the rest see 409 with the winner.

Requests are fired from threads released together by a barrier, each thread with its own
HTTP connection, so the backend really processes them concurrently.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.support.api_client import PASSWORD, ApiClient, Chunk, Json, new_id, unique_name

THREADS_PER_DEVICE = 4


@pytest.fixture
def devices(api: ApiClient) -> Iterator[list[ApiClient]]:
    with api.another_device("racer-2") as second:
        yield [api, second]


def race(
    devices: list[ApiClient], send: Callable[[ApiClient, int], httpx.Response]
) -> list[httpx.Response]:
    """Run `send(device_client, i)` in parallel threads, released at the same instant."""
    count = len(devices) * THREADS_PER_DEVICE
    barrier = threading.Barrier(count)
    results: list[httpx.Response | BaseException | None] = [None] * count

    def worker(i: int) -> None:
        device = devices[i % len(devices)]
        # A client per thread: one connection each, nothing shared between threads.
        with ApiClient(device.base_url, device.token) as own:
            try:
                barrier.wait(timeout=30)
                results[i] = send(own, i)
            except BaseException as exc:  # reported below, in the test's thread
                results[i] = exc

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    responses = []
    for r in results:
        if not isinstance(r, httpx.Response):
            raise AssertionError(f"a racer failed: {r!r}")
        responses.append(r)
    return responses


def the_winner(responses: list[httpx.Response], ok: int) -> httpx.Response:
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [ok] + [409] * (len(responses) - 1), [
        (r.status_code, r.text[:200]) for r in responses
    ]
    return next(r for r in responses if r.status_code == ok)


def entries_for(api: ApiClient, node_id: str, after: int) -> list[Json]:
    return [e for e in api.journal_all(after=after) if e["node"]["id"] == node_id]


def last_seq(api: ApiClient) -> int:
    entries = api.journal_all()
    return entries[-1]["seq"] if entries else 0


def test_concurrent_renames_one_winner(devices: list[ApiClient]) -> None:
    api = devices[0]
    node = api.mkfile(api.root_id, "contested")
    seq = last_seq(api)
    responses = race(
        devices,
        lambda c, i: c.request(
            "PATCH", f"nodes/{node['id']}", json={"base_version": 1, "name": f"name-{i}"}
        ),
    )
    winner = the_winner(responses, 200).json()
    assert winner["version"] == 2
    for r in responses:
        if r.status_code == 409:
            body = r.json()
            assert body["error"] == "conflict"
            assert body["current"] == winner
    assert api.get_node(node["id"]) == winner
    (entry,) = entries_for(api, node["id"], seq)
    assert entry["op"] == "update"
    assert entry["node"] == winner


def test_concurrent_commits_one_winner(devices: list[ApiClient]) -> None:
    api = devices[0]
    node = api.mkfile(api.root_id, "edited-everywhere")
    count = len(devices) * THREADS_PER_DEVICE
    contents = [[Chunk(f"edit number {i}".encode())] for i in range(count)]
    for i, chunks in enumerate(contents):
        devices[i % len(devices)].upload(chunks)
    seq = last_seq(api)
    responses = race(
        devices,
        lambda c, i: c.request(
            "POST", f"nodes/{node['id']}/revisions", json=c.commit_body(contents[i], None)
        ),
    )
    winner = the_winner(responses, 201).json()
    for r in responses:
        if r.status_code == 409:
            assert r.json()["error"] == "conflict"
            assert r.json()["current"] == winner["node"]
    assert [r["id"] for r in api.revisions(node["id"])] == [winner["revision"]["id"]]
    (entry,) = entries_for(api, node["id"], seq)
    assert entry["op"] == "commit"
    assert entry["node"] == winner["node"]


def test_concurrent_creates_of_one_name_one_winner(devices: list[ApiClient]) -> None:
    api = devices[0]
    parent = api.mkdir(api.root_id)
    seq = last_seq(api)
    ids = [new_id() for _ in range(len(devices) * THREADS_PER_DEVICE)]
    responses = race(
        devices,
        lambda c, i: c.request(
            "POST",
            "nodes",
            json={
                "id": ids[i],
                "parent_id": parent["id"],
                "name": "same-name",
                "kind": "file",
                "mode": 0o644,
                "mtime_ns": 1,
            },
        ),
    )
    winner = the_winner(responses, 201).json()
    for r in responses:
        if r.status_code == 409:
            assert r.json()["error"] == "name_taken"
            assert r.json()["current"] == winner
    assert api.list_children(parent["id"]) == [winner]
    created = [e for e in api.journal_all(after=seq) if e["op"] == "create"]
    assert [e["node"]["id"] for e in created] == [winner["id"]]


def test_concurrent_batches_keep_the_journal_gap_free(devices: list[ApiClient]) -> None:
    """Many devices appending at once: seq stays a gap-free total order."""
    api = devices[0]
    parent = api.mkdir(api.root_id)

    def batch(c: ApiClient, i: int) -> httpx.Response:
        ops = [
            {
                "op": "create",
                "op_id": new_id(),
                "id": new_id(),
                "parent_id": parent["id"],
                "name": f"t{i}-{j}",
                "kind": "file",
                "mode": 0o644,
                "mtime_ns": 1,
            }
            for j in range(10)
        ]
        return c.request("POST", "changes", json={"ops": ops})

    responses = race(devices, batch)
    assert {r.status_code for r in responses} == {200}
    assert {res["status"] for r in responses for res in r.json()["results"]} == {201}
    entries = api.journal_all()
    assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))
    created = {e["node"]["id"] for e in entries if e["node"]["parent_id"] == parent["id"]}
    assert len(created) == len(responses) * 10
    assert len(api.list_children(parent["id"])) == len(responses) * 10


ROUNDS = 4
"""Races are probabilistic: each scenario is replayed a few times on fresh nodes."""


def assert_refusals(responses: list[httpx.Response], allowed: set[str]) -> None:
    for r in responses:
        if r.status_code != 200:
            assert r.status_code == 409, r.text
            assert r.json()["error"] in allowed, r.text


def test_crossing_moves_never_make_a_cycle(devices: list[ApiClient]) -> None:
    """Half the racers move a into b, the other half b into a: only one move may win."""
    api = devices[0]
    for _ in range(ROUNDS):
        parent = api.mkdir(api.root_id)
        a, b = api.mkdir(parent["id"], "a"), api.mkdir(parent["id"], "b")

        def send(c: ApiClient, i: int, a: Json = a, b: Json = b) -> httpx.Response:
            src, dst = (a, b) if i % 2 == 0 else (b, a)
            body = {"base_version": 1, "parent_id": dst["id"]}
            return c.request("PATCH", f"nodes/{src['id']}", json=body)

        responses = race(devices, send)
        assert [r.status_code for r in responses].count(200) == 1, [r.text for r in responses]
        assert_refusals(responses, {"conflict", "cycle"})
        # Both directories still hang off the tree: walking up from each reaches the root.
        for start in (a["id"], b["id"]):
            seen: set[str] = set()
            node_id = start
            while node_id != api.root_id:
                assert node_id not in seen, f"cycle through {seen}"
                seen.add(node_id)
                node_id = api.get_node(node_id)["parent_id"]


def test_delete_racing_a_move_into_the_directory(devices: list[ApiClient]) -> None:
    """Never a live child in a deleted directory: delete or move wins, not both."""
    api = devices[0]
    for _ in range(ROUNDS):
        folder = api.mkdir(api.root_id)
        file = api.mkfile(api.root_id)

        def send(c: ApiClient, i: int, folder: Json = folder, file: Json = file) -> httpx.Response:
            if i % 2 == 0:
                return c.request("DELETE", f"nodes/{folder['id']}", params={"base_version": 1})
            body = {"base_version": 1, "parent_id": folder["id"]}
            return c.request("PATCH", f"nodes/{file['id']}", json=body)

        responses = race(devices, send)
        assert [r.status_code for r in responses].count(200) == 1, [r.text for r in responses]
        assert_refusals(responses, {"conflict", "not_empty", "not_a_directory"})
        now_folder, now_file = api.get_node(folder["id"]), api.get_node(file["id"])
        if now_file["parent_id"] == folder["id"]:
            assert now_folder["deleted"] is False, (now_folder, now_file)


def test_create_racing_a_delete_of_the_parent(devices: list[ApiClient]) -> None:
    api = devices[0]
    for _ in range(ROUNDS):
        folder = api.mkdir(api.root_id)
        ids = [new_id() for _ in range(len(devices) * THREADS_PER_DEVICE)]

        def send(
            c: ApiClient, i: int, folder: Json = folder, ids: list[str] = ids
        ) -> httpx.Response:
            if i == 0:
                return c.request("DELETE", f"nodes/{folder['id']}", params={"base_version": 1})
            body = {
                "id": ids[i],
                "parent_id": folder["id"],
                "name": f"child-{i}",
                "kind": "file",
                "mode": 0o644,
                "mtime_ns": 1,
            }
            return c.request("POST", "nodes", json=body)

        responses = race(devices, send)
        assert all(r.status_code in (200, 201, 409) for r in responses), [r.text for r in responses]
        deleted = api.get_node(folder["id"])["deleted"]
        children = api.list_children(folder["id"]) if not deleted else []
        if deleted:
            for i in range(1, len(ids)):
                response = api.request("GET", f"nodes/{ids[i]}")
                if response.status_code == 200:
                    assert response.json()["deleted"], "live child under a deleted directory"
        else:
            assert responses[0].status_code == 409
            assert len(children) == len(ids) - 1


def test_one_op_id_sent_at_once_from_many_connections_applies_once(api: ApiClient) -> None:
    """A retry that overtakes the original: the backend still applies the op once."""
    node_id = new_id()
    op = {
        "op": "create",
        "op_id": new_id(),
        "id": node_id,
        "parent_id": api.root_id,
        "name": "exactly-once",
        "kind": "file",
        "mode": 0o644,
        "mtime_ns": 1,
    }
    seq = last_seq(api)
    responses = race([api], lambda c, i: c.request("POST", "changes", json={"ops": [op]}))
    assert {r.status_code for r in responses} == {200}, [r.text for r in responses]
    results = [r.json()["results"][0] for r in responses]
    assert all(res == results[0] for res in results), results
    assert results[0]["status"] == 201
    assert len(entries_for(api, node_id, seq)) == 1


def test_one_create_replayed_at_once_is_created_once(api: ApiClient) -> None:
    node_id = new_id()
    body = {
        "id": node_id,
        "parent_id": api.root_id,
        "name": "replayed-create",
        "kind": "dir",
        "mode": 0o755,
        "mtime_ns": 1,
    }
    seq = last_seq(api)
    responses = race([api], lambda c, i: c.request("POST", "nodes", json=body))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * (len(responses) - 1) + [201], [r.text for r in responses]
    assert len({r.text for r in responses}) == 1 or all(
        r.json()["id"] == node_id for r in responses
    )
    assert len(entries_for(api, node_id, seq)) == 1


def test_one_commit_replayed_at_once_is_committed_once(api: ApiClient) -> None:
    node = api.mkfile(api.root_id)
    chunks = [Chunk(b"committed once " + new_id().encode())]
    api.upload(chunks)
    body = api.commit_body(chunks, None)
    seq = last_seq(api)
    responses = race(
        [api], lambda c, i: c.request("POST", f"nodes/{node['id']}/revisions", json=body)
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * (len(responses) - 1) + [201], [r.text for r in responses]
    assert len(api.revisions(node["id"])) == 1
    assert len(entries_for(api, node["id"], seq)) == 1


def test_concurrent_registrations_of_one_name(api: ApiClient) -> None:
    """Only one account gets the name; the others are told it exists, never a 500."""
    name = unique_name("race")
    body = {"name": name, "password": PASSWORD}
    responses = race([api], lambda c, i: c.request("POST", "accounts", json=body, auth=False))
    assert sorted(r.status_code for r in responses) == [201] + [409] * (len(responses) - 1)
    for r in responses:
        if r.status_code == 409:
            assert r.json()["error"] == "name_exists"
    with ApiClient.login(api.base_url, name, PASSWORD, "winner") as winner:
        assert winner.me()["name"] == name


def test_concurrent_first_commits_of_one_new_chunk_all_succeed(
    devices: list[ApiClient],
) -> None:
    """Two devices upload the same new chunk and commit different files naming it at once.

    Each commit confirms the upload evidence and records ownership; done in two steps,
    the first commit consumed the evidence and the second saw neither evidence nor
    ownership (409 missing_chunks). Every commit must succeed.
    """
    api = devices[0]
    shared = [Chunk(b"one chunk that every file names " + new_id().encode())]
    count = len(devices) * THREADS_PER_DEVICE
    files = [api.mkfile(api.root_id, unique_name("same-chunk")) for _ in range(count)]
    for device in devices:
        device.upload(shared)
    responses = race(
        devices,
        lambda c, i: c.request(
            "POST", f"nodes/{files[i]['id']}/revisions", json=c.commit_body(shared, None)
        ),
    )
    assert [r.status_code for r in responses] == [201] * count, [
        (r.status_code, r.text[:200]) for r in responses
    ]
    ((prepared,),) = [api.prepare([shared[0].hash])]
    assert prepared["readable"] is True
    assert prepared["object"] == shared[0].object
