"""`.versions`, `mountfs versions/restore/trash` on real mounts of a real backend."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.mount.conftest import MountFactory
from tests.support.backend import BackendFactory, BackendProcess
from tests.support.mount import Account, Devices, MountProcess, wait_for

NAME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}Z(-\d+)? \(mnt\) (?P<name>.+)$")


def version_files(mount: MountProcess, path: str) -> list[Path]:
    """The files of `.versions/PATH`, oldest first (their names sort by time)."""
    folder = mount.mountpoint / ".versions" / path
    return [folder / name for name in sorted(os.listdir(folder))]


def cli_ok(mount: MountProcess, *args: str | Path) -> str:
    result = mount.cli(*args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def assert_erofs(call: object, *args: object) -> None:
    with pytest.raises(OSError, match="Read-only file system") as caught:
        call(*args)  # type: ignore[operator]
    assert caught.value.errno == errno.EROFS, caught.value


def test_versions_of_an_edited_file_read_refuse_writes_and_restore_with_cp(
    mount_factory: MountFactory,
) -> None:
    mount = mount_factory()
    root = mount.mountpoint
    (root / "docs").mkdir()
    first, second = os.urandom(700_000), b"the second version\n"
    (root / "docs" / "report.pdf").write_bytes(first)
    mount.synced()
    (root / "docs" / "report.pdf").write_bytes(second)
    mount.synced()

    assert ".versions" not in os.listdir(root)  # ls -a of the root does not show it
    assert (
        ".versions"
        not in subprocess.run(
            ["ls", "-a", root], capture_output=True, text=True, check=True
        ).stdout.split()
    )
    assert (root / ".versions").is_dir()  # but the path works
    assert sorted(os.listdir(root / ".versions")) == ["docs"]
    old, new = version_files(mount, "docs/report.pdf")
    for f in (old, new):
        match = NAME.match(f.name)
        assert match is not None, f.name
        assert match["name"] == "report.pdf"
    assert old.read_bytes() == first
    assert new.read_bytes() == second
    assert old.stat().st_size == len(first)
    assert not os.access(old, os.W_OK) or os.getuid() == 0

    assert_erofs(old.write_bytes, b"x")
    assert_erofs(os.unlink, old)
    assert_erofs((old.parent / "new").write_bytes, b"x")
    assert_erofs(os.mkdir, old.parent / "dir")
    assert_erofs(os.rename, old, old.parent / "renamed")
    assert_erofs(os.truncate, old, 0)
    assert_erofs(shutil.rmtree, root / ".versions" / "docs")

    shutil.copyfile(old, root / "docs" / "report.pdf")  # restore with cp
    assert (root / "docs" / "report.pdf").read_bytes() == first
    mount.synced()
    wait_for(  # listings are reused for 2 s: a new version shows up within that
        lambda: len(version_files(mount, "docs/report.pdf")) == 3, 10, "the restored version"
    )
    os.rename(root / "docs" / "report.pdf", root / "docs" / "final.pdf")
    mount.synced()
    wait_for(lambda: not (root / ".versions/docs/report.pdf").exists(), 10, "the old name gone")
    renamed = version_files(mount, "docs/final.pdf")  # the history follows the file
    assert len(renamed) == 3
    assert all(f.name.endswith(") final.pdf") for f in renamed)
    assert renamed[0].read_bytes() == first
    mount_factory.roundtrip_check(mount)


def test_versions_needs_the_backend_and_says_so(
    backend_factory: BackendFactory, tmp_path: Path
) -> None:
    server = backend_factory()
    devices = Devices(Account.register(server.base_url, "offline"), tmp_path)
    try:
        mount = devices("mnt")
        mount.allowed_log += ["offline", "unreachable", "push channel", "Network"]
        (mount.mountpoint / "kept.txt").write_text("cached")
        mount.synced()
        assert [f.read_text() for f in version_files(mount, "kept.txt")] == ["cached"]
        server.stop()
        time.sleep(2.5)  # past the reuse of the last listing
        with pytest.raises(OSError, match="Network is unreachable") as caught:
            os.listdir(mount.mountpoint / ".versions")
        assert caught.value.errno == errno.ENETUNREACH
        assert (mount.mountpoint / "kept.txt").read_text() == "cached"  # the rest works
        devices.stop_all()
    finally:
        problems = devices.close()
    assert not problems, problems


def test_restore_with_the_cli_and_a_deleted_folder_tree(mount_factory: MountFactory) -> None:
    mount = mount_factory()
    root = mount.mountpoint
    (root / "project" / "src").mkdir(parents=True)
    code = os.urandom(300_000)
    (root / "project" / "src" / "main.c").write_bytes(code)
    (root / "project" / "notes.txt").write_text("v1")
    mount.synced()
    (root / "project" / "notes.txt").write_text("v2, later")
    mount.synced()

    listed = cli_ok(mount, "versions", root / "project" / "notes.txt")
    assert "mnt" in listed
    assert "current" in listed
    cli_ok(mount, "restore", root / "project" / "notes.txt")  # the version before the head
    mount.synced()
    assert (root / "project" / "notes.txt").read_text() == "v1"

    shutil.rmtree(root / "project")
    mount.synced()
    assert not (root / "project").exists()
    # deleted files stay under .versions, readable
    (main,) = version_files(mount, "project/src/main.c")
    assert main.read_bytes() == code
    trash = json.loads(cli_ok(mount, "trash", "--json"))
    assert [(t["path"], t["files"]) for t in trash] == [("project", 2)]

    cli_ok(mount, "restore", root / "project")
    mount.synced()
    wait_for(lambda: (root / "project" / "src" / "main.c").exists(), 10, "restored tree")
    assert (root / "project" / "src" / "main.c").read_bytes() == code
    assert (root / "project" / "notes.txt").read_text() == "v1"
    assert json.loads(cli_ok(mount, "trash", "--json")) == []
    mount_factory.roundtrip_check(mount)


def test_restore_at_a_version_file_and_trash_empty(mount_factory: MountFactory) -> None:
    mount = mount_factory()
    root = mount.mountpoint
    target = root / "a.txt"
    for text in ("one", "two", "three"):
        target.write_text(text)
        mount.synced()
    first = version_files(mount, "a.txt")[0]
    cli_ok(mount, "restore", first)  # a .versions file names its version
    mount.synced()
    assert target.read_text() == "one"
    versions = json.loads(cli_ok(mount, "versions", "a.txt", "--json"))
    assert len(versions) == 4
    cli_ok(mount, "restore", "a.txt", "--at", versions[2]["revision_id"])  # "two"
    mount.synced()
    assert target.read_text() == "two"

    os.unlink(target)
    mount.synced()
    refused = mount.cli("trash", "empty", timeout=60)  # no terminal: the prompt says no
    assert refused.returncode != 0
    assert len(json.loads(cli_ok(mount, "trash", "--json"))) == 1
    out = cli_ok(mount, "trash", "empty", "--yes")
    assert "for good" in out
    assert json.loads(cli_ok(mount, "trash", "--json")) == []
    assert mount.cli("restore", "a.txt").returncode == 1  # gone for good
    assert not (root / ".versions" / "a.txt").exists()


@pytest.mark.embedded_only("damages a chunk file in the embedded block directory")
def test_a_corrupted_chunk_is_eio_never_wrong_bytes(
    mount_factory: MountFactory, backend_session: BackendProcess
) -> None:
    writer = mount_factory("writer")
    data = os.urandom(400_000)
    (writer.mountpoint / "fragile").write_bytes(data)
    writer.synced()
    with mount_factory.account.api() as api:
        node = next(c for c in api.list_children(api.root_id) if c["name"] == "fragile")
        ref = api.revision(node["head_revision"])["chunks"][0]
    path = backend_session.data_dir / "blocks" / "objects" / ref["object"][:2] / ref["object"]
    damaged = bytearray(path.read_bytes())
    damaged[len(damaged) // 2] ^= 0x40
    path.write_bytes(bytes(damaged))
    try:
        reader = mount_factory("reader")
        reader.allowed_log += ("failed verification", "fetching", "chunk")
        reader.synced()
        with pytest.raises(OSError, match="Input/output error") as caught:
            (reader.mountpoint / "fragile").read_bytes()
        assert caught.value.errno == errno.EIO
        (version,) = version_files(reader, "fragile")
        with pytest.raises(OSError, match="Input/output error") as again:
            version.read_bytes()
        assert again.value.errno == errno.EIO
    finally:
        damaged[len(damaged) // 2] ^= 0x40
        path.write_bytes(bytes(damaged))
