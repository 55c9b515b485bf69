"""FastAPI dependencies: the app's state, the caller, and resources it may touch.

Routes state what they need in their signature with these `Annotated` aliases, so no route
can forget a check:

- `CurrentDevice`: the authenticated device (bearer token) — 401 otherwise.
- `OwnedNode`: the node named by the `{node_id}` path parameter, loaded and checked to be
  readable by the caller (`services.access`: its own tree or an accepted share) — 404
  otherwise (never revealing that it exists elsewhere).
- `OwnedRevision`: the same for `{revision_id}`.
- `Db`, `Keys`, `Store`, `CurrentSettings`: the pieces built by the app's lifespan.

The services re-check ownership inside their own transactions; these loaders make the
route-level answer uniform and early.

The accessors of the app's state are `async def` on purpose: FastAPI runs every sync
dependency in a worker thread, and a thread hop costs far more than returning an attribute.
Only the dependencies that touch the database (`CurrentDevice`, the loaders) are sync.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from backend import logs
from backend.db.engine import Database
from backend.security import Keyring
from backend.services import access, accounts, revisions
from backend.services.errors import Unauthorized
from backend.services.types import Node, NodeId, Principal, Revision, RevisionId
from backend.settings import Settings
from backend.store.base import BlockStore
from backend.store.local import LocalBlockStore

if TYPE_CHECKING:
    from backend.api.news import News

__all__ = [
    "AppState",
    "CurrentDevice",
    "CurrentSettings",
    "Db",
    "Keys",
    "LocalStore",
    "OwnedNode",
    "OwnedRevision",
    "State",
    "Store",
]


@dataclass(frozen=True, slots=True)
class AppState:
    """Everything the lifespan opened; one per app, shared by all requests.

    Attributes:
        local_store: the embedded store (unbound to a URL), or None when S3 is used.
        store: the configured block store, used as-is when it is not the local one.
        news: the push channel's notifier and open watch streams (`backend.api.news`).
    """

    settings: Settings
    db: Database
    keys: Keyring
    store: BlockStore
    local_store: LocalBlockStore | None
    news: News


async def get_state(request: Request) -> AppState:
    state = getattr(request.app.state, "mountfs", None)
    if not isinstance(state, AppState):
        raise RuntimeError("the app's lifespan has not run")  # a wiring bug, not input
    return state


State = Annotated[AppState, Depends(get_state)]


async def get_db(state: State) -> Database:
    return state.db


async def get_settings(state: State) -> Settings:
    return state.settings


async def get_keys(state: State) -> Keyring:
    return state.keys


async def get_store(state: State, request: Request) -> BlockStore:
    """The block store, with the embedded one bound to the URL clients reach us on."""
    if state.local_store is None:
        return state.store
    return state.local_store.bind(state.settings.public_url or str(request.base_url))


async def get_local_store(state: State) -> LocalBlockStore | None:
    return state.local_store


Db = Annotated[Database, Depends(get_db)]
CurrentSettings = Annotated[Settings, Depends(get_settings)]
Keys = Annotated[Keyring, Depends(get_keys)]
Store = Annotated[BlockStore, Depends(get_store)]
LocalStore = Annotated[LocalBlockStore | None, Depends(get_local_store)]

_bearer = HTTPBearer(auto_error=False, description="The device token from POST /login.")


def current_device(
    db: Db, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("an 'Authorization: Bearer <token>' header is required")
    who = accounts.authenticate(db, credentials.credentials)
    logs.note_caller(who.account_id, who.device_id)  # the request's log lines name it
    return who


CurrentDevice = Annotated[Principal, Depends(current_device)]


def owned_node(node_id: Annotated[uuid.UUID, Path()], who: CurrentDevice, db: Db) -> Node:
    """The node if the caller may read it (its own tree or an accepted share; the write
    checks are the services' own, inside their transactions)."""
    with db.read() as conn:
        return access.node_for_read(conn, who, NodeId(str(node_id)))[0]


def owned_revision(
    revision_id: Annotated[uuid.UUID, Path()], who: CurrentDevice, db: Db
) -> Revision:
    with db.read() as conn:
        return revisions.get_revision(conn, who, RevisionId(str(revision_id)))


OwnedNode = Annotated[Node, Depends(owned_node)]
OwnedRevision = Annotated[Revision, Depends(owned_revision)]
