"""The tree, one operation per request (protocol.md § Nodes).

Each change is one write transaction holding its precondition check and its journal entry;
the batched equivalent is `backend.api.routes.changes`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from backend.api.answers import answer
from backend.api.deps import CurrentDevice, Db, OwnedNode
from backend.api.errors import responses
from backend.api.schemas import INT64, ChildrenOut, NodeIn, NodeOut, NodePatch
from backend.services import tree

__all__ = ["router"]

router = APIRouter(prefix="/nodes", tags=["nodes"], responses=responses(400, 401))


@router.post(
    "",
    response_model=NodeOut,
    status_code=status.HTTP_201_CREATED,
    responses=responses(
        404, 409, ok={"model": NodeOut, "description": "A replay: the node exists."}
    ),
)
def create_node(body: NodeIn, who: CurrentDevice, db: Db) -> Response:
    """Create a file, directory or symlink with a client-chosen id (201; 200 on replay)."""
    with db.write() as conn:
        outcome = tree.create_node(conn, who, body.to_new())
    code = status.HTTP_201_CREATED if outcome.created else status.HTTP_200_OK
    return answer(NodeOut.of(outcome.node), code)


@router.get("/{node_id}", response_model=NodeOut, responses=responses(404))
def get_node(node: OwnedNode) -> Response:
    return answer(NodeOut.of(node))


@router.get("/{node_id}/children", response_model=ChildrenOut, responses=responses(404, 409))
def list_children(
    node: OwnedNode,
    who: CurrentDevice,
    db: Db,
    page_size: Annotated[int, Query(ge=1, le=tree.MAX_PAGE_SIZE)] = tree.MAX_PAGE_SIZE,
    cursor: Annotated[str | None, Query(max_length=2048)] = None,
) -> Response:
    """Live children sorted by name (byte order), one page; follow `next_cursor`."""
    with db.read() as conn:
        page = tree.list_children(conn, who, node.id, page_size, cursor)
    items = [NodeOut.of(n) for n in page.items]
    return answer(ChildrenOut(items=items, next_cursor=page.next_cursor))


@router.patch("/{node_id}", response_model=NodeOut, responses=responses(403, 404, 409))
def update_node(node: OwnedNode, body: NodePatch, who: CurrentDevice, db: Db) -> Response:
    """Move/rename and/or set mode and mtime, if `base_version` is current."""
    with db.write() as conn:
        outcome = tree.update_node(conn, who, node.id, body.to_change())
    return answer(NodeOut.of(outcome.node))


@router.delete("/{node_id}", response_model=NodeOut, responses=responses(403, 404, 409))
def delete_node(
    node: OwnedNode, base_version: Annotated[int, Query(ge=0, le=INT64)], who: CurrentDevice, db: Db
) -> Response:
    """Delete (tombstone) a node, if `base_version` is current; directories must be empty."""
    with db.write() as conn:
        outcome = tree.delete_node(conn, who, node.id, base_version)
    return answer(NodeOut.of(outcome.node))
