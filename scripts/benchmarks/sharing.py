"""Sharing and public links: download speed of a link, and how fast a share shows up.

- `sharing.link_download`: a 1 GiB file (quick: 128 MiB) of random bytes is uploaded as a
  client does (CDC, keys from the backend, AES-GCM, presigned PUTs) into a fresh account
  on a real backend on loopback (`python -m backend`, embedded store), then downloaded
  through its public link, `GET /s/<token>?dl=1`, by a streaming HTTP client that reads
  and discards the bytes (and checks their SHA-256). The backend reads each object,
  decrypts and verifies it, and streams it: that is the figure (MB/s of plaintext).
- `sharing.appear`: two accounts, the member's device mounted (`mountfs mount`) with
  auto-accept on (`mountfs shares auto-accept on`). The owner shares a new folder holding
  one empty file (the request `mountfs share FOLDER MEMBER` makes); the clock runs from
  the answer until the member's mount shows the file (polled every 2 ms). Median and p99 over
  the trials (20, quick 5). The member's device learns of the share through its own
  journal and push channel, then pulls the share's journal.
- `sharing.change`: in the same trials, once the share is in the member's mount, the owner
  adds a second (empty) file to the shared folder through the API; the clock runs from
  the answer until the member's mount reads it. This is the
  share's own journal reaching the member: through its push channel, which watches the
  followed shares' journals too (`?followed=true`), rather than a poll.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

from .harness import Benchmark, ColumnReference, Metric, Options, Report, Sample, Suite, Table
from .targets import _fuse_unavailable_reason, fuse_unmount, wait_for_mount

__all__ = ["SUITE"]

MiB = 1024 * 1024
COLUMN = "mountfs"
PASSWORD = "bench-password-1"
BIG, QUICK_BIG = 1024 * MiB, 128 * MiB
TRIALS, QUICK_TRIALS = 20, 5
POLL_S = 0.002
TIMEOUT_S = 60.0

LINK_SPEED = Metric("public link download (?dl=1), plaintext", "MB/s", True)
APPEAR_P50 = Metric("mountfs share → file readable in the member's mount, median", "ms", False)
APPEAR_P99 = Metric("mountfs share → readable in the member's mount, p99", "ms", False)
CHANGE_P50 = Metric("owner's new file in a share → readable at the member, median", "ms", False)
CHANGE_P99 = Metric("owner's new file in a share → readable at the member, p99", "ms", False)


def _mountfs(*args: str, stdin: str = PASSWORD) -> None:
    subprocess.run(
        [sys.executable, "-m", "mountfs", *args],
        input=stdin,
        text=True,
        check=True,
        capture_output=True,
        timeout=120,
    )


@contextmanager
def _backend(base: Path) -> Iterator[tuple[str, Path]]:
    from tests.support.backend import BackendProcess

    workdir = Path(tempfile.mkdtemp(prefix="bench-sharing-", dir=base))
    backend = BackendProcess(workdir / "server", workdir / "server.log")
    try:
        backend.start()
        yield backend.base_url, workdir
    finally:
        backend.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def _upload_random_file(server: str, size: int) -> tuple[str, str]:
    """A fresh account with one file of `size` random bytes; its link URL and SHA-256."""
    from mountfs.chunks import iter_chunks, seal_chunk
    from mountfs.chunks.pipeline import plain_hash
    from tests.support.api_client import ApiClient

    digest = hashlib.sha256()
    with ApiClient.new_account(server, "bench-link") as api:
        source = _RandomStream(size, digest)
        refs: list[dict[str, object]] = []
        for offset, piece in iter_chunks(source):
            (prepared,) = api.prepare([plain_hash(piece)])
            sealed = seal_chunk(piece, base64.b64decode(prepared["key"]))
            (url,) = api.call(
                "POST",
                "chunks/upload-urls",
                json={"objects": [{"object": sealed.object, "size": sealed.stored_size}]},
            )["urls"]
            if not api.send_block(url, sealed.ciphertext).is_success:
                raise RuntimeError("a block upload failed")
            refs.append(
                {
                    "offset": offset,
                    "size": sealed.size,
                    "hash": sealed.hash,
                    "object": sealed.object,
                    "stored_size": sealed.stored_size,
                }
            )
        node = api.create_node(api.root_id, "big.bin")
        body = {
            "revision_id": str(uuid.uuid4()),
            "base_revision": None,
            "size": size,
            "mtime_ns": time.time_ns(),
            "chunks": refs,
        }
        api.call("POST", f"nodes/{node['id']}/revisions", json=body, expect=201)
        link = api.call("POST", f"nodes/{node['id']}/links", json={}, expect=201)
    return str(link["url"]), digest.hexdigest()


class _RandomStream(io.RawIOBase):
    """`size` random bytes as a readable raw stream (for the CDC), hashed as they are read."""

    def __init__(self, size: int, digest: hashlib._Hash) -> None:
        super().__init__()
        self.left = size
        self.digest = digest

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        view = memoryview(buffer).cast("B")
        n = min(len(view), self.left)
        data = os.urandom(n)
        view[:n] = data
        self.digest.update(data)
        self.left -= n
        return n

    def readable(self) -> bool:
        return True


def _download(url: str) -> tuple[float, str]:
    import httpx

    digest = hashlib.sha256()
    start = time.perf_counter()
    total = 0
    with httpx.stream("GET", url, params={"dl": 1}, timeout=120) as answer:
        answer.raise_for_status()
        for piece in answer.iter_bytes(1024 * 1024):
            digest.update(piece)
            total += len(piece)
    elapsed = time.perf_counter() - start
    return total / elapsed / 1e6, digest.hexdigest()


def _link_download(table: Table, options: Options, url: str, expected: str, size: int) -> None:
    speed, got = _download(url)
    if got != expected:
        raise RuntimeError("the link's bytes differ from the uploaded ones")
    note = f"{size // MiB} MiB random file, embedded store, loopback"
    table.add("sharing.link_download", COLUMN, Sample(LINK_SPEED, speed, note))


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))]


def _wait(condition: Callable[[], bool], what: str) -> float:
    deadline = time.perf_counter() + TIMEOUT_S
    while not condition():
        if time.perf_counter() > deadline:
            raise TimeoutError(f"not within {TIMEOUT_S:g}s: {what}")
        time.sleep(POLL_S)
    return time.perf_counter()


def _reads(path: Path, data: bytes) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return path.read_bytes() == data
        except OSError:
            return False

    return check


def _appear(table: Table, server: str, workdir: Path, trials: int) -> None:
    from tests.support.api_client import ApiClient

    owner_state, member_state = workdir / "owner", workdir / "member"
    mountpoint = workdir / "member-mount"
    mountpoint.mkdir()
    for name, state in (("owner", owner_state), ("member", member_state)):
        _mountfs("account", "create", f"bench-{name}", "--server", server, "--password-stdin")
        _mountfs(
            "login", "--server", server, "--user", f"bench-{name}", "--device", name,
            "--state", str(state), "--password-stdin",
        )  # fmt: skip
    _mountfs("shares", "auto-accept", "on", "--state", str(member_state))
    _mountfs(
        "mount", str(mountpoint), "--state", str(member_state), "--log-level", "WARNING",
        "--no-notify",
    )  # fmt: skip
    try:
        wait_for_mount(mountpoint)
        latencies, changes = [], []
        with ApiClient.login(server, "bench-owner", PASSWORD, "setup") as owner:
            for n in range(trials):
                folder = owner.mkdir(owner.root_id, f"shared-{n}")
                owner.mkfile(folder["id"], "hello.txt")  # empty: the node is what travels
                # What `mountfs share` sends; timed from the moment the share exists (the
                # CLI's own start-up is not part of the share's latency).
                owner.call(
                    "POST",
                    f"nodes/{folder['id']}/shares",
                    json={"account": "bench-member", "role": "editor"},
                    expect=201,
                )
                shared = time.perf_counter()
                seen = _wait(
                    _reads(mountpoint / f"shared-{n}" / "hello.txt", b""), f"share {n} at member"
                )
                latencies.append((seen - shared) * 1000)
                owner.mkfile(folder["id"], "later.txt")  # empty, as above
                written = time.perf_counter()
                seen = _wait(_reads(mountpoint / f"shared-{n}" / "later.txt", b""), "change")
                changes.append((seen - written) * 1000)
    finally:
        subprocess.run(
            [sys.executable, "-m", "mountfs", "umount", str(mountpoint)],
            capture_output=True,
            timeout=120,
            check=False,
        )
        fuse_unmount(mountpoint)
    note = f"{trials} shares of a folder with one file, auto-accept, loopback"
    table.add("sharing.appear", COLUMN, Sample(APPEAR_P50, statistics.median(latencies), note))
    table.add("sharing.appear", COLUMN, Sample(APPEAR_P99, _percentile(latencies, 0.99), note))
    note = f"{trials} new files, one per accepted share, loopback"
    table.add("sharing.change", COLUMN, Sample(CHANGE_P50, statistics.median(changes), note))
    table.add("sharing.change", COLUMN, Sample(CHANGE_P99, _percentile(changes, 0.99), note))


def run(report: Report, options: Options, selected: tuple[str, ...]) -> None:
    table = report.table(
        "sharing",
        "Sharing: public-link download speed and time for a share to reach the member's mount",
        ColumnReference(COLUMN),
    )
    size = QUICK_BIG if options.quick else BIG
    if "sharing.link_download" in selected:
        with _backend(options.workdir) as (server, _):
            try:
                report.progress(f"uploading {size // MiB} MiB for the link download")
                url, expected = _upload_random_file(server, size)
                for _ in range(options.runs):
                    _link_download(table, options, url, expected, size)
            except Exception as exc:
                report.error("sharing.link_download", exc)
    if "sharing.appear" in selected or "sharing.change" in selected:
        reason = _fuse_unavailable_reason()
        if reason is not None:
            report.skip("sharing.appear", reason)
            return
        trials = QUICK_TRIALS if options.quick else TRIALS
        for _ in range(options.runs):
            with _backend(options.workdir) as (server, workdir):
                try:
                    _appear(table, server, workdir, trials)
                except Exception as exc:
                    report.error("sharing.appear", exc)
                    return


SUITE = Suite(
    name="sharing",
    benchmarks=(
        Benchmark("sharing.link_download", "public link ?dl=1 of a 1 GiB file: MB/s"),
        Benchmark("sharing.appear", "mountfs share → the file readable in the member's mount"),
        Benchmark("sharing.change", "a new file in an accepted share → readable at the member"),
    ),
    run=run,
)
