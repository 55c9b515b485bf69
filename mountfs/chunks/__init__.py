"""The chunk pipeline: how file content becomes stored objects and back.

    cdc.py       where chunks begin and end (FastCDC), incl. re-chunking after an edit
    compress.py  codec tag + zstd, or raw when zstd does not shrink; bounded unframing
    crypto.py    AES-256-GCM under the backend-issued convergent key, nonce derived from it
    pipeline.py  hash → frame → seal → name, and verified open; async façade for trio

The byte format is specified in `docs/chunk-format.md`; `tests/unit/chunks/vectors.json`
pins it. The names below are the public API; the submodules hold the details.
"""

from mountfs.chunks.cdc import (
    DEFAULT_PARAMS,
    MAX_CHUNK_SIZE,
    CdcParams,
    Edit,
    Rechunked,
    Span,
    cut,
    iter_chunks,
    iter_file_chunks,
    rechunk,
)
from mountfs.chunks.pipeline import (
    ChunkPipeline,
    SealedChunk,
    object_name,
    open_chunk,
    plain_hash,
    seal_chunk,
)

__all__ = [
    "DEFAULT_PARAMS",
    "MAX_CHUNK_SIZE",
    "CdcParams",
    "ChunkPipeline",
    "Edit",
    "Rechunked",
    "SealedChunk",
    "Span",
    "cut",
    "iter_chunks",
    "iter_file_chunks",
    "object_name",
    "open_chunk",
    "plain_hash",
    "rechunk",
    "seal_chunk",
]
