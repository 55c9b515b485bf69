"""The HTTP edge: error shapes, limits, OpenAPI, start-up wiring.

The app runs in a real uvicorn server on a loopback port, in a thread of the test process
(faster to start than `python -m backend`, and the app's lifespan runs for real).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn

from backend.app import create_app
from backend.server import parse_args
from backend.settings import Settings
from tests.support.ports import LOOPBACK, free_port

API = "/api/v1"


@contextmanager
def serving(settings: Settings) -> Iterator[httpx.Client]:
    """A client of `create_app(settings)` served by uvicorn in a thread; stopped after."""
    port = free_port()
    config = uvicorn.Config(create_app(settings), host=LOOPBACK, port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive(), "the server thread died during start-up"
            assert time.monotonic() < deadline, "the server did not start in time"
            time.sleep(0.02)
        with httpx.Client(base_url=f"http://{LOOPBACK}:{port}", timeout=30) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(30)


@pytest.fixture
def client(tmp_path: Path) -> Iterator[httpx.Client]:
    with serving(Settings(data=tmp_path / "data", max_json_bytes=4096)) as test_client:
        yield test_client


def test_openapi_declares_400_not_422(client: httpx.Client) -> None:
    schema = client.get("/openapi.json").json()
    operations = [op for item in schema["paths"].values() for op in item.values()]
    assert len(operations) >= 20
    for op in operations:
        assert "422" not in op["responses"]
        assert "400" in op["responses"]
        if "requestBody" in op:
            assert "413" in op["responses"]
    assert "HTTPValidationError" not in schema["components"]["schemas"]


def test_validation_errors_are_400_with_the_field(client: httpx.Client) -> None:
    response = client.post(f"{API}/accounts", json={"name": "ok-name", "password": 5})
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "bad_request"
    assert "password" in body["detail"]
    response = client.post(
        f"{API}/accounts", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert (response.status_code, response.json()["error"]) == (400, "bad_request")


def test_declared_oversized_body_is_413_before_reading(client: httpx.Client) -> None:
    response = client.post(
        f"{API}/accounts",
        content=b"x" * 5000,
        headers={"content-type": "application/json"},
    )
    assert (response.status_code, response.json()["error"]) == (413, "body_too_large")


def test_streamed_oversized_body_is_413(client: httpx.Client) -> None:
    def pieces() -> Iterator[bytes]:
        for _ in range(10):
            yield b" " * 1000

    response = client.post(
        f"{API}/accounts", content=pieces(), headers={"content-type": "application/json"}
    )
    assert (response.status_code, response.json()["error"]) == (413, "body_too_large")


def test_wrong_method_lists_every_allowed_one(client: httpx.Client) -> None:
    response = client.request("PUT", f"{API}/nodes/0b8f2a44-5f2e-4c1e-9d55-0d5a1c0f0c01")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, PATCH, DELETE"
    assert response.json()["error"] == "method_not_allowed"


def test_missing_token_is_401_json(client: httpx.Client) -> None:
    for headers in ({}, {"Authorization": "Basic eDp5"}, {"Authorization": "Bearer nope"}):
        response = client.get(f"{API}/me", headers=headers)
        assert (response.status_code, response.json()["error"]) == (401, "unauthorized")


def test_secrets_are_created_private_and_stable(tmp_path: Path) -> None:
    settings = Settings(data=tmp_path / "data")
    for _ in range(2):
        with serving(settings) as test_client:
            assert test_client.get(f"{API}/health").json() == {"status": "ok"}
    for name in ("convergence.secret", "signing.key"):
        path = tmp_path / "data" / name
        assert path.stat().st_mode & 0o777 == 0o600
        assert len(bytes.fromhex(path.read_text())) == 32


def test_flags_override_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MOUNTFS_PORT", "9999")
    monkeypatch.setenv("MOUNTFS_URL_TTL", "60")
    settings = parse_args(["--data", str(tmp_path), "--port", "18000", "--no-registration"])
    assert (settings.port, settings.url_ttl, settings.no_registration) == (18000, 60, True)
    assert settings.db_url == f"sqlite:///{tmp_path / 'meta.sqlite3'}"
    with pytest.raises(SystemExit):
        parse_args(["--data", str(tmp_path), "--url-ttl", "0"])
