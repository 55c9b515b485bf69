"""Chunk boundaries: determinism, locality of edits, streaming, and re-chunking after edits."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mountfs.chunks.cdc import (
    DEFAULT_PARAMS,
    MAX_CHUNK_SIZE,
    MAX_STORED_CHUNK_SIZE,
    MIN_CHUNK_SIZE,
    V1_PARAMS,
    CdcParams,
    Edit,
    Span,
    cut,
    iter_chunks,
    iter_file_chunks,
    rechunk,
)
from tests.unit.chunks.vectors import MiB, pseudo_random

SMALL = CdcParams(min_size=64, avg_size=256, max_size=1024)
"""Tiny chunks, so property tests see many boundaries in a few KiB."""


class CountingReader(io.BytesIO):
    """An in-memory file that counts the bytes read from it."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.bytes_read = 0

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        count = super().readinto(buffer)
        self.bytes_read += count
        return count


class ShortReads(io.RawIOBase):
    """A stream that returns at most 1000 bytes per read, like a pipe or a slow socket."""

    def __init__(self, data: bytes) -> None:
        self._view = memoryview(data)
        self._pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        count = min(len(buffer), 1000, len(self._view) - self._pos)
        buffer[:count] = self._view[self._pos : self._pos + count]
        self._pos += count
        return count


@pytest.fixture(scope="module")
def big() -> bytes:
    return pseudo_random("test-cdc-64MiB", 64 * MiB)


@pytest.fixture(scope="module")
def big_spans(big: bytes) -> list[Span]:
    return cut(big)


def _chunk_hashes(data: bytes, spans: list[Span]) -> list[bytes]:
    view = memoryview(data)
    return [hashlib.sha256(view[s.offset : s.end]).digest() for s in spans]


def _assert_contiguous(spans: list[Span] | tuple[Span, ...], size: int) -> None:
    end = 0
    for span in spans:
        assert span.offset == end
        assert span.length > 0
        end = span.end
    assert end == size


def test_default_sizes_are_the_documented_ones() -> None:
    """Boundaries v2 (docs/chunk-format.md, section 1, has the measurements behind them)."""
    assert CdcParams(256 * 1024, 512 * 1024, 2 * MiB, normalization=2) == DEFAULT_PARAMS
    assert MAX_CHUNK_SIZE <= MAX_STORED_CHUNK_SIZE == V1_PARAMS.max_size


def test_empty_input_has_no_chunks() -> None:
    assert cut(b"") == []
    assert list(iter_chunks(io.BytesIO(b""))) == []


def test_input_below_min_size_is_one_chunk() -> None:
    assert cut(b"x" * 1000) == [Span(0, 1000)]


def test_spans_cover_input_within_size_limits(big: bytes, big_spans: list[Span]) -> None:
    _assert_contiguous(big_spans, len(big))
    assert all(MIN_CHUNK_SIZE <= s.length <= MAX_CHUNK_SIZE for s in big_spans[:-1])
    mean = len(big) / len(big_spans)
    assert 0.45 * MiB < mean < 0.8 * MiB


def test_zeros_are_cut_at_max_size() -> None:
    spans = [Span(i * 2 * MiB, 2 * MiB) for i in range(4)] + [Span(8 * MiB, MiB)]
    assert cut(bytes(9 * MiB)) == spans


def test_boundaries_are_deterministic(big: bytes, big_spans: list[Span]) -> None:
    assert cut(bytes(big)) == big_spans
    assert cut(memoryview(big)) == big_spans
    assert cut(bytearray(big)) == big_spans


@pytest.mark.parametrize("position", [0, 1000, 300 * 1024, 5 * MiB, 40 * MiB])
def test_small_insert_changes_at_most_two_chunks(
    big: bytes, big_spans: list[Span], position: int
) -> None:
    edited = big[:position] + b"0123456789" + big[position:]
    old = set(_chunk_hashes(big, big_spans))
    new = _chunk_hashes(edited, cut(edited))
    assert sum(1 for h in new if h not in old) <= 2


def test_stream_cut_equals_buffer_cut(big: bytes, big_spans: list[Span]) -> None:
    pairs = list(iter_chunks(io.BytesIO(big)))
    assert [Span(offset, len(data)) for offset, data in pairs] == big_spans
    assert b"".join(data for _, data in pairs) == big


def test_stream_cut_survives_short_reads() -> None:
    data = pseudo_random("short-reads", 300_000)
    pairs = list(iter_chunks(ShortReads(data), SMALL))
    assert [Span(offset, len(chunk)) for offset, chunk in pairs] == cut(data, SMALL)


def test_file_cut_equals_buffer_cut(tmp_path: Path) -> None:
    data = pseudo_random("file-cut", 20 * MiB)
    path = tmp_path / "content"
    path.write_bytes(data)
    pairs = list(iter_file_chunks(path))
    assert [Span(offset, len(chunk)) for offset, chunk in pairs] == cut(data)
    assert b"".join(chunk for _, chunk in pairs) == data


def test_chunker_reads_a_bounded_window() -> None:
    """Memory stays bounded: the chunker never holds more than its 2 x max window."""
    stream = CountingReader(pseudo_random("window", 32 * MiB))
    consumed = 0
    for _, chunk in iter_chunks(stream):
        consumed += len(chunk)
        assert stream.bytes_read - consumed <= 2 * MAX_CHUNK_SIZE
    assert consumed == 32 * MiB


@pytest.mark.parametrize(
    ("label", "start", "removed", "inserted"),
    [
        ("overwrite 4 KiB mid-file", 32 * MiB, 4096, 4096),
        ("overwrite at byte 0", 0, 100, 100),
        ("insert 10 bytes near start", 1000, 0, 10),
        ("delete 1 MiB", 10 * MiB, MiB, 0),
        ("truncate to 40 MiB", 40 * MiB, 24 * MiB, 0),
        ("append 3 MiB", 64 * MiB, 0, 3 * MiB),
        ("overwrite last byte", 64 * MiB - 1, 1, 1),
        ("replace everything", 0, 64 * MiB, 5 * MiB),
    ],
)
def test_rechunk_equals_full_cut_and_reads_little(
    big: bytes, big_spans: list[Span], label: str, start: int, removed: int, inserted: int
) -> None:
    new = big[:start] + pseudo_random(label, inserted) + big[start + removed :]
    source = CountingReader(new)
    result = rechunk(big_spans, source, Edit(start, start + removed, start + inserted))
    full = cut(new)
    assert list(result.spans) == full
    fresh_bytes = sum(full[i].length for i in result.fresh)
    assert source.bytes_read <= fresh_bytes + 2 * MAX_CHUNK_SIZE
    if inserted + removed <= 1 * MiB:
        assert source.bytes_read <= 16 * MiB  # a 64 MiB file is not re-read whole
        assert fresh_bytes <= 4 * MiB  # a few chunks around the edit (v1: at most 3)
    # Every chunk outside `fresh` is an old chunk (same bytes, maybe shifted).
    old = set(_chunk_hashes(big, big_spans))
    reused = [h for i, h in enumerate(_chunk_hashes(new, full)) if i not in result.fresh]
    assert all(h in old for h in reused)


@pytest.mark.parametrize("start", [0, 5 * MiB + 4096, 33 * MiB, 64 * MiB - 4096])
def test_a_v1_file_edited_under_v2_keeps_most_of_its_chunks(big: bytes, start: int) -> None:
    """Files cut with the v1 parameters stay valid and cheap to edit: `rechunk` cuts v2 chunks
    from the edit until a boundary meets an old one and keeps the other v1 chunks as they are
    (their offsets and sizes are in the file's manifest; nothing re-cuts them)."""
    old = cut(big, V1_PARAMS)
    new = bytearray(big)
    new[start : start + 4096] = pseudo_random(f"v1-edit-{start}", 4096)
    result = rechunk(old, bytes(new), Edit(start, start + 4096, start + 4096))
    _assert_contiguous(result.spans, len(new))
    fresh = [result.spans[i] for i in result.fresh]
    assert all(span.length <= MAX_CHUNK_SIZE for span in fresh)
    assert all(span.length <= MAX_STORED_CHUNK_SIZE for span in result.spans)
    assert fresh[0].offset <= start < fresh[-1].end
    assert sum(span.length for span in fresh) <= 8 * MiB  # not the rest of a 64 MiB file
    kept = set(result.spans) - set(fresh)
    assert kept <= set(old)
    assert sum(span.length for span in kept) >= len(big) - 8 * MiB


def test_rechunk_from_a_buffer_equals_from_a_file(big: bytes, big_spans: list[Span]) -> None:
    new = bytearray(big)
    new[7 * MiB : 7 * MiB + 4096] = bytes(4096)
    edit = Edit.in_place(7 * MiB, 7 * MiB + 4096, len(big), len(new))
    assert rechunk(big_spans, new, edit) == rechunk(big_spans, io.BytesIO(new), edit)


@st.composite
def edited_contents(draw: st.DrawFn) -> tuple[bytes, bytes, Edit]:
    size = draw(st.integers(0, 12_000))
    seed = draw(st.text(max_size=8))
    old = {
        "random": pseudo_random(seed, size),
        "low-entropy": bytes(b & 3 for b in pseudo_random(seed, size)),
        "zeros": bytes(size),
    }[draw(st.sampled_from(["random", "low-entropy", "zeros"]))]
    start = draw(st.integers(0, size))
    old_end = draw(st.integers(start, min(size, start + 3000)))
    inserted = pseudo_random(seed + "+", draw(st.integers(0, 3000)))
    new = old[:start] + inserted + old[old_end:]
    return old, new, Edit(start, old_end, start + len(inserted))


@settings(max_examples=400, deadline=None)
@given(edited_contents())
def test_rechunk_equals_full_cut_for_any_edit(case: tuple[bytes, bytes, Edit]) -> None:
    old, new, edit = case
    result = rechunk(cut(old, SMALL), new, edit, SMALL)
    assert list(result.spans) == cut(new, SMALL)
    _assert_contiguous(result.spans, len(new))


@settings(max_examples=200, deadline=None)
@given(
    size=st.integers(0, 10_000),
    new_size=st.integers(0, 10_000),
    start=st.integers(0, 10_000),
    length=st.integers(0, 3_000),
)
def test_rechunk_in_place_writes_and_truncates(
    size: int, new_size: int, start: int, length: int
) -> None:
    old = pseudo_random("in-place", size)
    new = bytearray(old[:new_size].ljust(new_size, b"\0"))
    written = pseudo_random("written", max(0, min(length, new_size - start)))
    new[start : start + len(written)] = written
    edit = Edit.in_place(start, start + length, size, new_size)
    assert list(rechunk(cut(old, SMALL), bytes(new), edit, SMALL).spans) == cut(new, SMALL)


@pytest.mark.parametrize(("seed", "new_size"), [("eof-16", 5560), ("eof-20", 5791)])
def test_rechunk_recuts_chunks_that_see_the_new_eof(seed: str, new_size: int) -> None:
    """A cut depends on the bytes left to EOF when fewer than `max_size` remain (pyfastcdc
    scans pairs of bytes, so a cut one byte before an odd EOF becomes impossible). These
    truncations move a boundary that lies wholly before the edit; found by search."""
    old = pseudo_random(seed, 6000)
    new = old[:new_size]
    edit = Edit.in_place(new_size, new_size, len(old), new_size)
    assert list(rechunk(cut(old, SMALL), new, edit, SMALL).spans) == cut(new, SMALL)


def test_in_place_edit_covers_a_size_change() -> None:
    assert Edit.in_place(10, 20, 100, 100) == Edit(10, 20, 20)
    assert Edit.in_place(0, 0, 100, 40) == Edit(40, 100, 40)  # pure truncate
    assert Edit.in_place(90, 95, 100, 150) == Edit(90, 100, 150)  # write, then extend
    assert Edit.in_place(200, 210, 100, 210) == Edit(100, 100, 210)  # write past EOF


def test_rechunk_rejects_inconsistent_input() -> None:
    old = pseudo_random("reject", 5000)
    spans = cut(old, SMALL)
    with pytest.raises(ValueError, match="expected 5000"):
        rechunk(spans, old + b"x", Edit(0, 10, 10), SMALL)
    with pytest.raises(ValueError, match="past the old size"):
        rechunk(spans, old, Edit(4990, 5010, 5010), SMALL)
    with pytest.raises(ValueError, match="not contiguous"):
        rechunk(spans[1:], old, Edit(0, 0, 0), SMALL)
    with pytest.raises(ValueError, match="bad edit"):
        Edit(10, 5, 5)


def test_params_outside_pyfastcdc_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="out of range"):
        CdcParams(min_size=MiB, avg_size=512 * 1024, max_size=4 * MiB)
    with pytest.raises(ValueError, match="out of range"):
        CdcParams(min_size=256 * 1024, avg_size=MiB, max_size=32 * MiB)
