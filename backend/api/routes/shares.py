"""Shares with other accounts, the sharing preference, and account deletion
(docs/protocol.md § Shares).

Every route decides through `backend.services.access` (in the services): a node the caller
cannot read is 404; only a folder's owner shares it (403 for members); a share is acted on
by its owner or its recipient only (404 for anyone else).
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Path, Response, status

from backend.api.answers import answer
from backend.api.deps import CurrentDevice, Db, OwnedNode
from backend.api.errors import responses
from backend.api.sharing_schemas import (
    AccountDeleteIn,
    FollowedListOut,
    FollowedOut,
    MembersOut,
    PreferencesIn,
    PreferencesOut,
    ShareAcceptIn,
    ShareIn,
    ShareOut,
    SharesOut,
)
from backend.db.tables import account
from backend.services import accounts, shares
from backend.services.access import Role

__all__ = ["router"]

router = APIRouter(tags=["shares"], responses=responses(400, 401))

ShareId = Annotated[uuid.UUID, Path()]


@router.post(
    "/nodes/{node_id}/shares",
    response_model=ShareOut,
    status_code=status.HTTP_201_CREATED,
    responses=responses(
        403, 404, 409, ok={"model": ShareOut, "description": "The share existed: role updated."}
    ),
)
def share_node(node: OwnedNode, body: ShareIn, who: CurrentDevice, db: Db) -> Response:
    """Offer a folder or file to another account as viewer or editor (owner only); the
    first share moves it into a namespace of its own."""
    with db.write() as conn:
        made, fresh = shares.share_node(conn, who, node.id, body.account, Role(body.role))
    return answer(ShareOut.of(made), status.HTTP_201_CREATED if fresh else status.HTTP_200_OK)


@router.get("/nodes/{node_id}/shares", response_model=MembersOut, responses=responses(404))
def list_members(node: OwnedNode, who: CurrentDevice, db: Db) -> Response:
    """Who has access to the shared folder this node is (in): owner and live shares."""
    with db.read() as conn:
        owner, live = shares.members(conn, who, node.id)
    return answer(MembersOut(owner=owner, shares=[ShareOut.of(s) for s in live]))


@router.get("/shares", response_model=SharesOut)
def list_shares(who: CurrentDevice, db: Db) -> Response:
    """Shares offered to the caller (pending, accepted, revoked) and its own live shares."""
    with db.read() as conn:
        offered = shares.incoming(conn, who)
        given = shares.outgoing(conn, who)
    return answer(
        SharesOut(
            incoming=[ShareOut.of(s) for s in offered], outgoing=[ShareOut.of(s) for s in given]
        )
    )


@router.get("/namespaces", response_model=FollowedListOut)
def list_followed(who: CurrentDevice, db: Db) -> Response:
    """The namespaces to follow besides the account's own tree: its shared folders and
    files, and its accepted shares (with their placement)."""
    with db.read() as conn:
        found = shares.followed(conn, who)
    return answer(FollowedListOut(namespaces=[FollowedOut.of(f) for f in found]))


@router.post("/shares/{share_id}/accept", response_model=ShareOut, responses=responses(404, 409))
def accept_share(share_id: ShareId, body: ShareAcceptIn, who: CurrentDevice, db: Db) -> Response:
    """Accept a share offered to the caller, placing it in the caller's tree (default: the
    root, under the shared node's name made unique); again to move or rename it there."""
    with db.write() as conn:
        placed = shares.accept(conn, who, str(share_id), body.parent(), body.name)
    return answer(ShareOut.of(placed))


@router.delete("/shares/{share_id}", response_model=ShareOut, responses=responses(404))
def revoke_share(share_id: ShareId, who: CurrentDevice, db: Db) -> Response:
    """End a share: its owner unshares, its recipient leaves. Idempotent."""
    with db.write() as conn:
        ended = shares.revoke(conn, who, str(share_id))
    return answer(ShareOut.of(ended))


@router.get("/me/preferences", response_model=PreferencesOut)
def get_preferences(who: CurrentDevice, db: Db) -> Response:
    with db.read() as conn:
        value = conn.execute(
            account.select()
            .with_only_columns(account.c.auto_accept_shares)
            .where(account.c.id == who.account_id)
        ).scalar_one()
    return answer(PreferencesOut(auto_accept_shares=bool(value)))


@router.patch("/me/preferences", response_model=PreferencesOut)
def set_preferences(body: PreferencesIn, who: CurrentDevice, db: Db) -> Response:
    """`auto_accept_shares`: accept every share offered from now on, at once."""
    with db.write() as conn:
        conn.execute(
            account.update()
            .where(account.c.id == who.account_id)
            .values(auto_accept_shares=body.auto_accept_shares)
        )
    return answer(PreferencesOut(auto_accept_shares=body.auto_accept_shares))


@router.post(
    "/me/delete",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=responses(403),
)
def delete_account(body: AccountDeleteIn, who: CurrentDevice, db: Db) -> Response:
    """Delete the caller's account (password required): devices, shares and links end now."""
    accounts.delete_account(db, who, body.password)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
