"""`ChunkRef`, `Manifest` and chunk keys: invariants and the wire form of docs/protocol.md."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
from typing import Any

import pytest

from mountfs.errors import InvalidManifest, MountfsError
from mountfs.types import ChunkHash, ChunkRef, Manifest, ObjectName, keys_from_wire


def _hex(label: str) -> str:
    return hashlib.sha256(label.encode()).hexdigest()


def ref(offset: int, size: int, label: str = "c") -> ChunkRef:
    return ChunkRef(offset, size, ChunkHash(_hex(label)), ObjectName(_hex(label + "o")), size + 17)


def wire_ref(offset: int, size: int, label: str = "c") -> dict[str, Any]:
    return ref(offset, size, label).to_wire()


def test_chunk_ref_wire_form_is_the_protocol_one() -> None:
    one = ref(0, 10)
    assert one.to_wire() == {
        "offset": 0,
        "size": 10,
        "hash": one.hash,
        "object": one.object,
        "stored_size": 27,
    }
    assert ChunkRef.from_wire({**one.to_wire(), "key": "ignored"}) == one


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"offset": -1}, "bad chunk offset"),
        ({"size": -1}, "bad chunk size"),
        ({"stored_size": 0}, "bad chunk stored_size"),
        ({"hash": "ABC"}, "bad chunk hash"),
        ({"hash": _hex("x").upper()}, "bad chunk hash"),
        ({"object": _hex("x")[:-1]}, "bad chunk object name"),
    ],
)
def test_chunk_ref_rejects_bad_values(change: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidManifest, match=message):
        dataclasses.replace(ref(0, 10), **change)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"offset": True}, "offset must be an integer"),
        ({"size": "10"}, "size must be an integer"),
        ({"stored_size": 1.5}, "stored_size must be an integer"),
        ({"hash": 5}, "hash must be 64 lowercase hex"),
        ({"object": None}, "object must be 64 lowercase hex"),
    ],
)
def test_chunk_ref_from_wire_rejects_bad_types(change: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidManifest, match=message):
        ChunkRef.from_wire({**wire_ref(0, 10), **change})


def test_chunk_ref_from_wire_rejects_missing_fields() -> None:
    data = wire_ref(0, 10)
    del data["stored_size"]
    with pytest.raises(InvalidManifest, match="lacks field 'stored_size'"):
        ChunkRef.from_wire(data)


def test_manifest_round_trips_through_the_wire_form() -> None:
    manifest = Manifest(30, (ref(0, 10, "a"), ref(10, 15, "b"), ref(25, 5, "a")))
    wire = manifest.to_wire()
    assert wire == {"size": 30, "chunks": [r.to_wire() for r in manifest.chunks]}
    assert Manifest.from_wire({**wire, "id": "rev", "mtime_ns": 1}) == manifest


def test_empty_file_has_no_chunks() -> None:
    assert Manifest.from_wire({"size": 0, "chunks": []}) == Manifest(0, ())


@pytest.mark.parametrize(
    ("size", "chunks", "message"),
    [
        (10, (ref(1, 9),), "starts at 1, expected 0"),
        (20, (ref(0, 10), ref(11, 9)), "starts at 11, expected 10"),
        (20, (ref(0, 10), ref(5, 15)), "starts at 5, expected 10"),
        (11, (ref(0, 10),), "cover 10 bytes but size is 11"),
        (0, (ref(0, 0),), "is empty"),
        (-1, (), "bad manifest size"),
    ],
)
def test_manifest_rejects_gaps_overlaps_and_wrong_sizes(
    size: int, chunks: tuple[ChunkRef, ...], message: str
) -> None:
    with pytest.raises(InvalidManifest, match=message):
        Manifest(size, chunks)


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        ({"chunks": []}, "size must be an integer"),
        ({"size": 0}, "chunks must be a list"),
        ({"size": 1, "chunks": ["x"]}, "must be a JSON object"),
    ],
)
def test_manifest_from_wire_rejects_malformed_input(wire: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidManifest, match=message):
        Manifest.from_wire(wire)


def test_invalid_manifest_is_a_value_error_and_a_mountfs_error() -> None:
    with pytest.raises(ValueError, match="size"):
        Manifest(1, ())
    assert issubclass(InvalidManifest, MountfsError)


def test_chunk_at_finds_the_chunk_holding_an_offset() -> None:
    manifest = Manifest(30, (ref(0, 10, "a"), ref(10, 15, "b"), ref(25, 5, "c")))
    assert [manifest.chunk_at(o) for o in (0, 9, 10, 24, 25, 29)] == [0, 0, 1, 1, 2, 2]
    with pytest.raises(IndexError):
        manifest.chunk_at(30)
    with pytest.raises(IndexError):
        manifest.chunk_at(-1)


def test_keys_from_wire_maps_hashes_to_keys() -> None:
    key_a, key_b = bytes(range(32)), bytes(range(1, 33))
    chunks = [
        {**wire_ref(0, 10, "a"), "key": base64.b64encode(key_a).decode()},
        {**wire_ref(10, 10, "b"), "key": base64.b64encode(key_b).decode()},
        {**wire_ref(20, 10, "a"), "key": base64.b64encode(key_a).decode()},
    ]
    assert keys_from_wire(chunks) == {_hex("a"): key_a, _hex("b"): key_b}


@pytest.mark.parametrize(
    ("key", "message"),
    [
        (None, "has no key"),
        ("not base64!", "not base64"),
        (base64.b64encode(bytes(16)).decode(), "has 16 bytes"),
    ],
)
def test_keys_from_wire_rejects_bad_keys(key: str | None, message: str) -> None:
    with pytest.raises(InvalidManifest, match=message):
        keys_from_wire([{**wire_ref(0, 10), "key": key}])


def test_keys_from_wire_rejects_two_keys_for_one_hash() -> None:
    chunks = [
        {**wire_ref(0, 10), "key": base64.b64encode(bytes(32)).decode()},
        {**wire_ref(10, 10), "key": base64.b64encode(bytes(31) + b"\1").decode()},
    ]
    with pytest.raises(InvalidManifest, match="two keys"):
        keys_from_wire(chunks)
