"""Fixtures for the API tests: one shared backend, and a fresh account per test.

Tests on the shared server never interfere because each makes its own accounts
(`unique_name`), and every resource is scoped by account. Tests that need special flags or
a restart start their own server (`backend_factory`, `running_backend`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.support.api_client import ApiClient
from tests.support.backend import BackendProcess

AccountFactory = Callable[..., ApiClient]


@pytest.fixture(autouse=True)
def _server_logs_stay_clean(backend_logs_clean: None) -> None:
    """Every API test fails if a backend logged an unexpected error while it ran."""


@pytest.fixture
def server(backend_session: BackendProcess) -> BackendProcess:
    """The session's shared backend (a separate name so a module can override it)."""
    return backend_session


@pytest.fixture
def new_account(server: BackendProcess) -> Iterator[AccountFactory]:
    """Make logged-in accounts on `server`: `new_account("prefix")`; closed after."""
    made: list[ApiClient] = []

    def factory(prefix: str = "acct", label: str = "device-1") -> ApiClient:
        client = ApiClient.new_account(server.base_url, prefix, label)
        made.append(client)
        return client

    yield factory
    for client in made:
        client.close()


@pytest.fixture
def api(new_account: AccountFactory) -> ApiClient:
    """A fresh account with one logged-in device."""
    return new_account()


@pytest.fixture
def anon(server: BackendProcess) -> Iterator[ApiClient]:
    """A client without a token."""
    with ApiClient(server.base_url) as client:
        yield client


@pytest.fixture(scope="module")
def shared(backend_session: BackendProcess) -> Iterator[ApiClient]:
    """One account for all tests of a module that each work in their own `box`.

    Registering an account costs two argon2id hashes (about half a second); tests that
    only need a private corner of a tree share an account instead and get a fresh folder.
    """
    with ApiClient.new_account(backend_session.base_url, "shared") as client:
        yield client


@pytest.fixture
def box(shared: ApiClient) -> str:
    """A new empty directory in the `shared` account: this test's private root."""
    return str(shared.mkdir(shared.root_id)["id"])
