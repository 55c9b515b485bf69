"""Namespace operations with POSIX rules: lookup, create, mkdir, symlink, unlink, rmdir,
rename, setattr (everything but size) and readdir.

Each changing operation is one SQLite transaction that updates `nodes` *and* appends its
outbox op, so the tree and the queue of changes to push can never disagree. Every method
here is a plain `def`: no `await` can split a transaction (docs/client.md, "Atomicity").

What the kernel already checks with `default_permissions` (mode bits, ownership, sticky
directories, `rename` of an ancestor onto a descendant through the dentry cache) is not
repeated, except where a stale cache could let a request through (a move into its own
subtree is checked again against the database).
"""

from __future__ import annotations

import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any, NoReturn

import pyfuse3

from mountfs.ids import uuid7
from mountfs.state import nodes, outbox
from mountfs.state.db import StateDb
from mountfs.state.nodes import Kind, NewNode, Node
from mountfs.types import NodeId
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
from mountfs.vfs.inodes import Inodes

__all__ = [
    "NAME_MAX",
    "SYMLINK_MAX",
    "AttrChange",
    "Caller",
    "DirEntry",
    "Tree",
    "decode_name",
    "lookup_name",
]

NAME_MAX = 255
"""Longest name in bytes (the backend's limit, and ext4's); the kernel only stops at 1024."""

SYMLINK_MAX = 4096
"""Longest symlink target in bytes (PATH_MAX; the backend's limit)."""

_READDIR_PAGE = 64  # one READDIRPLUS reply holds a few dozen entries
_DOT_OFFSET = 1
_DOTDOT_OFFSET = 2
_FIRST_ENTRY_SHIFT = 2  # an entry's readdir offset is its ino + 2, above those of . and ..


def lookup_name(name: bytes) -> str | None:
    """The text of a name to look up; None if it cannot exist here (not UTF-8).

    Raises:
        NameTooLong: over 255 bytes (ENAMETOOLONG, not ENOENT, as on ext4).
    """
    if len(name) > NAME_MAX:
        raise NameTooLong(f"name of {len(name)} bytes")
    try:
        return name.decode("utf-8")
    except UnicodeDecodeError:
        return None


def decode_name(name: bytes) -> str:
    """The text of a name to create.

    Raises:
        NameTooLong: over 255 bytes.
        InvalidName: not UTF-8 (the backend stores names as text; see `InvalidName`).
    """
    text = lookup_name(name)
    if text is None:
        raise InvalidName(f"name {name!r} is not valid UTF-8")
    return text


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is asking (from the FUSE request context)."""

    uid: int
    gid: int


@dataclass(frozen=True, slots=True)
class AttrChange:
    """The attributes a setattr changes (None = unchanged); sizes go to `Files.truncate`."""

    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    atime_ns: int | None = None
    mtime_ns: int | None = None
    ctime_ns: int | None = None


def _times_only(change: AttrChange) -> bool:
    return change.mode is None and change.uid is None and change.gid is None


@dataclass(frozen=True, slots=True)
class DirEntry:
    """One readdir entry.

    Attributes:
        counted: False for `.` and `..`, which the kernel never turns into dentries, so they
            must not add to the lookup count.
    """

    name: bytes
    node: Node
    offset: int
    counted: bool


class Tree:
    """The namespace: the `nodes` rows, their names, and the outbox ops they cause."""

    def __init__(
        self, db: StateDb, inodes: Inodes, clock: Callable[[], int] = time.time_ns
    ) -> None:
        self._db = db
        self._inodes = inodes
        self._clock = clock

    # --- reading -------------------------------------------------------------------------

    def get(self, ino: int) -> Node:
        node = nodes.get(self._db.conn, ino)
        if node is None:
            raise NotFound(f"no inode {ino}")
        return node

    def nlink(self, node: Node) -> int:
        """2 + subdirectories for a directory; 1 for a file; 0 once removed (as on ext4)."""
        if not node.linked:
            return 0
        if node.kind == "dir":
            return 2 + nodes.subdir_count(self._db.conn, node.ino)
        return 1

    def lookup(self, parent_ino: int, name: bytes) -> Node:
        text = lookup_name(name)
        parent = self._dir(parent_ino)
        if name == b".":
            return parent
        if name == b"..":
            return parent if parent.parent_ino is None else self.get(parent.parent_ino)
        node = None if text is None else nodes.by_name(self._db.conn, parent.ino, text)
        if node is None:
            raise NotFound(f"no {name!r} in inode {parent_ino}")
        return node

    def readlink(self, ino: int) -> bytes:
        node = self.get(ino)
        if node.kind != "symlink" or node.target is None:
            raise InvalidArgument(f"inode {ino} is not a symlink")
        return node.target.encode("utf-8")

    def readdir(self, ino: int, offset: int) -> Iterator[DirEntry]:
        """Entries after `offset`, including `.` and `..`, in a stable order.

        Offsets: `.` is 1, `..` is 2, a child is its inode number + 2. Inode numbers never
        change or get reused, so an offset stays valid while entries come and go: a listing
        resumed from it never repeats or skips an entry that existed throughout.
        """
        node = self.get(ino)
        if node.kind != "dir":
            raise NotADirectory(f"inode {ino} is not a directory")
        if not node.linked:
            return  # a removed directory lists as empty, as on ext4
        if offset < _DOT_OFFSET:
            yield DirEntry(b".", node, _DOT_OFFSET, counted=False)
        if offset < _DOTDOT_OFFSET:
            parent = node if node.parent_ino is None else self.get(node.parent_ino)
            yield DirEntry(b"..", parent, _DOTDOT_OFFSET, counted=False)
        after = max(offset - _FIRST_ENTRY_SHIFT, 0)
        while True:
            page = nodes.children(self._db.conn, ino, after, _READDIR_PAGE)
            for child in page:
                assert child.name is not None
                yield DirEntry(
                    child.name.encode("utf-8"), child, child.ino + _FIRST_ENTRY_SHIFT, True
                )
            if len(page) < _READDIR_PAGE:
                return
            after = page[-1].ino

    # --- creating ------------------------------------------------------------------------

    def mkdir(self, parent_ino: int, name: bytes, mode: int, caller: Caller) -> Node:
        return self._add(parent_ino, name, "dir", mode, caller)

    def create_file(self, parent_ino: int, name: bytes, mode: int, caller: Caller) -> Node:
        return self._add(parent_ino, name, "file", mode, caller)

    def mknod(self, parent_ino: int, name: bytes, mode: int, caller: Caller) -> Node:
        """Regular files only: the backend stores no devices, FIFOs or sockets."""
        if not stat.S_ISREG(mode):
            raise NotPermitted("only regular files can be created with mknod")
        return self._add(parent_ino, name, "file", mode, caller)

    def symlink(self, parent_ino: int, name: bytes, target: bytes, caller: Caller) -> Node:
        if len(target) > SYMLINK_MAX:
            raise NameTooLong(f"symlink target of {len(target)} bytes")
        try:
            text = target.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidName(f"symlink target {target!r} is not valid UTF-8") from None
        return self._add(parent_ino, name, "symlink", 0o777, caller, target=text)

    def _add(
        self,
        parent_ino: int,
        name: bytes,
        kind: Kind,
        mode: int,
        caller: Caller,
        target: str | None = None,
    ) -> Node:
        text = decode_name(name)
        now = self._clock()
        with self._db.transaction() as conn:
            parent = self._dir(parent_ino)
            if nodes.by_name(conn, parent.ino, text) is not None:
                raise AlreadyExists(f"{name!r} exists in inode {parent_ino}")
            perms, gid = mode & 0o7777, caller.gid
            if parent.mode & stat.S_ISGID:  # BSD group semantics of a setgid directory
                gid = parent.gid
                if kind == "dir":
                    perms |= stat.S_ISGID
            node = nodes.insert(
                conn,
                NewNode(
                    node_id=NodeId(uuid7()),
                    parent_ino=parent.ino,
                    name=text,
                    kind=kind,
                    mode=perms,
                    uid=caller.uid,
                    gid=gid,
                    time_ns=now,
                    size=0 if target is None else len(target.encode("utf-8")),
                    target=target,
                ),
            )
            outbox.append_create(
                conn,
                node_id=node.node_id,
                parent_id=parent.node_id,
                name=text,
                kind=kind,
                mode=perms,
                mtime_ns=now,
                target=target,
            )
            self._touch_dir(parent.ino, now)
        return node

    # --- removing ------------------------------------------------------------------------

    def unlink(self, parent_ino: int, name: bytes) -> None:
        node = self._remove(parent_ino, name, want_dir=False)
        self._inodes.maybe_purge(node.ino)

    def rmdir(self, parent_ino: int, name: bytes) -> None:
        node = self._remove(parent_ino, name, want_dir=True)
        self._inodes.maybe_purge(node.ino)

    def _remove(self, parent_ino: int, name: bytes, *, want_dir: bool) -> Node:
        now = self._clock()
        with self._db.transaction() as conn:
            node = self._child(parent_ino, name)
            if want_dir and node.kind != "dir":
                raise NotADirectory(f"{name!r} is not a directory")
            if not want_dir and node.kind == "dir":
                raise IsADirectory(f"{name!r} is a directory")
            if want_dir and nodes.has_children(conn, node.ino):
                raise NotEmpty(f"{name!r} is not empty")
            self._detach(node, now)
            self._touch_dir(parent_ino, now)
        return node

    def _detach(self, node: Node, now: int) -> None:
        """Take away the node's name and queue its deletion (inside a transaction)."""
        conn = self._db.conn
        nodes.set_fields(conn, node.ino, {"parent_ino": None, "name": None, "ctime_ns": now})
        outbox.append_delete(conn, node.node_id)

    def link(self, ino: int, new_parent: int, new_name: bytes) -> NoReturn:
        """Hard links are refused at once: the backend's nodes have exactly one name.

        Emulating them with copies would break the promise of a link (one content, two
        names), and `git`, `rsync` and package managers all fall back to copies on EPERM.
        """
        raise NotPermitted("hard links are not supported")

    # --- rename --------------------------------------------------------------------------

    def rename(
        self, old_parent: int, old_name: bytes, new_parent: int, new_name: bytes, flags: int
    ) -> None:
        """rename(2) and renameat2(2) with RENAME_NOREPLACE or RENAME_EXCHANGE."""
        exchange = bool(flags & pyfuse3.RENAME_EXCHANGE)
        noreplace = bool(flags & pyfuse3.RENAME_NOREPLACE)
        if flags & ~(pyfuse3.RENAME_EXCHANGE | pyfuse3.RENAME_NOREPLACE) or (
            exchange and noreplace
        ):
            raise InvalidArgument(f"rename flags {flags:#x}")
        text = decode_name(new_name)
        now = self._clock()
        replaced: Node | None = None
        with self._db.transaction() as conn:
            src = self._child(old_parent, old_name)
            dst_dir = self._dir(new_parent)
            src_dir = self._dir(old_parent)
            dst = nodes.by_name(conn, dst_dir.ino, text)
            if dst is not None and dst.ino == src.ino:
                return  # both names are the same file: POSIX says do nothing
            if exchange:
                if dst is None:
                    raise NotFound(f"{new_name!r} does not exist (RENAME_EXCHANGE)")
                self._exchange(src, src_dir, dst, dst_dir, now)
            else:
                if dst is not None and noreplace:
                    raise AlreadyExists(f"{new_name!r} exists (RENAME_NOREPLACE)")
                replaced = self._move(src, src_dir, dst, dst_dir, text, now)
            self._touch_dir(src_dir.ino, now)
            self._touch_dir(dst_dir.ino, now)
        if replaced is not None:
            self._inodes.maybe_purge(replaced.ino)

    def _check_not_into_itself(self, moved: Node, new_parent: Node) -> None:
        if moved.kind == "dir" and nodes.ancestors_include(
            self._db.conn, new_parent.ino, moved.ino
        ):
            raise InvalidArgument("cannot move a directory into its own subtree")

    def _move(
        self, src: Node, src_dir: Node, dst: Node | None, dst_dir: Node, name: str, now: int
    ) -> Node | None:
        conn = self._db.conn
        self._check_not_into_itself(src, dst_dir)
        fields: dict[str, Any] = {}
        if dst is not None:
            if src.kind == "dir" and dst.kind != "dir":
                raise NotADirectory(f"{name!r} is not a directory")
            if src.kind != "dir" and dst.kind == "dir":
                raise IsADirectory(f"{name!r} is a directory")
            if dst.kind == "dir" and nodes.has_children(conn, dst.ino):
                raise NotEmpty(f"{name!r} is not empty")
            nodes.set_fields(conn, dst.ino, {"parent_ino": None, "name": None, "ctime_ns": now})
            if not outbox.cancel_unsent(conn, dst.node_id):
                fields["replace_id"] = dst.node_id
        nodes.set_fields(conn, src.ino, {"parent_ino": dst_dir.ino, "name": name, "ctime_ns": now})
        # A rename-over names its whole destination even where it did not change: the
        # replaced node's place is the point, wherever another device moved ours meanwhile.
        if dst_dir.ino != src_dir.ino or "replace_id" in fields:
            fields["parent_id"] = dst_dir.node_id
        if name != src.name or "replace_id" in fields:
            fields["name"] = name
        outbox.append_update(conn, src.node_id, fields)
        return dst

    def _exchange(self, a: Node, a_dir: Node, b: Node, b_dir: Node, now: int) -> None:
        """Swap two names atomically here; the backend gets three plain moves.

        The backend has no exchange op, and two live siblings may never share a name
        there, so b steps aside to a unique temporary name first.
        """
        conn = self._db.conn
        self._check_not_into_itself(a, b_dir)
        self._check_not_into_itself(b, a_dir)
        assert a.name is not None
        assert b.name is not None
        nodes.set_fields(conn, a.ino, {"parent_ino": None, "name": None})
        nodes.set_fields(conn, b.ino, {"parent_ino": a_dir.ino, "name": a.name, "ctime_ns": now})
        nodes.set_fields(conn, a.ino, {"parent_ino": b_dir.ino, "name": b.name, "ctime_ns": now})
        outbox.append_update(conn, b.node_id, {"name": f".mountfs-exchange-{uuid7()}"})
        outbox.append_update(conn, a.node_id, {"parent_id": b_dir.node_id, "name": b.name})
        outbox.append_update(conn, b.node_id, {"parent_id": a_dir.node_id, "name": a.name})

    # --- attributes ----------------------------------------------------------------------

    def setattr(self, ino: int, change: AttrChange) -> Node:
        """Apply mode/owner/time changes; queue what the backend stores (mode, mtime).

        Times alone on a removed node are answered without a write: with the writeback
        cache the kernel sends one such SETATTR (its own ctime/mtime) for every file it
        evicts after an unlink, and a removed node's times go nowhere (never to the
        backend; the row goes at the last close). The reply carries them, and the kernel
        keeps them for an open descriptor; skipping the transaction made `rm` of many
        files measurably cheaper (docs/benchmarks.md, "Where the time goes").
        """
        if _times_only(change):
            node = self.get(ino)
            if not node.linked:
                return replace(
                    node,
                    atime_ns=node.atime_ns if change.atime_ns is None else change.atime_ns,
                    mtime_ns=node.mtime_ns if change.mtime_ns is None else change.mtime_ns,
                    ctime_ns=node.ctime_ns if change.ctime_ns is None else change.ctime_ns,
                )
        now = self._clock()
        with self._db.transaction() as conn:
            node = self.get(ino)
            fields: dict[str, Any] = {}
            queued: dict[str, Any] = {}
            if change.mode is not None and (change.mode & 0o7777) != node.mode:
                fields["mode"] = queued["mode"] = change.mode & 0o7777
            if change.uid is not None and change.uid != node.uid:
                fields["uid"] = change.uid
            if change.gid is not None and change.gid != node.gid:
                fields["gid"] = change.gid
            if change.atime_ns is not None:
                fields["atime_ns"] = change.atime_ns
            if change.mtime_ns is not None and change.mtime_ns != node.mtime_ns:
                fields["mtime_ns"] = change.mtime_ns
                if not (node.kind == "file" and node.dirty):  # the commit will carry it
                    queued["mtime_ns"] = change.mtime_ns
            if change.ctime_ns is not None:
                fields["ctime_ns"] = change.ctime_ns
            elif fields:
                fields["ctime_ns"] = now
            nodes.set_fields(conn, ino, fields)
            if queued and node.linked:
                outbox.append_update(conn, node.node_id, queued)
        return self.get(ino)

    # --- helpers -------------------------------------------------------------------------

    def opendir(self, ino: int) -> Node:
        """A directory to list; a removed one (someone's cwd) can still be opened."""
        node = self.get(ino)
        if node.kind != "dir":
            raise NotADirectory(f"inode {ino} is not a directory")
        return node

    def _dir(self, ino: int) -> Node:
        """A linked directory to look in or change (ENOENT once removed, as on ext4)."""
        node = self.get(ino)
        if node.kind != "dir":
            raise NotADirectory(f"inode {ino} is not a directory")
        if not node.linked:
            raise NotFound(f"directory inode {ino} was removed")
        return node

    def _child(self, parent_ino: int, name: bytes) -> Node:
        """The node a name to change refers to (`.` and `..` are never such names)."""
        if name in (b".", b".."):
            raise InvalidArgument(f"cannot change the entry {name!r}")
        return self.lookup(parent_ino, name)

    def _touch_dir(self, ino: int, now: int) -> None:
        nodes.set_fields(self._db.conn, ino, {"mtime_ns": now, "ctime_ns": now})
