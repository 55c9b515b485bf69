"""Handles (per-inode open and writer counts) and `user.*` extended attributes."""

from __future__ import annotations

import os

import pytest

from mountfs.types import InodeNo
from mountfs.vfs.errors import BadHandle, NoAttribute, NotFound, NotSupported
from mountfs.vfs.handles import Handles
from tests.unit.vfs.conftest import CALLER, ROOT, Env


def test_handle_numbers_are_not_reused_and_writers_are_counted() -> None:
    handles = Handles()
    reader = handles.open_file(InodeNo(5), os.O_RDONLY)
    writer = handles.open_file(InodeNo(5), os.O_WRONLY | os.O_APPEND)
    assert handles.open_count(5) == 2
    assert handles.open_for_write(5)
    handles.close_file(writer.fh)
    assert not handles.open_for_write(5)
    again = handles.open_file(InodeNo(5), os.O_RDWR)
    assert again.fh not in (reader.fh, writer.fh)
    handles.close_file(reader.fh)
    handles.close_file(again.fh)
    assert handles.open_count(5) == 0
    with pytest.raises(BadHandle):
        handles.file(reader.fh)


def test_user_xattrs_only(env: Env) -> None:
    xattrs = env.vfs.xattrs
    node = env.vfs.tree.create_file(ROOT, b"f", 0o644, CALLER)
    xattrs.set(node.ino, b"user.a", b"1")
    xattrs.set(node.ino, b"user.a", b"22")
    xattrs.set(node.ino, b"user.b", b"")
    assert xattrs.list(node.ino) == [b"user.a", b"user.b"]
    assert xattrs.get(node.ino, b"user.a") == b"22"
    xattrs.remove(node.ino, b"user.b")
    with pytest.raises(NoAttribute):
        xattrs.get(node.ino, b"user.b")
    with pytest.raises(NoAttribute):
        xattrs.remove(node.ino, b"user.b")
    for name in (b"trusted.a", b"security.selinux", b"system.posix_acl_access", b"user."):
        with pytest.raises(NotSupported):
            xattrs.set(node.ino, name, b"x")
    with pytest.raises(NotFound):
        xattrs.get(9999, b"user.a")
    env.vfs.tree.unlink(ROOT, b"f")  # the attributes go with the purged node
    assert env.db.conn.execute("SELECT count(*) FROM xattrs").fetchone()[0] == 0
