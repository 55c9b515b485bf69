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
        # The owner makes carol an editor: the role change reaches her mount through her
        # push channel (a `share` entry), and the share becomes writable there.
        with alice.api() as a:
            body = {"account": carol.name, "role": "editor"}
            a.call("POST", f"nodes/{folder['id']}/shares", json=body, expect=200)

        def writable() -> bool:
            try:
                (shared / "now-editor.txt").write_bytes(b"allowed now\n")
            except OSError:
                return False
            return True

        eventually(writable, "editor rights at carol", PUSHED_WITHIN_S)
        reader.synced()
        eventually(reads(photos / "now-editor.txt", b"allowed now\n"), "carol's file at alice")
    finally:
        problems = alices.close() + carols.close()
    assert not problems, "\n".join(problems)


PUSHED_WITHIN_S = 15.0
"""Well below the engine's safety poll while the push channel is up (60 s): a change that
arrives within this came through the push channel."""


def test_changes_in_a_share_are_pushed_to_the_member(
    backend_session: BackendProcess, tmp_path: Path
) -> None:
    """With auto-accept, an offer appears in the member's mount by itself, and what the
    owner changes inside the share afterwards arrives through the member's push channel
    (which announces the followed shares' journals), not through a poll."""
    server = backend_session.base_url
    alice, bob = Account.register(server, "owner"), Account.register(server, "member")
    bobs = Devices(bob, tmp_path / "bob")
    try:
        member = bobs("bob")
        with bob.api() as b:
            b.call("PATCH", "me/preferences", json={"auto_accept_shares": True})
        with alice.api() as a:
            folder = a.mkdir(a.root_id, "pushed")
            a.mkfile(folder["id"], "first.txt")  # empty: the nodes are what travels here
            a.call(
                "POST",
                f"nodes/{folder['id']}/shares",
                json={"account": bob.name, "role": "editor"},
                expect=201,
            )
            shared = member.mountpoint / "pushed"
            eventually(reads(shared / "first.txt", b""), "the share", PUSHED_WITHIN_S)
            for n in range(3):
                a.mkfile(folder["id"], f"later-{n}.txt")
                took = eventually(reads(shared / f"later-{n}.txt", b""), "a change", 30)
                assert took < PUSHED_WITHIN_S, took
    finally:
        problems = bobs.close()
    assert not problems, "\n".join(problems)


def test_revoking_keeps_the_members_unsynced_edits_as_its_own(
    backend_session: BackendProcess, tmp_path: Path
) -> None:
    """The member edits a file of the share and adds one while its transfers are paused
    (nothing reaches the backend); the owner revokes. The share leaves the member's mount,
    and the edits stay as the member's own files in `docs (unshared edits)`, which sync up
    to the member's account once transfers resume. The owner's files are untouched."""
    server = backend_session.base_url
    alice, bob = Account.register(server, "owner"), Account.register(server, "member")
    alices, bobs = Devices(alice, tmp_path / "alice"), Devices(bob, tmp_path / "bob")
    try:
        laptop, member = alices("laptop"), bobs("bob")
        docs = laptop.mountpoint / "docs"
        (docs / "sub").mkdir(parents=True)
        (docs / "plan.txt").write_bytes(b"the plan\n")
        (docs / "sub" / "notes.txt").write_bytes(b"notes\n")
        (docs / "untouched.txt").write_bytes(b"left alone\n")
        laptop.synced()
        with alice.api() as a, bob.api() as b:
            (folder,) = [n for n in a.list_children(a.root_id) if n["name"] == "docs"]
            body = {"account": bob.name, "role": "editor"}
            offer = a.call("POST", f"nodes/{folder['id']}/shares", json=body, expect=201)
            b.call("POST", f"shares/{offer['id']}/accept", json={})
        shared = member.mountpoint / "docs"
        eventually(reads(shared / "sub" / "notes.txt", b"notes\n"), "the share at bob")
        eventually(reads(shared / "plan.txt", b"the plan\n"), "plan at bob")

        member.allowed_log.append("a share ended with unsynced changes here")
        paused = member.cli("pause")
        assert paused.returncode == 0, paused.stderr
        (shared / "plan.txt").write_bytes(b"bob's better plan\n")
        (shared / "sub" / "notes.txt").write_bytes(b"bob's notes\n")
        (shared / "from-bob.txt").write_bytes(b"new, from bob\n")
        time.sleep(1.0)  # give a (wrong) upload every chance to happen
        with alice.api() as a:
            a.call("DELETE", f"shares/{offer['id']}")

        kept = member.mountpoint / "docs (unshared edits)"
        eventually(lambda: not shared.exists(), "the share leaves bob's mount")
        eventually(reads(kept / "plan.txt", b"bob's better plan\n"), "bob's edit kept")
        assert (kept / "sub" / "notes.txt").read_bytes() == b"bob's notes\n"
        assert (kept / "from-bob.txt").read_bytes() == b"new, from bob\n"
        assert not (kept / "untouched.txt").exists()  # nothing of bob's in it: it went

        resumed = member.cli("resume")
        assert resumed.returncode == 0, resumed.stderr
        member.synced()
        with bob.api() as b:
            (mine,) = [n for n in b.list_children(b.root_id) if n["name"] == kept.name]
            assert mine["namespace_id"] == b.namespace_id
            inside = {n["name"]: n for n in b.list_children(mine["id"])}
            assert set(inside) == {"plan.txt", "sub", "from-bob.txt"}
            assert inside["plan.txt"]["size"] == len(b"bob's better plan\n")
            assert inside["plan.txt"]["head_revision"] is not None
            (notes,) = b.list_children(inside["sub"]["id"])
            assert (notes["name"], notes["size"]) == ("notes.txt", len(b"bob's notes\n"))
        # A second device of bob's gets them like any file of his.
        other = bobs("bob-desktop")
        copy = other.mountpoint / kept.name
        eventually(reads(copy / "plan.txt", b"bob's better plan\n"), "kept edits at bob's 2nd")
        # The owner's files never saw bob's unsynced edits.
        laptop.synced()
        assert (docs / "plan.txt").read_bytes() == b"the plan\n"
        assert (docs / "sub" / "notes.txt").read_bytes() == b"notes\n"
        assert not (docs / "from-bob.txt").exists() or (docs / "from-bob.txt").stat().st_size == 0
    finally:
        problems = alices.close() + bobs.close()
    assert not problems, "\n".join(problems)
