"""Fixed test vectors of the chunk format: their inputs, and how `vectors.json` is made.

`vectors.json` is self-contained so that another implementation (the backend, which decrypts
public-link downloads) can check itself against it: each input is described by parts that
anyone can rebuild (`text` repeated `times`, or `size` bytes of SHAKE-256 of a `shake256`
seed), each key is given in hex, and the expected outputs follow.

`test_vectors.py` recomputes everything and compares. When a change of format or chunking is
*intended*, bump the format version (docs/chunk-format.md) and regenerate:

    .venv/bin/python -m tests.unit.chunks.vectors --regen

Without `--regen` the module only reports whether the file is current (exit status 1 if not).
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mountfs.chunks import cdc, compress
from mountfs.chunks.pipeline import seal_chunk

VECTORS_PATH = Path(__file__).with_name("vectors.json")

CIPHERTEXT_HEX_LIMIT = 256
"""Ciphertexts up to this many bytes are pinned byte for byte; larger ones by name and size."""

KiB = 1024
MiB = 1024 * KiB


def pseudo_random(seed: str, size: int) -> bytes:
    """`size` reproducible, incompressible bytes: SHAKE-256 of `seed` (a standard XOF, so
    every language can make the same bytes, unlike Python's `random`)."""
    return hashlib.shake_256(seed.encode()).digest(size)


def build_input(parts: Sequence[Mapping[str, Any]]) -> bytes:
    """The bytes described by a vector's `input` parts."""
    out = bytearray()
    for part in parts:
        if "text" in part:
            out += part["text"].encode() * part["times"]
        elif "shake256" in part:
            out += pseudo_random(part["shake256"], part["size"])
        else:
            raise ValueError(f"unknown input part {part!r}")
    return bytes(out)


def _key(name: str) -> str:
    return hashlib.sha256(b"mountfs-test-vector-key:" + name.encode()).hexdigest()


_LOREM = "Lorem ipsum dolor sit amet, consectetur adipiscing elit. "

CHUNK_INPUTS: dict[str, list[dict[str, Any]]] = {
    "empty": [],
    "tiny-text": [{"text": "hello, mountfs\n", "times": 1}],
    "small-repetitive": [{"text": "ab", "times": 100}],
    "small-random": [{"shake256": "mountfs-vector-small", "size": 100}],
    "text-1MiB": [{"text": _LOREM, "times": MiB // len(_LOREM)}],
    "random-256KiB": [{"shake256": "mountfs-vector-random", "size": 256 * KiB}],
    "mixed-max-chunk": [
        {"shake256": "mountfs-vector-mixed", "size": 2 * MiB},
        {"text": "\0", "times": 2 * MiB},
    ],
}

CDC_INPUTS: dict[str, tuple[list[dict[str, Any]], cdc.CdcParams]] = {
    "default-8MiB-random": (
        [{"shake256": "mountfs-vector-cdc", "size": 8 * MiB}],
        cdc.DEFAULT_PARAMS,
    ),
    "v1-8MiB-random": (
        [{"shake256": "mountfs-vector-cdc", "size": 8 * MiB}],
        cdc.V1_PARAMS,
    ),
    "small-params-64KiB-random": (
        [{"shake256": "mountfs-vector-cdc-small", "size": 64 * KiB}],
        cdc.CdcParams(min_size=256, avg_size=1024, max_size=4096, normalization=1),
    ),
}


def chunk_vector(name: str, parts: list[dict[str, Any]]) -> dict[str, Any]:
    data = build_input(parts)
    key_hex = _key(name)
    sealed = seal_chunk(data, bytes.fromhex(key_hex))
    vector: dict[str, Any] = {
        "name": name,
        "input": parts,
        "size": len(data),
        "key": key_hex,
        "hash": sealed.hash,
        "object": sealed.object,
        "stored_size": sealed.stored_size,
        "codec": compress.frame(data)[0],
    }
    if sealed.stored_size <= CIPHERTEXT_HEX_LIMIT:
        vector["ciphertext"] = sealed.ciphertext.hex()
    return vector


def cdc_vector(name: str, parts: list[dict[str, Any]], params: cdc.CdcParams) -> dict[str, Any]:
    data = build_input(parts)
    return {
        "name": name,
        "input": parts,
        "params": {
            "min_size": params.min_size,
            "avg_size": params.avg_size,
            "max_size": params.max_size,
            "normalization_level": params.normalization,
        },
        "spans": [[span.offset, span.length] for span in cdc.cut(data, params)],
    }


def generate() -> dict[str, Any]:
    return {
        "about": "mountfs chunk format v1 test vectors; see tests/unit/chunks/vectors.py",
        "chunks": [chunk_vector(name, parts) for name, parts in CHUNK_INPUTS.items()],
        "cdc": [cdc_vector(name, *spec) for name, spec in CDC_INPUTS.items()],
    }


def load() -> dict[str, Any]:
    with VECTORS_PATH.open(encoding="utf-8") as file:
        vectors: dict[str, Any] = json.load(file)
    return vectors


def main(argv: Sequence[str]) -> int:
    fresh = generate()
    if "--regen" in argv:
        VECTORS_PATH.write_text(json.dumps(fresh, indent=1) + "\n", encoding="utf-8")
        print(f"wrote {VECTORS_PATH}")
        return 0
    current = VECTORS_PATH.exists() and load() == fresh
    print(f"{VECTORS_PATH} is {'current' if current else 'OUT OF DATE (run with --regen)'}")
    return 0 if current else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
