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
import sysconfig
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

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
    from mountfs.chunks.cdc import Span
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


SUITE = Suite(
    name="chunks",
    benchmarks=tuple(Benchmark(name, summary) for name, (_, summary) in STAGES.items()),
    run=run,
)
