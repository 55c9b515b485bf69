"""Shared folders on real mounts: an accepted share appears in the member's mount with its
content, an editor's file reaches the owner's mount, and the owner's other devices keep
syncing the folder after it moved into its own namespace."""

from __future__ import annotations

import errno
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.backend import BackendProcess
from tests.support.mount import Account, Devices

APPEAR_TIMEOUT_S = 45.0


def eventually(check: Callable[[], bool], what: str, timeout: float = APPEAR_TIMEOUT_S) -> float:
    """Poll `check` until it holds; return the seconds it took (fails after `timeout`)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            if check():
                return time.monotonic() - start
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"not seen within {timeout} s: {what}")


def reads(path: Path, data: bytes) -> Callable[[], bool]:
    return lambda: path.is_file() and path.read_bytes() == data


def test_share_syncs_between_accounts_and_devices(
    backend_session: BackendProcess, tmp_path: Path
) -> None:
    server = backend_session.base_url
    alice, bob = Account.register(server, "owner"), Account.register(server, "member")
    alices, bobs = Devices(alice, tmp_path / "alice"), Devices(bob, tmp_path / "bob")
    try:
        laptop, desktop = alices("laptop"), alices("desktop")
        member = bobs("bob")
        docs = laptop.mountpoint / "docs"
        docs.mkdir()
        (docs / "plan.txt").write_bytes(b"the plan\n")
        laptop.synced()

        with alice.api() as a, bob.api() as b:
            (folder,) = [n for n in a.list_children(a.root_id) if n["name"] == "docs"]
            offer = a.call(
                "POST",
                f"nodes/{folder['id']}/shares",
                json={"account": bob.name, "role": "editor"},
                expect=201,
            )
            b.call("POST", f"shares/{offer['id']}/accept", json={})

        # The member's mount shows the share and its content by itself.
        eventually(reads(member.mountpoint / "docs" / "plan.txt", b"the plan\n"), "share at bob")
        # The member writes into it; the owner's devices see it.
        (member.mountpoint / "docs" / "from-bob.txt").write_bytes(b"bob was here\n")
        member.synced()
        eventually(reads(docs / "from-bob.txt", b"bob was here\n"), "bob's file at the laptop")
        # The owner keeps working on other devices: changes inside the (now shared) folder
        # reach them through the share's own journal.
        (docs / "later.txt").write_bytes(b"written after sharing\n")
        laptop.synced()
        later = desktop.mountpoint / "docs" / "later.txt"
        eventually(reads(later, b"written after sharing\n"), "owner's second device")
        eventually(
            reads(member.mountpoint / "docs" / "later.txt", b"written after sharing\n"),
            "owner's change at bob",
        )
        (desktop.mountpoint / "docs" / "plan.txt").write_bytes(b"the plan, v2\n")
        desktop.synced()
        eventually(reads(member.mountpoint / "docs" / "plan.txt", b"the plan, v2\n"), "edit at bob")
        # Moves into or out of the share are EXDEV: `mv` copies and deletes instead.
        shared, own = member.mountpoint / "docs", member.mountpoint / "kept.txt"
        with pytest.raises(OSError, match="cross-device") as refused:
            os.rename(shared / "later.txt", own)
        assert refused.value.errno == errno.EXDEV
        shutil.move(shared / "later.txt", own)
        assert own.read_bytes() == b"written after sharing\n"
        member.synced()
        eventually(lambda: not (docs / "later.txt").exists(), "moved-out file gone at the owner")
        # A member does not rename the share's folder in the mount (its placement is
        # `mountfs shares accept --into --name`); the owner may rename its own folder.
        with pytest.raises(OSError, match="Read-only") as refused:
            os.rename(shared, member.mountpoint / "renamed")
        assert refused.value.errno == errno.EROFS
        # Unsharing takes the folder out of the member's mount within seconds; the owner's
        # devices keep it.
        with alice.api() as a:
            a.call("DELETE", f"shares/{offer['id']}")
        eventually(lambda: not (member.mountpoint / "docs").exists(), "share gone at bob")
        assert (desktop.mountpoint / "docs" / "from-bob.txt").read_bytes() == b"bob was here\n"
    finally:
        problems = alices.close() + bobs.close()
    assert not problems, "\n".join(problems)


def test_viewer_share_is_read_only_in_the_mount(
    backend_session: BackendProcess, tmp_path: Path
) -> None:
    server = backend_session.base_url
    alice, carol = Account.register(server, "owner"), Account.register(server, "viewer")
    alices, carols = Devices(alice, tmp_path / "alice"), Devices(carol, tmp_path / "carol")
    try:
        laptop = alices("laptop")
        reader = carols("carol")
        photos = laptop.mountpoint / "photos"
        photos.mkdir()
        (photos / "a.txt").write_bytes(b"look, don't touch\n")
        laptop.synced()
        with alice.api() as a, carol.api() as c:
            (folder,) = [n for n in a.list_children(a.root_id) if n["name"] == "photos"]
            offer = a.call(
                "POST",
                f"nodes/{folder['id']}/shares",
                json={"account": carol.name, "role": "viewer"},
                expect=201,
            )
            c.call("POST", f"shares/{offer['id']}/accept", json={})
        shared = reader.mountpoint / "photos"
        eventually(reads(shared / "a.txt", b"look, don't touch\n"), "share at the viewer")
        refused = []
        for attempt in (
            lambda: (shared / "new.txt").write_bytes(b"x"),
            lambda: (shared / "a.txt").write_bytes(b"changed"),
            lambda: (shared / "a.txt").unlink(),
            lambda: (shared / "sub").mkdir(),
            lambda: (shared / "a.txt").rename(shared / "b.txt"),
            lambda: os.chmod(shared / "a.txt", 0o600),
            lambda: os.truncate(shared / "a.txt", 0),
        ):
            try:
                attempt()
            except OSError as exc:
                refused.append(exc.errno)
        assert refused == [errno.EROFS] * 7
        assert (shared / "a.txt").read_bytes() == b"look, don't touch\n"
        # The owner's changes still arrive; the viewer's own tree stays writable.
        (photos / "b.txt").write_bytes(b"new from the owner\n")
        laptop.synced()
        eventually(reads(shared / "b.txt", b"new from the owner\n"), "owner's new file")
        (reader.mountpoint / "mine.txt").write_bytes(b"still mine")
        reader.synced()
    finally:
        problems = alices.close() + carols.close()
    assert not problems, "\n".join(problems)
