"""JSON answers serialized once, by the route itself.

A sync route that returns a pydantic model makes FastAPI validate that model again and
serialize it, and FastAPI runs that validation in one more worker-thread hop (one per
request, on top of the route's own). Our output models are built by their `of()`
constructors, which validate them already, so the routes serialize them themselves
(pydantic-core, straight to bytes, in the route's thread) and return the `Response`.
Their decorators keep `response_model=` and `status_code=`, so `/openapi.json` documents
exactly what it did before.
"""

from __future__ import annotations

from fastapi import Response
from pydantic import BaseModel

__all__ = ["answer"]


def answer(model: BaseModel, status_code: int = 200) -> Response:
    """`model` as a JSON response (the same bytes FastAPI's own serialization gives)."""
    return Response(
        model.__pydantic_serializer__.to_json(model),
        status_code=status_code,
        media_type="application/json",
    )
