"""Namespace operations through `Tree`, with POSIX errors and the outbox ops they queue."""

from __future__ import annotations

import stat

import pyfuse3
import pytest

from mountfs.state import outbox
from mountfs.vfs.errors import (
    AlreadyExists,
    InvalidArgument,
    InvalidName,
    IsADirectory,
    NameTooLong,
    NotADirectory,
    NotEmpty,
    NotFound,
    NotPermitted,
)
from mountfs.vfs.tree import AttrChange, Caller
from tests.unit.vfs.conftest import CALLER, ROOT, Env


def _ops(env: Env) -> list[tuple[str, str]]:
    return [(op.op, op.node_id) for op in outbox.pending(env.db.conn)]


def test_create_lookup_and_attributes(env: Env) -> None:
    tree = env.vfs.tree
    folder = tree.mkdir(ROOT, b"docs", 0o750, CALLER)
    note = tree.create_file(folder.ino, b"note.txt", 0o640, CALLER)
    link = tree.symlink(ROOT, b"ln", b"docs/note.txt", CALLER)
    assert tree.lookup(ROOT, b"docs").ino == folder.ino
    assert tree.lookup(folder.ino, b"note.txt") == note
    assert tree.lookup(folder.ino, b"..").ino == ROOT
    assert tree.lookup(folder.ino, b".").ino == folder.ino
    assert tree.get(folder.ino).mtime_ns >= folder.mtime_ns  # a new entry changes the dir
    assert (folder.kind, folder.mode, folder.uid, folder.gid) == ("dir", 0o750, 1000, 1000)
    assert tree.readlink(link.ino) == b"docs/note.txt"
    assert link.size == len(b"docs/note.txt")
    assert tree.nlink(tree.get(ROOT)) == 3
    assert tree.nlink(note) == 1
    assert _ops(env) == [
        ("create", folder.node_id),
        ("create", note.node_id),
        ("create", link.node_id),
    ]


def test_name_rules(env: Env) -> None:
    tree = env.vfs.tree
    tree.create_file(ROOT, b"a" * 255, 0o644, CALLER)
    with pytest.raises(NameTooLong):
        tree.create_file(ROOT, b"a" * 256, 0o644, CALLER)
    with pytest.raises(NameTooLong):
        tree.lookup(ROOT, b"b" * 300)
    with pytest.raises(InvalidName):
        tree.mkdir(ROOT, b"bad\xff", 0o755, CALLER)
    with pytest.raises(NotFound):
        tree.lookup(ROOT, b"bad\xff")
    with pytest.raises(InvalidName):
        tree.symlink(ROOT, b"s", b"\xfe", CALLER)
    with pytest.raises(NameTooLong):
        tree.symlink(ROOT, b"s", b"x" * 4097, CALLER)
    unicode = "Überprüfung 東京 🙂".encode()
    node = tree.create_file(ROOT, unicode, 0o644, CALLER)
    assert tree.lookup(ROOT, unicode) == node


def test_posix_errors(env: Env) -> None:
    tree = env.vfs.tree
    folder = tree.mkdir(ROOT, b"d", 0o755, CALLER)
    file = tree.create_file(folder.ino, b"f", 0o644, CALLER)
    with pytest.raises(AlreadyExists):
        tree.create_file(folder.ino, b"f", 0o644, CALLER)
    with pytest.raises(AlreadyExists):
        tree.mkdir(ROOT, b"d", 0o755, CALLER)
    with pytest.raises(NotFound):
        tree.lookup(ROOT, b"missing")
    with pytest.raises(NotADirectory):
        tree.create_file(file.ino, b"x", 0o644, CALLER)
    with pytest.raises(IsADirectory):
        tree.unlink(ROOT, b"d")
    with pytest.raises(NotADirectory):
        tree.rmdir(folder.ino, b"f")
    with pytest.raises(NotEmpty):
        tree.rmdir(ROOT, b"d")
    with pytest.raises(NotFound):
        tree.unlink(ROOT, b"missing")
    with pytest.raises(NotPermitted):
        tree.link(file.ino, ROOT, b"hard")
    with pytest.raises(NotPermitted):
        tree.mknod(ROOT, b"fifo", stat.S_IFIFO | 0o644, CALLER)
    regular = tree.mknod(ROOT, b"plain", stat.S_IFREG | 0o600, CALLER)
    assert regular.kind == "file"
    with pytest.raises(InvalidArgument):
        tree.readlink(file.ino)


def test_removed_directory_refuses_new_entries(env: Env) -> None:
    tree = env.vfs.tree
    folder = tree.mkdir(ROOT, b"gone", 0o755, CALLER)
    env.vfs.inodes.remember(folder.ino)  # a shell still has it as its cwd
    tree.rmdir(ROOT, b"gone")
    with pytest.raises(NotFound):
        tree.create_file(folder.ino, b"x", 0o644, CALLER)
    assert tree.nlink(tree.get(ROOT)) == 2
    env.vfs.inodes.forget(folder.ino, 1)
    with pytest.raises(NotFound):
        tree.get(folder.ino)


def test_rename_replaces_atomically(env: Env) -> None:
    tree = env.vfs.tree
    old = tree.create_file(ROOT, b"doc", 0o644, CALLER)
    env.mark_synced(old.ino)
    tmp = tree.create_file(ROOT, b"doc.tmp", 0o644, CALLER)
    tree.rename(ROOT, b"doc.tmp", ROOT, b"doc", 0)
    assert tree.lookup(ROOT, b"doc").ino == tmp.ino
    with pytest.raises(NotFound):
        tree.lookup(ROOT, b"doc.tmp")
    (create,) = outbox.pending(env.db.conn, unclaimed_only=False)[:1]
    ops = outbox.pending(env.db.conn)
    assert [op.op for op in ops] == ["create", "update"]
    assert ops[1].body["replace_id"] == old.node_id
    assert ops[1].body["name"] == "doc"
    assert create.node_id == tmp.node_id
    # The replaced node stays as a tombstone while the outbox names it.
    assert not tree.get(old.ino).linked


def test_rename_over_an_unsent_file_cancels_it(env: Env) -> None:
    tree = env.vfs.tree
    tree.create_file(ROOT, b"doc", 0o644, CALLER)
    tmp = tree.create_file(ROOT, b"doc.tmp", 0o644, CALLER)
    tree.rename(ROOT, b"doc.tmp", ROOT, b"doc", 0)
    ops = outbox.pending(env.db.conn)
    assert [(op.op, op.node_id, op.body["name"]) for op in ops] == [("create", tmp.node_id, "doc")]


def test_rename_flags(env: Env) -> None:
    tree = env.vfs.tree
    a = tree.create_file(ROOT, b"a", 0o644, CALLER)
    d = tree.mkdir(ROOT, b"d", 0o755, CALLER)
    with pytest.raises(AlreadyExists):
        tree.rename(ROOT, b"a", ROOT, b"d", pyfuse3.RENAME_NOREPLACE)
    tree.rename(ROOT, b"a", ROOT, b"d", pyfuse3.RENAME_EXCHANGE)
    assert tree.lookup(ROOT, b"a").ino == d.ino
    assert tree.lookup(ROOT, b"d").ino == a.ino
    with pytest.raises(NotFound):
        tree.rename(ROOT, b"a", ROOT, b"nothing", pyfuse3.RENAME_EXCHANGE)
    with pytest.raises(InvalidArgument):
        tree.rename(ROOT, b"a", ROOT, b"d", pyfuse3.RENAME_EXCHANGE | pyfuse3.RENAME_NOREPLACE)
    tree.rename(ROOT, b"d", ROOT, b"e", pyfuse3.RENAME_NOREPLACE)
    assert tree.lookup(ROOT, b"e").ino == a.ino


def test_rename_type_and_cycle_rules(env: Env) -> None:
    tree = env.vfs.tree
    top = tree.mkdir(ROOT, b"top", 0o755, CALLER)
    sub = tree.mkdir(top.ino, b"sub", 0o755, CALLER)
    tree.mkdir(ROOT, b"empty", 0o755, CALLER)
    full = tree.mkdir(ROOT, b"full", 0o755, CALLER)
    tree.create_file(full.ino, b"x", 0o644, CALLER)
    tree.create_file(ROOT, b"file", 0o644, CALLER)
    with pytest.raises(InvalidArgument):
        tree.rename(ROOT, b"top", sub.ino, b"loop", 0)
    with pytest.raises(InvalidArgument):
        tree.rename(ROOT, b"top", top.ino, b"self", 0)
    with pytest.raises(InvalidArgument):  # exchanging a dir with its own child
        tree.rename(top.ino, b"sub", ROOT, b"top", pyfuse3.RENAME_EXCHANGE)
    with pytest.raises(IsADirectory):
        tree.rename(ROOT, b"file", ROOT, b"empty", 0)
    with pytest.raises(NotADirectory):
        tree.rename(ROOT, b"top", ROOT, b"file", 0)
    with pytest.raises(NotEmpty):
        tree.rename(ROOT, b"top", ROOT, b"full", 0)
    tree.rename(ROOT, b"top", ROOT, b"empty", 0)  # over an empty directory: allowed
    assert tree.lookup(ROOT, b"empty").ino == top.ino
    tree.rename(top.ino, b"sub", full.ino, b"moved", 0)
    assert tree.nlink(tree.get(full.ino)) == 3
    assert tree.nlink(tree.get(top.ino)) == 2
    tree.rename(ROOT, b"file", ROOT, b"file", 0)  # same name: nothing happens


def test_readdir_offsets_survive_concurrent_changes(env: Env) -> None:
    tree = env.vfs.tree
    for i in range(200):
        tree.create_file(ROOT, f"f{i:03}".encode(), 0o644, CALLER)
    listing = tree.readdir(ROOT, 0)
    first = [next(listing) for _ in range(52)]
    assert [e.name for e in first[:2]] == [b".", b".."]
    assert not first[0].counted
    assert first[2].counted
    resume = first[-1].offset
    seen = {e.name for e in first[2:]}
    # Meanwhile: delete listed and unlisted names, add new ones, rename some.
    tree.unlink(ROOT, b"f000")
    tree.unlink(ROOT, b"f150")
    tree.rename(ROOT, b"f160", ROOT, b"renamed", 0)
    tree.create_file(ROOT, b"new", 0o644, CALLER)
    rest = [e.name for e in tree.readdir(ROOT, resume)]
    assert not seen & set(rest), "an entry came back twice"
    untouched = {f"f{i:03}".encode() for i in range(200)} - {b"f000", b"f150", b"f160"}
    assert untouched <= seen | set(rest), "an entry that existed throughout was skipped"
    assert b"f150" not in rest


def test_setattr_stores_nanoseconds_and_queues_mode_and_mtime(env: Env) -> None:
    tree = env.vfs.tree
    node = tree.create_file(ROOT, b"f", 0o644, CALLER)
    env.mark_synced(node.ino)
    changed = tree.setattr(
        node.ino,
        AttrChange(mode=stat.S_IFREG | 0o600, uid=7, gid=8, atime_ns=123, mtime_ns=1_000_000_001),
    )
    assert (changed.mode, changed.uid, changed.gid) == (0o600, 7, 8)
    assert (changed.atime_ns, changed.mtime_ns) == (123, 1_000_000_001)
    assert changed.ctime_ns >= node.ctime_ns
    (update,) = outbox.pending(env.db.conn)
    assert update.body["mode"] == 0o600
    assert update.body["mtime_ns"] == 1_000_000_001
    assert "uid" not in update.body  # owners are local only


def test_setattr_of_times_on_a_removed_file_answers_without_a_write(env: Env) -> None:
    """The kernel's eviction SETATTR after an unlink (writeback cache) costs no commit;
    other changes of a removed, still open file are stored as before."""
    tree = env.vfs.tree
    node = tree.create_file(ROOT, b"f", 0o644, CALLER)
    env.mark_synced(node.ino)
    env.vfs.inodes.remember(node.ino)  # the kernel still holds it: unlink keeps the row
    tree.unlink(ROOT, b"f")
    commits = env.db.commits
    changed = tree.setattr(node.ino, AttrChange(mtime_ns=5, ctime_ns=6))
    assert (changed.mtime_ns, changed.ctime_ns, changed.linked) == (5, 6, False)
    assert env.db.commits == commits
    assert tree.setattr(node.ino, AttrChange(mode=0o600)).mode == 0o600
    assert tree.get(node.ino).mode == 0o600


def test_setgid_directory_passes_its_group_on(env: Env) -> None:
    tree = env.vfs.tree
    shared = tree.mkdir(ROOT, b"shared", 0o2775, Caller(uid=1000, gid=50))
    inner = tree.mkdir(shared.ino, b"inner", 0o755, CALLER)
    file = tree.create_file(shared.ino, b"f", 0o644, CALLER)
    assert (inner.gid, file.gid) == (50, 50)
    assert inner.mode & stat.S_ISGID


def test_delete_of_a_synced_node_leaves_a_tombstone_until_pushed(env: Env) -> None:
    tree = env.vfs.tree
    node = tree.create_file(ROOT, b"f", 0o644, CALLER)
    env.mark_synced(node.ino, version=3)
    tree.unlink(ROOT, b"f")
    (delete,) = outbox.pending(env.db.conn)
    assert (delete.op, delete.node_id) == ("delete", node.node_id)
    tomb = tree.get(node.ino)
    assert tomb.remote_version == 3
    assert not tomb.linked
    with env.db.transaction() as conn:
        outbox.complete(conn, delete.seq)
    assert env.vfs.inodes.maybe_purge(node.ino)
    with pytest.raises(NotFound):
        tree.get(node.ino)


def test_create_then_delete_never_reaches_the_outbox(env: Env) -> None:
    tree = env.vfs.tree
    folder = tree.mkdir(ROOT, b"tmp", 0o755, CALLER)
    tree.create_file(folder.ino, b"a", 0o644, CALLER)
    tree.symlink(folder.ino, b"l", b"a", CALLER)
    tree.unlink(folder.ino, b"a")
    tree.unlink(folder.ino, b"l")
    tree.rmdir(ROOT, b"tmp")
    assert _ops(env) == []
    with pytest.raises(NotFound):
        tree.get(folder.ino)
