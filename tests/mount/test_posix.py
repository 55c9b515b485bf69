"""POSIX behaviour of the mount, compared with a directory on the local disk.

Each case runs the same function in a local directory and on the mount and must end with
the same outcome: the same result, or the same errno. Cases where mountfs differs from a
local filesystem on purpose (hard links, special files, non-UTF-8 names, xattr namespaces)
are tested on their own below, with the documented errno.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import mmap
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.mount.conftest import Roundtrip
from tests.support.mount import MountProcess

RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
_libc = ctypes.CDLL(None, use_errno=True)


def renameat2(src: Path, dst: Path, flags: int) -> None:
    at_fdcwd = -100
    if _libc.renameat2(at_fdcwd, os.fsencode(src), at_fdcwd, os.fsencode(dst), flags) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(src))


def _touch(path: Path, data: bytes = b"") -> Path:
    path.write_bytes(data)
    return path


def _tree(base: Path) -> dict[str, object]:
    """Names, kinds and contents of everything under `base` (no inode numbers or times)."""
    result: dict[str, object] = {}
    for root, dirs, files in os.walk(base):
        for name in dirs + files:
            path = Path(root) / name
            rel = str(path.relative_to(base))
            if path.is_symlink():
                result[rel] = ("link", os.readlink(path))
            elif path.is_dir():
                result[rel] = ("dir", stat.S_IMODE(path.stat().st_mode))
            else:
                result[rel] = ("file", path.read_bytes(), stat.S_IMODE(path.stat().st_mode))
    return result


# --- the cases --------------------------------------------------------------------------


def mkdir_existing(b: Path) -> object:
    (b / "d").mkdir()
    (b / "d").mkdir()


def rmdir_not_empty(b: Path) -> object:
    (b / "d").mkdir()
    _touch(b / "d" / "f")
    os.rmdir(b / "d")


def rmdir_a_file(b: Path) -> object:
    os.rmdir(_touch(b / "f"))


def rmdir_dot(b: Path) -> object:
    (b / "d").mkdir()
    os.rmdir(b / "d" / ".")


def unlink_a_dir(b: Path) -> object:
    (b / "d").mkdir()
    os.unlink(b / "d")


def open_missing(b: Path) -> object:
    return os.open(b / "missing", os.O_RDONLY)


def open_through_a_file(b: Path) -> object:
    _touch(b / "f")
    return os.open(b / "f" / "x", os.O_RDONLY)


def create_name_of_256_bytes(b: Path) -> object:
    _touch(b / ("x" * 256))


def stat_name_of_256_bytes(b: Path) -> object:
    os.stat(b / ("é" * 128))


def create_name_of_255_bytes(b: Path) -> object:
    _touch(b / ("y" * 253 + "é"))
    return sorted(os.listdir(b))


def create_exclusive_existing(b: Path) -> object:
    _touch(b / "f")
    os.open(b / "f", os.O_CREAT | os.O_EXCL | os.O_WRONLY)


def open_dir_for_writing(b: Path) -> object:
    (b / "d").mkdir()
    os.open(b / "d", os.O_WRONLY)


def truncate_a_dir(b: Path) -> object:
    (b / "d").mkdir()
    os.truncate(b / "d", 0)


def readlink_of_a_file(b: Path) -> object:
    return os.readlink(_touch(b / "f"))


def symlink_loop(b: Path) -> object:
    os.symlink("b", b / "a")
    os.symlink("a", b / "b")
    return os.open(b / "a", os.O_RDONLY)


def symlink_and_readlink(b: Path) -> object:
    _touch(b / "target", b"via link")
    os.symlink("target", b / "link")
    os.symlink("/nowhere/at/all", b / "dangling")
    return (
        os.readlink(b / "link"),
        (b / "link").read_bytes(),
        os.lstat(b / "dangling").st_size,
        stat.S_ISLNK(os.lstat(b / "link").st_mode),
    )


def rename_into_own_subtree(b: Path) -> object:
    (b / "a" / "b").mkdir(parents=True)
    os.rename(b / "a", b / "a" / "b" / "c")


def rename_file_over_dir(b: Path) -> object:
    (b / "d").mkdir()
    os.rename(_touch(b / "f"), b / "d")


def rename_dir_over_file(b: Path) -> object:
    (b / "d").mkdir()
    os.rename(b / "d", _touch(b / "f"))


def rename_dir_over_non_empty_dir(b: Path) -> object:
    (b / "d").mkdir()
    (b / "e").mkdir()
    _touch(b / "e" / "f")
    os.rename(b / "d", b / "e")


def rename_dir_over_empty_dir(b: Path) -> object:
    (b / "d").mkdir()
    _touch(b / "d" / "inside", b"1")
    (b / "e").mkdir()
    os.rename(b / "d", b / "e")
    return _tree(b)


def rename_replaces_file(b: Path) -> object:
    _touch(b / "a", b"new")
    _touch(b / "b", b"old")
    os.rename(b / "a", b / "b")
    return _tree(b)


def rename_across_dirs(b: Path) -> object:
    (b / "x" / "y").mkdir(parents=True)
    (b / "z").mkdir()
    _touch(b / "x" / "y" / "f", b"data")
    os.rename(b / "x" / "y", b / "z" / "moved")
    return _tree(b), os.stat(b / "x").st_nlink, os.stat(b / "z").st_nlink


def rename_noreplace(b: Path) -> object:
    _touch(b / "a")
    _touch(b / "b")
    renameat2(b / "a", b / "b", RENAME_NOREPLACE)


def rename_noreplace_free_name(b: Path) -> object:
    _touch(b / "a", b"a")
    renameat2(b / "a", b / "c", RENAME_NOREPLACE)
    return _tree(b)


def rename_exchange(b: Path) -> object:
    _touch(b / "a", b"A")
    (b / "d").mkdir()
    _touch(b / "d" / "inner", b"I")
    renameat2(b / "a", b / "d", RENAME_EXCHANGE)
    return _tree(b)


def rename_exchange_missing(b: Path) -> object:
    _touch(b / "a")
    renameat2(b / "a", b / "missing", RENAME_EXCHANGE)


def write_seek_read_append(b: Path) -> object:
    path = b / "f"
    with open(path, "w+b") as f:
        f.write(b"hello world")
        f.seek(6)
        f.write(b"WORLD")
        f.seek(0)
        first = f.read()
    with open(path, "ab") as f:
        f.write(b"!!")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    os.write(fd, b"?")
    os.close(fd)
    return first, path.read_bytes(), path.stat().st_size


def open_with_o_trunc_after_buffered_writes(b: Path) -> object:
    fd = os.open(b / "f", os.O_CREAT | os.O_RDWR, 0o644)
    os.pwrite(fd, b"x" * 9000, 1000)
    again = os.open(b / "f", os.O_RDWR | os.O_TRUNC)
    os.ftruncate(fd, 12000)
    content = os.pread(again, 20000, 0)
    os.close(again)
    os.close(fd)
    return content == bytes(12000), len(content)


def sparse_and_truncate(b: Path) -> object:
    path = b / "f"
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    os.pwrite(fd, b"end", 1 << 20)
    os.ftruncate(fd, (1 << 20) + 10)
    grown = os.pread(fd, 20, (1 << 20) - 5)
    os.ftruncate(fd, 4)
    os.truncate(path, 2)
    os.close(fd)
    return grown, path.read_bytes(), path.stat().st_size


def chmod_and_utime_in_nanoseconds(b: Path) -> object:
    path = _touch(b / "f")
    os.chmod(path, 0o640)
    os.utime(path, ns=(1_000_000_123, 1_234_567_891_987_654_321))
    (b / "d").mkdir()
    os.chmod(b / "d", 0o2750)
    st = os.stat(path)
    return (
        stat.S_IMODE(st.st_mode),
        st.st_atime_ns,
        st.st_mtime_ns,
        stat.S_IMODE(os.stat(b / "d").st_mode),
    )


def directory_nlink_and_listing(b: Path) -> object:
    (b / "a" / "b").mkdir(parents=True)
    (b / "a" / "c").mkdir()
    _touch(b / "a" / "f")
    return os.stat(b / "a").st_nlink, sorted(os.listdir(b / "a"))


def xattrs(b: Path) -> object:
    path = _touch(b / "f")
    os.setxattr(path, "user.color", b"blue")
    os.setxattr(path, "user.empty", b"")
    os.setxattr(path, "user.color", b"green", os.XATTR_REPLACE)
    listed = sorted(os.listxattr(path))
    os.removexattr(path, "user.empty")
    return listed, os.getxattr(path, "user.color"), sorted(os.listxattr(path))


def xattr_missing(b: Path) -> object:
    return os.getxattr(_touch(b / "f"), "user.none")


def xattr_create_existing(b: Path) -> object:
    path = _touch(b / "f")
    os.setxattr(path, "user.a", b"1")
    os.setxattr(path, "user.a", b"2", os.XATTR_CREATE)


def xattr_replace_missing(b: Path) -> object:
    os.setxattr(_touch(b / "f"), "user.a", b"1", os.XATTR_REPLACE)


def xattr_unknown_namespace(b: Path) -> object:
    os.setxattr(_touch(b / "f"), "nonsense.a", b"1")


def unlink_open_file(b: Path) -> object:
    path = _touch(b / "f", b"before")
    fd = os.open(path, os.O_RDWR)
    os.unlink(path)
    os.pwrite(fd, b"AFTER", 6)
    content = os.pread(fd, 100, 0)
    nlink = os.fstat(fd).st_nlink
    os.close(fd)
    return content, nlink, path.exists()


def rename_over_open_file(b: Path) -> object:
    _touch(b / "f", b"old content")
    fd = os.open(b / "f", os.O_RDONLY)
    _touch(b / "g", b"new")
    os.rename(b / "g", b / "f")
    old = os.pread(fd, 100, 0)
    os.close(fd)
    return old, (b / "f").read_bytes()


def fsync_and_fdatasync(b: Path) -> object:
    fd = os.open(b / "f", os.O_CREAT | os.O_WRONLY, 0o600)
    os.write(fd, b"durable")
    os.fsync(fd)
    os.fdatasync(fd)
    os.close(fd)
    dfd = os.open(b, os.O_RDONLY)
    os.fsync(dfd)
    os.close(dfd)
    return (b / "f").read_bytes()


def access_checks(b: Path) -> object:
    path = _touch(b / "f")
    os.chmod(path, 0o400)
    return os.access(path, os.R_OK), os.access(path, os.F_OK), os.access(b / "nope", os.F_OK)


CASES: list[Callable[[Path], object]] = [
    mkdir_existing,
    rmdir_not_empty,
    rmdir_a_file,
    rmdir_dot,
    unlink_a_dir,
    open_missing,
    open_through_a_file,
    create_name_of_256_bytes,
    stat_name_of_256_bytes,
    create_name_of_255_bytes,
    create_exclusive_existing,
    open_dir_for_writing,
    truncate_a_dir,
    readlink_of_a_file,
    symlink_loop,
    symlink_and_readlink,
    rename_into_own_subtree,
    rename_file_over_dir,
    rename_dir_over_file,
    rename_dir_over_non_empty_dir,
    rename_dir_over_empty_dir,
    rename_replaces_file,
    rename_across_dirs,
    rename_noreplace,
    rename_noreplace_free_name,
    rename_exchange,
    rename_exchange_missing,
    write_seek_read_append,
    open_with_o_trunc_after_buffered_writes,
    sparse_and_truncate,
    chmod_and_utime_in_nanoseconds,
    directory_nlink_and_listing,
    xattrs,
    xattr_missing,
    xattr_create_existing,
    xattr_replace_missing,
    xattr_unknown_namespace,
    unlink_open_file,
    rename_over_open_file,
    fsync_and_fdatasync,
    access_checks,
]


def outcome(case: Callable[[Path], object], base: Path) -> tuple[str, object]:
    try:
        result = case(base)
    except OSError as exc:
        return "error", errno.errorcode.get(exc.errno or 0, exc.errno)
    if isinstance(result, int) and case in (open_missing, open_through_a_file, symlink_loop):
        os.close(result)
        return "ok", "fd"
    return "ok", result


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.__name__)
def test_same_outcome_as_a_local_disk(
    case: Callable[[Path], object], work: Path, local: Path, roundtrip: Roundtrip
) -> None:
    expected = outcome(case, local)
    assert outcome(case, work) == expected
    assert _tree(work) == _tree(local)
    roundtrip()


# --- where mountfs differs from a local disk on purpose -----------------------------------


def test_hard_links_are_refused_with_eperm(work: Path, roundtrip: Roundtrip) -> None:
    _touch(work / "f")
    with pytest.raises(PermissionError) as exc_info:
        os.link(work / "f", work / "g")
    assert exc_info.value.errno == errno.EPERM
    roundtrip()


def test_special_files_are_refused_with_eperm(work: Path, roundtrip: Roundtrip) -> None:
    with pytest.raises(PermissionError):
        os.mkfifo(work / "fifo")
    os.mknod(work / "plain", stat.S_IFREG | 0o600)  # a regular file via mknod is fine
    assert (work / "plain").is_file()
    roundtrip()


@pytest.mark.parametrize(
    "make",
    [
        lambda p: os.close(os.open(p, os.O_CREAT | os.O_WRONLY, 0o644)),
        os.mkdir,
        lambda p: os.symlink("target", p),
    ],
    ids=["create", "mkdir", "symlink"],
)
def test_names_that_are_not_utf8_are_refused_with_einval(
    work: Path, make: Callable[[bytes], None]
) -> None:
    bad = os.fsencode(work) + b"/caf\xe9"
    with pytest.raises(OSError, match="Invalid argument") as exc_info:
        make(bad)
    assert exc_info.value.errno == errno.EINVAL
    with pytest.raises(FileNotFoundError):
        os.stat(bad)


def test_rename_to_a_name_that_is_not_utf8_is_refused(work: Path, roundtrip: Roundtrip) -> None:
    _touch(work / "f")
    with pytest.raises(OSError, match="Invalid argument") as exc_info:
        os.rename(work / "f", os.fsencode(work) + b"/\xff")
    assert exc_info.value.errno == errno.EINVAL
    assert (work / "f").exists()
    roundtrip()


def test_privileged_xattr_namespaces_are_not_supported(work: Path) -> None:
    path = _touch(work / "f")
    for name in ("trusted.x", "security.x"):
        with pytest.raises(OSError, match="not supported") as exc_info:
            os.setxattr(path, name, b"1")
        assert exc_info.value.errno == errno.EOPNOTSUPP


def test_statfs_reports_name_max_and_block_size(work: Path) -> None:
    st = os.statvfs(work)
    assert st.f_namemax == 255
    assert st.f_bsize == st.f_frsize
    assert st.f_blocks > 0
    assert st.f_files > st.f_ffree > 0


def test_chown_as_root_is_stored(work: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("chown to another user needs root")
    path = _touch(work / "f")
    os.chown(path, 1234, 5678)
    os.lchown(work, 4321, 8765)
    assert (os.stat(path).st_uid, os.stat(path).st_gid) == (1234, 5678)
    assert (os.stat(work).st_uid, os.stat(work).st_gid) == (4321, 8765)


def test_shared_writable_mmap(work: Path, roundtrip: Roundtrip) -> None:
    path = work / "mapped"
    size = 3 * mmap.PAGESIZE + 100
    path.write_bytes(b"\0" * size)
    with open(path, "r+b") as f, mmap.mmap(f.fileno(), size, mmap.MAP_SHARED) as m:
        m[10:15] = b"HELLO"
        m[size - 5 :] = b"WORLD"
        m.flush()
        with open(path, "rb") as other:
            seen_by_read = other.read()
    assert seen_by_read[10:15] == b"HELLO"
    assert path.read_bytes()[-5:] == b"WORLD"
    roundtrip()


def test_big_file_round_trip(work: Path, roundtrip: Roundtrip) -> None:
    data = os.urandom(24 << 20)
    (work / "big").write_bytes(data)
    assert hashlib.sha256((work / "big").read_bytes()).digest() == hashlib.sha256(data).digest()
    assert (work / "big").stat().st_size == len(data)
    roundtrip()


def test_listing_many_entries_while_deleting(work: Path, roundtrip: Roundtrip) -> None:
    names = {f"entry-{i:04}" for i in range(1500)}
    for name in names:
        _touch(work / name)
    seen: list[str] = []
    with os.scandir(work) as it:
        for i, entry in enumerate(it):
            seen.append(entry.name)
            if i == 100:  # delete some listed and some unlisted entries mid-listing
                for victim in sorted(names)[::7]:
                    os.unlink(work / victim)
    assert len(seen) == len(set(seen)), "an entry was listed twice"
    deleted = set(sorted(names)[::7])
    assert names - deleted <= set(seen), "an entry that stayed was skipped"
    roundtrip()


def test_daemon_pid_is_available_to_umount(shared_mount: MountProcess) -> None:
    pid = int(os.getxattr(shared_mount.mountpoint, "user.mountfs.pid"))
    assert pid == shared_mount.pid
    assert "user.mountfs.pid" not in os.listxattr(shared_mount.mountpoint)


def test_a_removed_working_directory_lists_as_empty(work: Path, local: Path) -> None:
    def listing_of_removed_cwd(base: Path) -> object:
        (base / "gone").mkdir()
        fd = os.open(base / "gone", os.O_RDONLY | os.O_DIRECTORY)
        os.rmdir(base / "gone")
        try:
            nlink = os.fstat(fd).st_nlink
            entries = os.listdir(fd)
            again = os.open(".", os.O_RDONLY, dir_fd=fd)
            os.close(again)
            created = outcome(lambda _: os.open("new", os.O_CREAT | os.O_WRONLY, dir_fd=fd), base)
        finally:
            os.close(fd)
        return nlink, entries, created

    assert listing_of_removed_cwd(work) == listing_of_removed_cwd(local)
