"""Schema-driven fuzzing with schemathesis against the live server's `/openapi.json`.

The `st run` CLI runs as a subprocess (its own process, its own warnings policy) with an
authenticated header, a fixed seed and a bounded number of examples per operation. Checks:
no 5xx for any input (`not_a_server_error`) and answers that match the documented schemas
(`response_schema_conformance`).

Random UUIDs would only ever meet 404, so a `schemathesis.toml` hands the fuzzer real ids
(dictionaries bound to the path parameters, used with a probability so random ones are
still tried), and turns "every answer was 401" (`missing_auth`) into a failure: a fuzz
run that never got past authentication would pass while testing nothing. Device
revocation gets a run of its own with a throwaway token, since the fuzzer would otherwise
revoke the token it is using.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.api_client import ApiClient, Chunk
from tests.support.backend import BackendProcess

CHECKS = "not_a_server_error,response_schema_conformance"
REVOKE = "DELETE /api/v1/devices/{device_id}"


def schemathesis_cli() -> list[str]:
    """`st` from this interpreter's environment (the venv), or fail loudly."""
    st = Path(sys.executable).with_name("st")
    if st.exists():
        return [str(st)]
    found = shutil.which("st")
    if found is None:
        pytest.fail("schemathesis CLI `st` is not installed in the test environment")
    return [found]


def toml_value(value: object) -> str:
    """TOML for strings, numbers, lists and inline tables (JSON strings are TOML strings)."""
    if isinstance(value, dict):
        return (
            "{ " + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
        )
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)


def write_config(
    path: Path, token: str, dictionaries: dict[str, list[str]], revoke_only: bool
) -> None:
    lines = [
        f"headers = {toml_value({'Authorization': f'Bearer {token}'})}",
        "",
        "[warnings]",
        'fail-on = ["missing_auth"]',
        "",
    ]
    for name, values in dictionaries.items():
        lines += [f"[dictionaries.{name}]", f"values = {toml_value(values)}", ""]
    lines.append("[parameters]")
    for name in dictionaries:
        binding = {"dictionary": name, "probability": 0.7}
        lines.append(f"{json.dumps('path.' + name)} = {toml_value(binding)}")
        if name == "node_id":  # new nodes under real parents reach the tree's rules
            lines.append(f'"body.parent_id" = {toml_value(binding)}')
    # The push channel's stream (GET /journal/{id}/watch) stays open for `timeout` seconds
    # by design; 0 makes it answer at once with what there is, every other input fuzzed.
    lines.append('"query.timeout" = 0')
    lines.append("")
    if revoke_only:
        lines += ["[[operations]]", f"exclude-name = {toml_value(REVOKE)}", "enabled = false", ""]
    else:
        lines += [
            "[[operations]]",
            f"include-name = {toml_value(REVOKE)}",
            "enabled = false",
            "",
            # Block URLs are authorised by their signature, which no fuzzer can forge: all
            # answers are 403 by design there, so "missing auth" says nothing.
            "[[operations]]",
            'include-path-regex = "^/api/v1/blocks/"',
            "warnings = false",
            "",
        ]
    path.write_text("\n".join(lines))


def seed_account(api: ApiClient) -> dict[str, list[str]]:
    """A small tree with content, so that fuzzed requests can reach real resources."""
    root = api.root_id
    folder = api.mkdir(root, "fuzz-dir")
    node = api.mkfile(folder["id"], "fuzz-file")
    result = api.commit(node["id"], [Chunk(b"fuzz content")], None)
    link = api.create_node(folder["id"], "fuzz-link", "symlink", target="fuzz-file")
    gone = api.mkfile(root, "fuzz-gone")
    api.delete_node(gone["id"], 1)
    return {
        "node_id": [root, folder["id"], node["id"], link["id"], gone["id"]],
        "revision_id": [result["revision"]["id"]],
        "namespace_id": [api.namespace_id],
        "object": [Chunk(b"fuzz content").object],
    }


def st_run(
    server: BackendProcess, workdir: Path, config: Path, examples: int, phases: str, timeout: float
) -> None:
    command = [
        *schemathesis_cli(),
        "--config-file",
        str(config),
        "run",
        f"{server.base_url}/openapi.json",
        "--checks",
        CHECKS,
        "--phases",
        phases,
        "--max-examples",
        str(examples),
        "--seed",
        "20240601",
        "--workers",
        "1",
        "--request-timeout",
        "20",
        "--suppress-health-check",
        "all",
    ]
    result = subprocess.run(
        command, cwd=workdir, capture_output=True, text=True, timeout=timeout, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"schemathesis found problems:\n{output[-20000:]}"
    assert "generated" in output, output[-5000:]
    assert server.is_running(), output[-5000:]


def run_schemathesis(
    server: BackendProcess, workdir: Path, *, examples: int, phases: str, timeout: float
) -> None:
    with ApiClient.new_account(server.base_url, "fuzz") as api:
        ids = seed_account(api)
        with api.another_device("revoker") as revoker, api.another_device("victim") as victim:
            main = workdir / "main.toml"
            write_config(main, str(api.token), ids, revoke_only=False)
            st_run(server, workdir, main, examples, phases, timeout)
            api.me()  # the fuzzer's token survived: everything above was really exercised

            revoke = workdir / "revoke.toml"
            write_config(
                revoke, str(revoker.token), {"device_id": [victim.device_id]}, revoke_only=True
            )
            st_run(server, workdir, revoke, examples, phases, timeout)


def test_schemathesis_finds_no_server_errors(
    backend_server: BackendProcess, tmp_path: Path
) -> None:
    run_schemathesis(
        backend_server, tmp_path, examples=10, phases="examples,coverage,fuzzing", timeout=240
    )


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_schemathesis_deep(backend_server: BackendProcess, tmp_path: Path) -> None:
    run_schemathesis(
        backend_server,
        tmp_path,
        examples=100,
        phases="examples,coverage,fuzzing,stateful",
        timeout=1800,
    )
