"""Making, listing and revoking public links (docs/protocol.md § Public links); the links
themselves are served by `backend.api.routes.web`."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Path, Request, Response, status
from starlette.concurrency import run_in_threadpool

from backend.api.answers import answer
from backend.api.deps import CurrentDevice, CurrentSettings, Db, OwnedNode
from backend.api.errors import responses
from backend.api.routes.web import LINK_PATH
from backend.api.sharing_schemas import LinkIn, LinkOut, LinksOut
from backend.security import hash_password
from backend.services import links

__all__ = ["router"]

router = APIRouter(tags=["public links"], responses=responses(400, 401))


@router.post(
    "/nodes/{node_id}/links",
    response_model=LinkOut,
    status_code=status.HTTP_201_CREATED,
    responses=responses(403, 404, 409),
)
async def create_link(
    node: OwnedNode,
    body: LinkIn,
    who: CurrentDevice,
    db: Db,
    settings: CurrentSettings,
    request: Request,
) -> Response:
    """A public link to a file or folder the caller may write; `url` is shown only here."""
    password_hash = await run_in_threadpool(hash_password, body.password) if body.password else None

    def make() -> tuple[links.Link, str]:
        with db.write() as conn:
            return links.create(
                conn, who, node.id, body.expires_in, password_hash, body.max_downloads
            )

    made, token = await run_in_threadpool(make)
    base = settings.public_url or str(request.base_url).rstrip("/")
    return answer(LinkOut.of(made, f"{base}{LINK_PATH}/{token}"), status.HTTP_201_CREATED)


@router.get("/links", response_model=LinksOut)
def list_links(who: CurrentDevice, db: Db) -> Response:
    """The caller's links, oldest first, with their state (the URLs are not kept)."""
    with db.read() as conn:
        found = links.mine(conn, who)
    return answer(LinksOut(links=[LinkOut.of(link) for link in found]))


@router.delete("/links/{link_id}", response_model=LinkOut, responses=responses(404))
def revoke_link(link_id: Annotated[uuid.UUID, Path()], who: CurrentDevice, db: Db) -> Response:
    """Revoke a link (its maker, or the owner of what it points at): it answers 404 now."""
    with db.write() as conn:
        ended = links.revoke(conn, who, str(link_id))
    return answer(LinkOut.of(ended))
