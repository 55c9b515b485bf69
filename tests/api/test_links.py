"""Public links over HTTP (docs/protocol.md § Public links): making, listing and revoking
them, the page, `?dl=1` bytes decrypted by the backend, ranges, folders as zip, passwords
with rate limits, expiry and download limits.

Content here is sealed exactly as the client seals it (`mountfs.chunks.seal_chunk` with the
keys the backend hands out), since the backend really decrypts it for the download."""

from __future__ import annotations

import io
import re
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.api.conftest import AccountFactory
from tests.support.api_client import ApiClient, Json, assert_error
from tests.support.backend import BackendProcess
from tests.support.content import put_content


def make_link(client: ApiClient, node_id: str, expect: int = 201, **options: object) -> Json:
    result: Json = client.call("POST", f"nodes/{node_id}/links", json=options, expect=expect)
    return result


@pytest.fixture
def web(server: BackendProcess) -> Iterator[httpx.Client]:
    """A cookie-keeping client without any token, like a browser."""
    with httpx.Client(timeout=30.0) as client:
        yield client


DATA = bytes(range(256)) * 5000 + b"tail"  # 1.28 MB: more than one chunk


@pytest.fixture
def file_link(api: ApiClient) -> tuple[Json, Json]:
    node = put_content(api, api.root_id, "report final.bin", DATA)
    return node, make_link(api, node["id"])


def test_link_token_is_long_random_and_shown_once(
    api: ApiClient, file_link: tuple[Json, Json]
) -> None:
    node, link = file_link
    token = link["url"].rsplit("/s/", 1)[1]
    assert re.fullmatch(r"[A-Za-z0-9_-]{32,}", token), token  # ≥ 192 bits of base64url
    assert (link["state"], link["name"], link["kind"], link["downloads"]) == (
        "active",
        node["name"],
        "file",
        0,
    )
    (listed,) = api.call("GET", "links")["links"]
    assert listed["id"] == link["id"]
    assert listed["url"] is None


def test_file_page_and_download(web: httpx.Client, file_link: tuple[Json, Json]) -> None:
    node, link = file_link
    page = web.get(link["url"])
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "report final.bin" in page.text
    assert "1.3 MB" in page.text
    assert page.headers["referrer-policy"] == "no-referrer"
    got = web.get(link["url"], params={"dl": 1})
    assert got.status_code == 200
    assert got.content == DATA
    assert got.headers["content-length"] == str(len(DATA))
    assert "attachment" in got.headers["content-disposition"]
    assert "report%20final.bin" in got.headers["content-disposition"]


def test_ranges_resume(web: httpx.Client, file_link: tuple[Json, Json], api: ApiClient) -> None:
    _, link = file_link
    url = link["url"] + "?dl=1"
    part = web.get(url, headers={"Range": "bytes=1000000-1100000"})
    assert part.status_code == 206
    assert part.content == DATA[1000000:1100001]
    assert part.headers["content-range"] == f"bytes 1000000-1100000/{len(DATA)}"
    tail = web.get(url, headers={"Range": "bytes=-4"})
    assert (tail.status_code, tail.content) == (206, b"tail")
    resumed = web.get(url, headers={"Range": f"bytes={len(DATA) - 10}-"})
    assert resumed.content == DATA[-10:]
    bad = web.get(url, headers={"Range": f"bytes={len(DATA)}-"})
    assert bad.status_code == 416
    assert bad.headers["content-range"] == f"bytes */{len(DATA)}"
    # Resumed parts are not new downloads.
    assert api.call("GET", "links")["links"][0]["downloads"] == 0


def test_folder_page_files_and_zip(web: httpx.Client, api: ApiClient) -> None:
    folder = api.mkdir(api.root_id, "holiday")
    sub = api.mkdir(folder["id"], "day 1")
    one = put_content(api, folder["id"], "a.txt", b"first file")
    two = put_content(api, sub["id"], "b.bin", DATA)
    put_content(api, api.root_id, "outside.txt", b"not in the link")
    link = make_link(api, folder["id"])
    page = web.get(link["url"])
    assert page.status_code == 200
    assert "a.txt" in page.text
    assert "day 1/b.bin" in page.text
    assert "outside.txt" not in page.text
    got = web.get(f"{link['url']}/files/{two['id']}")
    assert got.content == DATA
    zipped = web.get(link["url"], params={"dl": 1})
    assert zipped.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(zipped.content)) as archive:
        assert sorted(archive.namelist()) == ["a.txt", "day 1/b.bin"]
        assert archive.read("a.txt") == b"first file"
        assert archive.read("day 1/b.bin") == DATA
    # Nothing outside the folder is reachable through it, not even by node id.
    outside = api.list_children(api.root_id)
    foreign = next(n for n in outside if n["name"] == "outside.txt")
    assert web.get(f"{link['url']}/files/{foreign['id']}").status_code == 404
    assert web.get(f"{link['url']}/files/{sub['id']}").status_code == 404
    assert one["id"] in page.text


def test_unknown_and_revoked_links_look_the_same(
    web: httpx.Client, api: ApiClient, file_link: tuple[Json, Json]
) -> None:
    _, link = file_link
    base = link["url"].rsplit("/s/", 1)[0]
    never = web.get(f"{base}/s/{'A' * 32}")
    revoked = api.call("DELETE", f"links/{link['id']}")
    assert revoked["state"] == "revoked"
    gone = web.get(link["url"])
    assert never.status_code == gone.status_code == 404
    assert never.text == gone.text
    assert web.get(link["url"], params={"dl": 1}).status_code == 404


def test_expired_link(web: httpx.Client, api: ApiClient) -> None:
    node = put_content(api, api.root_id, "soon.txt", b"short-lived")
    link = make_link(api, node["id"], expires_in=1)
    assert web.get(link["url"], params={"dl": 1}).content == b"short-lived"
    time.sleep(1.2)
    gone = web.get(link["url"])
    assert gone.status_code == 410
    assert "expired" in gone.text
    assert web.get(link["url"], params={"dl": 1}).status_code == 410
    assert api.call("GET", "links")["links"][0]["state"] == "expired"


def test_download_limit(web: httpx.Client, api: ApiClient) -> None:
    node = put_content(api, api.root_id, "twice.txt", b"two downloads")
    link = make_link(api, node["id"], max_downloads=2)
    for _ in range(2):
        assert web.get(link["url"], params={"dl": 1}).content == b"two downloads"
    used = web.get(link["url"], params={"dl": 1})
    assert used.status_code == 410
    assert "download limit" in used.text
    assert web.get(link["url"]).status_code == 410
    assert api.call("GET", "links")["links"][0]["state"] == "exhausted"


def test_password_form_cookie_and_basic_auth(web: httpx.Client, api: ApiClient) -> None:
    node = put_content(api, api.root_id, "secret.txt", b"behind a password")
    link = make_link(api, node["id"], password="open sesame")
    assert link["has_password"] is True
    locked = web.get(link["url"])
    assert locked.status_code == 401
    assert "type=password" in locked.text
    assert "secret.txt" not in locked.text
    assert web.get(link["url"], params={"dl": 1}).status_code == 401
    wrong = web.post(link["url"], data={"password": "guess"})
    assert wrong.status_code == 401
    assert "Wrong password" in wrong.text
    right = web.post(link["url"], data={"password": "open sesame"})
    assert right.status_code == 303
    assert web.get(link["url"]).status_code == 200
    assert web.get(link["url"], params={"dl": 1}).content == b"behind a password"
    with httpx.Client(timeout=30.0) as script:
        assert (
            script.get(link["url"], params={"dl": 1}, auth=("", "open sesame")).content
            == b"behind a password"
        )
        assert script.get(link["url"], params={"dl": 1}, auth=("", "nope")).status_code == 401


def test_link_needs_write_access(new_account: AccountFactory) -> None:
    a, b = new_account("owner"), new_account("viewer")
    folder = a.mkdir(a.root_id, "shared")
    offer = a.call(
        "POST",
        f"nodes/{folder['id']}/shares",
        json={"account": b.name, "role": "viewer"},
        expect=201,
    )
    b.call("POST", f"shares/{offer['id']}/accept", json={})
    assert_error(b.request("POST", f"nodes/{folder['id']}/links", json={}), 403, "forbidden")
    outsider = new_account("outsider")
    assert_error(outsider.request("POST", f"nodes/{folder['id']}/links", json={}), 404, "not_found")
    link = make_link(a, folder["id"])
    assert_error(outsider.request("DELETE", f"links/{link['id']}"), 404, "not_found")
    assert_error(b.request("DELETE", f"links/{link['id']}"), 404, "not_found")


def test_editor_link_dies_with_the_share(new_account: AccountFactory, web: httpx.Client) -> None:
    a, b = new_account("owner"), new_account("editor")
    folder = a.mkdir(a.root_id, "team")
    offer = a.call(
        "POST",
        f"nodes/{folder['id']}/shares",
        json={"account": b.name, "role": "editor"},
        expect=201,
    )
    b.call("POST", f"shares/{offer['id']}/accept", json={})
    link = make_link(b, folder["id"])
    assert web.get(link["url"]).status_code == 200
    a.call("DELETE", f"shares/{offer['id']}")
    assert web.get(link["url"]).status_code == 404
    # ...and the owner may revoke links others made to its folders.
    other = make_link(a, folder["id"])
    assert a.call("DELETE", f"links/{other['id']}")["state"] == "revoked"


@dataclass
class Limited:
    server: BackendProcess
    api: ApiClient


@pytest.fixture
def limited(backend_factory: object) -> Iterator[Limited]:
    server = backend_factory("--auth-failures", "3", "--auth-failures-per-address", "5")  # type: ignore[operator]
    with ApiClient.new_account(server.base_url, "limits") as api:
        yield Limited(server, api)


def test_password_attempts_are_rate_limited(limited: Limited) -> None:
    api = limited.api
    node = put_content(api, api.root_id, "vault.txt", b"guarded")
    link = make_link(api, node["id"], password="correct password")
    with httpx.Client(timeout=30.0) as web:
        for _ in range(3):
            assert web.post(link["url"], data={"password": "wrong"}).status_code == 401
        blocked = web.post(link["url"], data={"password": "correct password"})
        assert blocked.status_code == 429
        assert 1 <= int(blocked.headers["retry-after"]) <= 900
        assert (
            web.get(link["url"], params={"dl": 1}, auth=("", "correct password")).status_code == 429
        )
        # Another link of the same account is limited per link, until the address is spent.
        second = make_link(api, node["id"], password="another one")
        assert web.post(second["url"], data={"password": "wrong"}).status_code == 401
        assert web.post(second["url"], data={"password": "wrong"}).status_code == 401
        assert web.post(second["url"], data={"password": "another one"}).status_code == 429


def test_login_attempts_are_rate_limited(limited: Limited) -> None:
    api = limited.api
    body = {"name": api.name, "password": "wrong password", "device_label": "x"}
    for _ in range(3):
        assert_error(api.request("POST", "login", json=body, auth=False), 401, "unauthorized")
    response = api.request("POST", "login", json={**body, "password": api.password}, auth=False)
    assert_error(response, 429, "rate_limited")
    assert int(response.headers["retry-after"]) >= 1
    api.me()  # existing devices keep working


def test_limit_counts_every_request_and_headers_stay_safe(
    web: httpx.Client, api: ApiClient
) -> None:
    # A name may hold CR/LF and quotes: the header must stay one clean line.
    node = put_content(
        api, api.root_id, 'evil"\r\nX-Injected: 1.html', b"<script>alert(1)</script>"
    )
    link = make_link(api, node["id"], max_downloads=2)
    first = web.get(link["url"], params={"dl": 1}, headers={"Range": "bytes=1-"})
    assert first.status_code == 206
    assert "x-injected" not in first.headers
    assert first.headers["content-security-policy"].startswith("sandbox")
    assert (
        "filename*=UTF-8''evil%22%0D%0AX-Injected%3A%201.html"
        in first.headers["content-disposition"]
    )
    # With a limit, ranges that skip byte 0 count too: no way around the limit.
    assert web.get(link["url"], params={"dl": 1}, headers={"Range": "bytes=2-"}).status_code == 206
    assert web.get(link["url"], params={"dl": 1}, headers={"Range": "bytes=3-"}).status_code == 410


def test_odd_password_forms_are_refused_cleanly(web: httpx.Client, api: ApiClient) -> None:
    node = put_content(api, api.root_id, "x.txt", b"x")
    link = make_link(api, node["id"], password="a good password")
    many = "&".join(f"f{i}=1" for i in range(50))
    assert (
        web.post(
            link["url"],
            content=many.encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        ).status_code
        == 401
    )
    assert (
        web.post(
            link["url"], content=b"\xff\xfe", headers={"Content-Type": "text/plain"}
        ).status_code
        == 401
    )
    assert (
        web.get(link["url"], params={"dl": 1}, headers={"Authorization": "Basic !!!"}).status_code
        == 401
    )
