"""Chunk pipeline throughput: how fast the client turns file content into stored objects.

Every byte a user writes goes through FastCDC, SHA-256, zstd and AES-256-GCM before it is
uploaded, and back through the checks of `open_chunk` when it is read from the store;
these rates bound how fast the client can upload and fill its cache. Each stage is timed
alone over the same data (`mountfs.chunks`, the code the client runs), then the whole
`seal_chunk` and `open_chunk`. Figures are MB/s (10⁶ bytes) of the stage's input:
plaintext everywhere except the AES-GCM row, whose input is the framed (compressed)
payload.

The data is half random (incompressible, like media and archives) and half text-like
(lines of the Python standard library drawn at random, so it compresses like source code
without repeating whole files), alternating in 8 MiB segments so chunks of both kinds
occur. The keys stand in for the backend's convergent keys (an HMAC of each plaintext
hash under a random secret); key derivation is the backend's work, not the client's.

Columns: `1 thread` calls the functions one chunk after another; the other column runs
them on every core the process may use — a thread pool for the stages, and the client's
own `ChunkPipeline` (trio + its capacity limiter) for seal and open — so the ratio is
the speed-up the client gets from its threads (hashlib, zstd and AES-GCM release the
GIL; pure Python does not).
"""

from __future__ import annotations

import hmac
import random
import secrets
import statistics
import sysconfig
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypeVar

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
)

if TYPE_CHECKING:
    from mountfs.chunks.cdc import CdcParams, Edit, Span
    from mountfs.chunks.pipeline import ChunkPipeline

__all__ = ["SUITE"]

MiB = 1 << 20
FULL_BYTES, QUICK_BYTES = 256 * MiB, 32 * MiB
SEGMENT = 8 * MiB
ONE_THREAD = "1 thread"

T = TypeVar("T")
R = TypeVar("R")

STAGES: dict[str, tuple[Metric, str]] = {
    "chunks.cdc": (Metric("CDC cut", "MB/s", True), "FastCDC boundaries (pyfastcdc)"),
    "chunks.sha256": (Metric("SHA-256", "MB/s", True), "plaintext hash of every chunk"),
    "chunks.zstd": (Metric("zstd frame", "MB/s", True), "compress.frame (zstd level 3 or raw)"),
    "chunks.aesgcm": (Metric("AES-GCM seal", "MB/s", True), "crypto.seal of framed payloads"),
    "chunks.seal": (Metric("seal (full)", "MB/s", True), "pipeline.seal_chunk: all of the above"),
    "chunks.open": (Metric("open (full)", "MB/s", True), "pipeline.open_chunk, every check"),
}


def mixed_data(size: int, seed: int = 0) -> bytes:
    """`size` bytes alternating 8 MiB of random bytes and 8 MiB of source-like text."""
    rng = random.Random(seed)
    lines = _source_lines()
    parts: list[bytes] = []
    for index, start in enumerate(range(0, size, SEGMENT)):
        length = min(SEGMENT, size - start)
        if index % 2 == 0:
            parts.append(rng.randbytes(length))
        else:
            text = "".join(rng.choices(lines, k=length // 20 + 1)).encode()
            while len(text) < length:
                text += "".join(rng.choices(lines, k=length // 20 + 1)).encode()
            parts.append(text[:length])
    return b"".join(parts)


def _source_lines() -> list[str]:
    """Lines of the standard library's top-level modules (a few MB), in a stable order."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    lines: list[str] = []
    for path in sorted(stdlib.glob("*.py")):
        lines.extend(path.read_text(errors="replace").splitlines(keepends=True))
    return lines


def _map(fn: Callable[[T], R], items: Sequence[T], threads: int) -> tuple[list[R], float]:
    """Apply `fn` to every item on `threads` threads; return the results and the seconds."""
    if threads == 1:
        with Stopwatch() as watch:
            results = [fn(item) for item in items]
        return results, watch.seconds
    with ThreadPoolExecutor(threads) as pool, Stopwatch() as watch:
        results = list(pool.map(fn, items))
    return results, watch.seconds


def _pipeline_map(
    work: Callable[[ChunkPipeline, T], Awaitable[R]], items: Sequence[T], threads: int
) -> tuple[list[R], float]:
    """Like `_map`, but through the client's `ChunkPipeline`: one trio task per item, the
    pipeline's limiter deciding how many run at once, as in the client."""
    import trio

    from mountfs.chunks.pipeline import ChunkPipeline

    chunk_pipeline = ChunkPipeline(threads)
    results: dict[int, R] = {}

    async def main() -> None:
        async def one(index: int) -> None:
            results[index] = await work(chunk_pipeline, items[index])

        async with trio.open_nursery() as nursery:
            for index in range(len(items)):
                nursery.start_soon(one, index)

    with Stopwatch() as watch:
        trio.run(main)
    return [results[i] for i in range(len(items))], watch.seconds


def _cut(view: memoryview, threads: int) -> tuple[list[Span], float]:
    """FastCDC over the data; with N threads each cuts one N-th (the boundaries near the
    seams differ from a single cut, which does not matter for a rate)."""
    from mountfs.chunks import cdc

    step = -(-len(view) // threads)
    parts = [view[start : start + step] for start in range(0, len(view), step)]
    cuts, seconds = _map(cdc.cut, parts, threads)
    spans = [
        cdc.Span(index * step + span.offset, span.length)
        for index, part in enumerate(cuts)
        for span in part
    ]
    return spans, seconds


@dataclass(frozen=True, slots=True)
class Pass:
    """One run in one column: the stages to time, and on how many threads."""

    selected: frozenset[str]
    threads: int


def run_pass(data: bytes, secret: bytes, spec: Pass) -> list[tuple[str, Sample]]:
    """Push `data` through the selected stages (and those they need), timing each."""
    from mountfs.chunks import compress, crypto, pipeline

    view, mb, threads = memoryview(data), len(data) / 1e6, spec.threads
    out: list[tuple[str, Sample]] = []

    def record(name: str, rate: float, note: str = "") -> None:
        out.append((name, Sample(STAGES[name][0], rate, note)))

    spans, seconds = _cut(view, threads)
    mean = len(data) / len(spans) / MiB
    record("chunks.cdc", mb / seconds, f"chunks of {mean:.1f} MiB on average")
    chunks = [view[span.offset : span.end] for span in spans]
    hashes, seconds = _map(pipeline.plain_hash, chunks, threads)
    record("chunks.sha256", mb / seconds)
    keys = [hmac.digest(secret, bytes.fromhex(digest), "sha256") for digest in hashes]

    if {"chunks.zstd", "chunks.aesgcm"} & spec.selected:
        framed, seconds = _map(compress.frame, chunks, threads)
        stored = sum(len(payload) for payload in framed)
        record("chunks.zstd", mb / seconds, f"output {stored / len(data):.0%} of the input")
        pairs = list(zip(keys, framed, strict=True))
        _, seconds = _map(lambda pair: crypto.seal(*pair), pairs, threads)
        record("chunks.aesgcm", stored / 1e6 / seconds, f"{stored / MiB:,.0f} MiB framed")

    if {"chunks.seal", "chunks.open"} & spec.selected:
        via = "direct calls" if threads == 1 else f"ChunkPipeline({threads})"
        pairs_in = list(zip(chunks, keys, strict=True))
        if threads == 1:
            sealed, seconds = _map(lambda ck: pipeline.seal_chunk(*ck), pairs_in, 1)
        else:
            sealed, seconds = _pipeline_map(lambda p, ck: p.seal(*ck), pairs_in, threads)
        record("chunks.seal", mb / seconds, via)
        triples = [
            (item.ciphertext, key, item.ref(span.offset))
            for item, key, span in zip(sealed, keys, spans, strict=True)
        ]
        if threads == 1:
            opened, seconds = _map(lambda ckr: pipeline.open_chunk(*ckr), triples, 1)
        else:
            opened, seconds = _pipeline_map(lambda p, ckr: p.open(*ckr), triples, threads)
        if b"".join(opened) != data:
            raise RuntimeError("open_chunk did not give back the data that was sealed")
        record("chunks.open", mb / seconds, via)
    return [(name, sample) for name, sample in out if name in spec.selected]


def unavailable_reason() -> str | None:
    """Why the chunk pipeline cannot be measured here, or None when it can."""
    try:
        import mountfs.chunks.pipeline  # noqa: F401 - checks the whole package imports
    except ImportError as exc:
        return f"mountfs.chunks is not importable yet ({exc})"
    return None


def run(report: Report, options: Options, selected: tuple[str, ...]) -> None:
    reason = unavailable_reason()
    if reason is not None:
        for name in selected:
            report.skip(name, reason)
        return
    from mountfs.chunks.pipeline import default_thread_count

    if "chunks.params" in selected:
        run_params(report, options)
    selected = tuple(name for name in selected if name != "chunks.params")
    if not selected:
        return
    size = QUICK_BYTES if options.quick else FULL_BYTES
    report.progress(f"generating {size / MiB:,.0f} MiB of mixed data")
    data, secret = mixed_data(size), secrets.token_bytes(32)
    cores = default_thread_count()
    columns = [(ONE_THREAD, 1)] + ([(f"{cores} threads", cores)] if cores > 1 else [])
    table = report.table(
        "chunks",
        f"Chunk pipeline throughput (mountfs.chunks, {size / MiB:,.0f} MiB half random, half text)",
        ColumnReference(ONE_THREAD),
    )
    for run_index in range(options.runs):
        for column, threads in columns:
            samples = run_pass(data, secret, Pass(frozenset(selected), threads))
            _record(table, column, samples)
            figures = ", ".join(f"{s.metric.name} {s.value:,.0f}" for _, s in samples)
            report.progress(f"chunks run {run_index + 1}/{options.runs}, {column}: {figures} MB/s")


def _record(table: Table, column: str, samples: list[tuple[str, Sample]]) -> None:
    for name, sample in samples:
        table.add(name, column, sample)


# --- chunks.params: what the chunk size costs and saves -------------------------------------

PARAMS_FILE = 100 * MiB
PARAMS_EDITS, QUICK_PARAMS_EDITS = 400, 100
TAR_BYTES, QUICK_TAR_BYTES = 128 * MiB, 32 * MiB
INSERT_FILES = 400
REF_JSON_BYTES_PER_GIB = Metric("manifest JSON per GiB of file", "KB", False)


@dataclass(frozen=True)
class Candidate:
    """One set of FastCDC parameters to compare (the column label says which)."""

    label: str
    min_kib: int
    avg_kib: int
    max_kib: int
    normalization: Literal[0, 1, 2, 3]

    def params(self) -> CdcParams:
        from mountfs.chunks.cdc import CdcParams

        kib = 1024
        return CdcParams(
            self.min_kib * kib, self.avg_kib * kib, self.max_kib * kib, self.normalization
        )


CANDIDATES = (
    Candidate("256K/1M/4M nc1 (v1)", 256, 1024, 4096, 1),
    Candidate("256K/512K/2M nc1", 256, 512, 2048, 1),
    Candidate("256K/512K/1M nc2", 256, 512, 1024, 2),
    Candidate("256K/512K/2M nc2", 256, 512, 2048, 2),
    Candidate("256K/512K/4M nc2", 256, 512, 4096, 2),
    Candidate("256K/256K/1M nc2", 256, 256, 1024, 2),
)

PARAM_METRICS = {
    "cut": Metric("CDC cut speed (1 thread)", "MB/s", True),
    "mean": Metric("mean chunk", "KiB", True),
    "per_gib": Metric("chunks per GiB (refs, PUTs, GETs)", "count", False),
    "json": REF_JSON_BYTES_PER_GIB,
    "edit_mean": Metric("4 KiB edit of 100 MiB, up + down, mean", "% of file", False),
    "edit_p99": Metric("4 KiB edit, p99 over edits", "% of file", False),
    "edit_max": Metric("4 KiB edit, worst edit", "% of file", False),
    "insert": Metric("10 B inserted at the start of 100 MiB, up + down, mean", "% of file", False),
    "scattered": Metric("100 scattered small edits: bytes to upload", "% of file", False),
    "tar": Metric("tar of site-packages, 3 packages removed: upload", "MiB", False),
}


def _ref_json_bytes(spans: Sequence[Span]) -> int:
    """The manifest's refs as a client sends them (offset, size, two hex digests, stored size)."""
    import json

    digest = "0" * 64
    refs = [
        {"offset": s.offset, "size": s.length, "hash": digest, "object": digest,
         "stored_size": s.length + 29}
        for s in spans
    ]  # fmt: skip
    return len(json.dumps(refs))


def _fresh_bytes(old: list[Span], data: bytes | bytearray, edit: Edit, params: CdcParams) -> int:
    from mountfs.chunks.cdc import rechunk

    result = rechunk(old, memoryview(data), edit, params)
    return sum(result.spans[i].length for i in result.fresh)


def _tar_versions(limit: int) -> tuple[bytes, bytes] | None:
    """A tar of this interpreter's site-packages (first `limit` bytes of files, sorted), and
    the same tar without three packages from its middle: a backup after an uninstall."""
    import io
    import os
    import tarfile

    root = Path(sysconfig.get_paths()["purelib"])
    packages = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.endswith("info"))
    if len(packages) < 10:
        return None
    files: list[Path] = []
    total = 0
    for package in packages:
        for dirpath, _, names in sorted(os.walk(package)):
            for name in sorted(names):
                path = Path(dirpath, name)
                if path.is_file() and not path.is_symlink():
                    files.append(path)
                    total += path.stat().st_size
        if total >= limit:
            break
    used = sorted({f.relative_to(root).parts[0] for f in files})
    removed = set(used[len(used) // 2 : len(used) // 2 + 3])

    def tar(skip: set[str]) -> bytes:
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as archive:
            for path in files:
                if path.relative_to(root).parts[0] in skip:
                    continue
                info = archive.gettarinfo(str(path), str(path.relative_to(root)))
                info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
                with open(path, "rb") as f:
                    archive.addfile(info, f)
        return out.getvalue()

    return tar(set()), tar(removed)


def _upload_after(old: bytes, new: bytes, params: CdcParams) -> int:
    """Bytes of `new`'s chunks whose content `old` does not have (what dedup cannot save)."""
    from mountfs.chunks.cdc import cut
    from mountfs.chunks.pipeline import plain_hash

    view_old, view_new = memoryview(old), memoryview(new)
    have = {plain_hash(view_old[s.offset : s.end]) for s in cut(old, params)}
    return sum(
        s.length for s in cut(new, params) if plain_hash(view_new[s.offset : s.end]) not in have
    )


def measure_params(candidate: Candidate, quick: bool, tars: tuple[bytes, bytes] | None,
                   mixed: bytes) -> dict[str, Sample]:  # fmt: skip
    """Every figure of `chunks.params` for one candidate."""
    from mountfs.chunks.cdc import Edit, cut, rechunk

    params = candidate.params()
    rng = random.Random(6)
    data = bytearray(rng.randbytes(PARAMS_FILE))
    with Stopwatch() as watch:
        spans = cut(data, params)
    seconds = watch.seconds
    out: dict[str, Sample] = {}
    size = len(data)
    out["cut"] = Sample(PARAM_METRICS["cut"], size / seconds / 1e6, "100 MiB random")
    mean = size / len(spans)
    out["mean"] = Sample(PARAM_METRICS["mean"], mean / 1024, f"{len(spans)} chunks in 100 MiB")
    per_gib = (1 << 30) / mean
    out["per_gib"] = Sample(PARAM_METRICS["per_gib"], per_gib, "random data")
    json_gib = _ref_json_bytes(spans) * (1 << 30) / size / 1000
    out["json"] = Sample(PARAM_METRICS["json"], json_gib, "sent whole on each commit, and read")

    # 4 KiB overwrites at random aligned offsets, applied one after another; each edit moves
    # its fresh chunks twice (A uploads, B downloads: B carries every other chunk).
    trials = QUICK_PARAMS_EDITS if quick else PARAMS_EDITS
    per_edit: list[float] = []
    current = spans
    for _ in range(trials):
        offset = rng.randrange(size // 4096) * 4096
        data[offset : offset + 4096] = rng.randbytes(4096)
        result = rechunk(
            current, memoryview(data), Edit(offset, offset + 4096, offset + 4096), params
        )
        per_edit.append(200 * sum(result.spans[i].length for i in result.fresh) / size)
        current = list(result.spans)
    per_edit.sort()
    note = f"{trials} edits"
    out["edit_mean"] = Sample(PARAM_METRICS["edit_mean"], statistics.mean(per_edit), note)
    p99 = per_edit[min(len(per_edit) - 1, round(0.99 * (len(per_edit) - 1)))]
    out["edit_p99"] = Sample(PARAM_METRICS["edit_p99"], p99, note)
    out["edit_max"] = Sample(PARAM_METRICS["edit_max"], per_edit[-1], note)

    # 10 bytes inserted at the start: what moves is the file's first chunk (or two), so
    # one file is one draw; many "files" are windows of the random data, each 8 MiB (more
    # than v1's 4 MiB maximum) starting at another offset. Counted twice, in % of 100 MiB.
    inserts: list[float] = []
    window = 8 * MiB
    for start in range(0, size - window, (size - window) // INSERT_FILES):
        head = bytes(data[start : start + window])
        fresh = _fresh_bytes(cut(head, params), b"0123456789" + head, Edit(0, 0, 10), params)
        inserts.append(200 * fresh / size)
    inserts.sort()
    p99 = inserts[min(len(inserts) - 1, round(0.99 * (len(inserts) - 1)))]
    over = sum(1 for value in inserts if value > 2) / len(inserts)
    note = f"{len(inserts)} file starts: p99 {p99:.2f}%, {100 * over:.1f}% of them over 2%"
    out["insert"] = Sample(PARAM_METRICS["insert"], statistics.mean(inserts), note)

    # 100 scattered edits (inserts, deletes, overwrites of 1..100 bytes) of the mixed data.
    edited = bytearray(mixed)
    for _ in range(100):
        at = rng.randrange(len(edited))
        n = rng.randint(1, 100)
        kind = rng.randrange(3)
        if kind == 0:
            edited[at:at] = rng.randbytes(n)
        elif kind == 1:
            del edited[at : at + n]
        else:
            edited[at : at + n] = rng.randbytes(n)
    up = _upload_after(mixed, bytes(edited), params)
    out["scattered"] = Sample(
        PARAM_METRICS["scattered"], 100 * up / len(mixed), f"{len(mixed) // MiB} MiB mixed data"
    )
    if tars is not None:
        up = _upload_after(tars[0], tars[1], params)
        out["tar"] = Sample(PARAM_METRICS["tar"], up / MiB, f"{len(tars[0]) / MiB:,.0f} MiB tar")
    return out


def run_params(report: Report, options: Options) -> None:
    table = report.table(
        "chunks.params",
        "Chunk size: bytes on the wire against chunk count (FastCDC min/avg/max, NC level)",
        ColumnReference(CANDIDATES[0].label),
    )
    report.progress("building the site-packages tars")
    tars = _tar_versions(QUICK_TAR_BYTES if options.quick else TAR_BYTES)
    mixed = mixed_data(QUICK_BYTES if options.quick else 64 * MiB, seed=3)
    for _ in range(options.runs):
        for candidate in CANDIDATES:
            samples = measure_params(candidate, options.quick, tars, mixed)
            for sample in samples.values():
                table.add("chunks.params", candidate.label, sample)
            report.progress(f"{candidate.label}: " + ", ".join(
                f"{s.metric.name} {s.value:,.2f}" for s in samples.values()))  # fmt: skip


SUITE = Suite(
    name="chunks",
    benchmarks=(
        *(Benchmark(name, summary) for name, (_, summary) in STAGES.items()),
        Benchmark("chunks.params", "candidate chunk sizes: wire bytes per edit, chunk count"),
    ),
    run=run,
)
