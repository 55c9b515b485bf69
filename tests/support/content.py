"""Real file content for black-box tests that need the backend to decrypt it (public
links): chunked, keyed and sealed exactly as the client does (`mountfs.chunks`), with the
keys the backend hands out, then uploaded and committed over HTTP."""

from __future__ import annotations

import base64
import io
import time

from mountfs.chunks import iter_chunks, seal_chunk
from mountfs.chunks.pipeline import plain_hash
from tests.support.api_client import ApiClient, Json, new_id

__all__ = ["put_content"]


def put_content(client: ApiClient, parent_id: str, name: str, data: bytes) -> Json:
    """Create a file holding `data`, chunked, keyed and sealed as the real client does."""
    pieces = [piece for _, piece in iter_chunks(io.BytesIO(data))]
    keys = {
        c["hash"]: base64.b64decode(c["key"])
        for c in client.prepare([plain_hash(p) for p in pieces])
    }
    sealed = [seal_chunk(p, keys[plain_hash(p)]) for p in pieces]
    objects = [{"object": s.object, "size": s.stored_size} for s in sealed]
    for entry in client.call("POST", "chunks/upload-urls", json={"objects": objects})["urls"]:
        block = next(s for s in sealed if s.object == entry["object"])
        assert client.send_block(entry, block.ciphertext).is_success
    node = client.create_node(parent_id, name)
    refs, offset = [], 0
    for s in sealed:
        refs.append(
            {
                "offset": offset,
                "size": s.size,
                "hash": s.hash,
                "object": s.object,
                "stored_size": s.stored_size,
            }
        )
        offset += s.size
    body = {
        "revision_id": new_id(),
        "base_revision": None,
        "size": len(data),
        "mtime_ns": time.time_ns(),
        "chunks": refs,
    }
    result: Json = client.call("POST", f"nodes/{node['id']}/revisions", json=body, expect=201)
    return result["node"]
