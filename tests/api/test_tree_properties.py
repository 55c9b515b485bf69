"""Property-based: random tree operations with random names and bytes against the server.

A hypothesis state machine drives create/rename/move/delete/commit on the node routes
inside a fresh sandbox directory per example, and keeps a model of what the tree must be.
Each answer must be either the success the model predicts, or one of the refusals that
apply (the contract does not rank errors, so when several apply any of them is right);
never a 5xx. At the end of every example the server's tree must equal the model: same
nodes, same versions, unique live names per parent.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace

import httpx
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from tests.support.api_client import ApiClient, Chunk, describe, new_id, now_ns

ANY_4XX = (0, "any")
"""Marker: the contract leaves the refusal open (e.g. changing a tombstone)."""


@dataclass(frozen=True)
class ModelNode:
    id: str
    parent_id: str | None
    name: str
    kind: str
    version: int
    deleted: bool
    size: int = 0
    head_revision: str | None = None


def valid_name(name: str) -> bool:
    return (
        name not in ("", ".", "..")
        and "/" not in name
        and "\x00" not in name
        and len(name.encode()) <= 255
    )


names = st.one_of(
    st.text(alphabet="abAB.", min_size=1, max_size=3),  # small alphabet: frequent clashes
    st.sampled_from(
        ["", ".", "..", "a/b", "nul\x00", "x" * 255, "x" * 256, "é" * 127 + "e", "é" * 128]
    ),
    st.text(max_size=30),
)


class TreeMachine(RuleBasedStateMachine):
    """Model-checked random walk over the node routes of one account."""

    api: ApiClient
    outcomes: Counter[tuple[str, int, str]]
    """(method, status, error) of every request made, over all examples: proof of work."""

    def __init__(self) -> None:
        super().__init__()
        self.nodes: dict[str, ModelNode] = {}
        self.sandbox = ""

    # ---- model helpers ---------------------------------------------------------------

    def live_children(self, parent_id: str) -> list[ModelNode]:
        return [n for n in self.nodes.values() if n.parent_id == parent_id and not n.deleted]

    def sibling_named(self, parent_id: str, name: str, other_than: str = "") -> bool:
        return any(n.name == name and n.id != other_than for n in self.live_children(parent_id))

    def is_live_dir(self, node_id: str) -> bool:
        node = self.nodes[node_id]
        return node.kind == "dir" and not node.deleted

    def ancestors_or_self(self, node_id: str | None) -> set[str]:
        seen: set[str] = set()
        while node_id is not None and node_id in self.nodes:
            seen.add(node_id)
            node_id = self.nodes[node_id].parent_id
        return seen

    def check(self, response: httpx.Response, ok: int, refusals: list[tuple[int, str]]) -> bool:
        """Assert the answer fits the model; True when the change was applied."""
        assert response.status_code < 500, describe(response, "server error")
        error = response.json().get("error", "") if response.status_code >= 400 else ""
        self.outcomes[(response.request.method, response.status_code, error)] += 1
        if not refusals:
            assert response.status_code == ok, describe(response, f"model expects {ok}")
            return True
        assert 400 <= response.status_code < 500, describe(response, f"model expects {refusals}")
        body = response.json()
        got = (response.status_code, body.get("error"))
        if ANY_4XX not in refusals:
            assert got in refusals, describe(response, f"model expects one of {refusals}")
        return False

    def apply(self, node_json: dict[str, object]) -> None:
        node = self.nodes[str(node_json["id"])]
        updated = replace(
            node,
            parent_id=node_json["parent_id"],  # type: ignore[arg-type]
            name=node_json["name"],  # type: ignore[arg-type]
            version=node_json["version"],  # type: ignore[arg-type]
            deleted=node_json["deleted"],  # type: ignore[arg-type]
            size=node_json["size"],  # type: ignore[arg-type]
            head_revision=node_json["head_revision"],  # type: ignore[arg-type]
        )
        self.nodes[node.id] = updated

    # ---- rules -----------------------------------------------------------------------

    @initialize()
    def make_sandbox(self) -> None:
        sandbox = self.api.mkdir(self.api.root_id)
        self.sandbox = sandbox["id"]
        self.nodes[self.sandbox] = ModelNode(self.sandbox, None, sandbox["name"], "dir", 1, False)

    @rule(data=st.data(), name=names, kind=st.sampled_from(["file", "dir", "dir", "symlink"]))
    def create(self, data: st.DataObject, name: str, kind: str) -> None:
        parent = data.draw(st.sampled_from(list(self.nodes)))
        refusals = []
        if not valid_name(name):
            refusals.append((400, "invalid_name"))
        if not self.is_live_dir(parent):
            refusals.append((409, "not_a_directory"))
        elif self.sibling_named(parent, name):
            refusals.append((409, "name_taken"))
        node_id = new_id()
        body = {
            "id": node_id,
            "parent_id": parent,
            "name": name,
            "kind": kind,
            "mode": 0o644,
            "mtime_ns": now_ns(),
        }
        if kind == "symlink":
            body["target"] = "somewhere"
        response = self.api.request("POST", "nodes", json=body)
        if self.check(response, 201, refusals):
            self.nodes[node_id] = ModelNode(node_id, parent, name, kind, 1, False)
            self.apply(response.json())

    @rule(data=st.data(), kind=st.sampled_from(["file", "dir"]))
    def create_over_a_sibling(self, data: st.DataObject, kind: str) -> None:
        """Clashes are rare by chance; this rule makes them on purpose."""
        live = [n for n in self.nodes.values() if not n.deleted and n.parent_id is not None]
        if not live:
            # Always make the clash (the proof-of-work check below counts on it): first a
            # node to clash with, straight under the sandbox.
            made = self.api.request(
                "POST",
                "nodes",
                json={
                    "id": new_id(),
                    "parent_id": self.sandbox,
                    "name": "clash",
                    "kind": "file",
                    "mode": 0o644,
                    "mtime_ns": now_ns(),
                },
            )
            self.check(made, 201, [])
            node = made.json()
            self.nodes[node["id"]] = ModelNode(node["id"], self.sandbox, "clash", "file", 1, False)
            self.apply(node)
            live = [self.nodes[node["id"]]]
        sibling = data.draw(st.sampled_from(live))
        assert sibling.parent_id is not None
        body = {
            "id": new_id(),
            "parent_id": sibling.parent_id,
            "name": sibling.name,
            "kind": kind,
            "mode": 0o644,
            "mtime_ns": now_ns(),
        }
        response = self.api.request("POST", "nodes", json=body)
        self.check(response, 201, [(409, "name_taken")])
        assert response.json()["current"]["id"] == sibling.id

    @rule(data=st.data(), name=names)
    def rename(self, data: st.DataObject, name: str) -> None:
        node = self.nodes[data.draw(st.sampled_from(list(self.nodes)))]
        if node.id == self.sandbox or name == node.name:
            return
        refusals = []
        if node.deleted:
            refusals.append(ANY_4XX)
        if not valid_name(name):
            refusals.append((400, "invalid_name"))
        if node.parent_id and self.sibling_named(node.parent_id, name, node.id):
            refusals.append((409, "name_taken"))
        response = self.api.request(
            "PATCH", f"nodes/{node.id}", json={"base_version": node.version, "name": name}
        )
        if self.check(response, 200, refusals):
            assert response.json()["version"] == node.version + 1
            self.apply(response.json())

    @rule(data=st.data())
    def move(self, data: st.DataObject) -> None:
        node = self.nodes[data.draw(st.sampled_from(list(self.nodes)))]
        target = data.draw(st.sampled_from(list(self.nodes)))
        if node.id == self.sandbox or target == node.parent_id:
            return
        refusals = []
        if node.deleted:
            refusals.append(ANY_4XX)
        if not self.is_live_dir(target):
            refusals.append((409, "not_a_directory"))
        if node.id in self.ancestors_or_self(target):
            refusals.append((409, "cycle"))
        if self.sibling_named(target, node.name, node.id):
            refusals.append((409, "name_taken"))
        response = self.api.request(
            "PATCH", f"nodes/{node.id}", json={"base_version": node.version, "parent_id": target}
        )
        if self.check(response, 200, refusals):
            self.apply(response.json())

    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        live = [i for i, n in self.nodes.items() if not n.deleted]
        node = self.nodes[data.draw(st.sampled_from(live or list(self.nodes)))]
        if node.id == self.sandbox:
            return
        refusals = []
        if node.deleted:
            refusals.append(ANY_4XX)
        elif self.live_children(node.id):
            refusals.append((409, "not_empty"))
        response = self.api.request(
            "DELETE", f"nodes/{node.id}", params={"base_version": node.version}
        )
        if self.check(response, 200, refusals):
            assert response.json()["deleted"] is True
            self.apply(response.json())

    @rule(data=st.data(), content=st.binary(max_size=3000))
    def commit(self, data: st.DataObject, content: bytes) -> None:
        files = [n.id for n in self.nodes.values() if n.kind == "file"]
        if not files:
            return
        node = self.nodes[data.draw(st.sampled_from(files))]
        chunks = [Chunk(content)] if content else []
        self.api.upload(chunks)
        body = self.api.commit_body(chunks, node.head_revision)
        refusals = [ANY_4XX] if node.deleted else []
        response = self.api.request("POST", f"nodes/{node.id}/revisions", json=body)
        if self.check(response, 201, refusals):
            result = response.json()
            assert result["node"]["size"] == len(content)
            self.apply(result["node"])

    @rule(data=st.data())
    def stale_update(self, data: st.DataObject) -> None:
        node = self.nodes[data.draw(st.sampled_from(list(self.nodes)))]
        if node.version < 2:
            return
        response = self.api.request(
            "PATCH", f"nodes/{node.id}", json={"base_version": node.version - 1, "mode": 0o600}
        )
        refusals = [ANY_4XX] if node.deleted else [(409, "conflict")]
        self.check(response, 200, refusals)
        if response.status_code == 409 and not node.deleted:
            current = response.json()["current"]
            assert (current["id"], current["version"]) == (node.id, node.version)

    # ---- the tree equals the model ---------------------------------------------------

    @invariant()
    def names_unique_per_parent(self) -> None:
        seen = set()
        for node in self.nodes.values():
            if not node.deleted and node.parent_id is not None:
                key = (node.parent_id, node.name)
                assert key not in seen, f"model holds two live {key}"
                seen.add(key)

    def teardown(self) -> None:
        if not self.sandbox:
            return
        for node in self.nodes.values():
            got = self.api.get_node(node.id)
            assert (got["parent_id"], got["name"], got["kind"], got["version"], got["deleted"]) == (
                node.parent_id if node.id != self.sandbox else got["parent_id"],
                node.name,
                node.kind,
                node.version,
                node.deleted,
            ), (got, node)
            if node.kind == "dir" and not node.deleted:
                listed = self.api.list_children(node.id, 7)
                names_listed = [c["name"] for c in listed]
                assert len(names_listed) == len(set(names_listed)), names_listed
                assert names_listed == sorted(names_listed)
                assert {c["id"] for c in listed} == {c.id for c in self.live_children(node.id)}


def test_random_tree_operations_match_the_model(api: ApiClient) -> None:
    """A random walk checked against the model, then a check that the walk used every kind
    of route. Derandomized: a walk of a random seed now and then never got a rename
    through (no PATCH 200 in 25 x 50 steps), which failed the coverage check, not the
    model; a fixed walk keeps the check meaningful and the test stable."""
    TreeMachine.api = api
    TreeMachine.outcomes = Counter()
    run_state_machine_as_test(
        TreeMachine,
        settings=settings(
            max_examples=25,
            stateful_step_count=50,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
        ),
    )
    # The walk really exercised the routes, successes and refusals alike.
    seen = TreeMachine.outcomes
    assert sum(seen.values()) >= 100, seen
    for expected in [
        ("POST", 201, ""),
        ("PATCH", 200, ""),
        ("DELETE", 200, ""),
        ("POST", 409, "name_taken"),
    ]:
        assert seen[expected] > 0, (expected, seen)
    assert seen["POST", 400, "invalid_name"] + seen["PATCH", 400, "invalid_name"] > 0, seen
