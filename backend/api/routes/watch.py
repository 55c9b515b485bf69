"""The push channel (protocol.md § Push channel): Server-Sent Events on the API's port.

`GET /journal/{namespace_id}/watch?after=P` answers `text/event-stream` and sends one event,
`data: {"namespace_id": ..., "position": N}` (also `id: N`), as soon as the namespace's
journal passes P, then again each time it passes the last position sent. It only says that
there is news: the device then pulls the journal from its own cursor, so an event that
never arrives costs latency, not correctness.

- Auth and access are checked before the stream starts, like every other route: 401 JSON
  without a valid token, 404 for a namespace the caller cannot read.
- Silence is broken by a comment line (`: heartbeat`) every `heartbeat` seconds, so
  proxies keep the connection and a client notices a dead one (no bytes for longer than
  the heartbeat means the connection is gone). Before each heartbeat the stream checks
  that the device is not revoked and may still read the namespace, else it ends.
- The stream ends by itself after `timeout` seconds (default 300; 0 answers at once with
  what is already there), and when the server stops. The client reconnects with the last
  position it saw; a connection that lives for a bounded time also rebalances across
  backend instances. Each answer carries `retry:` (ms), the reconnect delay a browser's
  `EventSource` uses.
- `followed=true` (only on the caller's own namespace): the stream also announces the
  journals of every namespace the account follows besides its own (its shared folders
  and the shares it accepted, `shares.followed`), each event naming its namespace, so a
  device keeps one connection for all of them. The set is read at connect and again
  whenever the account's own journal moves (sharing, accepting, moving, leaving and
  revoking all write an entry there) and before each heartbeat, so a share whose access
  ended stops being announced; a new one is announced from its head at that moment (the
  device pulls after the attachment entry anyway).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Mapping
from enum import Enum
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, Path, Query
from fastapi.sse import EventSourceResponse, ServerSentEvent
from starlette.concurrency import run_in_threadpool

from backend.api.deps import CurrentDevice, Db
from backend.api.errors import responses
from backend.api.news import News, NewsFeed
from backend.api.schemas import INT64
from backend.db.engine import Database
from backend.services import notify, shares
from backend.services.errors import BadRequest
from backend.services.types import NamespaceId, Principal

__all__ = ["router"]

router = APIRouter(prefix="/journal", tags=["journal"])

DEFAULT_TIMEOUT_S = 300
MAX_TIMEOUT_S = 3600
DEFAULT_HEARTBEAT_S = 15
MAX_HEARTBEAT_S = 15
"""Not longer: FastAPI's event-stream writer inserts its own keep-alive after 15 s."""
RETRY_MS = 1000
_ERROR_REF = {"$ref": "#/components/schemas/ErrorOut"}


def _head(db: Database, who: Principal, namespace_id: NamespaceId) -> int:
    with db.read() as conn:
        return notify.watched_head(conn, who, namespace_id)


def _may_go_on(db: Database, who: Principal, namespace_id: NamespaceId) -> bool:
    with db.read() as conn:
        return notify.may_still_watch(conn, who, namespace_id)


def _followed_heads(db: Database, who: Principal) -> dict[NamespaceId, int]:
    """The journal heads of the namespaces the caller's account follows besides its own."""
    with db.read() as conn:
        ids = [f.namespace_id for f in shares.followed(conn, who)]
        return {NamespaceId(ns): head for ns, head in notify.read_heads(conn, ids).items()}


def watched_head(namespace_id: Annotated[uuid.UUID, Path()], who: CurrentDevice, db: Db) -> int:
    """The namespace's journal head now; 404 before the stream starts if it is not readable."""
    return _head(db, who, NamespaceId(str(namespace_id)))


Head = Annotated[int, Depends(watched_head)]


def also_followed(
    namespace_id: Annotated[uuid.UUID, Path()], who: CurrentDevice, followed: bool = False
) -> bool:
    """`followed=true` is for the account's own namespace only (400 before the stream)."""
    if followed and str(namespace_id) != who.namespace_id:
        raise BadRequest("followed: only when watching the account's own namespace")
    return followed


AlsoFollowed = Annotated[bool, Depends(also_followed)]


def _event(namespace_id: NamespaceId, position: int, *, own: bool = True) -> ServerSentEvent:
    """An event; `id:` only for the watched namespace's own positions (the others are
    positions in other journals, which a browser's `Last-Event-ID` could not tell apart)."""
    return ServerSentEvent(
        data={"namespace_id": namespace_id, "position": position},
        id=str(position) if own else None,
    )


def _json_errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`errors.responses`, but documented as JSON: refusals happen before the stream
    starts, so they are the usual JSON bodies, not events."""
    declared = responses(*statuses)
    for answer in declared.values():
        answer.pop("model")
        answer["content"] = {"application/json": {"schema": _ERROR_REF}}
    return declared


@router.get(
    "/{namespace_id}/watch",
    response_class=EventSourceResponse,
    responses=_json_errors(400, 401, 404),
)
async def watch_journal(
    namespace_id: Annotated[uuid.UUID, Path()],
    head: Head,
    who: CurrentDevice,
    db: Db,
    news: NewsFeed,
    after: Annotated[int | None, Query(ge=0, le=INT64)] = None,
    lifetime: Annotated[int, Query(alias="timeout", ge=0, le=MAX_TIMEOUT_S)] = DEFAULT_TIMEOUT_S,
    heartbeat: Annotated[int, Query(ge=1, le=MAX_HEARTBEAT_S)] = DEFAULT_HEARTBEAT_S,
    followed: AlsoFollowed = False,
) -> AsyncIterator[ServerSentEvent]:
    """An event each time the journal passes the last position sent (first: `after`,
    default the head now); a `: heartbeat` comment after `heartbeat` s of silence; the
    stream ends after `timeout` s or when the server stops. With `followed`, also the
    journals the account follows besides its own (module docstring)."""
    namespace = NamespaceId(str(namespace_id))
    last = head if after is None else after
    others: dict[NamespaceId, int] = {}
    if followed:
        others = await run_in_threadpool(_followed_heads, db, who)
    yield ServerSentEvent(comment="watching", retry=RETRY_MS)
    if head > last:
        last = head
        yield _event(namespace, last)
    deadline = time.monotonic() + lifetime
    while (left := deadline - time.monotonic()) > 0:
        news_of = await _wait(news, {namespace: last, **others}, min(heartbeat, left))
        if news_of is _Stopped.STOPPED:
            return
        if news_of is None:
            if not await run_in_threadpool(_may_go_on, db, who, namespace):
                return  # revoked meanwhile: the reconnect will be refused
            if followed:
                others = _kept(others, await run_in_threadpool(_followed_heads, db, who))
            if deadline - time.monotonic() > 0:
                yield ServerSentEvent(comment="heartbeat")
            continue
        moved, position = news_of
        if moved in others:
            others[moved] = position
        else:
            last = position
        yield _event(moved, position, own=moved == namespace)
        if followed and moved == namespace:  # a share may have been attached or detached
            others = _kept(others, await run_in_threadpool(_followed_heads, db, who))


def _kept(
    known: Mapping[NamespaceId, int], now: Mapping[NamespaceId, int]
) -> dict[NamespaceId, int]:
    """The followed set `now` (namespace: head), keeping the positions already sent for
    namespaces that stay (their news since then must still be announced)."""
    return {ns: known.get(ns, head) for ns, head in now.items()}


class _Stopped(Enum):
    """What `_wait` answers once the server is stopping."""

    STOPPED = "stopped"


async def _wait(
    news: News, positions: Mapping[NamespaceId, int], seconds: float
) -> tuple[NamespaceId, int] | _Stopped | None:
    """The first namespace among `positions` ({namespace: last position sent}) whose
    journal passes its position, and the new position; None after `seconds`;
    `_Stopped.STOPPED` when the server stops. One `wait_past` per namespace; the first
    answer ends the rest (no yield inside the cancel scopes)."""
    if news.stopping:
        return _Stopped.STOPPED
    found: tuple[NamespaceId, int] | None = None
    with news.interruptible():
        async with anyio.create_task_group() as tasks:

            async def one(namespace: NamespaceId, last: int) -> None:
                nonlocal found
                position = await news.notifier.wait_past(namespace, last, seconds)
                if position is not None and found is None:
                    found = (namespace, position)
                    tasks.cancel_scope.cancel()

            for namespace, last in positions.items():
                tasks.start_soon(one, namespace, last)
    return _Stopped.STOPPED if news.stopping else found
