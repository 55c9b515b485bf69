"""The push channel, black box: `GET /api/v1/journal/{namespace}/watch` (Server-Sent Events).

A stream is read on a thread that timestamps every line, so tests can say what arrived and
when. Bounds are generous (a loaded 2-core machine); what they prove is the order of
things: an event arrives because of a change, not because of the stream's own timers.
"""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.api.conftest import AccountFactory
from tests.support.api_client import ApiClient, assert_error
from tests.support.backend import BackendProcess

ARRIVES_WITHIN_S = 5.0
QUIET_S = 1.5


@dataclass
class Stream:
    """The lines of one open stream, as they arrive (`None` marks its end)."""

    status: int = 0
    content_type: str = ""
    lines: queue.Queue[tuple[float, str | None]] = field(default_factory=queue.Queue)
    seen: list[str] = field(default_factory=list)

    def next_line(self, timeout: float) -> str | None:
        """The next line; None once the stream has ended. Fails after `timeout` s."""
        try:
            _, line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"nothing within {timeout}s; so far {self.seen}") from None
        if line is not None:
            self.seen.append(line)
        return line

    def next_event(self, timeout: float) -> dict[str, Any]:
        """The next event's fields (`data` decoded); comments are skipped."""
        deadline = time.monotonic() + timeout
        fields: dict[str, Any] = {}
        while True:
            line = self.next_line(max(deadline - time.monotonic(), 0.01))
            assert line is not None, f"the stream ended before an event: {self.seen}"
            if line == "":
                if "data" in fields:
                    fields["data"] = json.loads(fields["data"])
                    return fields
                fields = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(": ")
                fields[name] = value

    def rest(self, timeout: float) -> list[str]:
        """Every line until the stream ends (which must happen within `timeout`)."""
        lines = []
        deadline = time.monotonic() + timeout
        while (line := self.next_line(max(deadline - time.monotonic(), 0.01))) is not None:
            lines.append(line)
        return lines

    def quiet_for(self, seconds: float) -> list[str]:
        """The lines that arrive within `seconds` (the stream must stay open)."""
        lines = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                _, line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            assert line is not None, f"the stream ended: {self.seen + lines}"
            lines.append(line)
        return lines


@contextmanager
def watching(api: ApiClient, namespace_id: str | None = None, **params: Any) -> Iterator[Stream]:
    """Open a watch stream on a thread; closed when the block ends.

    Heartbeats come every second unless `heartbeat` says otherwise: the reader notices
    the end of the block at its next line, so they also bound how long closing takes.
    """
    namespace_id = namespace_id or api.namespace_id
    params.setdefault("heartbeat", 1)
    stream = Stream()
    opened = threading.Event()
    done = threading.Event()
    client = httpx.Client(base_url=api.base_url, timeout=httpx.Timeout(30.0))

    def read() -> None:
        try:
            with client.stream(
                "GET",
                f"/api/v1/journal/{namespace_id}/watch",
                params=params,
                headers=api.auth_headers(),
            ) as response:
                stream.status = response.status_code
                stream.content_type = response.headers.get("content-type", "")
                opened.set()
                for line in response.iter_lines():
                    if done.is_set():
                        return
                    stream.lines.put((time.monotonic(), line))
        except httpx.HTTPError:
            pass  # closed by the test
        finally:
            opened.set()
            stream.lines.put((time.monotonic(), None))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert opened.wait(10), "the stream did not open"
        yield stream
    finally:
        done.set()
        reader.join(10)
        client.close()


def data_lines(lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith("data")]


def head(api: ApiClient) -> int:
    """The journal head of the account's namespace."""
    entries = api.journal_all(api.namespace_id)
    return int(entries[-1]["seq"]) if entries else 0


def test_an_event_arrives_when_another_device_changes_the_tree(api: ApiClient) -> None:
    api.mkfile(api.root_id, "one")
    with api.another_device("laptop") as laptop, watching(api) as stream:
        assert stream.status == 200
        assert stream.content_type.startswith("text/event-stream")
        assert stream.quiet_for(QUIET_S)[:3] == [": watching", "retry: 1000", ""]
        assert not data_lines(stream.quiet_for(QUIET_S))  # no news yet
        before = time.monotonic()
        laptop.mkfile(laptop.root_id, "two")
        event = stream.next_event(ARRIVES_WITHIN_S)
        assert time.monotonic() - before < ARRIVES_WITHIN_S
        assert event["data"] == {"namespace_id": api.namespace_id, "position": 2}
        assert event["id"] == "2"
        # The same device's own changes are news too (its other mounts want them).
        api.mkdir(api.root_id, "three")
        assert stream.next_event(ARRIVES_WITHIN_S)["data"]["position"] == 3


def test_after_decides_what_is_news(api: ApiClient) -> None:
    for n in range(3):
        api.mkfile(api.root_id, f"f{n}")
    # Behind the head: the head is announced at once.
    with watching(api, after=1) as stream:
        assert stream.next_event(ARRIVES_WITHIN_S)["data"]["position"] == 3
    # At the head, or without `after` (= the head now): nothing until a change.
    for params in ({"after": 3}, {}):
        with watching(api, **params) as stream:
            assert not data_lines(stream.quiet_for(QUIET_S))
            api.mkfile(api.root_id)
            assert stream.next_event(ARRIVES_WITHIN_S)["data"]["position"] == head(api)
    # Ahead of the head (a cursor from a restored backend): news once the journal passes it.
    with watching(api, after=head(api) + 1) as stream:
        api.mkfile(api.root_id)
        assert not data_lines(stream.quiet_for(QUIET_S))
        api.mkfile(api.root_id)
        assert stream.next_event(ARRIVES_WITHIN_S)["data"]["position"] == head(api)


def test_a_burst_of_changes_ends_at_the_head(api: ApiClient) -> None:
    with watching(api, after=0) as stream:
        ops = [
            {
                "op": "create",
                "op_id": str(uuid.uuid4()),
                "id": str(uuid.uuid4()),
                "parent_id": api.root_id,
                "name": f"burst-{n}",
                "kind": "file",
                "mode": 0o644,
                "mtime_ns": 0,
            }
            for n in range(20)
        ]
        results = api.changes(ops)
        assert all(r["status"] == 201 for r in results)
        positions = []
        while not positions or positions[-1] < 20:
            positions.append(stream.next_event(ARRIVES_WITHIN_S)["data"]["position"])
        assert positions == sorted(set(positions)), "positions only grow"


def test_timeout_zero_answers_at_once(api: ApiClient) -> None:
    api.mkfile(api.root_id)
    path = f"journal/{api.namespace_id}/watch"
    response = api.request("GET", path, params={"timeout": 0, "after": 0})
    assert response.status_code == 200
    assert "data: " + json.dumps({"namespace_id": api.namespace_id, "position": 1}) in (
        response.text.splitlines()
    )
    for params in ({"timeout": 0, "after": 1}, {"timeout": 0}):
        response = api.request("GET", path, params=params)
        assert response.status_code == 200
        assert "data:" not in response.text


def test_heartbeats_keep_a_quiet_stream_alive_until_its_timeout(api: ApiClient) -> None:
    started = time.monotonic()
    with watching(api, heartbeat=1, timeout=3) as stream:
        lines = stream.rest(15)
    lasted = time.monotonic() - started
    assert lines.count(": heartbeat") >= 2, lines
    assert not [line for line in lines if line.startswith("data")]
    assert 2.5 < lasted < 12, f"a 3 s stream lasted {lasted:.1f}s"


def test_a_revoked_device_stream_ends_at_the_next_heartbeat(api: ApiClient) -> None:
    with api.another_device("stolen") as stolen, watching(stolen, heartbeat=1) as stream:
        api.call("DELETE", f"devices/{stolen.device_id}", expect=204)
        stream.rest(10)  # ends by itself
        response = stolen.request("GET", f"journal/{api.namespace_id}/watch")
        assert_error(response, 401, "unauthorized")


def test_auth_and_isolation(api: ApiClient, new_account: AccountFactory, anon: ApiClient) -> None:
    other = new_account("other")
    path = f"journal/{api.namespace_id}/watch"
    assert_error(anon.request("GET", path, auth=False), 401, "unauthorized")
    bad = ApiClient(api.base_url, token="not-a-token")
    try:
        assert_error(bad.request("GET", path), 401, "unauthorized")
    finally:
        bad.close()
    assert_error(other.request("GET", path), 404, "not_found")
    assert_error(api.request("GET", f"journal/{uuid.uuid4()}/watch"), 404, "not_found")
    assert_error(api.request("GET", "journal/not-a-uuid/watch"), 400, "bad_request")
    for params in ({"after": -1}, {"heartbeat": 0}, {"heartbeat": 16}, {"timeout": 3601}):
        assert_error(api.request("GET", path, params=params), 400, "bad_request")
    # Another account's changes are no news on this stream.
    with watching(api) as stream:
        other.mkfile(other.root_id)
        assert not data_lines(stream.quiet_for(QUIET_S))


def test_stopping_the_server_ends_open_streams_at_once(backend_server: BackendProcess) -> None:
    with ApiClient.new_account(backend_server.base_url, "stop") as api, watching(api) as stream:
        assert stream.quiet_for(0.5)[0] == ": watching"
        started = time.monotonic()
        backend_server.stop()
        stream.rest(5)
        assert time.monotonic() - started < 5, "the graceful shutdown waited for the stream"


def test_news_crosses_worker_processes(backend_factory: Any) -> None:
    """With --workers 2 the stream and the change may be served by different processes;
    the journal re-check (about once a second) still brings the news."""
    backend = backend_factory("--workers", "2")
    with ApiClient.new_account(backend.base_url, "workers") as api:
        for n in range(4):  # new connections land on either worker
            with watching(api) as stream, ApiClient(api.base_url, token=api.token) as writer:
                writer.call("POST", "nodes", expect=201, json=_file(api.root_id, f"w{n}"))
                event = stream.next_event(ARRIVES_WITHIN_S)
                assert event["data"]["position"] == n + 1


def _file(parent_id: str, name: str) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "parent_id": parent_id,
        "name": name,
        "kind": "file",
        "mode": 0o644,
        "mtime_ns": 0,
    }


def test_followed_announces_the_shares_the_account_follows(
    api: ApiClient, new_account: AccountFactory
) -> None:
    """`followed=true`: one stream also announces the journals of accepted shares (each
    event names its namespace), picks up a share accepted while it is open, and stops
    announcing a share once it is revoked; the offer itself is news of the own journal."""
    owner, outsider = new_account("owner"), new_account("outsider")
    first = owner.mkdir(owner.root_id, "first")
    body = {"account": api.name, "role": "editor"}
    offer = owner.call("POST", f"nodes/{first['id']}/shares", json=body, expect=201)
    api.call("POST", f"shares/{offer['id']}/accept", json={})
    ns = offer["namespace_id"]
    path = f"journal/{api.namespace_id}/watch"
    # Only on the account's own namespace; another's is still 404.
    shared_path = f"journal/{ns}/watch"
    assert_error(api.request("GET", shared_path, params={"followed": "true"}), 400, "bad_request")
    assert_error(outsider.request("GET", path, params={"followed": "true"}), 404, "not_found")
    with watching(api, followed="true") as stream:
        assert not data_lines(stream.quiet_for(QUIET_S))
        owner.mkfile(first["id"], "inside")
        event = stream.next_event(ARRIVES_WITHIN_S)
        assert event["data"]["namespace_id"] == ns
        assert event["data"]["position"] == len(api.journal_all(ns))
        assert "id" not in event  # ids are the watched namespace's own positions
        # A second share, offered and accepted while the stream is open.
        second = owner.mkdir(owner.root_id, "second")
        offer2 = owner.call("POST", f"nodes/{second['id']}/shares", json=body, expect=201)
        assert stream.next_event(ARRIVES_WITHIN_S)["data"]["namespace_id"] == api.namespace_id
        api.call("POST", f"shares/{offer2['id']}/accept", json={})
        assert stream.next_event(ARRIVES_WITHIN_S)["data"]["namespace_id"] == api.namespace_id
        owner.mkfile(second["id"], "inside too")
        event = stream.next_event(ARRIVES_WITHIN_S)
        assert event["data"]["namespace_id"] == offer2["namespace_id"]
        # Revoked: the detach is news of the own journal, then the share is silent.
        owner.call("DELETE", f"shares/{offer['id']}")
        assert stream.next_event(ARRIVES_WITHIN_S)["data"]["namespace_id"] == api.namespace_id
        stream.quiet_for(QUIET_S)
        owner.mkfile(first["id"], "after the end")
        assert not data_lines(stream.quiet_for(QUIET_S))
    # Without the flag, a share's news is not on the account's stream.
    with watching(api) as stream:
        stream.quiet_for(QUIET_S)
        owner.mkfile(second["id"], "not announced")
        assert not data_lines(stream.quiet_for(QUIET_S))
