"""Conversions between database rows / stored JSON and the service dataclasses.

One place for them, so a node read from the `node` table, a node snapshot in the journal
and a manifest in `revision.manifest` are decoded the same way everywhere.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from sqlalchemy import Row

from backend.services.clock import as_utc
from backend.services.types import (
    ChunkRef,
    DeviceId,
    NamespaceId,
    Node,
    NodeId,
    NodeKind,
    ObjectName,
    PlainHash,
    Revision,
    RevisionId,
    RevisionKind,
)

__all__ = [
    "manifest_from_json",
    "manifest_to_json",
    "node_from_json",
    "node_from_row",
    "node_to_json",
    "revision_from_row",
]


def node_from_row(row: Row[Any]) -> Node:
    """A Node from a row of the `node` table (all columns selected)."""
    m = row._mapping
    return Node(
        id=NodeId(m["id"]),
        namespace_id=NamespaceId(m["namespace_id"]),
        parent_id=NodeId(m["parent_id"]) if m["parent_id"] is not None else None,
        name=m["name"],
        kind=NodeKind(m["kind"]),
        mode=int(m["mode"]),
        mtime_ns=int(m["mtime_ns"]),
        size=int(m["size"]),
        version=int(m["version"]),
        head_revision=RevisionId(m["head_revision"]) if m["head_revision"] else None,
        target=m["target"],
        deleted=bool(m["deleted"]),
    )


def node_to_json(node: Node) -> str:
    return json.dumps(asdict(node), separators=(",", ":"), ensure_ascii=False)


def node_from_json(text: str) -> Node:
    data = json.loads(text)
    data["kind"] = NodeKind(data["kind"])
    return Node(**data)


def manifest_to_json(refs: Sequence[ChunkRef]) -> str:
    return json.dumps([asdict(r) for r in refs], separators=(",", ":"))


def manifest_from_json(text: str) -> tuple[ChunkRef, ...]:
    return tuple(
        ChunkRef(
            offset=int(r["offset"]),
            size=int(r["size"]),
            hash=PlainHash(r["hash"]),
            object=ObjectName(r["object"]),
            stored_size=int(r["stored_size"]),
        )
        for r in json.loads(text)
    )


def revision_from_row(row: Row[Any], *, with_manifest: bool) -> Revision:
    """A Revision from a row of the `revision` table (all columns selected)."""
    m = row._mapping
    base = m["base_revision_id"]
    return Revision(
        id=RevisionId(m["id"]),
        node_id=NodeId(m["node_id"]),
        base_revision=RevisionId(base) if base is not None else None,
        device_id=DeviceId(m["device_id"]),
        kind=RevisionKind(m["kind"]),
        size=int(m["size"]),
        mtime_ns=int(m["mtime_ns"]),
        created_at=as_utc(m["created_at"]),
        chunks=manifest_from_json(m["manifest"]) if with_manifest else None,
    )
