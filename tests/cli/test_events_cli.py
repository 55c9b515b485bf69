"""`mountfs events`: the real CLI against a real backend, without a mount.

Another device of the account ("desktop", an API client) makes changes; the CLI runs as the
"laptop" device from its state directory and must tell what desktop did, with paths and the
device's label, as text or one JSON object per line, and keep following with `--follow`.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.api_client import PASSWORD, ApiClient, Chunk
from tests.support.backend import BackendProcess
from tests.support.mount import Account, run_cli

ARRIVES_WITHIN_S = 10.0


@pytest.fixture
def laptop(backend_session: BackendProcess, tmp_path: Path) -> tuple[Account, Path]:
    """An account, and the state directory of its device `laptop` (as `mountfs login`)."""
    account = Account.register(backend_session.base_url, "events")
    state = tmp_path / "laptop"
    account.login(state, "laptop")
    return account, state


@pytest.fixture
def desktop(laptop: tuple[Account, Path]) -> Iterator[ApiClient]:
    account, _ = laptop
    with ApiClient.login(account.server, account.name, PASSWORD, "desktop") as client:
        yield client


def events_json(state: Path, *args: str) -> list[dict[str, Any]]:
    result = run_cli("events", "--json", "--state", state, *args, timeout=60)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def summary(changes: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    return [
        (c["action"], c["path"], *([c["from_path"]] if "from_path" in c else [])) for c in changes
    ]


def test_lists_what_another_device_did(laptop: tuple[Account, Path], desktop: ApiClient) -> None:
    _, state = laptop
    root = desktop.root_id
    docs = desktop.mkdir(root, "docs")
    note, rev = desktop.write_file(docs["id"], "note.txt", b"first")  # added (with content)
    note = desktop.commit(note["id"], [Chunk(b"second")], rev["id"])["node"]  # edited
    note = desktop.update_node(note["id"], note["version"], name="renamed.txt")
    archive = desktop.mkdir(root, "archive")
    note = desktop.update_node(note["id"], note["version"], parent_id=archive["id"])
    # An editor's atomic save: write a temporary file, rename it over the original.
    report, _ = desktop.write_file(root, "report.md", b"v1")
    temp, _ = desktop.write_file(root, ".report.md.swp", b"v2")
    desktop.update_node(
        temp["id"], temp["version"], name="report.md", replace_id=report["id"],
        replace_version=report["version"],
    )  # fmt: skip
    desktop.delete_node(note["id"], note["version"])

    changes = events_json(state, "--limit", "100")
    assert summary(changes) == [
        ("added", "/docs"),
        ("added", "/docs/note.txt"),
        ("edited", "/docs/note.txt"),
        ("renamed", "/docs/renamed.txt", "/docs/note.txt"),
        ("added", "/archive"),
        ("moved", "/archive/renamed.txt", "/docs/renamed.txt"),
        ("added", "/report.md"),
        ("added", "/.report.md.swp"),
        ("edited", "/report.md"),
        ("deleted", "/archive/renamed.txt"),
    ]
    assert {c["device"] for c in changes} == {"desktop"}
    assert {c["device_id"] for c in changes} == {desktop.device_id}
    assert [c["seq"] for c in changes] == sorted(c["seq"] for c in changes)
    by_path = {(c["action"], c["path"]): c for c in changes}
    assert by_path[("added", "/docs")]["kind"] == "dir"
    assert by_path[("edited", "/docs/note.txt")]["size"] == len(b"second")

    assert summary(events_json(state, "--limit", "2")) == summary(changes)[-2:]

    text = run_cli("events", "--state", state, "--limit", "1", timeout=60)
    assert text.returncode == 0, text.stderr
    (line,) = text.stdout.splitlines()
    assert line.endswith("  deleted  /archive/renamed.txt  (desktop)"), line


def test_own_changes_only_with_mine(laptop: tuple[Account, Path], desktop: ApiClient) -> None:
    account, state = laptop
    token = (state / "token").read_text().strip()
    with ApiClient(account.server, token) as own:
        own.mkdir(own.root_id, "made-here")
    desktop.mkdir(desktop.root_id, "made-there")
    assert summary(events_json(state)) == [("added", "/made-there")]
    mine = events_json(state, "--mine")
    assert summary(mine) == [("added", "/made-here"), ("added", "/made-there")]
    assert mine[0]["device"] == "laptop"


class Follower:
    """`mountfs events --follow --json` running, its stdout lines read on a thread."""

    def __init__(self, state: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mountfs", "events", "--follow", "--json"]
            + ["--limit", "0", "--state", str(state)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.errors = ""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def next(self, timeout: float) -> dict[str, Any]:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no change printed within {timeout}s") from None
        result: dict[str, Any] = json.loads(line)
        return result

    def stop(self) -> int:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGINT)
        try:
            return self.proc.wait(30)  # generous: a loaded CI machine was seen to need >10 s
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self._reader.join(10)
            self.errors = self.proc.stderr.read() if self.proc.stderr else ""
            for pipe in (self.proc.stdout, self.proc.stderr):
                if pipe is not None:
                    pipe.close()


def test_follow_prints_changes_as_they_happen(
    laptop: tuple[Account, Path], desktop: ApiClient
) -> None:
    _, state = laptop
    desktop.mkdir(desktop.root_id, "old")  # before: not printed with --limit 0
    follower = Follower(state)
    try:
        time.sleep(2.0)  # let it start and connect (a change before that is still caught up)
        for name in ("one", "two"):
            started = time.monotonic()
            desktop.mkdir(desktop.root_id, name)
            change = follower.next(ARRIVES_WITHIN_S)
            assert (change["action"], change["path"], change["device"]) == (
                "added",
                f"/{name}",
                "desktop",
            )
            assert time.monotonic() - started < ARRIVES_WITHIN_S
    finally:
        code = follower.stop()
    assert code == 130, follower.errors


def test_without_a_login_it_says_so(tmp_path: Path) -> None:
    result = run_cli("events", "--state", tmp_path / "nobody", timeout=60)
    assert result.returncode == 1
    assert "mountfs login" in result.stderr


def test_shares_offered_changed_and_ended_are_listed(
    laptop: tuple[Account, Path], backend_session: BackendProcess
) -> None:
    account, state = laptop
    owner = Account.register(backend_session.base_url, "sharer")
    with owner.api() as other:
        folder = other.mkdir(other.root_id, "plans")
        body = {"account": account.name, "role": "viewer"}
        offer = other.call("POST", f"nodes/{folder['id']}/shares", json=body, expect=201)
        body["role"] = "editor"
        other.call("POST", f"nodes/{folder['id']}/shares", json=body, expect=200)
        other.call("DELETE", f"shares/{offer['id']}")
    changes = events_json(state)
    assert summary(changes) == [("offered", "/plans"), ("role", "/plans"), ("unshared", "/plans")]
    assert [c["share"]["role"] for c in changes] == ["viewer", "editor", "editor"]
    assert {c["share"]["by"] for c in changes} == {owner.name}
    assert changes[0]["share"]["id"] == offer["id"]
    text = run_cli("events", "--state", state, timeout=60).stdout.splitlines()
    assert text[0].endswith(f"({owner.name}, viewer; accept: mountfs shares accept {offer['id']})")
