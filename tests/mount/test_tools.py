"""Everyday tools on the mount: cp, mv, rm, tar, rsync, git, sqlite3, an editor's save."""

from __future__ import annotations

import os
import random
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

from tests.mount.conftest import Roundtrip
from tests.support.mount import tree_manifest


def run(*cmd: str | Path, cwd: Path | None = None) -> str:
    result = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, f"{cmd}: {result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """A small project-like tree on the local disk."""
    rng = random.Random(7)
    src = tmp_path / "src"
    for d in range(4):
        folder = src / f"dir{d}" / "nested"
        folder.mkdir(parents=True)
        for f in range(6):
            size = rng.choice([0, 1, 100, 4096, 70_000, 1_300_000])
            (src / f"dir{d}" / f"file{f}.bin").write_bytes(rng.randbytes(size))
        (folder / "deep.txt").write_text(f"deep {d}\n" * 50)
    (src / "README").write_text("hello\n")
    (src / "script.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(src / "script.sh", 0o755)
    os.symlink("dir0/file0.bin", src / "link")
    os.utime(src / "README", ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))
    return src


def test_cp_mv_rm(work: Path, source: Path, tmp_path: Path, roundtrip: Roundtrip) -> None:
    run("cp", "-a", source, work / "copy")
    assert tree_manifest(work / "copy") == tree_manifest(source)
    run("cp", "-r", work / "copy", tmp_path / "back")
    assert tree_manifest(tmp_path / "back", times=False) == tree_manifest(source, times=False)
    run("mv", work / "copy" / "dir1", work / "copy" / "dir0" / "moved")
    run("mv", work / "copy" / "README", work / "README.md")
    assert (work / "README.md").read_text() == "hello\n"
    assert (work / "copy" / "dir0" / "moved" / "nested" / "deep.txt").exists()
    run("mv", tmp_path / "back", work / "from-local")  # across filesystems: copy + delete
    assert tree_manifest(work / "from-local", times=False) == tree_manifest(source, times=False)
    run("mv", work / "from-local", tmp_path / "to-local")
    assert tree_manifest(tmp_path / "to-local", times=False) == tree_manifest(source, times=False)
    run("rm", "-r", work / "copy")
    assert sorted(os.listdir(work)) == ["README.md"]
    roundtrip()


def test_tar_both_ways(work: Path, source: Path, tmp_path: Path, roundtrip: Roundtrip) -> None:
    archive = tmp_path / "src.tar"
    run("tar", "-cf", archive, "-C", source, ".")
    run("tar", "-xf", archive, "-C", work)
    (tmp_path / "reference").mkdir()  # tar keeps whole seconds: compare with a local extract
    run("tar", "-xf", archive, "-C", tmp_path / "reference")
    assert tree_manifest(work) == tree_manifest(tmp_path / "reference")
    again = tmp_path / "again.tar"
    run("tar", "-cf", again, "-C", work, ".")
    (tmp_path / "out").mkdir()
    run("tar", "-xf", again, "-C", tmp_path / "out")
    assert tree_manifest(tmp_path / "out") == tree_manifest(tmp_path / "reference")
    roundtrip()


def test_rsync_and_incremental_update(work: Path, source: Path, roundtrip: Roundtrip) -> None:
    run("rsync", "-a", f"{source}/", f"{work}/")
    assert tree_manifest(work) == tree_manifest(source)
    (source / "dir2" / "file3.bin").write_bytes(b"changed")
    (source / "new.txt").write_text("new\n")
    os.unlink(source / "dir0" / "file1.bin")
    out = run("rsync", "-a", "--delete", "--itemize-changes", f"{source}/", f"{work}/")
    changed = {line.split(" ", 1)[1] for line in out.splitlines() if line.strip()}
    assert "dir2/file3.bin" in changed
    assert "new.txt" in changed
    assert "dir0/file5.bin" not in changed  # untouched files are not copied again
    assert tree_manifest(work) == tree_manifest(source)
    roundtrip()


def test_git_workflow(work: Path, roundtrip: Roundtrip) -> None:
    git = [
        "git",
        "-c",
        "user.name=T",
        "-c",
        "user.email=t@example.com",
        "-c",
        "init.defaultBranch=main",
    ]
    run(*git, "init", "-q", cwd=work)
    (work / "a.txt").write_text("one\n")
    (work / "sub").mkdir()
    (work / "sub" / "b.txt").write_text("two\n")
    run(*git, "add", "-A", cwd=work)
    run(*git, "commit", "-q", "-m", "first", cwd=work)
    run(*git, "checkout", "-q", "-b", "feature", cwd=work)
    (work / "a.txt").write_text("one\nchanged\n")
    os.unlink(work / "sub" / "b.txt")
    run(*git, "commit", "-q", "-am", "second", cwd=work)
    assert run(*git, "log", "--format=%s", cwd=work).split() == ["second", "first"]
    run(*git, "checkout", "-q", "main", cwd=work)
    assert (work / "a.txt").read_text() == "one\n"
    assert (work / "sub" / "b.txt").read_text() == "two\n"
    assert run(*git, "status", "--porcelain", cwd=work) == ""
    run(*git, "gc", "-q", cwd=work)
    run(*git, "fsck", "--strict", cwd=work)
    roundtrip()


@pytest.mark.parametrize("journal", ["wal", "delete"])
def test_sqlite_database_on_the_mount(work: Path, journal: str, roundtrip: Roundtrip) -> None:
    path = work / "app.db"
    db = sqlite3.connect(path)
    assert db.execute(f"PRAGMA journal_mode={journal}").fetchone()[0] == journal
    db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, payload BLOB)")
    for batch in range(20):
        with db:
            db.executemany(
                "INSERT INTO t (payload) VALUES (?)", [(os.urandom(300),) for _ in range(50)]
            )
        if batch % 5 == 0:
            with db:
                db.execute("DELETE FROM t WHERE id % 7 = 0")
    count = db.execute("SELECT count(*) FROM t").fetchone()[0]
    db.close()
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("SELECT count(*) FROM t").fetchone()[0] == count
    finally:
        db.close()
    roundtrip()


def test_vim_edit_with_swap_file(work: Path, roundtrip: Roundtrip) -> None:
    """vim keeps a swap file beside the file while editing and removes it at the end."""
    vim = shutil.which("vim")
    if vim is None:
        pytest.skip("vim is not installed")
    path = work / "notes.txt"
    path.write_text("line one\n")
    run(vim, "-E", "-s", "-u", "NONE", "-N", "-c", "normal Goline two", "-c", "wq", path)
    assert path.read_text() == "line one\nline two\n"
    assert sorted(os.listdir(work)) == ["notes.txt"]
    roundtrip()


def test_save_by_rename(work: Path, roundtrip: Roundtrip) -> None:
    """What gedit, VS Code and config writers do: temp file, fsync, rename over the original,
    while a reader still holds the old version open."""
    target = work / "config.json"
    target.write_text('{"v": 0}')
    reader = open(target, "rb")  # noqa: SIM115
    for version in range(1, 6):
        tmp = work / f".config.json.{version}.tmp"
        fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o644)
        os.write(fd, f'{{"v": {version}}}'.encode())
        os.fsync(fd)
        os.close(fd)
        os.rename(tmp, target)
    assert target.read_text() == '{"v": 5}'
    assert os.listdir(work) == ["config.json"]
    assert reader.read() == b'{"v": 0}'  # the replaced version stays readable while open
    reader.close()
    roundtrip()
