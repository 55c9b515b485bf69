"""Two devices change the same thing at once: the first change the backend takes wins, and
the other device's work is kept beside it. End to end: two real mounts of one account
(two state directories = two devices), each behind its own cuttable network link
(`tests.support.netcut`), so that both change the same thing while neither has heard of
the other's change. Then the winner is brought back and synced first, the loser after,
and `mountfs sync` on both makes them converge. Every device (and a fresh third one) must
end with the same tree, checked by content hash.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import shutil
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mountfs.state.db import DB_FILE
from mountfs.transport.auth import save_device
from tests.support.api_client import ApiClient
from tests.support.backend import BackendProcess
from tests.support.mount import Devices, MountProcess, manifest_diff, tree_manifest, wait_for
from tests.support.netcut import Link

OUTAGE_LOG = ["backend unavailable", "backend unreachable", "unavailable", "retrying"]
"""What a device may log while its link is cut."""

COPY = r" \(conflicted copy from {device} \d{{4}}-\d{{2}}-\d{{2}}\)"


@dataclass
class Device:
    """One mount behind its own network link."""

    label: str
    mount: MountProcess
    link: Link

    @property
    def root(self) -> Path:
        return self.mount.mountpoint

    def sync(self) -> None:
        self.mount.synced()


@pytest.fixture
def pair(mount_factory: Devices, backend_session: BackendProcess) -> Iterator[list[Device]]:
    """Devices `laptop` and `desktop` of one account, each with a link it can lose."""
    devices: list[Device] = []
    for label in ("laptop", "desktop"):
        link = Link(backend_session.host, backend_session.port)
        state = mount_factory.base / f"{label}-state"
        info = mount_factory.account.login(state, label)
        save_device(state, dataclasses.replace(info, server=link.url))
        mount = mount_factory(label, state_dir=state)
        mount.allowed_log += OUTAGE_LOG
        devices.append(Device(label, mount, link))
    try:
        yield devices
    finally:
        for device in devices:
            device.link.restore()
        for device in devices:
            if os.path.ismount(device.root):
                device.mount.stop()
        for device in devices:
            device.link.close()


def converge(*devices: Device) -> None:
    """Bring every link back and sync until every device has everything."""
    for device in devices:
        device.link.restore()
    for device in [*devices, *devices]:
        device.sync()


def trees(devices: list[Device], mount_factory: Devices) -> dict[str, tuple[object, ...]]:
    """The tree every device shows (asserted equal, also on a fresh device); returned."""

    def agreed() -> dict[str, tuple[object, ...]] | None:
        first = tree_manifest(devices[0].root, times=False)
        others = [tree_manifest(device.root, times=False) for device in devices[1:]]
        return first if all(seen == first for seen in others) else None

    try:
        # The kernel hears of remote changes a moment after `mountfs sync` has applied
        # them (its notices are sent by a task of their own).
        first = wait_for(agreed, 10, "every device shows the same tree")
    except AssertionError:
        first = tree_manifest(devices[0].root, times=False)
        for device in devices[1:]:
            diff = manifest_diff(first, tree_manifest(device.root, times=False))
            assert not diff, f"{device.label} differs from {devices[0].label}:\n" + "\n".join(diff)
        raise
    fresh = mount_factory("fresh")
    try:
        fresh.synced()
        seen = tree_manifest(fresh.mountpoint, times=False)
    finally:
        fresh.stop()
    diff = manifest_diff(first, seen)
    assert not diff, "a fresh device sees another tree:\n" + "\n".join(diff)
    return first


def state_vs_backend(device: Device, api: ApiClient) -> list[str]:
    """Where the device's state database disagrees with the backend's tree, by node id
    (folder, name, kind, version, head revision); empty if it agrees.

    Stronger than comparing what two mounts show: two devices can show the same tree while
    one of them believes it is up to date with a place the backend never had. Call it after
    a sync with nothing pending and nothing changing."""
    backend: dict[str, tuple[object, ...]] = {}
    folders = [api.root_id]
    while folders:
        for item in api.list_children(folders.pop()):
            head = item["head_revision"] if item["kind"] == "file" else None
            backend[item["id"]] = (
                item["parent_id"],
                item["name"],
                item["kind"],
                item["version"],
                head,
            )
            if item["kind"] == "dir":
                folders.append(item["id"])
    db = sqlite3.connect(f"file:{device.mount.state_dir / DB_FILE}?mode=ro", uri=True)
    try:
        rows = db.execute(
            "SELECT n.node_id, p.node_id, n.name, n.kind, n.remote_version, "
            "n.remote_head_revision FROM nodes n JOIN nodes p ON p.ino = n.parent_ino"
        ).fetchall()
    finally:
        db.close()
    local = {
        row[0]: (row[1], row[2], row[3], row[4], row[5] if row[3] == "file" else None)
        for row in rows
    }
    problems = [
        f"{node_id}: here {local.get(node_id)}, backend {backend.get(node_id)}"
        for node_id in sorted(set(local) | set(backend))
        if local.get(node_id) != backend.get(node_id)
    ]
    return problems


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def files(tree: dict[str, tuple[object, ...]]) -> dict[str, str]:
    """path -> content hash of every file."""
    return {path: str(entry[3]) for path, entry in tree.items() if entry[0] == "file"}


def edit_in_place(path: Path, data: bytes) -> None:
    """Overwrite a file's content through the same inode (as most editors' save does not,
    but `>` and `cat > f` do)."""
    with open(path, "r+b") as f:
        f.truncate(0)
        f.write(data)


def setup_base(devices: list[Device], build: dict[str, bytes | None]) -> None:
    """Make the base tree on the first device and let the second one pull it."""
    root = devices[0].root
    for rel, data in build.items():
        path = root / rel
        if data is None:
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    devices[0].sync()
    devices[1].sync()


def test_both_edit_the_same_file(pair: list[Device], mount_factory: Devices) -> None:
    laptop, desktop = pair
    base, ours, theirs = b"base\n" * 1000, b"laptop edit\n" * 999, b"desktop edit\n" * 1001
    setup_base(pair, {"docs/report.txt": base})
    laptop.link.cut()
    desktop.link.cut()
    edit_in_place(laptop.root / "docs" / "report.txt", ours)
    edit_in_place(desktop.root / "docs" / "report.txt", theirs)
    laptop.link.restore()
    laptop.sync()  # the laptop's commit is the first the backend takes
    converge(desktop, laptop)

    seen = files(trees(pair, mount_factory))
    assert seen.pop("docs/report.txt") == digest(ours)
    (copy, content), *rest = seen.items()
    assert not rest, f"more than one copy: {seen}"
    assert re.fullmatch(r"docs/report" + COPY.format(device="desktop") + r"\.txt", copy), copy
    assert content == digest(theirs)
    # Nothing more happens on another round: a conflicted copy never makes another.
    converge(laptop, desktop)
    assert files(tree_manifest(laptop.root, times=False)) == {
        "docs/report.txt": digest(ours),
        copy: digest(theirs),
    }


def test_same_edit_on_both_is_no_conflict(pair: list[Device], mount_factory: Devices) -> None:
    laptop, desktop = pair
    setup_base(pair, {"a.txt": b"one\n", "b.txt": b"two\n"})
    laptop.link.cut()
    desktop.link.cut()
    for device in pair:
        edit_in_place(device.root / "a.txt", b"the same new text\n")
        os.chmod(device.root / "b.txt", 0o600 if device is laptop else 0o640)
        os.utime(device.root / "b.txt", ns=(1, 2_000_000_000 if device is laptop else 3))
    laptop.link.restore()
    laptop.sync()
    converge(desktop, laptop)
    tree = trees(pair, mount_factory)
    assert sorted(tree) == ["a.txt", "b.txt"]
    assert files(tree)["a.txt"] == digest(b"the same new text\n")


@pytest.mark.parametrize("first", ["delete", "edit"])
def test_edit_beats_delete(pair: list[Device], mount_factory: Devices, first: str) -> None:
    laptop, desktop = pair  # the laptop deletes, the desktop edits
    setup_base(pair, {"keep/me.bin": os.urandom(300_000)})
    edited = os.urandom(310_000)
    laptop.link.cut()
    desktop.link.cut()
    os.unlink(laptop.root / "keep" / "me.bin")
    edit_in_place(desktop.root / "keep" / "me.bin", edited)
    winner, loser = (laptop, desktop) if first == "delete" else (desktop, laptop)
    winner.link.restore()
    winner.sync()
    converge(loser, winner)
    assert files(trees(pair, mount_factory)) == {"keep/me.bin": digest(edited)}


@pytest.mark.parametrize("first", ["rename", "edit"])
def test_rename_and_edit_make_one_renamed_file(
    pair: list[Device], mount_factory: Devices, first: str
) -> None:
    laptop, desktop = pair  # the laptop renames, the desktop edits
    setup_base(pair, {"old/name.txt": b"v1\n" * 5000, "new": None})
    edited = b"v2\n" * 5001
    laptop.link.cut()
    desktop.link.cut()
    os.rename(laptop.root / "old" / "name.txt", laptop.root / "new" / "renamed.txt")
    edit_in_place(desktop.root / "old" / "name.txt", edited)
    winner, loser = (laptop, desktop) if first == "rename" else (desktop, laptop)
    winner.link.restore()
    winner.sync()
    converge(loser, winner)
    tree = trees(pair, mount_factory)
    assert files(tree) == {"new/renamed.txt": digest(edited)}
    assert set(tree) == {"old", "new", "new/renamed.txt"}


def test_both_create_the_same_name(pair: list[Device], mount_factory: Devices) -> None:
    laptop, desktop = pair
    setup_base(pair, {"shared": None})
    laptop.link.cut()
    desktop.link.cut()
    (laptop.root / "shared" / "notes.md").write_bytes(b"laptop's notes\n")
    (desktop.root / "shared" / "notes.md").write_bytes(b"desktop's notes\n")
    laptop.link.restore()
    laptop.sync()
    converge(desktop, laptop)
    seen = files(trees(pair, mount_factory))
    assert seen.pop("shared/notes.md") == digest(b"laptop's notes\n")
    (copy, content), *rest = seen.items()
    assert not rest, seen
    assert re.fullmatch(r"shared/notes" + COPY.format(device="desktop") + r"\.md", copy), copy
    assert content == digest(b"desktop's notes\n")


@pytest.mark.parametrize("first", ["laptop", "desktop"])
def test_crossing_moves_keep_both_folders(
    pair: list[Device], mount_factory: Devices, first: str
) -> None:
    laptop, desktop = pair
    setup_base(pair, {"A/a.txt": b"in A\n", "B/b.txt": b"in B\n"})
    laptop.link.cut()
    desktop.link.cut()
    os.rename(laptop.root / "A", laptop.root / "B" / "A")
    os.rename(desktop.root / "B", desktop.root / "A" / "B")
    winner, loser = (laptop, desktop) if first == "laptop" else (desktop, laptop)
    winner.link.restore()
    winner.sync()
    converge(loser, winner)
    tree = trees(pair, mount_factory)
    expected = (
        {"B", "B/A", "B/A/a.txt", "B/b.txt"}
        if first == "laptop"
        else {"A", "A/B", "A/B/b.txt", "A/a.txt"}
    )
    assert set(tree) == expected
    assert sorted(files(tree).values()) == sorted([digest(b"in A\n"), digest(b"in B\n")])


@pytest.mark.parametrize("first", ["delete", "add"])
def test_a_file_added_to_a_deleted_folder_survives(
    pair: list[Device], mount_factory: Devices, first: str
) -> None:
    laptop, desktop = pair  # the laptop deletes the folder, the desktop adds to it
    setup_base(pair, {"proj/sub/one.txt": b"1\n", "proj/two.txt": b"2\n", "other.txt": b"o\n"})
    laptop.link.cut()
    desktop.link.cut()
    for path in sorted((laptop.root / "proj").rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    (laptop.root / "proj").rmdir()
    (desktop.root / "proj" / "sub" / "new.txt").write_bytes(b"added while it was deleted\n")
    winner, loser = (laptop, desktop) if first == "delete" else (desktop, laptop)
    winner.link.restore()
    winner.sync()
    converge(loser, winner)
    tree = trees(pair, mount_factory)
    assert files(tree) == {
        "other.txt": digest(b"o\n"),
        "proj/sub/new.txt": digest(b"added while it was deleted\n"),
    }
    assert set(tree) == {"other.txt", "proj", "proj/sub", "proj/sub/new.txt"}


@pytest.mark.parametrize("first", ["move", "rename"])
def test_move_and_rename_merge(
    pair: list[Device], mount_factory: Devices, inspector: ApiClient, first: str
) -> None:
    """One device moves a file to another folder, the other renames it in place: the
    file ends in the new folder under the new name on both (the place merges field by
    field); a regression: the mover used to keep the old name while the backend had the new.
    """
    laptop, desktop = pair  # the laptop moves, the desktop renames
    setup_base(pair, {"a/f.txt": b"f\n", "b": None})
    laptop.link.cut()
    desktop.link.cut()
    os.rename(laptop.root / "a" / "f.txt", laptop.root / "b" / "f.txt")
    os.rename(desktop.root / "a" / "f.txt", desktop.root / "a" / "g.txt")
    winner, loser = (laptop, desktop) if first == "move" else (desktop, laptop)
    winner.link.restore()
    winner.sync()
    converge(loser, winner)
    tree = trees(pair, mount_factory)
    assert files(tree) == {"b/g.txt": digest(b"f\n")}
    for device in pair:
        assert state_vs_backend(device, inspector) == [], device.label


@pytest.mark.parametrize("first", ["rename-over", "rename"])
def test_rename_over_after_a_rename_elsewhere(
    pair: list[Device], mount_factory: Devices, inspector: ApiClient, first: str
) -> None:
    """The laptop moves x/b.txt over y/b.txt (same name: a rename-over that only changes
    the folder) while the desktop renames x/b.txt to data.bin. The rename-over names its
    destination, so it still replaces y/b.txt (a regression: it was refused over and over,
    or left the devices with different names)."""
    laptop, desktop = pair
    setup_base(pair, {"x/b.txt": b"moved\n", "y/b.txt": b"replaced\n"})
    laptop.link.cut()
    desktop.link.cut()
    os.rename(laptop.root / "x" / "b.txt", laptop.root / "y" / "b.txt")
    os.rename(desktop.root / "x" / "b.txt", desktop.root / "x" / "data.bin")
    winner, loser = (laptop, desktop) if first == "rename-over" else (desktop, laptop)
    winner.link.restore()
    winner.sync()
    converge(loser, winner)
    tree = trees(pair, mount_factory)
    expected = {"y/b.txt": digest(b"moved\n")}
    if first == "rename-over":  # the desktop's rename came last: the name is its
        expected = {"y/data.bin": digest(b"moved\n")}
    assert files(tree) == expected
    for device in pair:
        assert state_vs_backend(device, inspector) == [], device.label


def test_rename_over_with_a_source_deleted_elsewhere(
    pair: list[Device], mount_factory: Devices, inspector: ApiClient
) -> None:
    """The laptop renames x.txt over a.txt while the desktop deletes x.txt first: the
    delete wins, so the rename never happens and a.txt, which it would have replaced,
    comes back on the laptop with its content (a regression: the laptop lost a.txt while
    the backend kept it, and kept its row as a tombstone)."""
    laptop, desktop = pair
    setup_base(pair, {"x.txt": b"moved\n", "a.txt": b"would be replaced\n"})
    laptop.link.cut()
    desktop.link.cut()
    os.rename(laptop.root / "x.txt", laptop.root / "a.txt")
    os.unlink(desktop.root / "x.txt")
    desktop.link.restore()
    desktop.sync()
    converge(laptop, desktop)
    tree = trees(pair, mount_factory)
    assert files(tree) == {"a.txt": digest(b"would be replaced\n")}
    for device in pair:
        assert state_vs_backend(device, inspector) == [], device.label


def test_restored_folder_goes_where_the_backend_restored_it(
    pair: list[Device], mount_factory: Devices, inspector: ApiClient
) -> None:
    """The desktop moves y to x/x and deletes it; the offline laptop adds to y. The
    laptop's first push restores the folder on the backend, where it was deleted (x/x):
    the laptop must put it there too, since the restore's version makes its pull skip the
    move (a regression: the laptop kept it as y while the backend and the desktop had x/x).
    The laptop syncs unmounted, which pushes before it pulls, as a mount may."""
    laptop, desktop = pair
    setup_base(pair, {"x": None, "y": None})
    laptop.link.cut()
    os.rename(desktop.root / "y", desktop.root / "x" / "x")
    (desktop.root / "x" / "x").rmdir()
    desktop.sync()
    (laptop.root / "y" / "z").mkdir()
    (laptop.root / "y" / "data.bin").write_bytes(b"added offline\n")
    laptop.mount.stop()  # gives up on the final flush quickly: nothing answers
    laptop.link.restore()
    synced = laptop.mount.sync()
    assert synced.returncode == 0, synced.stderr
    assert state_vs_backend(laptop, inspector) == []
    laptop.mount.start()
    converge(desktop, laptop)
    tree = trees(pair, mount_factory)
    assert set(tree) == {"x", "x/x", "x/x/z", "x/x/data.bin"}
    assert files(tree) == {"x/x/data.bin": digest(b"added offline\n")}
    for device in pair:
        assert state_vs_backend(device, inspector) == [], device.label


def test_folder_kept_for_a_move_into_it_stays_without_what_was_deleted_here(
    pair: list[Device], mount_factory: Devices, inspector: ApiClient
) -> None:
    """The desktop moves z into a; the offline laptop deletes a, then z/x. The laptop's
    delete of a is refused (not empty any more) and it lists a again: z comes into it, but
    z/x, whose delete is still queued, must stay deleted (a regression: the listing brought
    x back, then its delete went through, and the laptop kept a/z/x that nobody else had)."""
    laptop, desktop = pair
    setup_base(pair, {"a": None, "z/x": None, "z/keep.txt": b"kept\n"})
    laptop.link.cut()
    os.rename(desktop.root / "z", desktop.root / "a" / "z")
    desktop.sync()
    (laptop.root / "a").rmdir()
    (laptop.root / "z" / "x").rmdir()
    converge(laptop, desktop)
    tree = trees(pair, mount_factory)
    assert set(tree) == {"a", "a/z", "a/z/keep.txt"}
    for device in pair:
        assert state_vs_backend(device, inspector) == [], device.label


def test_the_same_rename_over_on_both_devices(
    pair: list[Device], mount_factory: Devices, inspector: ApiClient
) -> None:
    """Both devices rename a.txt over b.txt. The second one's rename finds it done: nothing
    is left to send, and the b.txt it replaced is gone here too (a regression: the backend
    refused the replayed rename-over as a bad request, the device logged an error and kept
    the replaced file's row)."""
    laptop, desktop = pair
    setup_base(pair, {"a.txt": b"renamed\n", "b.txt": b"replaced\n"})
    laptop.link.cut()
    desktop.link.cut()
    for device in pair:
        os.rename(device.root / "a.txt", device.root / "b.txt")
    desktop.link.restore()
    desktop.sync()
    converge(laptop, desktop)
    assert files(trees(pair, mount_factory)) == {"b.txt": digest(b"renamed\n")}
    for device in pair:
        assert state_vs_backend(device, inspector) == [], device.label


def test_edit_beats_a_rename_then_delete(
    pair: list[Device], mount_factory: Devices, inspector: ApiClient
) -> None:
    """The desktop renames f.txt and then deletes it while the laptop edits it, first. The
    desktop's rename meets the edit as a stale version: rebased, it would carry the delete
    behind it on the fresh version, past the edit (a regression: the edit was lost). The
    edit beats the delete: the file stays, with the edit, where the laptop has it."""
    laptop, desktop = pair
    setup_base(pair, {"f.txt": b"base\n"})
    laptop.link.cut()
    desktop.link.cut()
    os.rename(desktop.root / "f.txt", desktop.root / "g.txt")
    os.unlink(desktop.root / "g.txt")
    edit_in_place(laptop.root / "f.txt", b"edited\n")
    laptop.link.restore()
    laptop.sync()
    converge(desktop, laptop)
    assert files(trees(pair, mount_factory)) == {"f.txt": digest(b"edited\n")}
    for device in pair:
        assert state_vs_backend(device, inspector) == [], device.label


def test_both_edit_and_one_renames(
    pair: list[Device], mount_factory: Devices, inspector: ApiClient
) -> None:
    """The desktop edits c and syncs while the offline laptop edits c and renames it to
    b.txt (seed 1 of the randomized run). Both edited: the desktop's edit is the head, the
    laptop's is kept as a conflicted copy, and the rename applies to the file that carries
    the name (a regression: the laptop showed the winner under the old name)."""
    laptop, desktop = pair
    setup_base(pair, {"c": b"base\n" * 100})
    laptop.link.cut()
    edit_in_place(desktop.root / "c", b"desktop edit\n" * 100)
    desktop.sync()
    edit_in_place(laptop.root / "c", b"laptop edit\n" * 100)
    os.rename(laptop.root / "c", laptop.root / "b.txt")
    converge(laptop, desktop)
    seen = files(trees(pair, mount_factory))
    assert seen.pop("b.txt") == digest(b"desktop edit\n" * 100)
    (copy, content), *rest = seen.items()
    assert not rest, seen
    assert re.fullmatch(r"b" + COPY.format(device="laptop") + r"\.txt", copy), copy
    assert content == digest(b"laptop edit\n" * 100)
    for device in pair:
        assert state_vs_backend(device, inspector) == [], device.label


def test_crossing_moves_with_a_move_undone_elsewhere(
    pair: list[Device], mount_factory: Devices, inspector: ApiClient
) -> None:
    """The offline laptop moves y into x while the desktop moves x into y and then back
    out. The laptop pushes before it pulls: its move is accepted (x is back at the top),
    so the desktop's first move, pulled afterwards, closes a cycle here with no queued move
    of ours to blame. The applier takes y out of x for the moment, and the laptop must then
    put it where the backend has it, in x (a regression: y stayed at the top for good)."""
    laptop, desktop = pair
    setup_base(pair, {"x/in-x.txt": b"x\n", "y/in-y.txt": b"y\n"})
    laptop.link.cut()
    os.rename(laptop.root / "y", laptop.root / "x" / "y")
    os.rename(desktop.root / "x", desktop.root / "y" / "x")
    desktop.sync()
    os.rename(desktop.root / "y" / "x", desktop.root / "x")
    desktop.sync()
    laptop.mount.stop()  # gives up on the final flush quickly: nothing answers
    laptop.link.restore()
    synced = laptop.mount.sync()  # unmounted: pushes, then pulls
    assert synced.returncode == 0, synced.stderr
    assert state_vs_backend(laptop, inspector) == []
    laptop.mount.start()
    converge(desktop, laptop)
    tree = trees(pair, mount_factory)
    assert set(tree) == {"x", "x/in-x.txt", "x/y", "x/y/in-y.txt"}
    for device in pair:
        assert state_vs_backend(device, inspector) == [], device.label


def test_folder_deleted_elsewhere_goes_once_a_rename_in_it_lost(
    pair: list[Device], mount_factory: Devices, inspector: ApiClient
) -> None:
    """The laptop renames z/a.txt to z/b.txt while the desktop deletes z; the laptop pulls
    the deletes before it pushes its rename (seed 33 of the randomized run): the pull keeps
    z (a queued rename is in it) and the file; the rename is refused, the delete wins for
    the file, and then for z too (a regression: the laptop kept an empty z for good).
    The laptop's push is held back by a slow upload (`--bwlimit`): a push round commits
    files under the same lock, so the rename waits while the pull goes on."""
    laptop, desktop = pair
    setup_base(pair, {"z/a.txt": b"base\n", "keep.txt": b"k\n"})
    laptop.mount.stop()
    laptop.mount.extra_args = ("--bwlimit", "64K:off")
    laptop.mount.start()
    (laptop.root / "slow.bin").write_bytes(os.urandom(512 << 10))  # ~8 s to upload
    wait_for(lambda: laptop.mount.live_status()["transfers"] or None, 10, "the upload starts")
    os.rename(laptop.root / "z" / "a.txt", laptop.root / "z" / "b.txt")
    (desktop.root / "z" / "a.txt").unlink()
    (desktop.root / "z").rmdir()
    (desktop.root / "marker.txt").write_bytes(b"after the deletes\n")
    desktop.sync()
    wait_for(lambda: (laptop.root / "marker.txt").exists() or None, 10, "the laptop pulls")
    assert laptop.mount.live_status()["pending_changes"] > 0, "the rename went out first"
    converge(laptop, desktop)
    tree = trees(pair, mount_factory)
    assert set(tree) == {"keep.txt", "slow.bin", "marker.txt"}
    for device in pair:
        assert state_vs_backend(device, inspector) == [], device.label


def test_a_folder_restored_for_a_move_into_it_stays_deleted_here(
    pair: list[Device], mount_factory: Devices, inspector: ApiClient
) -> None:
    """The offline laptop moves notes.md into z/z and then deletes z with everything in it,
    while the desktop deletes z/z (seed 50 of the randomized run). The laptop's move meets
    the deleted z/z: it restores z/z on the backend to send the move, and then its own
    deletes go through. z/z must not come back on the laptop meanwhile (a regression: the
    restore brought the row back here and the laptop kept z/z, deleted everywhere else)."""
    laptop, desktop = pair
    setup_base(pair, {"z/z": None, "notes.md": b"notes\n", "keep.txt": b"k\n"})
    laptop.link.cut()
    os.rename(laptop.root / "notes.md", laptop.root / "z" / "z" / "c")
    (laptop.root / "z" / "z" / "c").unlink()
    (laptop.root / "z" / "z").rmdir()
    (laptop.root / "z").rmdir()
    (desktop.root / "z" / "z").rmdir()
    desktop.sync()
    converge(laptop, desktop)
    assert set(trees(pair, mount_factory)) == {"keep.txt"}
    for device in pair:
        assert state_vs_backend(device, inspector) == [], device.label


def test_edit_beats_the_delete_of_its_folder(
    pair: list[Device], mount_factory: Devices, inspector: ApiClient
) -> None:
    """The desktop edits proj/f.txt first; the offline laptop deletes proj with it. The
    laptop's delete of f.txt loses to the edit, and so does its delete of proj (not empty
    any more): both stay, with the edit, on every device (seed 55 of the randomized run
    found the laptop adopting f.txt into a folder it had removed, over and over)."""
    laptop, desktop = pair
    setup_base(pair, {"proj/f.txt": b"base\n", "proj/g.txt": b"g\n"})
    laptop.link.cut()
    edit_in_place(desktop.root / "proj" / "f.txt", b"edited\n")
    desktop.sync()
    for name in ("f.txt", "g.txt"):
        (laptop.root / "proj" / name).unlink()
    (laptop.root / "proj").rmdir()
    converge(laptop, desktop)
    assert files(trees(pair, mount_factory)) == {"proj/f.txt": digest(b"edited\n")}
    for device in pair:
        assert state_vs_backend(device, inspector) == [], device.label


def test_a_folder_restored_as_a_parent_comes_back_on_the_device_that_restored_it(
    pair: list[Device], mount_factory: Devices, inspector: ApiClient
) -> None:
    """The laptop moves notes.md into z/z and deletes z with it, first; the desktop edited
    notes.md and deleted z/z meanwhile, then moves notes.md to z/data.bin (seed 50 of the
    randomized run). The edit beats the delete: the desktop restores notes.md where it was
    deleted, z/z and z with it, then moves it. z/z is live on the backend again, so the
    desktop must have it too (a regression: its row was purged and it never came back)."""
    laptop, desktop = pair
    setup_base(pair, {"z/z": None, "notes.md": b"notes\n"})
    laptop.link.cut()
    desktop.link.cut()
    os.rename(laptop.root / "notes.md", laptop.root / "z" / "z" / "c")
    shutil.rmtree(laptop.root / "z")
    edit_in_place(desktop.root / "notes.md", b"edited\n")
    (desktop.root / "z" / "z").rmdir()
    os.rename(desktop.root / "notes.md", desktop.root / "z" / "data.bin")
    laptop.link.restore()
    laptop.sync()
    converge(desktop, laptop)
    tree = trees(pair, mount_factory)
    assert files(tree) == {"z/data.bin": digest(b"edited\n")}
    assert set(tree) == {"z", "z/z", "z/data.bin"}
    for device in pair:
        assert state_vs_backend(device, inspector) == [], device.label
