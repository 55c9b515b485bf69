"""`mountfs share/unshare/shares` and `mountfs link`, run as subprocesses against a real
backend, without any mount (paths are resolved through the API)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx

from tests.support.api_client import PASSWORD, ApiClient
from tests.support.backend import BackendProcess
from tests.support.content import put_content


def mountfs(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mountfs", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def ok(*args: str, stdin: str | None = None) -> str:
    done = mountfs(*args, stdin=stdin)
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout


def device(server: str, name: str, state: Path) -> ApiClient:
    """Register `name`, log this state directory in with the CLI, and return an API client."""
    ok("account", "create", name, "--server", server, "--password-stdin", stdin=PASSWORD)
    ok(
        "login", "--server", server, "--user", name, "--device", "cli",
        "--state", str(state), "--password-stdin", stdin=PASSWORD,
    )  # fmt: skip
    return ApiClient.login(server, name, PASSWORD, "test")


def test_share_accept_list_unshare(backend_server: BackendProcess, tmp_path: Path) -> None:
    server = backend_server.base_url
    alice_state, bob_state = tmp_path / "alice", tmp_path / "bob"
    with device(server, "alice", alice_state) as alice, device(server, "bob", bob_state) as bob:
        docs = alice.mkdir(alice.root_id, "docs")
        alice.mkdir(docs["id"], "inner")
        out = ok("share", "/docs", "bob", "--role", "editor", "--state", str(alice_state))
        assert "shared /docs with bob as editor (pending" in out

        listed = json.loads(ok("shares", "--json", "--state", str(bob_state)))
        (offer,) = listed["incoming"]
        assert (offer["name"], offer["owner"], offer["state"]) == ("docs", "alice", "pending")
        assert "from alice" in ok("shares", "--state", str(bob_state))
        assert "accepted docs from alice as docs" in ok(
            "shares", "accept", "--all", "--state", str(bob_state)
        )
        assert bob.list_children(docs["id"])[0]["name"] == "inner"

        # Who has access, asked by the owner and by the member (through its placement).
        for state in (alice_state, bob_state):
            assert ok("share", "docs", "--state", str(state)).splitlines() == [
                "alice  owner",
                "bob  editor",
            ]
        members = json.loads(ok("share", "docs/inner", "--json", "--state", str(bob_state)))
        assert members["owner"] == "alice"

        assert "no longer shared with bob" in ok(
            "unshare", "docs", "bob", "--state", str(alice_state)
        )
        assert json.loads(ok("shares", "--json", "--state", str(bob_state)))["incoming"] == []
        revoked = json.loads(ok("shares", "--all", "--json", "--state", str(bob_state)))
        assert [s["state"] for s in revoked["incoming"]] == ["revoked"]

        # Errors are one clean line.
        missing = mountfs("share", "nope/x", "bob", "--state", str(alice_state))
        assert missing.returncode == 1
        assert "/nope: no such file or folder" in missing.stderr
        nested = mountfs("share", "docs/inner", "bob", "--state", str(alice_state))
        assert nested.returncode == 1
        assert "nested_share" in nested.stderr

        assert (
            ok("shares", "auto-accept", "on", "--state", str(bob_state)).strip()
            == "auto-accept: on"
        )
        ok("share", "docs", "bob", "--state", str(alice_state))
        assert (
            json.loads(ok("shares", "--json", "--state", str(bob_state)))["incoming"][0]["state"]
            == "accepted"
        )


def test_links_from_the_cli(backend_server: BackendProcess, tmp_path: Path) -> None:
    server = backend_server.base_url
    state = tmp_path / "carol"
    with device(server, "carol", state) as carol:
        folder = carol.mkdir(carol.root_id, "out")
        put_content(carol, folder["id"], "report.txt", b"quarterly numbers")
        url = ok(
            "link", "create", "out/report.txt", "--expires", "7d", "--max-downloads", "5",
            "--state", str(state),
        ).strip()  # fmt: skip
        assert url.startswith(server + "/s/")
        assert httpx.get(url, params={"dl": 1}).content == b"quarterly numbers"

        locked = ok(
            "link", "create", "out", "--password-stdin", "--state", str(state),
            stdin="folder secret\nfolder secret\n",
        ).strip()  # fmt: skip
        assert httpx.get(locked).status_code == 401
        assert httpx.get(locked, params={"dl": 1}, auth=("", "folder secret")).status_code == 200

        listed = json.loads(ok("link", "list", "--json", "--state", str(state)))
        assert [(x["name"], x["downloads"], x["has_password"]) for x in listed] == [
            ("report.txt", 1, False),
            ("out", 1, True),
        ]
        assert all(x["url"] is None for x in listed)
        text = ok("link", "list", "--state", str(state))
        assert "downloads 1/5" in text
        assert "password" in text
        assert "revoked link" in ok("link", "revoke", listed[0]["id"], "--state", str(state))
        assert httpx.get(url).status_code == 404
        bad = mountfs("link", "create", "out", "--expires", "soon", "--state", str(state))
        assert bad.returncode == 2
        assert "30m, 12h, 7d" in bad.stderr


def test_account_delete_from_the_cli(backend_server: BackendProcess, tmp_path: Path) -> None:
    server = backend_server.base_url
    state = tmp_path / "dave"
    with device(server, "dave", state):
        wrong = mountfs(
            "account", "delete", "--password-stdin", "--state", str(state), stdin="nope\n"
        )
        assert wrong.returncode == 1
        assert "wrong password" in wrong.stderr
        ok("account", "delete", "--password-stdin", "--state", str(state), stdin=PASSWORD + "\n")
        gone = mountfs("shares", "--state", str(state))
        assert gone.returncode == 1
        assert "unauthorized" in gone.stderr


def test_trash_and_restore_inside_a_share(backend_server: BackendProcess, tmp_path: Path) -> None:
    """`mountfs trash` lists what an editor deleted in a shared folder, for the owner and
    the editor (with the deleting device), not for a viewer; `mountfs restore PATH` by
    the editor, at the path it sees the share at, brings it back."""
    server = backend_server.base_url
    states = {name: tmp_path / name for name in ("olga", "ed", "vic")}
    with (
        device(server, "olga", states["olga"]) as olga,
        device(server, "ed", states["ed"]) as ed,
        device(server, "vic", states["vic"]) as vic,
    ):
        docs = olga.mkdir(olga.root_id, "docs")
        report = olga.mkfile(docs["id"], "report.txt")
        for who, role in ((ed, "editor"), (vic, "viewer")):
            body = {"account": who.name, "role": role}
            offer = olga.call("POST", f"nodes/{docs['id']}/shares", json=body, expect=201)
            who.call("POST", f"shares/{offer['id']}/accept", json={"name": "olga's docs"})
        ed.delete_node(report["id"], olga.get_node(report["id"])["version"])

        def trash(name: str) -> list[dict[str, object]]:
            items = json.loads(ok("trash", "--json", "--state", str(states[name])))
            return [i for i in items if i["node_id"] == report["id"]] if items else []

        (owners,) = trash("olga")
        assert (owners["path"], owners["device_label"]) == ("docs/report.txt", "test")
        (editors,) = trash("ed")
        assert editors["path"] == "olga's docs/report.txt"
        assert trash("vic") == []
        assert "report.txt" in ok("trash", "--state", str(states["olga"]))
        ok("restore", "olga's docs/report.txt", "--state", str(states["ed"]))
        assert olga.get_node(report["id"])["deleted"] is False
        assert trash("olga") == []
