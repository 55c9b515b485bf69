"""The OpenAPI document served at /openapi.json, made to match what the app really answers.

FastAPI documents validation failures as 422 `HTTPValidationError`; this app answers them
400 with the common error body (`backend.api.errors`). `MountfsAPI.openapi()` therefore
drops the 422 entries (and their schemas), and declares 400 — plus 413 on every operation
that takes a body, since the body-size middleware can answer that anywhere — so a
conformance checker such as schemathesis sees every status the app can produce.

FastAPI's OpenAPI models hold `minimum`/`maximum` as floats, which would print integer
bounds such as 2⁶³−1024 as `9.223372036854775e+18`; they are turned back into exact
integers (our bounds are chosen to be exactly representable, see `schemas.INT64`).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from backend.api.errors import responses

__all__ = ["MountfsAPI"]

_ERROR_REF = {"$ref": "#/components/schemas/ErrorOut"}


class MountfsAPI(FastAPI):
    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is None:
            self.openapi_schema = _adjust(super().openapi())
        return self.openapi_schema


def _adjust(schema: dict[str, Any]) -> dict[str, Any]:
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            answers: dict[str, Any] = operation.setdefault("responses", {})
            answers.pop("422", None)
            needed = [400] + ([413] if "requestBody" in operation else [])
            for status in needed:
                if str(status) not in answers:
                    description = responses(status)[status]["description"]
                    answers[str(status)] = {
                        "description": description,
                        "content": {"application/json": {"schema": _ERROR_REF}},
                    }
    components = schema.get("components", {}).get("schemas", {})
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    _integer_bounds(schema)
    return schema


def _integer_bounds(node: object) -> None:
    """Print the bounds of integer schemas as integers, everywhere in the document."""
    if isinstance(node, dict):
        if node.get("type") == "integer":
            for key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
                value = node.get(key)
                if isinstance(value, float) and value.is_integer():
                    node[key] = int(value)
        for child in node.values():
            _integer_bounds(child)
    elif isinstance(node, list):
        for child in node:
            _integer_bounds(child)
