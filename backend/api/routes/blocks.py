"""The embedded block store's HTTP face: presigned `PUT|GET /api/v1/blocks/{object}`.

Mounted only when the embedded store is configured. No bearer token: the query's HMAC
signature (`acct`, `exp`, `sig`) is the authorisation, exactly as for S3 presigned URLs.
The PUT is an `async` route because it streams the body; the blocking file work (writes,
fsyncs, links) runs in worker threads, a piece at a time, so the event loop never blocks
and at most one body-sized buffer is held per upload.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from backend.api.deps import LocalStore
from backend.api.errors import responses
from backend.api.schemas import INT64, BlockOut
from backend.services.errors import BadRequest, NotFound
from backend.store.base import BadSignature
from backend.store.local import LocalBlockStore

__all__ = ["router"]

router = APIRouter(prefix="/blocks", tags=["blocks"], responses=responses(400, 403))

ObjectPath = Annotated[str, Path(pattern=r"^[0-9a-f]{64}$")]
Signature = Annotated[str, Query(max_length=128)]
Expiry = Annotated[int, Query(ge=0, le=INT64)]
Account = Annotated[str, Query(max_length=64)]
_WRITE_PIECE = 1024 * 1024  # bytes gathered before each hop to a worker thread


def _store(local: LocalBlockStore | None) -> LocalBlockStore:
    if local is None:  # not mounted in that case; kept as a guard
        raise NotFound("this server has no embedded block store")
    return local


@router.put(
    "/{object}",
    responses=responses(413),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        }
    },
)
async def put_block(
    object: ObjectPath,
    request: Request,
    local: LocalStore,
    sig: Signature,
    exp: Expiry,
    acct: Account = "",
) -> BlockOut:
    """Store the body as `object` (200 whether new or already there; never overwritten)."""
    store = _store(local)
    if not acct:
        raise BadSignature("an upload URL names its account")
    store.verify("PUT", object, acct, exp, sig)
    upload = await run_in_threadpool(store.begin_upload, object, acct)
    try:
        pending = bytearray()
        try:
            async for piece in request.stream():
                pending += piece
                if len(pending) >= _WRITE_PIECE:
                    await run_in_threadpool(upload.write, bytes(pending))
                    pending.clear()
        except ClientDisconnect:
            # The uploader went away mid-body (a killed client, a dropped link): nothing
            # is stored, and nobody is left to answer. Not a server error.
            raise BadRequest("the upload was cut off before its end") from None
        await run_in_threadpool(upload.write, bytes(pending))
        size = await run_in_threadpool(upload.complete)
    finally:
        await run_in_threadpool(upload.abort)
    return BlockOut(object=object, size=size)


@router.get(
    "/{object}",
    response_class=FileResponse,
    responses=responses(
        404, ok={"content": {"application/octet-stream": {}}, "description": "The object."}
    ),
)
def get_block(
    object: ObjectPath, local: LocalStore, sig: Signature, exp: Expiry, acct: Account = ""
) -> FileResponse:
    """Stream the object's bytes."""
    store = _store(local)
    store.verify("GET", object, acct, exp, sig)
    path = store.object_path(object)
    if not path.is_file():
        raise NotFound("no such object")
    return FileResponse(path, media_type="application/octet-stream")
