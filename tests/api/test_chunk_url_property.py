"""Property: presigned read URLs are handed out only for chunks the caller may read.

B is an editor of one of A's folders and a former viewer of another (revoked), and owns
files of its own; A and C have private files. Hypothesis draws any mix of object names
(B's own, the shared folder's, the revoked share's, A's and C's private ones, names that
exist nowhere) and B asks for read URLs: the answer is 200 exactly when every object is
readable by B (its own, or in a namespace it may read), and otherwise a 404 that names
nothing. Whatever B tries, it never gets a URL for someone else's chunk.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.api_client import ApiClient, Chunk, new_id, sha256_hex
from tests.support.backend import BackendProcess


@dataclass(frozen=True)
class Pool:
    b: ApiClient
    readable: frozenset[str]
    foreign: frozenset[str]


def _file(client: ApiClient, parent: str, label: str) -> str:
    chunk = Chunk(f"{label} {new_id()}".encode())
    node = client.mkfile(parent, label + "-" + new_id()[:8])
    client.commit(node["id"], [chunk], None)
    return chunk.object


@pytest.fixture(scope="module")
def pool(backend_session: BackendProcess) -> Iterator[Pool]:
    url = backend_session.base_url
    with (
        ApiClient.new_account(url, "prop-a") as a,
        ApiClient.new_account(url, "prop-b") as b,
        ApiClient.new_account(url, "prop-c") as c,
    ):
        shared = a.mkdir(a.root_id, "shared")
        former = a.mkdir(a.root_id, "former")
        readable = {_file(a, shared["id"], "shared") for _ in range(3)}
        revoked = {_file(a, former["id"], "former") for _ in range(2)}
        for folder, role in ((shared, "editor"), (former, "viewer")):
            offered = a.call(
                "POST",
                f"nodes/{folder['id']}/shares",
                json={"account": b.name, "role": role},
                expect=201,
            )
            b.call("POST", f"shares/{offered['id']}/accept", json={})
            if folder is former:
                a.call("DELETE", f"shares/{offered['id']}")
        readable |= {_file(b, b.root_id, "mine") for _ in range(2)}
        readable.add(_file(b, shared["id"], "b-in-shared"))
        foreign = revoked | {_file(a, a.root_id, "a-private") for _ in range(2)}
        foreign |= {_file(c, c.root_id, "c-private") for _ in range(2)}
        foreign |= {sha256_hex(new_id().encode()) for _ in range(2)}  # exist nowhere
        yield Pool(b, frozenset(readable), frozenset(foreign))


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_read_urls_only_for_readable_chunks(pool: Pool, data: st.DataObject) -> None:
    everything = sorted(pool.readable | pool.foreign)
    wanted = data.draw(st.lists(st.sampled_from(everything), min_size=1, max_size=6))
    response = pool.b.request("POST", "chunks/read-urls", json={"objects": wanted})
    if set(wanted) <= pool.readable:
        assert response.status_code == 200, response.text
        assert [u["object"] for u in response.json()["urls"]] == wanted
    else:
        assert response.status_code == 404, response.text
        body = response.json()
        assert body["error"] == "not_found"
        assert "url" not in response.text
        assert not any(obj in body["detail"] for obj in wanted)
