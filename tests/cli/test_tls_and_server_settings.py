"""A backend that serves TLS itself, the client's `--ca-file`, the refusal of plain HTTP
off loopback, the configuration file, and `/metrics` summed over worker processes."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from backend.server import parse_args
from scripts.clusterctl import make_certificates
from tests.support.backend import BackendFactory
from tests.support.mount import run_cli
from tests.support.ports import free_port

PASSWORD = "correct horse battery staple"


def _backend(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MOUNTFS_")}
    return subprocess.run(
        [sys.executable, "-m", "backend", *args],
        capture_output=True,
        text=True,
        env={**clean, **(env or {})},
        timeout=60,
        check=False,
    )


@pytest.fixture
def tls_backend(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A backend serving HTTPS with a certificate of a private CA; (URL, CA file)."""
    make_certificates(tmp_path / "tls")
    port = free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MOUNTFS_", "SSL_"))}
    cmd = [
        sys.executable, "-m", "backend", "--data", str(tmp_path / "data"),
        "--host", "127.0.0.1", "--port", str(port),
        "--tls-cert", str(tmp_path / "tls" / "server.pem"),
        "--tls-key", str(tmp_path / "tls" / "server.key"),
    ]  # fmt: skip
    with open(tmp_path / "backend.log", "wb") as log:
        proc = subprocess.Popen(
            cmd, env=clean, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    url, ca = f"https://127.0.0.1:{port}", tmp_path / "tls" / "ca.pem"
    try:
        trusting = ssl.create_default_context(cafile=str(ca))
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", verify=trusting, timeout=2).is_success:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, (tmp_path / "backend.log").read_text()
            assert time.monotonic() < deadline, "the TLS backend did not come up"
            time.sleep(0.1)
        yield url, ca
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


def test_the_backend_serves_tls_and_the_client_trusts_its_ca_file(
    tls_backend: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, ca = tls_backend
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/healthz", verify=True)  # not a public CA
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(url.replace("https", "http") + "/healthz")  # no plain HTTP on that port
    state = tmp_path / "state"
    untrusted = run_cli("account", "create", "tls-user", "--server", url, "--password-stdin",
                        stdin=PASSWORD)  # fmt: skip
    assert untrusted.returncode == 1
    assert "CERTIFICATE_VERIFY_FAILED" in untrusted.stderr
    assert "--ca-file" in untrusted.stderr
    created = run_cli("account", "create", "tls-user", "--server", url, "--password-stdin",
                      "--ca-file", ca, stdin=PASSWORD)  # fmt: skip
    assert created.returncode == 0, created.stderr
    logged = run_cli("login", "--server", url, "--user", "tls-user", "--state", state,
                     "--password-stdin", "--ca-file", ca, stdin=PASSWORD)  # fmt: skip
    assert logged.returncode == 0, logged.stderr
    assert (state / "ca.pem").read_bytes() == ca.read_bytes()  # kept with the login
    ca.unlink()  # the device keeps trusting its own copy
    listed = run_cli("devices", "--state", state, "--json")
    assert listed.returncode == 0, listed.stderr
    assert '"current": true' in listed.stdout


def test_plain_http_off_loopback_is_refused_unless_allowed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    refused = _backend("--data", str(tmp_path), "--host", "0.0.0.0")  # the real command
    assert refused.returncode == 2
    assert "refusing plain HTTP on 0.0.0.0" in refused.stderr.splitlines()[-1]
    with pytest.raises(SystemExit):
        parse_args(["--data", str(tmp_path), "--tls-cert", str(tmp_path / "x.pem")])
    assert "--tls-cert and --tls-key go together" in capsys.readouterr().err
    allowed = parse_args(["--data", str(tmp_path), "--host", "0.0.0.0", "--allow-plain-http"])
    assert allowed.allow_plain_http


def test_settings_come_from_flags_then_environment_then_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "backend.toml"
    config.write_text('url_ttl = 120\nmax-file-bytes = 1000\nlog_level = "debug"\n')
    monkeypatch.setenv("MOUNTFS_MAX_FILE_BYTES", "2000")
    settings = parse_args(["--data", str(tmp_path), "--config", str(config), "--url-ttl", "60"])
    assert (settings.url_ttl, settings.max_file_bytes, settings.log_level) == (60, 2000, "debug")
    monkeypatch.setenv("MOUNTFS_CONFIG", str(config))
    assert parse_args(["--data", str(tmp_path)]).url_ttl == 120


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("url_ttl = [", "is not valid TOML"),
        ("colour = 1", "--colour: Extra inputs are not permitted"),
        ('blockstore = "s3://b?endpoint=ftp://x"', "must be an http(s):// URL"),
        ('db = "mysql://u@h/d"', "unsupported database 'mysql'"),
    ],
)
def test_a_bad_configuration_file_is_one_line(
    tmp_path: Path, content: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "backend.toml"
    config.write_text(content + "\n")
    with pytest.raises(SystemExit) as exited:
        parse_args(["--data", str(tmp_path), "--config", str(config)])
    assert exited.value.code == 2
    assert message in capsys.readouterr().err.strip().splitlines()[-1]


def test_metrics_sum_over_worker_processes(backend_factory: BackendFactory) -> None:
    backend = backend_factory("--workers", "2")
    with httpx.Client(base_url=backend.base_url) as client:
        for _ in range(20):
            assert client.get("/api/v1/health").status_code == 200
        text = client.get("/metrics").text
    served = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("mountfs_http_requests_total{") and 'route="/api/v1/health"' in line
    ]
    assert sum(served) >= 20  # the health checks of the start-up count too
