"""Content commits, history and manifests (protocol.md § Nodes)."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from backend.api.answers import answer
from backend.api.deps import (
    CurrentDevice,
    CurrentSettings,
    Db,
    Keys,
    OwnedNode,
    OwnedRevision,
    Store,
)
from backend.api.errors import responses
from backend.api.schemas import (
    CommitIn,
    CommitOut,
    NodeOut,
    RevisionOut,
    RevisionsOut,
    RevisionSummaryOut,
)
from backend.services import revisions

__all__ = ["router"]

router = APIRouter(tags=["revisions"], responses=responses(400, 401))


@router.post(
    "/nodes/{node_id}/revisions",
    response_model=CommitOut,
    status_code=status.HTTP_201_CREATED,
    responses=responses(
        404, 409, 413, ok={"model": CommitOut, "description": "A replay of a stored commit."}
    ),
)
def commit(
    node: OwnedNode,
    body: CommitIn,
    who: CurrentDevice,
    db: Db,
    store: Store,
    keys: Keys,
    settings: CurrentSettings,
) -> Response:
    """Commit new content if `base_revision` is the head and every chunk is uploaded."""
    new = body.to_new()
    revisions.confirm_uploads(db, store, who, new, settings.max_file_bytes)
    with db.write() as conn:
        outcome = revisions.commit(conn, who, node.id, new, settings.max_file_bytes)
    assert outcome.revision is not None  # a commit always names its revision
    committed = CommitOut(
        node=NodeOut.of(outcome.node), revision=RevisionOut.keyed(outcome.revision, keys)
    )
    return answer(committed, status.HTTP_201_CREATED if outcome.created else status.HTTP_200_OK)


@router.get("/nodes/{node_id}/revisions", response_model=RevisionsOut, responses=responses(404))
def list_revisions(node: OwnedNode, who: CurrentDevice, db: Db) -> Response:
    """The file's history, newest first (manifests omitted)."""
    with db.read() as conn:
        history = revisions.list_revisions(conn, who, node.id)
    return answer(RevisionsOut(items=[RevisionSummaryOut.of(r) for r in history]))


@router.get("/revisions/{revision_id}", response_model=RevisionOut, responses=responses(404))
def get_revision(revision: OwnedRevision, keys: Keys) -> Response:
    """One revision with its manifest and chunk keys."""
    return answer(RevisionOut.keyed(revision, keys))
