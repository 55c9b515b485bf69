"""Filesystem benchmarks: what a user of a mount feels, on every target side by side.

Each benchmark is a *probe* that works in a fresh, empty directory of one target and
returns its samples; set-up (creating the files that `stat` will look at, generating
data) stays outside the timed sections, and the directory is removed afterwards. Runs
are interleaved across targets (run 1 on every target, then run 2, …) so that a drift
of the machine's speed during the invocation hits every column alike.

Before each probe the machine is *settled*: `sync`, then every clean cache dropped
(where permitted). The sync keeps one run's writeback out of the next run's timing. The
drop matters more than it looks: for about 5 s after a mass delete (each `rm -r`,
`unlink` and clean-up here deletes thousands of inodes), ext4 skips recently freed
inodes while their table block is cached (`recently_deleted()` in fs/ext4/ialloc.c),
which made file creation ten times slower here (4,000 instead of 50,000 creates/s) for
whichever probe came next. Probes then warm what they read from outside the target (the
tarball, the repository, the tools), so only the target is measured cold.

Caches: where the kernel lets us (root), the `stat` and `ls -l` probes first drop the
dentry and inode caches (`echo 2 > /proc/sys/vm/drop_caches`), so they measure lookups
that reach the filesystem, which is what a FUSE mount makes expensive; `read` drops the
page cache too (`echo 3`). Where that is not permitted the note says `warm`.

The source tree for `tar x`, `rm -r` and `git clone` is the running interpreter's
standard library (without `site-packages`, `__pycache__` and the `config-*` build
directory): thousands of real source files of real sizes. It is packed into a tarball
and committed into a bare git repository once, in the cache directory, and reused.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sysconfig
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .harness import (
    Benchmark,
    ColumnReference,
    Metric,
    Options,
    Report,
    Sample,
    Stopwatch,
    Suite,
    Table,
    format_number,
)
from .targets import TARGETS, Remote, filesystem_type, open_target, remote_of

__all__ = ["SUITE"]

MiB = 1 << 20
BLOCK = MiB
"""Block size of the sequential write and read: what `cp` and most applications use."""

DROP_DENTRIES_AND_INODES = 2
DROP_ALL = 3

CREATE = Metric("create", "ops/s", higher_is_better=True)
STAT = Metric("stat", "ops/s", higher_is_better=True)
UNLINK = Metric("unlink", "ops/s", higher_is_better=True)
WRITE = Metric("sequential write", "MB/s", higher_is_better=True)
READ = Metric("sequential read", "MB/s", higher_is_better=True)
TAR_X = Metric("tar x", "s", higher_is_better=False)
RM_R = Metric("rm -r", "s", higher_is_better=False)
GIT_CLONE = Metric("git clone", "s", higher_is_better=False)
GIT_STATUS = Metric("git status", "s", higher_is_better=False)
LS_L = Metric("ls -l", "s", higher_is_better=False)
UPLOAD = Metric("close() to backend", "s", higher_is_better=False)
EDIT_BYTES = Metric("bytes stored for a 4 KiB edit", "% of file", higher_is_better=False)

REMOTE_TIMEOUT_S = 120.0
"""How long the sync probes wait for a backend to hold a change before they give up."""


@dataclass(frozen=True, slots=True)
class Sizes:
    """How much work one run does; `--quick` picks the small set."""

    files: int
    seq_bytes: int
    ls_entries: int

    edit_file_bytes: int


FULL = Sizes(files=5_000, seq_bytes=1024 * MiB, ls_entries=10_000, edit_file_bytes=256 * MiB)
QUICK = Sizes(files=1_000, seq_bytes=128 * MiB, ls_entries=2_000, edit_file_bytes=64 * MiB)


@dataclass(frozen=True, slots=True)
class SourceTree:
    """The packed standard library: where the tarball and repository are, and their size."""

    tarball: Path
    repo: Path
    top: str
    files: int
    bytes: int

    def note(self) -> str:
        return f"{self.files:,} files, {self.bytes / 1e6:.0f} MB"


class Fixtures:
    """Inputs built once per invocation (random data) or once per machine (source tree)."""

    def __init__(self, cache_dir: Path, sizes: Sizes, report: Report) -> None:
        self._cache_dir = cache_dir
        self._sizes = sizes
        self._report = report
        self._data: bytes | None = None
        self._tree: SourceTree | None = None

    def data(self) -> bytes:
        """Random bytes for the sequential write: incompressible and never repeating, so a
        filesystem that compresses or deduplicates gets no free ride."""
        if self._data is None:
            self._report.progress(f"generating {self._sizes.seq_bytes / MiB:,.0f} MiB of data")
            self._data = os.urandom(self._sizes.seq_bytes)
        return self._data

    def tree(self) -> SourceTree:
        if self._tree is None:
            self._tree = _source_tree(self._cache_dir, self._report)
        return self._tree


@dataclass(frozen=True, slots=True)
class Context:
    sizes: Sizes
    fixtures: Fixtures
    remotes: dict[Path, Remote] = field(default_factory=dict)
    """The backend view of each cloud target, by the target's root directory."""

    def remote_for(self, work: Path) -> Remote | None:
        return self.remotes.get(work.parent)


Probe = Callable[[Path, Context], list[Sample]]


def drop_caches(level: int) -> bool:
    """Write back dirty data, then ask the kernel to drop caches; False if not permitted."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as control:
            control.write(f"{level}\n")
    except OSError:
        return False
    return True


def settle() -> None:
    """Write everything back and drop clean caches (see the module docstring for why)."""
    drop_caches(DROP_ALL)


def warm(*paths: Path) -> None:
    """Read files (or every file under directories) so that their reads cost no disk I/O."""
    for path in paths:
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        for file in files:
            with open(file, "rb", buffering=0) as src:
                while src.read(BLOCK):
                    pass


def _cache_note(cold: bool) -> str:
    return "cold cache" if cold else "warm cache (drop_caches not permitted)"


def _touch_all(paths: list[Path]) -> None:
    for path in paths:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))


def probe_files(work: Path, ctx: Context) -> list[Sample]:
    """Create, stat, then unlink N empty files in one directory, each timed separately."""
    n = ctx.sizes.files
    paths = [work / f"f{i:06d}" for i in range(n)]
    with Stopwatch() as create:
        _touch_all(paths)
    cold = drop_caches(DROP_DENTRIES_AND_INODES)
    with Stopwatch() as stat:
        for path in paths:
            os.stat(path)
    with Stopwatch() as unlink:
        for path in paths:
            os.unlink(path)
    note = f"{n:,} empty files"
    return [
        Sample(CREATE, n / create.seconds, note),
        Sample(STAT, n / stat.seconds, f"{note}, {_cache_note(cold)}"),
        Sample(UNLINK, n / unlink.seconds, note),
    ]


def probe_seqio(work: Path, ctx: Context) -> list[Sample]:
    """Write one big file in 1 MiB blocks and fsync it, then read it back in 1 MiB blocks."""
    data = memoryview(ctx.fixtures.data())
    path = work / "big.bin"
    with Stopwatch() as write:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        try:
            for offset in range(0, len(data), BLOCK):
                _write_all(fd, data[offset : offset + BLOCK])
            os.fsync(fd)
        finally:
            os.close(fd)
    cold = drop_caches(DROP_ALL)
    buffer = bytearray(BLOCK)
    total = last = 0
    with Stopwatch() as read, open(path, "rb", buffering=0) as src:
        while count := src.readinto(buffer):
            total, last = total + count, count
    if total != len(data) or buffer[:last] != data[total - last : total]:
        raise RuntimeError(f"read back {total:,} bytes that differ from the {len(data):,} written")
    note = f"{len(data) / MiB:,.0f} MiB in {BLOCK // MiB} MiB blocks"
    return [
        Sample(WRITE, len(data) / write.seconds / 1e6, f"{note}, incl. fsync"),
        Sample(READ, len(data) / read.seconds / 1e6, f"{note}, {_cache_note(cold)}"),
    ]


def _write_all(fd: int, block: memoryview) -> None:
    while block:
        block = block[os.write(fd, block) :]


def probe_tar(work: Path, ctx: Context) -> list[Sample]:
    """Unpack the source tree with `tar x`, then delete it with `rm -r`."""
    tree = ctx.fixtures.tree()
    warm(tree.tarball)
    _run(["tar", "--version"])
    with Stopwatch() as untar:
        _run(["tar", "-xf", str(tree.tarball), "-C", str(work)])
    with Stopwatch() as remove:
        _run(["rm", "-r", str(work / tree.top)])
    return [Sample(TAR_X, untar.seconds, tree.note()), Sample(RM_R, remove.seconds, tree.note())]


def probe_git(work: Path, ctx: Context) -> list[Sample]:
    """`git clone --no-hardlinks` the source tree's repository, then `git status` in it."""
    tree = ctx.fixtures.tree()
    clone = work / "clone"
    warm(tree.repo)
    _git("--version")
    with Stopwatch() as cloning:
        _git("clone", "-q", "--no-hardlinks", f"file://{tree.repo}", str(clone))
    with Stopwatch() as status:
        _git("-C", str(clone), "status")
    return [
        Sample(GIT_CLONE, cloning.seconds, tree.note()),
        Sample(GIT_STATUS, status.seconds, f"{tree.note()}, right after the clone"),
    ]


def probe_ls(work: Path, ctx: Context) -> list[Sample]:
    """`ls -l` of one folder of N empty files (a readdir plus a stat of every entry)."""
    n = ctx.sizes.ls_entries
    folder = work / "folder"
    folder.mkdir()
    _touch_all([folder / f"entry-{i:05d}" for i in range(n)])
    _run(["ls", "--version"])
    cold = drop_caches(DROP_DENTRIES_AND_INODES)
    with Stopwatch() as listing:
        _run(["ls", "-l", str(folder)])
    return [Sample(LS_L, listing.seconds, f"{n:,} entries, {_cache_note(cold)}")]


def probe_upload(work: Path, ctx: Context) -> list[Sample]:
    """Seconds from `close()` of a new 4 KiB file until the target's backend holds it.

    Only for cloud targets; each run times five files one after the other and keeps their
    median, so one unlucky poll does not make the figure.
    """
    remote = ctx.remote_for(work)
    if remote is None:
        return []
    delays = []
    for i in range(5):
        path = work / f"small-{i}.txt"
        with open(path, "wb") as out:
            out.write(os.urandom(4096))
        closed = time.monotonic()
        _until(functools.partial(_held, remote, path), f"{path.name} reached the backend")
        delays.append(time.monotonic() - closed)
    delays.sort()
    return [Sample(UPLOAD, delays[len(delays) // 2], "new 4 KiB file, median of 5")]


def probe_edit(work: Path, ctx: Context) -> list[Sample]:
    """Bytes the backend's store grows by when 4 KiB in the middle of a big file change.

    The file (random bytes) is written and waited for first; then 4 KiB are overwritten
    in place and the probe waits until the backend holds the new version. The growth of
    the store (SeaweedFS's volumes, mountfs's block directory) is what the edit cost.
    """
    remote = ctx.remote_for(work)
    if remote is None:
        return []
    size = ctx.sizes.edit_file_bytes
    path = work / "big-edit.bin"
    with open(path, "wb") as out:
        for _ in range(size // MiB):
            out.write(os.urandom(MiB))
    _until(lambda: remote.version(path) is not None, "the big file reached the backend")
    before_version, before_bytes = remote.version(path), remote.stored_bytes()
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, os.urandom(4096), size // 2)
    finally:
        os.close(fd)
    _until(lambda: remote.version(path) != before_version, "the edit reached the backend")
    grown = remote.stored_bytes() - before_bytes
    note = f"4 KiB overwritten in a {size // MiB} MiB file; {grown / MiB:,.1f} MiB stored"
    return [Sample(EDIT_BYTES, 100 * grown / size, note)]


def _held(remote: Remote, path: Path) -> bool:
    return remote.version(path) is not None


def _until(done: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + REMOTE_TIMEOUT_S
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not done after {REMOTE_TIMEOUT_S:.0f}s: {what}")
        time.sleep(0.01)


def _run(argv: list[str], env: dict[str, str] | None = None) -> None:
    """Run a tool with its output discarded; a failure raises with its stderr."""
    result = subprocess.run(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env or {**os.environ, "LC_ALL": "C"},
        check=False,
    )
    if result.returncode != 0:
        stderr = result.stderr.decode(errors="replace").strip()
        raise RuntimeError(f"{' '.join(argv)} exited with {result.returncode}: {stderr}")


def _git(*args: str) -> None:
    """git without the user's or the system's configuration, as the same author every time."""
    env = {
        **os.environ,
        "LC_ALL": "C",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_AUTHOR_NAME": "bench",
        "GIT_AUTHOR_EMAIL": "bench@localhost",
        "GIT_COMMITTER_NAME": "bench",
        "GIT_COMMITTER_EMAIL": "bench@localhost",
    }
    _run(["git", *args], env=env)


# --- the source tree, built once per machine --------------------------------------------

_EXCLUDED_NAMES = {"site-packages", "__pycache__"}
FIXTURE_FORMAT = 2
"""Bumped whenever the way the tree is built changes, so old caches are not reused."""


def _source_tree(cache_dir: Path, report: Report) -> SourceTree:
    """The standard library as a tarball and a bare git repository, built on first use.

    The cache key includes the interpreter's version and the stdlib's path, so another
    interpreter gets its own tree. Both are built in a temporary name and renamed, so an
    interrupted build is simply rebuilt next time.
    """
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    digest = hashlib.sha256(str(stdlib).encode()).hexdigest()[:8]
    key = f"stdlib-{platform.python_version()}-{digest}-v{FIXTURE_FORMAT}"
    tarball, repo, meta = (cache_dir / f"{key}{ext}" for ext in (".tar", ".git", ".json"))
    cache_dir.mkdir(parents=True, exist_ok=True)
    if not (tarball.exists() and repo.exists() and meta.exists()):
        report.progress(f"packing {stdlib} into {cache_dir} (once per machine)")
        files, size = _pack(stdlib, tarball)
        _commit_repo(tarball, repo)
        meta.write_text(json.dumps({"stdlib": str(stdlib), "files": files, "bytes": size}))
    info = json.loads(meta.read_text())
    return SourceTree(tarball, repo, "stdlib", int(info["files"]), int(info["bytes"]))


def _pack(stdlib: Path, tarball: Path) -> tuple[int, int]:
    """Write the tarball (uncompressed: `tar x` must measure the filesystem, not gzip)."""
    counts = [0, 0]

    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        name = Path(info.name).name
        top_level = info.name.count("/") == 1
        if name in _EXCLUDED_NAMES or (top_level and name.startswith("config-")):
            return None
        if info.isfile():
            counts[0] += 1
            counts[1] += info.size
        return info

    partial = tarball.with_name(tarball.name + ".partial")
    with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
        tar.add(stdlib, arcname="stdlib", filter=keep)
    partial.replace(tarball)
    return counts[0], counts[1]


def _commit_repo(tarball: Path, repo: Path) -> None:
    """Unpack the tarball, commit every file (ignored ones too), keep a bare clone."""
    with tempfile.TemporaryDirectory(dir=repo.parent) as tmp:
        _run(["tar", "-xf", str(tarball), "-C", tmp])
        tree = Path(tmp) / "stdlib"
        _git("-C", str(tree), "init", "-q", "-b", "main")
        _git("-C", str(tree), "add", "-A", "-f")
        _git("-C", str(tree), "commit", "-q", "-m", "Python standard library")
        partial = Path(tmp) / "repo.git"
        _git("clone", "-q", "--bare", str(tree), str(partial))
        # One pack with deltas, as a served repository has: the clone then streams it
        # instead of compressing every object, and measures the target more than the CPU.
        _git("-C", str(partial), "repack", "-a", "-d", "-q")
        if repo.exists():
            shutil.rmtree(repo)
        partial.rename(repo)


# --- the suite --------------------------------------------------------------------------

PROBES: dict[str, tuple[str, Probe]] = {
    "fs.files": ("create, stat and unlink of N empty files (ops/s)", probe_files),
    "fs.seqio": ("sequential write (with fsync) and read of one big file (MB/s)", probe_seqio),
    "fs.tar": ("tar x and rm -r of the Python standard library (s)", probe_tar),
    "fs.git": ("git clone --no-hardlinks and git status of the stdlib (s)", probe_git),
    "fs.ls": ("ls -l of a folder of N entries (s)", probe_ls),
    "fs.upload": ("close() of a new small file until the backend holds it (s)", probe_upload),
    "fs.edit": ("store growth after a 4 KiB overwrite in a big file (% of it)", probe_edit),
}


def run(report: Report, options: Options, selected: tuple[str, ...]) -> None:
    """Set every available target up, run the selected probes on all of them, tear down."""
    sizes = QUICK if options.quick else FULL
    ctx = Context(sizes, Fixtures(options.cache_dir, sizes, report))
    with contextlib.ExitStack() as stack:
        roots = _open_targets(report, options, stack, ctx.remotes)
        described = ", ".join(f"{n}: {filesystem_type(p)}" for n, p in roots.items())
        table = report.table("fs", f"Filesystem ({described})", ColumnReference("local"))
        report.settings.setdefault("fs_targets", {}).update(
            {name: {"path": str(p), "fstype": filesystem_type(p)} for name, p in roots.items()}
        )
        for name in selected:
            try:
                _run_probe(name, PROBES[name][1], roots, ctx, table, report, options.runs)
            except Exception as exc:
                report.error(name, exc)


def _open_targets(
    report: Report, options: Options, stack: contextlib.ExitStack, remotes: dict[Path, Remote]
) -> dict[str, Path]:
    """Mount or create every requested target; skip unavailable ones, report broken ones.

    The backend view of each cloud target goes into `remotes`, by its root.
    """
    roots: dict[str, Path] = {}
    for name in options.targets:
        target = TARGETS[name](options.workdir)
        reason = target.unavailable_reason()
        if reason is not None:
            report.skip(f"fs target {name}", reason)
            continue
        try:
            roots[name] = stack.enter_context(open_target(target))
            remote = remote_of(target)
            if remote is not None:
                remotes[roots[name]] = remote
        except Exception as exc:
            report.error(f"fs target {name}", exc)
    return roots


def _run_probe(
    name: str,
    probe: Probe,
    roots: dict[str, Path],
    ctx: Context,
    table: Table,
    report: Report,
    runs: int,
) -> None:
    for run_index in range(runs):
        for column, root in roots.items():
            samples = _probe_once(probe, root / f"{name}-{run_index}", ctx)
            for sample in samples:
                table.add(name, column, sample)
            figures = ", ".join(
                f"{s.metric.name} {format_number(s.value)} {s.metric.unit}" for s in samples
            )
            report.progress(f"{name} run {run_index + 1}/{runs} on {column}: {figures}")


def _probe_once(probe: Probe, work: Path, ctx: Context) -> list[Sample]:
    work.mkdir()
    try:
        settle()
        return probe(work, ctx)
    finally:
        shutil.rmtree(work)


SUITE = Suite(
    name="fs",
    benchmarks=tuple(Benchmark(name, summary) for name, (summary, _) in PROBES.items()),
    run=run,
)
