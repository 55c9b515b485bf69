"""Accounts, login, `me`, devices and revocation, health (protocol.md § Auth)."""

from __future__ import annotations

import base64

import pytest

from tests.api.conftest import AccountFactory
from tests.support.api_client import PASSWORD, ApiClient, assert_error, new_id, unique_name
from tests.support.backend import BackendFactory


def test_health_needs_no_token(anon: ApiClient) -> None:
    assert anon.call("GET", "health", auth=False) == {"status": "ok"}


def test_register_login_and_me(anon: ApiClient) -> None:
    name = unique_name("alice")
    created = anon.call("POST", "accounts", json={"name": name, "password": PASSWORD}, expect=201)
    assert created["name"] == name
    assert created["account_id"]

    login = anon.call(
        "POST", "login", json={"name": name, "password": PASSWORD, "device_label": "laptop"}
    )
    assert login["account_id"] == created["account_id"]
    # 256 random bits, url-safe base64 (padding optional).
    token = login["token"]
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    assert len(raw) >= 32

    with ApiClient(anon.base_url, token) as client:
        me = client.me()
    assert me["account_id"] == created["account_id"]
    assert me["name"] == name
    assert me["device_id"] == login["device_id"]
    assert me["device_label"] == "laptop"
    assert me["root_id"]
    assert me["namespace_id"]
    assert me["quota_bytes"] is None  # default server: unlimited
    assert me["used_bytes"] == 0
    assert isinstance(me["max_file_bytes"], int)
    assert me["max_file_bytes"] == 10 * 1024**3  # the documented default


def test_root_node_is_an_empty_directory(api: ApiClient) -> None:
    me = api.me()
    root = api.get_node(me["root_id"])
    assert root["kind"] == "dir"
    assert root["parent_id"] is None
    assert root["name"] == ""
    assert root["deleted"] is False
    assert root["namespace_id"] == me["namespace_id"]
    assert api.list_children(root["id"]) == []


def test_each_login_is_a_device_with_its_own_token(api: ApiClient) -> None:
    with api.another_device("phone") as phone:
        assert phone.device_id != api.device_id
        assert phone.token != api.token
        assert phone.account_id == api.account_id
        assert phone.root_id == api.root_id

        devices = api.call("GET", "devices")["devices"]
        by_id = {d["id"]: d for d in devices}
        assert set(by_id) == {api.device_id, phone.device_id}
        assert by_id[api.device_id]["current"] is True
        assert by_id[phone.device_id]["current"] is False
        assert by_id[phone.device_id]["label"] == "phone"
        for device in devices:
            assert device["revoked_at"] is None
            assert device["created_at"]
        # Seen from the other device, "current" flips.
        seen = {d["id"]: d["current"] for d in phone.call("GET", "devices")["devices"]}
        assert seen == {api.device_id: False, phone.device_id: True}


def test_revoke_is_immediate(api: ApiClient) -> None:
    with api.another_device("stolen") as stolen:
        stolen.me()
        assert api.call("DELETE", f"devices/{stolen.device_id}", expect=204) is None
        # The very next call with the revoked token is refused.
        assert_error(stolen.request("GET", "me"), 401, "unauthorized")
        assert_error(stolen.request("GET", f"nodes/{api.root_id}"), 401, "unauthorized")
    # The revoking device is unaffected, and the list shows the revocation.
    devices = {d["id"]: d for d in api.call("GET", "devices")["devices"]}
    assert devices[api.device_id]["revoked_at"] is None
    assert devices[stolen.device_id]["revoked_at"]


def test_a_device_can_revoke_itself(api: ApiClient) -> None:
    api.call("DELETE", f"devices/{api.device_id}", expect=204)
    assert_error(api.request("GET", "me"), 401, "unauthorized")


def test_revoke_unknown_or_foreign_device_is_404(new_account: AccountFactory) -> None:
    alice, bob = new_account("alice"), new_account("bob")
    assert_error(alice.request("DELETE", f"devices/{bob.device_id}"), 404, "not_found")
    assert_error(alice.request("DELETE", f"devices/{new_id()}"), 404, "not_found")
    bob.me()  # still valid


def test_login_with_a_fresh_password_after_revoke_gives_a_working_token(
    api: ApiClient,
) -> None:
    api.call("DELETE", f"devices/{api.device_id}", expect=204)
    with api.another_device("again") as again:
        assert again.me()["account_id"] == api.account_id


@pytest.mark.parametrize(
    "header",
    [
        None,
        "Bearer",
        "Bearer not-a-real-token",
        "Basic dXNlcjpwYXNz",
        "bearer" + " x" * 3,
        "Bearer " + "A" * 43,
    ],
)
def test_missing_or_bad_token_is_401(anon: ApiClient, header: str | None) -> None:
    headers = {} if header is None else {"Authorization": header}
    response = anon.request("GET", "me", headers=headers, auth=False)
    assert_error(response, 401, "unauthorized")


def test_wrong_password_or_unknown_name_is_401(api: ApiClient, anon: ApiClient) -> None:
    for name, password in [(api.name, "wrong password!"), (unique_name("ghost"), PASSWORD)]:
        body = {"name": name, "password": password, "device_label": "x"}
        assert_error(anon.request("POST", "login", json=body), 401, "unauthorized")


def test_duplicate_account_name_is_409(api: ApiClient, anon: ApiClient) -> None:
    body = {"name": api.name, "password": "another password"}
    assert_error(anon.request("POST", "accounts", json=body), 409, "name_exists")
    # The original credentials still work.
    with api.another_device() as again:
        again.me()


@pytest.mark.parametrize(
    ("name", "password"),
    [
        ("", PASSWORD),
        ("a" * 65, PASSWORD),
        ("has space", PASSWORD),
        ("slash/y", PASSWORD),
        ("ünïcode", PASSWORD),
        ("ok-name", "short"),
        ("ok-name", "x" * 1025),
        (None, PASSWORD),
        ("ok-name", 12345678),
    ],
)
def test_invalid_account_fields_are_400(anon: ApiClient, name: object, password: object) -> None:
    if name == "ok-name":
        name = unique_name("ok")
    response = anon.request("POST", "accounts", json={"name": name, "password": password})
    assert_error(response, 400, "bad_request")


def test_account_name_and_password_bounds_are_inclusive(anon: ApiClient) -> None:
    long_name = unique_name("b")
    long_name += "x" * (64 - len(long_name))
    for name, password in [(long_name, "p" * 8), (unique_name("c"), "p" * 1024)]:
        anon.call("POST", "accounts", json={"name": name, "password": password}, expect=201)
        with ApiClient.login(anon.base_url, name, password, "dev") as client:
            assert client.me()["name"] == name


def test_registration_can_be_closed(backend_factory: BackendFactory) -> None:
    backend = backend_factory("--no-registration")
    with ApiClient(backend.base_url) as anon:
        body = {"name": unique_name(), "password": PASSWORD}
        assert_error(anon.request("POST", "accounts", json=body), 403, "registration_closed")
        assert anon.call("GET", "health", auth=False) == {"status": "ok"}
