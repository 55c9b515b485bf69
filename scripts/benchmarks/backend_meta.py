"""Metadata throughput of the backend alone: one `python -m backend` on SQLite, K clients.

The mission's design target is 1,000 metadata requests per second on average and 5,800
at peak; this suite says where one backend process on this machine stands against it,
so the ratios are taken against those two fixed figures rather than against a column.

What runs: the real backend as a subprocess on a free loopback port with a fresh data
directory (started and always stopped by `tests.support.backend`, the helper the API
tests use), one account, and K concurrent clients (threads, each with its own
`httpx.Client` and its own device login). Each workload runs for a fixed duration per run
and its figure is completed requests per second over that wall time; every answer is
checked, and an unexpected one is an error, never a slower figure. Workloads run in turn
within each run, so drift of the machine hits them alike.

- `create`: `POST /nodes` of empty files into one folder per run.
- `rename`: `PATCH /nodes/{id}` renaming files of a pool (64 per client), in place.
- `commit`: `POST /nodes/{id}/revisions` of a 4-chunk manifest onto files of a pool; the 4
  chunks (arbitrary bytes named by their SHA-256) are uploaded once through presigned
  PUTs first, as a client would.
- `list`: a full listing of a 1,000-entry folder (`GET /nodes/{id}/children`, following
  `next_cursor`); one listing counts once, however many pages it took.
- `journal`: `GET /journal/{namespace}` of 100 entries after a random cursor (a device
  catching up).

Set-up (pools, the 1,000 entries) goes through the batched `POST /changes` and is not
timed. The note of each figure gives the CPU the server and the clients used (in cores):
on two cores they share the machine, and the note says which side was the bottleneck.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import random
import secrets
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from mountfs.ids import uuid7

from .harness import (
    Benchmark,
    FixedReference,
    Metric,
    Options,
    Report,
    Sample,
    Stopwatch,
    Suite,
    Table,
)

if TYPE_CHECKING:
    from tests.support.backend import BackendProcess

__all__ = ["SUITE"]

TARGET_AVERAGE_QPS = 1_000.0
TARGET_PEAK_QPS = 5_800.0
API = "/api/v1"
POOL_PER_CLIENT = 64
LIST_ENTRIES = 1_000
JOURNAL_PAGE = 100
BATCH = 1_000  # the protocol's limit of ops per `POST /changes`
CHUNKS_PER_COMMIT = 4
CHUNK_PLAIN_BYTES = 1 << 20  # the CDC's average chunk; the backend refuses refs under 256 KiB
CHUNK_STORED_BYTES = 4_096  # the uploaded stand-in objects stay small: the bytes are not measured

Operation = Callable[[], None]
"""One request of a workload, made by one client; raises on any unexpected answer."""


class UnexpectedAnswer(RuntimeError):
    """The backend answered something the protocol does not allow for this request."""


class Client:
    """One benchmark client: a device login and its own HTTP connection."""

    def __init__(self, base_url: str, token: str | None = None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=base_url, headers=headers, timeout=60.0)

    def call(self, method: str, path: str, expect: tuple[int, ...], **kwargs: Any) -> Any:
        """Make one request; return its JSON body, or raise `UnexpectedAnswer`."""
        response = self.http.request(method, path, **kwargs)
        if response.status_code not in expect:
            raise UnexpectedAnswer(
                f"{method} {path} answered {response.status_code} (expected "
                f"{'/'.join(map(str, expect))}): {response.text[:500]}"
            )
        return response.json() if response.content else None

    def close(self) -> None:
        self.http.close()


@dataclass(slots=True)
class PooledNode:
    """A node a client keeps changing, with the preconditions its next change needs."""

    id: str
    version: int
    head_revision: str | None = None
    renames: int = 0


@dataclass(slots=True)
class Session:
    """One backend with one account: the clients, and what the set-up created."""

    clients: list[Client]
    root_id: str
    namespace_id: str
    pools: dict[str, list[list[PooledNode]]] = field(default_factory=dict)
    list_folder: str | None = None
    chunk_refs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def admin(self) -> Client:
        return self.clients[0]


def _new_node(kind: str, parent_id: str, name: str) -> dict[str, Any]:
    """The body of `POST /nodes`: a node with a fresh client-made id."""
    return {
        "id": uuid7(),
        "parent_id": parent_id,
        "name": name,
        "kind": kind,
        "mode": 0o755 if kind == "dir" else 0o644,
        "mtime_ns": time.time_ns(),
    }


def _create_folder(session: Session, name: str) -> str:
    body = _new_node("dir", session.root_id, name)
    node = session.admin.call("POST", f"{API}/nodes", (201,), json=body)
    return str(node["id"])


def _create_files(session: Session, parent_id: str, names: list[str]) -> list[PooledNode]:
    """Create files through batched changes (set-up, not measured)."""
    nodes: list[PooledNode] = []
    for start in range(0, len(names), BATCH):
        ops = [
            {"op": "create", "op_id": uuid7(), **_new_node("file", parent_id, name)}
            for name in names[start : start + BATCH]
        ]
        answer = session.admin.call("POST", f"{API}/changes", (200,), json={"ops": ops})
        for result in answer["results"]:
            if result.get("status") not in (200, 201):
                raise UnexpectedAnswer(f"batched create failed: {result}")
            nodes.append(PooledNode(result["node"]["id"], int(result["node"]["version"])))
    return nodes


def _pool(session: Session, workload: str) -> list[list[PooledNode]]:
    """Per-client pools of files for a workload, created on first use and kept across runs."""
    if workload not in session.pools:
        folder = _create_folder(session, f"{workload}-pool")
        k = len(session.clients)
        names = [f"c{c}-{i}" for c in range(k) for i in range(POOL_PER_CLIENT)]
        nodes = _create_files(session, folder, names)
        session.pools[workload] = [
            nodes[c * POOL_PER_CLIENT : (c + 1) * POOL_PER_CLIENT] for c in range(k)
        ]
    return session.pools[workload]


def _cycle(nodes: list[PooledNode]) -> Iterator[PooledNode]:
    while True:
        yield from nodes


# --- workloads: each returns one operation per client -----------------------------------


def create_ops(session: Session, run: int) -> list[Operation]:
    folder = _create_folder(session, f"create-{run}")

    def op_for(client: Client, c: int) -> Operation:
        counter = iter(range(1 << 62))

        def create() -> None:
            body = _new_node("file", folder, f"c{c}-{next(counter)}")
            client.call("POST", f"{API}/nodes", (201,), json=body)

        return create

    return [op_for(client, c) for c, client in enumerate(session.clients)]


def rename_ops(session: Session, run: int) -> list[Operation]:
    pools = _pool(session, "rename")

    def op_for(client: Client, c: int, nodes: Iterator[PooledNode]) -> Operation:
        def rename() -> None:
            node = next(nodes)
            node.renames += 1
            body = {"base_version": node.version, "name": f"c{c}-{node.id[-12:]}-{node.renames}"}
            answer = client.call("PATCH", f"{API}/nodes/{node.id}", (200,), json=body)
            node.version = int(answer["version"])

        return rename

    return [op_for(cl, c, _cycle(pools[c])) for c, cl in enumerate(session.clients)]


def commit_ops(session: Session, run: int) -> list[Operation]:
    pools = _pool(session, "commit")
    refs = _uploaded_chunks(session)
    size = sum(int(ref["size"]) for ref in refs)

    def op_for(client: Client, nodes: Iterator[PooledNode]) -> Operation:
        def commit() -> None:
            node = next(nodes)
            body = {
                "revision_id": uuid7(),
                "base_revision": node.head_revision,
                "size": size,
                "mtime_ns": time.time_ns(),
                "chunks": refs,
            }
            path = f"{API}/nodes/{node.id}/revisions"
            answer = client.call("POST", path, (201,), json=body)
            node.head_revision = str(answer["node"]["head_revision"])
            node.version = int(answer["node"]["version"])

        return commit

    return [op_for(cl, _cycle(pools[c])) for c, cl in enumerate(session.clients)]


def _uploaded_chunks(session: Session) -> list[dict[str, Any]]:
    """Upload 4 small chunks once, the way a client does: prepare, presigned PUT, refs."""
    if session.chunk_refs:
        return session.chunk_refs
    plaintexts = [os.urandom(CHUNK_PLAIN_BYTES) for _ in range(CHUNKS_PER_COMMIT)]
    hashes = [hashlib.sha256(p).hexdigest() for p in plaintexts]
    session.admin.call("POST", f"{API}/chunks/prepare", (200,), json={"hashes": hashes})
    blobs = [os.urandom(CHUNK_STORED_BYTES) for _ in plaintexts]  # stand-in ciphertexts
    objects = [hashlib.sha256(b).hexdigest() for b in blobs]
    wanted = {
        "objects": [{"object": o, "size": len(b)} for o, b in zip(objects, blobs, strict=True)]
    }
    answer = session.admin.call("POST", f"{API}/chunks/upload-urls", (200,), json=wanted)
    urls = {u["object"]: u for u in answer["urls"]}
    for obj, blob in zip(objects, blobs, strict=True):
        url = urls[obj]
        session.admin.call(
            url.get("method", "PUT"),
            url["url"],
            (200, 201, 204),
            content=blob,
            headers=url.get("headers") or {},
        )
    offset = 0
    for plain, digest, obj, blob in zip(plaintexts, hashes, objects, blobs, strict=True):
        session.chunk_refs.append(
            {
                "offset": offset,
                "size": len(plain),
                "hash": digest,
                "object": obj,
                "stored_size": len(blob),
            }
        )
        offset += len(plain)
    return session.chunk_refs


def list_ops(session: Session, run: int) -> list[Operation]:
    if session.list_folder is None:
        folder = _create_folder(session, "list-1000")
        _create_files(session, folder, [f"entry-{i:04d}" for i in range(LIST_ENTRIES)])
        session.list_folder = folder
    folder = session.list_folder

    def op_for(client: Client) -> Operation:
        def listing() -> None:
            count, cursor = 0, None
            while True:
                params: dict[str, Any] = {"page_size": LIST_ENTRIES}
                if cursor is not None:
                    params["cursor"] = cursor
                page = client.call("GET", f"{API}/nodes/{folder}/children", (200,), params=params)
                count += len(page["items"])
                cursor = page.get("next_cursor")
                if not cursor:
                    break
            if count != LIST_ENTRIES:
                raise UnexpectedAnswer(f"listing returned {count} entries, not {LIST_ENTRIES}")

        return listing

    return [op_for(client) for client in session.clients]


def journal_ops(session: Session, run: int) -> list[Operation]:
    head = _journal_head(session)
    if head <= JOURNAL_PAGE:
        raise UnexpectedAnswer(f"journal has only {head} entries after the set-up")
    path = f"{API}/journal/{session.namespace_id}"

    def op_for(client: Client, rng: random.Random) -> Operation:
        def read() -> None:
            after = rng.randrange(0, head - JOURNAL_PAGE)
            params = {"after": after, "limit": JOURNAL_PAGE}
            page = client.call("GET", path, (200,), params=params)
            if not page["entries"]:
                raise UnexpectedAnswer(f"journal after {after} is empty, head is {head}")

        return read

    return [op_for(cl, random.Random(c)) for c, cl in enumerate(session.clients)]


def _journal_head(session: Session) -> int:
    """The newest seq of the namespace, found by walking the feed (set-up, not timed)."""
    if session.list_folder is None:
        list_ops(session, 0)  # makes sure there are well over JOURNAL_PAGE entries
    cursor, path = 0, f"{API}/journal/{session.namespace_id}"
    while True:
        page = session.admin.call("GET", path, (200,), params={"after": cursor, "limit": BATCH})
        cursor = int(page["cursor"])
        if not page.get("has_more"):
            return cursor


@dataclass(frozen=True, slots=True)
class Workload:
    metric: Metric
    summary: str
    prepare: Callable[[Session, int], list[Operation]]


WORKLOADS: dict[str, Workload] = {
    "backend.create": Workload(
        Metric("creates", "req/s", True), "POST /nodes of empty files", create_ops
    ),
    "backend.rename": Workload(
        Metric("renames", "req/s", True), "PATCH /nodes/{id} renames", rename_ops
    ),
    "backend.commit": Workload(
        Metric("commits", "req/s", True), "revision commits of a 4-chunk manifest", commit_ops
    ),
    "backend.list": Workload(
        Metric("listings (1,000 entries)", "lists/s", True),
        "full listings of a 1,000-entry folder",
        list_ops,
    ),
    "backend.journal": Workload(
        Metric("change-feed reads", "req/s", True),
        "journal reads of 100 entries after a random cursor",
        journal_ops,
    ),
}


# --- driving K clients ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outcome:
    requests: int
    seconds: float
    server_cores: float
    client_cores: float

    def note(self) -> str:
        return (
            f"{self.requests:,} in {self.seconds:.1f} s; CPU: server "
            f"{self.server_cores:.2f}, clients {self.client_cores:.2f} cores"
        )


def drive(ops: list[Operation], duration_s: float, server_pid: int) -> Outcome:
    """Run every client's operation in a loop on its own thread for `duration_s`.

    All threads start together (a barrier); the first error stops them all and is
    raised here. On Ctrl-C the threads are stopped and joined before the exception
    goes on, so the server is never stopped under a client's feet.
    """
    start = threading.Barrier(len(ops) + 1)
    stop = threading.Event()
    counts = [0] * len(ops)
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        try:
            start.wait()
            while not stop.is_set():
                ops[index]()
                counts[index] += 1
        except threading.BrokenBarrierError:
            pass  # the main thread was interrupted before the start
        except BaseException as exc:
            errors.append(exc)
            stop.set()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(len(ops))]
    for thread in threads:
        thread.start()
    try:
        start.wait()
        with Stopwatch() as watch:
            server_cpu, client_cpu = _group_cpu(server_pid), _own_cpu()
            stop.wait(duration_s)
            stop.set()
            for thread in threads:
                thread.join()
    finally:
        stop.set()
        start.abort()  # releases workers still at the barrier if we never reached it
        for thread in threads:
            thread.join()
    if errors:
        raise errors[0]
    return Outcome(
        sum(counts),
        watch.seconds,
        (_group_cpu(server_pid) - server_cpu) / watch.seconds,
        (_own_cpu() - client_cpu) / watch.seconds,
    )


def _own_cpu() -> float:
    times = os.times()
    return times.user + times.system


def _group_cpu(pgid: int) -> float:
    """CPU seconds used so far by every process in a process group (the server's)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process ended meanwhile
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total / ticks


# --- the suite --------------------------------------------------------------------------


def unavailable_reason() -> str | None:
    """Why the backend cannot be benchmarked here, or None when it can."""
    if importlib.util.find_spec("backend") is None:
        return "the `backend` package is not importable from this interpreter"
    if importlib.util.find_spec("backend.__main__") is None:
        return "the backend is not runnable yet (no backend/__main__.py: `python -m backend`)"
    return None


@contextlib.contextmanager
def open_session(backend: BackendProcess, clients: int) -> Iterator[Session]:
    """Register an account, log K devices in, and always close their connections."""
    admin = Client(backend.base_url)
    logins: list[Client] = []
    try:
        name, password = f"bench-{secrets.token_hex(4)}", secrets.token_urlsafe(18)
        credentials = {"name": name, "password": password}
        admin.call("POST", f"{API}/accounts", (201,), json=credentials)
        for c in range(clients):
            body = {**credentials, "device_label": f"bench client {c}"}
            token = admin.call("POST", f"{API}/login", (200,), json=body)["token"]
            logins.append(Client(backend.base_url, str(token)))
        me = logins[0].call("GET", f"{API}/me", (200,))
        yield Session(logins, str(me["root_id"]), str(me["namespace_id"]))
    finally:
        for client in [admin, *logins]:
            client.close()


def run(report: Report, options: Options, selected: tuple[str, ...]) -> None:
    reason = unavailable_reason()
    if reason is not None:
        for name in selected:
            report.skip(name, reason)
        return
    from tests.support.backend import running_backend  # the API tests' helper; needs pytest

    k = options.clients
    table = report.table(
        "backend",
        f"Backend metadata throughput (1 process, SQLite, {k} clients on loopback, "
        f"{options.duration_s:g} s per run)",
        FixedReference(
            (("1,000 QPS target", TARGET_AVERAGE_QPS), ("5,800 QPS peak", TARGET_PEAK_QPS))
        ),
    )
    with tempfile.TemporaryDirectory(prefix="bench-backend-", dir=options.workdir) as tmp:
        report.progress(f"starting the backend in {tmp}")
        with running_backend(Path(tmp)) as backend, open_session(backend, k) as session:
            assert backend.pid is not None
            _run_workloads(report, table, session, backend.pid, options, selected)


def _run_workloads(
    report: Report,
    table: Table,
    session: Session,
    server_pid: int,
    options: Options,
    selected: tuple[str, ...],
) -> None:
    """Each run measures every selected workload in turn; a workload that broke is dropped."""
    failed: set[str] = set()
    for run_index in range(options.runs):
        for name in (n for n in selected if n not in failed):
            workload = WORKLOADS[name]
            try:
                outcome = drive(
                    workload.prepare(session, run_index), options.duration_s, server_pid
                )
            except Exception as exc:
                failed.add(name)
                report.error(name, exc)
                continue
            rate = outcome.requests / outcome.seconds
            table.add(name, "1 process", Sample(workload.metric, rate, outcome.note()))
            report.progress(
                f"{name} run {run_index + 1}/{options.runs}: "
                f"{rate:,.0f} {workload.metric.unit} ({outcome.note()})"
            )


SUITE = Suite(
    name="backend",
    benchmarks=tuple(Benchmark(name, w.summary) for name, w in WORKLOADS.items()),
    run=run,
)
