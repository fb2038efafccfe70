"""Pieces every part of the OpenAPI document uses: error bodies, optional fields, the answers
shared by many views. :mod:`streams.web.openapi` (the Send API and the document) and
:mod:`streams.web.openapi_twilio` (what Twilio calls, and the call tool) build on them."""

from __future__ import annotations

from typing import Any, Final

__all__ = [
    "GONE",
    "JSON_BODY_ERRORS",
    "MOVING",
    "bounded_text",
    "errors_response",
    "optional",
    "text_response",
]


def errors_response(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Errors"}}},
    }


#: A session of this client removed after the retention period (``streams/retention.py``).
GONE: dict[str, Any] = {
    "description": "The session completed and was removed after the retention period; the body says when.",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Gone"}}},
}


def text_response(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"text/plain": {"schema": {"type": "string"}}}}


def optional(schema: dict[str, Any]) -> dict[str, Any]:
    """An optional field: the validator reads ``null`` as absent, so ``null`` is valid too."""
    return {"anyOf": [schema, {"type": "null"}]}


def bounded_text(max_length: int, description: str | None = None, **more: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "string", "maxLength": max_length, **more}
    if description:
        out["description"] = description
    return optional(out)


#: What every view that reads a JSON body can answer besides its own outcomes.
JSON_BODY_ERRORS: dict[str, Any] = {
    "400": errors_response(
        "The body is not one JSON object (e.g. a number of over 100 digits, NaN), or a header is not UTF-8 text."
    ),
    "413": errors_response("The body is too large."),
    "415": errors_response("The body is not JSON: send Content-Type: application/json."),
}
#: What every view answered by the worker holding its state can answer while partitions move.
MOVING: Final = errors_response("Partitions are moving between workers; retry (Retry-After).")
