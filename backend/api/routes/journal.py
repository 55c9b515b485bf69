"""The change feed (protocol.md § Journal)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from backend.api.answers import answer
from backend.api.deps import CurrentDevice, Db, Keys
from backend.api.errors import responses
from backend.api.schemas import INT64, EntryOut, JournalOut
from backend.services import journal
from backend.services.types import NamespaceId

__all__ = ["router"]

router = APIRouter(prefix="/journal", tags=["journal"], responses=responses(400, 401))


@router.get("/{namespace_id}", response_model=JournalOut, responses=responses(404))
def read_journal(
    namespace_id: Annotated[uuid.UUID, Path()],
    who: CurrentDevice,
    db: Db,
    keys: Keys,
    after: Annotated[int, Query(ge=0, le=INT64)] = 0,
    limit: Annotated[int, Query(ge=1, le=journal.MAX_PAGE)] = journal.MAX_PAGE,
) -> Response:
    """Entries with seq > `after`, oldest first; `cursor` is the last seq returned."""
    with db.read() as conn:
        page = journal.read_feed(conn, who, NamespaceId(str(namespace_id)), after, limit)
    entries = [EntryOut.of(e, keys) for e in page.entries]
    return answer(JournalOut(entries=entries, cursor=page.cursor, has_more=page.has_more))
