"""`mountfs versions`, `restore`, `trash` without a mount, and `mountfs admin` refusals,
through the real CLI against a real backend."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.test_accounts_cli import PASSWORD, create_and_login, mountfs
from tests.support.api_client import ApiClient, chunks_of
from tests.support.backend import BackendProcess
from tests.support.mount import Account


def test_versions_restore_and_trash_of_account_paths(
    backend_session: BackendProcess, tmp_path: Path
) -> None:
    account = Account.register(backend_session.base_url, "cli-versions")
    state = tmp_path / "state"
    account.login(state, "desk")
    with account.api() as api:
        folder = api.mkdir(api.root_id, "docs")
        node, first = api.write_file(folder["id"], "plan.txt", b"plan A")
        api.commit(node["id"], chunks_of(b"plan B, revised"), first["id"])
    listed = mountfs("versions", "docs/plan.txt", "--json", "--state", str(state))
    assert listed.returncode == 0, listed.stderr
    versions = json.loads(listed.stdout)
    assert [(v["size"], v["head"]) for v in versions] == [(15, True), (6, False)]
    table = mountfs("versions", "/docs/plan.txt", "--state", str(state))
    assert "current" in table.stdout
    du = mountfs("du", "docs", "/", "--json", "--state", str(state))
    assert du.returncode == 0, du.stderr
    assert json.loads(du.stdout) == [
        {"path": "docs", "bytes": 15, "files": 1},
        {"path": "/", "bytes": 15, "files": 1},
    ]

    at = versions[1]["created_at"]
    restored = mountfs("restore", "docs/plan.txt", "--at", at, "--state", str(state))
    assert restored.returncode == 0, restored.stderr
    assert "restored docs/plan.txt" in restored.stdout
    with account.api() as api:
        assert api.get_node(node["id"])["size"] == 6

    bad = mountfs("restore", "docs/plan.txt", "--at", "yesterday", "--state", str(state))
    assert bad.returncode == 2
    assert "neither a revision id nor a time" in bad.stderr
    missing = mountfs("versions", "docs/nothing", "--state", str(state))
    assert missing.returncode == 1
    assert "nothing at" in missing.stderr
    folder_versions = mountfs("versions", "docs", "--state", str(state))
    assert folder_versions.returncode == 1
    assert "only files have versions" in folder_versions.stderr

    with account.api() as api:
        api.delete_node(node["id"], api.get_node(node["id"])["version"])
    empty_no = mountfs("trash", "empty", "--state", str(state), stdin="n\n")
    assert empty_no.returncode == 1
    trash = json.loads(mountfs("trash", "--json", "--state", str(state)).stdout)
    assert [(t["path"], t["kind"]) for t in trash] == [("docs/plan.txt", "file")]
    assert trash[0]["device_label"].startswith("inspector")  # the device that deleted it
    back = mountfs("restore", "docs/plan.txt", "--state", str(state))
    assert back.returncode == 0, back.stderr
    assert mountfs("trash", "--state", str(state)).stdout.strip() == "the trash is empty"


def test_admin_commands_refuse_what_is_no_deployment(tmp_path: Path) -> None:
    result = mountfs("admin", "gc", "--data", str(tmp_path / "nothing"))
    assert result.returncode == 1
    assert "no database" in result.stderr
    assert not (tmp_path / "nothing" / "convergence.secret").exists()  # nothing created
    scrub = mountfs("admin", "scrub", "--data", str(tmp_path / "nothing"))
    assert scrub.returncode == 1


def test_trash_empty_with_confirmation(backend_server: BackendProcess, tmp_path: Path) -> None:
    state = tmp_path / "laptop"
    create_and_login(backend_server.base_url, "emptier", state, "laptop")
    with ApiClient.login(backend_server.base_url, "emptier", PASSWORD, "x") as api:
        node, _ = api.write_file(api.root_id, "junk", b"junk" * 100)
        api.delete_node(node["id"], api.get_node(node["id"])["version"])
        yes = mountfs("trash", "empty", "--state", str(state), stdin="y\n")
        assert yes.returncode == 0, yes.stderr
        assert "for good" in yes.stdout
        assert api.call("GET", "trash")["items"] == []
        api.call("GET", f"nodes/{node['id']}/versions", expect=404)
