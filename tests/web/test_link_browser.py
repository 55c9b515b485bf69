"""The public-link page in a real browser: headless Chromium (the machine's, driven by
Playwright) opens a protected link, is refused with a wrong password, gets in with the
right one, downloads the file and a folder's files and zip, and the bytes are checked."""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.api_client import ApiClient, Json
from tests.support.backend import BackendProcess
from tests.support.content import put_content

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (test extra)")

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Debian's chromium (scripts/lib.sh TEST_PACKAGES)"
)

DATA = os.urandom(1_500_000)  # more than one chunk


@pytest.fixture
def browser() -> Iterator[sync_api.Browser]:
    with sync_api.sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS, headless=True)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def owner(backend_server: BackendProcess) -> Iterator[ApiClient]:
    with ApiClient.new_account(backend_server.base_url, "browser") as client:
        yield client


def make_link(client: ApiClient, node_id: str, **options: object) -> Json:
    made: Json = client.call("POST", f"nodes/{node_id}/links", json=options, expect=201)
    return made


def test_password_then_download_in_chromium(
    browser: sync_api.Browser, owner: ApiClient, tmp_path: Path
) -> None:
    node = put_content(owner, owner.root_id, "holiday video.bin", DATA)
    link = make_link(owner, node["id"], password="let me in please")
    page = browser.new_context(accept_downloads=True).new_page()

    answer = page.goto(link["url"])
    assert answer is not None
    assert answer.status == 401
    assert page.locator("#password").is_visible()
    assert "holiday video.bin" not in page.content()

    page.fill("#password", "not the password")
    page.click("button[type=submit]")
    assert "Wrong password" in page.locator("[role=alert]").inner_text()

    page.fill("#password", "let me in please")
    page.click("button[type=submit]")
    page.wait_for_selector("#download")
    assert page.locator("h1").inner_text() == "holiday video.bin"
    assert "1.5 MB" in page.locator(".meta").inner_text()

    with page.expect_download() as started:
        page.click("#download")
    download = started.value
    assert download.suggested_filename == "holiday video.bin"
    saved = tmp_path / "got.bin"
    download.save_as(saved)
    assert saved.read_bytes() == DATA


def test_folder_listing_file_and_zip_in_chromium(
    browser: sync_api.Browser, owner: ApiClient, tmp_path: Path
) -> None:
    folder = owner.mkdir(owner.root_id, "photos")
    put_content(owner, folder["id"], "a.txt", b"first")
    put_content(owner, folder["id"], "big.bin", DATA)
    link = make_link(owner, folder["id"])
    page = browser.new_context(accept_downloads=True).new_page()
    answer = page.goto(link["url"])
    assert answer is not None
    assert answer.status == 200
    assert page.locator("h1").inner_text() == "photos"
    rows = page.locator("td.name").all_inner_texts()
    assert rows == ["a.txt", "big.bin"]

    with page.expect_download() as started:
        page.locator("a.file-download").nth(1).click()
    started.value.save_as(tmp_path / "big.bin")
    assert (tmp_path / "big.bin").read_bytes() == DATA

    with page.expect_download() as started:
        page.click("#download-all")
    assert started.value.suggested_filename == "photos.zip"
    started.value.save_as(tmp_path / "all.zip")
    with zipfile.ZipFile(io.BytesIO((tmp_path / "all.zip").read_bytes())) as archive:
        assert archive.read("a.txt") == b"first"
        assert archive.read("big.bin") == DATA


def test_revoked_link_page_in_chromium(browser: sync_api.Browser, owner: ApiClient) -> None:
    node = put_content(owner, owner.root_id, "gone.txt", b"bye")
    link = make_link(owner, node["id"])
    owner.call("DELETE", f"links/{link['id']}")
    page = browser.new_page()
    answer = page.goto(link["url"])
    assert answer is not None
    assert answer.status == 404
    assert page.locator("h1").inner_text() == "Link not found"
