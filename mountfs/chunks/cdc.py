"""Content-defined chunk boundaries (FastCDC 2020, via `pyfastcdc`).

Where a chunk ends depends only on the bytes around the cut, not on the offset, so an insert
near the start of a file moves one or two boundaries and every later chunk is unchanged (and
deduplicates). The parameters below are part of the storage format: a writer that cuts
differently loses dedup against what is already stored, so `tests/unit/chunks/vectors.json`
pins them. Reading never depends on them (a manifest lists every chunk's offset and size,
per revision), and editing a file cut with other parameters costs little: `rechunk` cuts with
the current ones from the edit until a new boundary meets an old one, which happens within a
few MiB (measured for v1 → v2: 2-3 MiB for a 4 KiB edit of a 100 MiB file), and keeps the
rest of the old chunks.

Three entry points:
- `cut(buf)`: the spans of an in-memory buffer.
- `iter_chunks(stream)` / `iter_file_chunks(path)`: `(offset, bytes)` pairs of a file, read in
  a bounded window instead of loaded whole.
- `rechunk(old_spans, source, edit)`: the spans after an edit, cutting only from the last
  unaffected boundary to the first point where the new cuts fall back in step with the old
  ones. This is what makes "a 4 KiB write in a 1 GiB file" upload one or two chunks and read
  a few MiB instead of the whole file.

How a cut is decided (pyfastcdc `_cut_gear`), which the `rechunk` rules rely on: the cut after
a chunk starting at `b` reads bytes `b + min_size` up to and *including* the first byte of the
next chunk (the gear hash that triggers a cut includes it), and nothing past `b + max_size`.
It also depends on how many bytes remain in the file, but only while fewer than
`max_size + 1` remain (the tail of the file).
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final, Literal, NamedTuple

from pyfastcdc import FastCDC

from mountfs.types import Buffer

__all__ = [
    "AVG_CHUNK_SIZE",
    "DEFAULT_PARAMS",
    "MAX_CHUNK_SIZE",
    "MAX_STORED_CHUNK_SIZE",
    "MIN_CHUNK_SIZE",
    "NORMALIZATION_LEVEL",
    "CdcParams",
    "Edit",
    "Rechunked",
    "Span",
    "V1_PARAMS",
    "cut",
    "iter_chunks",
    "iter_file_chunks",
    "rechunk",
]

KiB = 1024
MiB = 1024 * KiB

MIN_CHUNK_SIZE = 256 * KiB
"""No chunk is smaller, except the last one of a file. Not below 256 KiB: the backend allows
one ref per 256 KiB of file (`backend.services.validation.max_refs`)."""

AVG_CHUNK_SIZE = 512 * KiB
"""FastCDC's target. Cut-point skipping makes the real mean larger: 0.61 MiB measured on
random data; see docs/chunk-format.md for the measurements that chose it (boundaries v2;
v1 was 256 KiB / 1 MiB / 4 MiB at level 1)."""

MAX_CHUNK_SIZE = 2 * MiB
"""No chunk this client cuts is larger."""

MAX_STORED_CHUNK_SIZE = 4 * MiB
"""The largest chunk any version of the boundaries wrote (v1's maximum): what a reader
accepts, and the bound on decompressed output (`mountfs.chunks.compress`). Files written
with v1 keep their boundaries in their manifests and must stay readable."""

NORMALIZATION_LEVEL: Final[Literal[0, 1, 2, 3]] = 2
"""FastCDC normalised-chunking level (NC): 2 narrows the size spread, so the chunk that holds a
random byte (what a small edit moves) is nearer the mean (v1 used 1)."""


class Span(NamedTuple):
    """A chunk's place in a file: `offset` and `length` in bytes.

    A named tuple rather than a dataclass: a 10 GiB file has ~10,000 of them and callers
    unpack them as `(offset, length)`.
    """

    offset: int
    length: int

    @property
    def end(self) -> int:
        return self.offset + self.length


@dataclass(frozen=True, slots=True)
class CdcParams:
    """Chunk size limits in bytes. Only `DEFAULT_PARAMS` is the storage format; others exist
    for tests (small chunks make property tests fast) and for measurements.

    pyfastcdc accepts 64 <= min <= 1 MiB, 256 <= avg <= 4 MiB, 1 KiB <= max <= 16 MiB and
    min <= avg <= max; other values raise `ValueError` here.
    """

    min_size: int
    avg_size: int
    max_size: int
    normalization: Literal[0, 1, 2, 3] = NORMALIZATION_LEVEL

    def __post_init__(self) -> None:
        self.fastcdc()  # validates

    def fastcdc(self) -> FastCDC:
        """A fresh chunker. Cheap, and pyfastcdc chunkers are not meant to be shared."""
        return FastCDC(
            self.avg_size,
            min_size=self.min_size,
            max_size=self.max_size,
            normalized_chunking=self.normalization,
        )


DEFAULT_PARAMS = CdcParams(MIN_CHUNK_SIZE, AVG_CHUNK_SIZE, MAX_CHUNK_SIZE)
"""Boundaries v2: what this client cuts."""

V1_PARAMS = CdcParams(256 * KiB, 1 * MiB, 4 * MiB, 1)
"""Boundaries v1, cut by clients before v2: their files keep these boundaries until edited
(for tests and measurements; nothing cuts with them any more)."""


def cut(buf: Buffer, params: CdcParams = DEFAULT_PARAMS) -> list[Span]:
    """The chunk spans of `buf`, in order; empty for an empty buffer. No data is copied."""
    return [Span(c.offset, c.length) for c in params.fastcdc().cut_buf(buf)]


def iter_chunks(
    stream: BinaryIO | io.RawIOBase | io.BufferedIOBase, params: CdcParams = DEFAULT_PARAMS
) -> Iterator[tuple[int, bytes]]:
    """Yield `(offset, data)` for each chunk of `stream`, from its current position to EOF.

    Offsets count from where the stream was. The chunker reads into one window of
    `2 * max_size` bytes; each yielded `bytes` is a copy the caller owns (the window is
    reused). Give it an unbuffered file (`buffering=0`) to avoid a second buffer.
    Same boundaries as `cut` over the same bytes.
    """
    for chunk in params.fastcdc().cut_stream(stream):
        yield chunk.offset, bytes(chunk.data)


def iter_file_chunks(
    path: str | Path, params: CdcParams = DEFAULT_PARAMS
) -> Iterator[tuple[int, bytes]]:
    """`iter_chunks` over the file at `path`, which is opened here and closed at the end.

    Reads rather than mmaps: a cache file may be truncated while we chunk it, and a
    truncated mmap kills the process with SIGBUS where a read just sees EOF.
    """
    with open(path, "rb", buffering=0) as stream:
        yield from iter_chunks(stream, params)


@dataclass(frozen=True, slots=True)
class Edit:
    """Old bytes `[start, old_end)` were replaced by new bytes `[start, new_end)`.

    Bytes before `start` are unchanged; bytes from `old_end` on are unchanged but now sit at
    `offset + (new_end - old_end)`. An overwrite has `old_end == new_end`, an insert of n
    bytes `old_end == start, new_end == start + n`, a delete `new_end == start`.
    """

    start: int
    old_end: int
    new_end: int

    def __post_init__(self) -> None:
        if not 0 <= self.start <= min(self.old_end, self.new_end):
            raise ValueError(f"bad edit {self}")

    @property
    def shift(self) -> int:
        """How far the unchanged tail moved."""
        return self.new_end - self.old_end

    @classmethod
    def in_place(cls, start: int, end: int, old_size: int, new_size: int) -> Edit:
        """The edit made by writes and truncates to `[start, end)`: nothing moves.

        This is what a filesystem sees (POSIX has no insert). If the size changed, the bytes
        between the two sizes are dirty too (appended or cut off), whether or not the
        caller's range covers them. An empty range means "only the size changed" (or, with
        the size unchanged, nothing: only the last chunk is cut again).
        """
        if end <= start:
            start = end = min(old_size, new_size)
        if old_size != new_size:
            start = min(start, old_size, new_size)
            end = max(end, old_size, new_size)
        start = min(start, old_size, new_size)
        return cls(start, max(start, min(end, old_size)), max(start, min(end, new_size)))


@dataclass(frozen=True, slots=True)
class Rechunked:
    """Result of `rechunk`.

    Attributes:
        spans: every span of the new content, contiguous from 0.
        fresh: indexes into `spans` of the chunks that were cut anew; they hold changed
            bytes and must be hashed (and maybe uploaded). All others are old chunks, at
            most shifted by the edit, with unchanged content.
    """

    spans: tuple[Span, ...]
    fresh: range


def rechunk(
    old_spans: Sequence[Span],
    source: Buffer | BinaryIO,
    edit: Edit,
    params: CdcParams = DEFAULT_PARAMS,
) -> Rechunked:
    """The spans of the new content, equal to `cut(new_content)`, reading little of it.

    Cutting restarts at the start of the first old chunk whose cut could see the edit (its
    end is at or past `edit.start`) or the file-size change (it starts at most `max_size`
    bytes before the smaller of the two ends of file). It stops at the first new boundary at or past
    `edit.new_end` that is an old boundary moved by `edit.shift`: from there the bytes and the
    distance to EOF are the old ones, so every later cut is the old cut, shifted.

    Args:
        old_spans: the spans of the old content (its `cut`, or `Span(ref.offset, ref.size)`
            for each ref of its manifest).
        source: the new content, as a buffer or a seekable binary file (positioned anywhere;
            it is seeked).
        edit: what changed between old and new.
        params: the ones to cut with. If they produced `old_spans`, the result equals
            `cut(new_content)`; if not (a file cut with the v1 parameters), it is still a
            valid cut: new chunks from the edit to the first boundary the two cuts share,
            the old chunks elsewhere.

    Raises:
        ValueError: `old_spans` is not contiguous from 0, or the edit does not fit the old
            size, or the source's size is not the old size plus `edit.shift`.
    """
    old_size = _checked_size(old_spans)
    if edit.old_end > old_size:
        raise ValueError(f"{edit} reaches past the old size {old_size}")
    new_size = old_size + edit.shift
    if _source_size(source) != new_size:
        raise ValueError(f"source has {_source_size(source)} bytes, expected {new_size}")

    first = _first_affected(old_spans, edit, min(old_size, new_size), params)
    restart = old_spans[first].offset if first < len(old_spans) else 0  # else: no old spans
    old_index = {span.offset: i for i, span in enumerate(old_spans)}

    spans = list(old_spans[:first])
    for span in _cuts_from(source, restart, params):
        spans.append(span)
        resync = old_index.get(span.end - edit.shift) if span.end >= edit.new_end else None
        if resync is not None:
            fresh = range(first, len(spans))
            spans.extend(Span(s.offset + edit.shift, s.length) for s in old_spans[resync:])
            return Rechunked(tuple(spans), fresh)
    return Rechunked(tuple(spans), range(first, len(spans)))


def _checked_size(spans: Sequence[Span]) -> int:
    end = 0
    for span in spans:
        if span.offset != end or span.length <= 0:
            raise ValueError(f"spans not contiguous from 0 at {span}")
        end = span.end
    return end


def _source_size(source: Buffer | BinaryIO) -> int:
    if isinstance(source, bytes | bytearray | memoryview):
        return memoryview(source).nbytes
    return source.seek(0, io.SEEK_END)


def _first_affected(spans: Sequence[Span], edit: Edit, smaller_size: int, params: CdcParams) -> int:
    """Index of the first old chunk whose cut might differ in the new content.

    A chunk keeps its cut if the cut reads only unchanged bytes (its end, the byte that
    triggered the cut, lies before `edit.start`) and sees the same remaining length (the
    file size is unchanged, or both sizes leave more than `max_size` bytes after its start).
    Both conditions hold for a prefix of the chunks.
    """
    size_changed = edit.shift != 0
    for index, span in enumerate(spans):
        near_eof = size_changed and smaller_size - span.offset <= params.max_size
        if span.end >= edit.start or near_eof:
            return index
    return len(spans)


def _cuts_from(source: Buffer | BinaryIO, start: int, params: CdcParams) -> Iterator[Span]:
    """Spans of `source[start:]`, in file offsets, read lazily."""
    chunker = params.fastcdc()
    if isinstance(source, bytes | bytearray | memoryview):
        chunks = chunker.cut_buf(memoryview(source)[start:])
    else:
        source.seek(start)
        chunks = chunker.cut_stream(source)
    for chunk in chunks:
        yield Span(start + chunk.offset, chunk.length)
