"""Versions, the trash, restores and purges (protocol.md § Versions and trash).

Every route takes its caller from `CurrentDevice`, and a `{node_id}` through `OwnedNode`:
a node of another account is 404, exactly as if it did not exist. The services scope every
query by the caller's namespace again (`backend.services.versions`).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Response

from backend.api.answers import answer
from backend.api.deps import CurrentDevice, CurrentSettings, Db, Keys, OwnedNode
from backend.api.errors import responses
from backend.api.schemas import Model, NodeOut, Out, RevisionOut
from backend.services import usage, versions
from backend.services.errors import BadRequest
from backend.services.types import NodeId, RevisionId, RevisionKind

__all__ = ["router"]

router = APIRouter(tags=["versions"], responses=responses(400, 401))


class VersionOut(Out):
    """One version of a file; `device_label` names the device that made it."""

    revision_id: str
    kind: RevisionKind
    size: int
    mtime_ns: int
    created_at: datetime
    device_id: str
    device_label: str
    head: bool
    damaged: bool

    @classmethod
    def of(cls, v: versions.Version) -> VersionOut:
        return cls(
            revision_id=v.revision_id,
            kind=v.kind,
            size=v.size,
            mtime_ns=v.mtime_ns,
            created_at=v.created_at,
            device_id=v.device_id,
            device_label=v.device_label,
            head=v.head,
            damaged=v.damaged,
        )


class VersionsOut(Out):
    node: NodeOut
    items: list[VersionOut]


class HistoryChildOut(Out):
    node: NodeOut
    deleted_at: datetime | None


class HistoryChildrenOut(Out):
    items: list[HistoryChildOut]


class TrashItemOut(Out):
    node: NodeOut
    path: str
    deleted_at: datetime | None
    device_id: str | None
    device_label: str | None
    size: int
    files: int

    @classmethod
    def of(cls, item: versions.TrashItem) -> TrashItemOut:
        return cls(
            node=NodeOut.of(item.node),
            path=item.path,
            deleted_at=item.deleted_at,
            device_id=item.device_id,
            device_label=item.device_label,
            size=item.size,
            files=item.files,
        )


class TrashOut(Out):
    items: list[TrashItemOut]


class RestoreIn(Model):
    """At most one of `revision_id` (a version of the file) and `at` (the version that was
    current then); neither: see `POST /nodes/{id}/restore`."""

    revision_id: uuid.UUID | None = None
    at: datetime | None = None


class RestoreOut(Out):
    node: NodeOut
    revision: RevisionOut | None
    undeleted: int
    renamed_to: str | None


class PurgeIn(Model):
    """`node_ids`: deleted nodes to purge (with what was deleted below them); null or
    absent: the whole trash."""

    node_ids: list[uuid.UUID] | None = None


class PurgeOut(Out):
    nodes: int
    revisions: int
    chunks_released: int


@router.get("/nodes/{node_id}/versions", response_model=VersionsOut, responses=responses(404))
def list_versions(node: OwnedNode, who: CurrentDevice, db: Db) -> Response:
    """A file's versions, newest first, with the device that made each."""
    with db.read() as conn:
        items = versions.list_versions(conn, who, node.id)
    return answer(VersionsOut(node=NodeOut.of(node), items=[VersionOut.of(v) for v in items]))


@router.get(
    "/nodes/{node_id}/all-children",
    response_model=HistoryChildrenOut,
    responses=responses(404),
)
def all_children(node: OwnedNode, who: CurrentDevice, db: Db) -> Response:
    """A folder's children, deleted ones included (not purged ones): what `.versions`
    shows."""
    with db.read() as conn:
        items = versions.children_with_deleted(conn, who, node.id)
    return answer(
        HistoryChildrenOut(
            items=[HistoryChildOut(node=NodeOut.of(c.node), deleted_at=c.deleted_at) for c in items]
        )
    )


@router.get("/resolve", response_model=NodeOut, responses=responses(404))
def resolve(path: Annotated[str, Query(max_length=4096)], who: CurrentDevice, db: Db) -> Response:
    """The node at a '/'-separated path from the account root; a live node wins over a
    deleted one of the same name, then the most recently deleted."""
    with db.read() as conn:
        found = versions.resolve_path(conn, who, path)
    return answer(NodeOut.of(found))


@router.post(
    "/nodes/{node_id}/restore", response_model=RestoreOut, responses=responses(404, 409, 413)
)
def restore(
    node: OwnedNode,
    body: RestoreIn,
    who: CurrentDevice,
    db: Db,
    keys: Keys,
    settings: CurrentSettings,
) -> Response:
    """Make a version the head again (as a new revision), or bring a deleted file or
    folder back. Without a body field: a deleted node comes back as it was; a live file
    gets the version before its head back."""
    if body.revision_id is not None and body.at is not None:
        raise BadRequest("give revision_id or at, not both")
    with db.write() as conn:
        result = versions.restore(
            conn,
            who,
            NodeId(node.id),
            revision_id=RevisionId(str(body.revision_id)) if body.revision_id else None,
            at=body.at,
            max_file_bytes=settings.max_file_bytes,
        )
    made = RevisionOut.keyed(result.revision, keys) if result.revision is not None else None
    return answer(
        RestoreOut(
            node=NodeOut.of(result.node),
            revision=made,
            undeleted=result.undeleted,
            renamed_to=result.renamed_to,
        )
    )


@router.get("/trash", response_model=TrashOut)
def trash(who: CurrentDevice, db: Db) -> Response:
    """Deleted files and folders that can be restored, newest deletion first."""
    with db.read() as conn:
        items = versions.list_trash(conn, who)
    return answer(TrashOut(items=[TrashItemOut.of(i) for i in items]))


@router.post("/trash/purge", response_model=PurgeOut, responses=responses(404))
def purge(body: PurgeIn, who: CurrentDevice, db: Db) -> Response:
    """Delete trash items for good (all of it without `node_ids`)."""
    ids = [NodeId(str(i)) for i in body.node_ids] if body.node_ids is not None else None
    with db.write() as conn:
        report = versions.purge(conn, who, ids)
    return answer(
        PurgeOut(
            nodes=report.nodes, revisions=report.revisions, chunks_released=report.chunks_released
        )
    )


class UsageOut(Out):
    """A folder's live files below it (sizes and count), or a file's own size and 1."""

    node: NodeOut
    bytes: int
    files: int


@router.get("/nodes/{node_id}/usage", response_model=UsageOut, responses=responses(404))
def node_usage(node: OwnedNode, db: Db) -> Response:
    """Recursive bytes and files of a folder, kept incrementally (no walk of the tree)."""
    with db.read() as conn:
        found = usage.of(conn, node)
    return answer(UsageOut(node=NodeOut.of(node), bytes=found.bytes, files=found.files))
