"""Chunk keys, dedup, and presigned block URLs (protocol.md § Chunks)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from backend.api.answers import answer
from backend.api.deps import CurrentDevice, Db, Keys, Store
from backend.api.errors import responses
from backend.api.schemas import (
    HeldOut,
    HoldIn,
    HoldOut,
    PreparedOut,
    PrepareIn,
    PrepareOut,
    ReadUrlsIn,
    UploadUrlsIn,
    UrlOut,
    UrlsOut,
)
from backend.services import chunks
from backend.services.types import ObjectName, PlainHash

__all__ = ["router"]

router = APIRouter(prefix="/chunks", tags=["chunks"], responses=responses(400, 401, 413))


@router.post("/prepare", response_model=PrepareOut)
def prepare(body: PrepareIn, who: CurrentDevice, db: Db, keys: Keys) -> Response:
    """Keys for plaintext hashes, and which chunks this account can skip uploading."""
    with db.read() as conn:
        prepared = chunks.prepare(conn, who, [PlainHash(h) for h in body.hashes])
    return answer(PrepareOut(chunks=[PreparedOut.of(p, keys) for p in prepared]))


@router.post("/upload-urls", response_model=UrlsOut)
def upload_urls(body: UploadUrlsIn, who: CurrentDevice, store: Store) -> Response:
    """A presigned PUT per object (always, whether or not the store has it)."""
    urls = [
        UrlOut.of(o.object, store.presign_put(o.object, who.account_id, o.size))
        for o in body.objects
    ]
    return answer(UrlsOut(urls=urls))


@router.post("/read-urls", response_model=UrlsOut, responses=responses(404))
def read_urls(body: ReadUrlsIn, who: CurrentDevice, db: Db, store: Store) -> Response:
    """A presigned GET per object; 404 for the whole request if any is not readable."""
    with db.read() as conn:
        chunks.check_readable(conn, who, [ObjectName(o) for o in body.objects])
    return answer(UrlsOut(urls=[UrlOut.of(o, store.presign_get(o)) for o in body.objects]))


@router.post("/hold", response_model=HoldOut)
def hold(body: HoldIn, who: CurrentDevice, db: Db, store: Store) -> Response:
    """Record chunks this account uploaded that no commit names yet, so that `prepare`
    answers them as present for it and an interrupted upload resumes without resending
    them. Idempotent; `missing` lists objects whose upload the store does not confirm."""
    result = chunks.hold_uploads(
        db,
        store,
        who,
        [chunks.HeldChunk(PlainHash(c.hash), ObjectName(c.object), c.size) for c in body.chunks],
    )
    held = [HeldOut(object=o, stored_size=n) for o, n in sorted(result.held.items())]
    return answer(HoldOut(held=held, missing=list(result.missing)))
