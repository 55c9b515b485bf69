"""Wire shapes of the backend's versions and trash routes (`docs/protocol.md`, "Versions
and trash"), as the client's typed values. `mountfs.transport.api.ApiClient` calls the
routes and builds these; the CLI (`mountfs versions`, `restore`, `trash`) and the mount's
`.versions` folder (`mountfs.vfs.versions`) use them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = ["HistoryChild", "PurgeReport", "RemoteVersion", "RestoreReport", "TrashItem"]


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass(frozen=True, slots=True)
class RemoteVersion:
    """One version (revision) of a file; `kind` is "content" or "tombstone" (a delete)."""

    revision_id: str
    kind: str
    size: int
    mtime_ns: int
    created_at: datetime
    device_id: str
    device_label: str
    head: bool
    damaged: bool

    @classmethod
    def from_wire(cls, body: dict[str, Any]) -> RemoteVersion:
        return cls(
            revision_id=str(body["revision_id"]),
            kind=str(body["kind"]),
            size=int(body["size"]),
            mtime_ns=int(body["mtime_ns"]),
            created_at=_time(body["created_at"]),
            device_id=str(body["device_id"]),
            device_label=str(body["device_label"]),
            head=bool(body["head"]),
            damaged=bool(body["damaged"]),
        )


@dataclass(frozen=True, slots=True)
class HistoryChild:
    """A child of a folder, live or deleted (`deleted_at` set), as `.versions` lists it."""

    id: str
    name: str
    kind: str
    deleted: bool
    deleted_at: datetime | None

    @classmethod
    def from_wire(cls, body: dict[str, Any]) -> HistoryChild:
        node = body["node"]
        at = body.get("deleted_at")
        return cls(
            id=str(node["id"]),
            name=str(node["name"]),
            kind=str(node["kind"]),
            deleted=bool(node["deleted"]),
            deleted_at=_time(at) if at else None,
        )


@dataclass(frozen=True, slots=True)
class TrashItem:
    node_id: str
    kind: str
    path: str
    deleted_at: datetime | None
    device_label: str | None
    size: int
    files: int

    @classmethod
    def from_wire(cls, body: dict[str, Any]) -> TrashItem:
        at = body.get("deleted_at")
        return cls(
            node_id=str(body["node"]["id"]),
            kind=str(body["node"]["kind"]),
            path=str(body["path"]),
            deleted_at=_time(at) if at else None,
            device_label=body.get("device_label"),
            size=int(body["size"]),
            files=int(body["files"]),
        )


@dataclass(frozen=True, slots=True)
class RestoreReport:
    """What a restore did: the node's name and parent now, the new head revision (files),
    how many nodes left the trash, and the new name if the old one was taken."""

    node_id: str
    name: str
    parent_id: str | None
    revision_id: str | None
    undeleted: int
    renamed_to: str | None

    @classmethod
    def from_wire(cls, body: dict[str, Any]) -> RestoreReport:
        node, made = body["node"], body.get("revision")
        return cls(
            node_id=str(node["id"]),
            name=str(node["name"]),
            parent_id=node.get("parent_id"),
            revision_id=str(made["id"]) if made else None,
            undeleted=int(body["undeleted"]),
            renamed_to=body.get("renamed_to"),
        )


@dataclass(frozen=True, slots=True)
class PurgeReport:
    nodes: int
    revisions: int
    chunks_released: int

    @classmethod
    def from_wire(cls, body: dict[str, Any]) -> PurgeReport:
        return cls(int(body["nodes"]), int(body["revisions"]), int(body["chunks_released"]))
