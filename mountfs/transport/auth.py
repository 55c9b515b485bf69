"""A device's login: where it is kept and how requests carry it.

`mountfs login` writes the device record to the state directory; every other command and
the mount read it back. The token is a bearer secret, so both files are created with mode
0600 before any byte is written (never chmod-after-write, which leaves a window).
"""

from __future__ import annotations

import json
import os
from collections.abc import Generator
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

DEVICE_FILE = "device.json"
TOKEN_FILE = "token"


class NotLoggedIn(Exception):
    """The state directory holds no device login (run `mountfs login`)."""


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """What a device knows about its own login.

    Attributes:
        server: base URL of the backend, without the `/api/v1` suffix.
        account_id / account_name: the account this device belongs to.
        device_id / device_label: this device, as the backend lists it.
        root_id: node id of the account's root folder.
        namespace_id: journal namespace of the account's tree.
        token: the bearer token (kept in its own 0600 file, never in device.json).
        ca_file: a CA certificate (PEM) that the server's and the block store's TLS
            certificates may chain to, besides the system's (`mountfs login --ca-file`).
    """

    server: str
    account_id: str
    account_name: str
    device_id: str
    device_label: str
    root_id: str
    namespace_id: str
    token: str
    ca_file: str | None = None


def _write_private(path: Path, data: str) -> None:
    """Write `data` to `path` atomically, readable only by the owner."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def save_device(state_dir: Path, info: DeviceInfo) -> None:
    """Persist a login in `state_dir` (created with mode 0700 if missing)."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    record = asdict(info)
    token = record.pop("token")
    _write_private(state_dir / TOKEN_FILE, token)
    _write_private(state_dir / DEVICE_FILE, json.dumps(record, indent=2) + "\n")


def load_device(state_dir: Path) -> DeviceInfo:
    """Read the login saved by `save_device`; raise NotLoggedIn if there is none."""
    try:
        record = json.loads((state_dir / DEVICE_FILE).read_text())
        token = (state_dir / TOKEN_FILE).read_text().strip()
    except FileNotFoundError as exc:
        raise NotLoggedIn(f"no device login in {state_dir}: run `mountfs login`") from exc
    return DeviceInfo(token=token, **record)


def forget_device(state_dir: Path) -> None:
    """Remove a saved login (the token file first: it is the secret)."""
    for name in (TOKEN_FILE, DEVICE_FILE):
        (state_dir / name).unlink(missing_ok=True)


class BearerAuth(httpx.Auth):
    """Adds `Authorization: Bearer <token>` to every request."""

    def __init__(self, token: str) -> None:
        self._header = f"Bearer {token}"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = self._header
        yield request
