"""A randomized run of concurrent changes on two devices (seeded; the seed is printed).

Each round, one or both devices lose their link (`tests.support.netcut`) and both make
random changes to the same small tree (new files, in-place edits, appends, deletes,
renames over other files, new folders, `rm -r`, folder moves), so every kind of conflict
comes up: both edit a file, edit vs delete, a file added to a folder deleted elsewhere,
crossing moves, the same name created twice. A device whose link is up syncs in the
background meanwhile. Then the links come back and `mountfs sync` runs on both.

After every round both devices must show the same tree (and, at the end, a fresh device
too), the state database of each must agree with the backend node by node (folder, name,
version, head revision: `state_vs_backend`), and no acknowledged byte may be lost: every
content a device wrote during the round and still had when the round ended is somewhere in
the converged tree (the rules say an edit always survives: beside the winner as a
conflicted copy, or instead of a delete).

`MOUNTFS_RANDOM_SEED` replays a run (the rounds also depend on timing: a round ends after
`seconds`, and background syncs race with the changes). The default run (in CI, about 20 s)
uses a fixed seed so that a red CI always means a change broke something; the slow one
(`--runslow`, about two minutes) draws a new seed every time to keep exploring. Every
divergence a seed found is also a deterministic test of its own in `test_conflicts.py`
(seed 1: both edit a file and one renames it; seed 33: a rename in a folder deleted
elsewhere, pulled before the push; and crossing moves with a move undone elsewhere).
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import time
from pathlib import Path

import pytest

from tests.support.api_client import ApiClient
from tests.support.mount import Devices, MountError, manifest_diff, tree_manifest, wait_for
from tests.sync.test_conflicts import Device, pair, state_vs_backend

__all__ = ["pair"]

FILE_NAMES = ("a.txt", "b.txt", "notes.md", "data.bin", "c")
DIR_NAMES = ("x", "y", "z")
MAX_DEPTH = 3
CI_SEED = 22
"""The short run's seed: one that passed with every fix in (others are tried by --runslow)."""
HISTORY = 300
"""Lines of the run's history (rounds and changes) shown with a failure."""


class Actor:
    """One device's random changes, chosen from what its mount shows right now."""

    def __init__(self, device: Device, rng: random.Random) -> None:
        self.device = device
        self.rng = rng
        self.written: set[str] = set()
        self.counter = 0

    def _dirs(self) -> list[Path]:
        root = self.device.root
        found = [root]
        for base, dirs, _ in os.walk(root):
            found += [Path(base) / d for d in dirs]
        return [d for d in found if len(d.relative_to(root).parts) < MAX_DEPTH]

    def _files(self) -> list[Path]:
        found = []
        for base, _, names in os.walk(self.device.root):
            found += [Path(base) / n for n in names]
        return found

    def _content(self) -> bytes:
        self.counter += 1
        tag = f"{self.device.label}-{self.counter}-{self.rng.random()}\n".encode()
        data = tag * self.rng.choice((1, 10, 200, 3000))
        self.written.add(hashlib.sha256(data).hexdigest())
        return data

    def step(self) -> str:
        """Make one random change; returns what it did (for the failure message)."""
        rng = self.rng
        files, dirs = self._files(), self._dirs()
        kind = rng.choice(
            ["new", "new", "edit", "edit", "append", "delete", "rename", "mkdir", "rmtree", "mvdir"]
        )
        if kind in ("edit", "append", "delete", "rename") and not files:
            kind = "new"
        if kind == "new":
            path = rng.choice(dirs) / rng.choice(FILE_NAMES)
            if path.exists():
                return f"skip new {path}"
            path.write_bytes(self._content())
        elif kind == "edit":
            path = rng.choice(files)
            with open(path, "r+b") as f:
                f.truncate(0)
                f.write(self._content())
        elif kind == "append":
            path = rng.choice(files)
            old = path.read_bytes()
            extra = self._content()
            self.written.discard(hashlib.sha256(extra).hexdigest())
            with open(path, "ab") as f:
                f.write(extra)
            self.written.add(hashlib.sha256(old + extra).hexdigest())
        elif kind == "delete":
            path = rng.choice(files)
            path.unlink()
        elif kind == "rename":
            path = rng.choice(files)
            target = rng.choice(dirs) / rng.choice(FILE_NAMES)
            if target.is_dir():
                return f"skip rename onto folder {target}"
            os.rename(path, target)
            return f"rename {path} -> {target}"
        elif kind == "mkdir":
            path = rng.choice(dirs) / rng.choice(DIR_NAMES)
            if path.exists():
                return f"skip mkdir {path}"
            path.mkdir()
        elif kind == "rmtree":
            candidates = [d for d in dirs if d != self.device.root]
            if not candidates:
                return "skip rmtree"
            path = rng.choice(candidates)
            shutil.rmtree(path)
        else:
            candidates = [d for d in dirs if d != self.device.root]
            if not candidates:
                return "skip mvdir"
            path = rng.choice(candidates)
            target_dir = rng.choice(dirs)
            target = target_dir / rng.choice(DIR_NAMES)
            if target.exists() or target_dir == path or path in target_dir.parents:
                return f"skip mvdir {path} -> {target}"
            os.rename(path, target)
            return f"mvdir {path} -> {target}"
        return f"{kind} {path}"


def _hashes(root: Path) -> set[str]:
    return {str(e[3]) for e in tree_manifest(root, times=False).values() if e[0] == "file"}


def _agree(devices: list[Device]) -> dict[str, tuple[object, ...]]:
    """Both devices show the same tree (give the kernel a moment to hear of changes)."""

    def agreed() -> dict[str, tuple[object, ...]] | None:
        first = tree_manifest(devices[0].root, times=False)
        return first if tree_manifest(devices[1].root, times=False) == first else None

    try:
        return wait_for(agreed, 10, "both devices show the same tree")
    except AssertionError:
        first = tree_manifest(devices[0].root, times=False)
        diff = manifest_diff(first, tree_manifest(devices[1].root, times=False))
        raise AssertionError("the devices differ:\n" + "\n".join(diff)) from None


def run(
    pair: list[Device],
    mount_factory: Devices,
    inspector: ApiClient,
    seconds: float,
    min_rounds: int,
    seed: int | None = None,
) -> None:
    drawn = seed if seed is not None else random.randrange(1 << 32)
    seed = int(os.environ.get("MOUNTFS_RANDOM_SEED", drawn))
    print(f"MOUNTFS_RANDOM_SEED={seed}")
    rng = random.Random(seed)
    actors = [Actor(device, random.Random(rng.random())) for device in pair]
    started = time.monotonic()
    rounds = 0
    log: list[str] = []
    while rounds < min_rounds or time.monotonic() - started < seconds:
        rounds += 1
        offline = rng.choice([pair, [pair[0]], [pair[1]]])
        for device in offline:
            device.link.cut()
        log.append(f"round {rounds}: offline {[d.label for d in offline]}")
        for actor in actors:
            actor.written.clear()
        for _ in range(rng.randrange(4, 16)):
            actor = rng.choice(actors)
            done = actor.step().replace(f"{actor.device.root}/", "")
            log.append(f"  {actor.device.label}: {done}")
        kept = [actor.written & _hashes(actor.device.root) for actor in actors]
        order = list(pair)
        rng.shuffle(order)
        try:
            for device in order:
                device.link.restore()
                device.sync()
            for device in order:
                device.sync()
            tree = _agree(pair)
        except (AssertionError, MountError) as exc:
            message = f"seed {seed}, round {rounds}: {exc}\n" + "\n".join(log[-HISTORY:])
            raise AssertionError(message) from None
        for device in pair:
            wrong = state_vs_backend(device, inspector)
            assert not wrong, (
                f"seed {seed}, round {rounds}: {device.label}'s state differs from the "
                "backend:\n" + "\n".join(wrong[:20]) + "\n" + "\n".join(log[-HISTORY:])
            )
        present = {str(e[3]) for e in tree.values() if e[0] == "file"}
        for actor, mine in zip(actors, kept, strict=True):
            lost = mine - present
            assert not lost, (
                f"seed {seed}, round {rounds}: {actor.device.label} lost {len(lost)} "
                "content(s) it had written\n" + "\n".join(log[-HISTORY:])
            )
    fresh = mount_factory("fresh")
    try:
        fresh.synced()
        diff = manifest_diff(_agree(pair), tree_manifest(fresh.mountpoint, times=False))
    finally:
        fresh.stop()
    assert not diff, f"seed {seed}: a fresh device sees another tree:\n" + "\n".join(diff)
    for device in pair:
        status = device.mount.live_status()
        assert (status["pending_files"], status["pending_changes"]) == (0, 0), status
    print(f"{rounds} rounds in {time.monotonic() - started:.1f}s")


def test_random_concurrent_changes_on_two_devices(
    pair: list[Device], mount_factory: Devices, inspector: ApiClient
) -> None:
    run(pair, mount_factory, inspector, seconds=12, min_rounds=3, seed=CI_SEED)


@pytest.mark.slow
def test_random_concurrent_changes_on_two_devices_long(
    pair: list[Device], mount_factory: Devices, inspector: ApiClient
) -> None:
    run(pair, mount_factory, inspector, seconds=120, min_rounds=20)
