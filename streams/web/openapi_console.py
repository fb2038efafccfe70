"""The parts of the OpenAPI document about the web console (``streams/web/console.py``): its
session list and its event stream. The page and its files (``/console``, ``/console/static/*``)
are HTML, CSS and JavaScript for a browser, not API, and are not described.

Kept apart from :mod:`streams.web.openapi` so that neither grows past a readable size;
:func:`streams.web.openapi.openapi_document` merges them.
"""

from __future__ import annotations

from typing import Any

__all__ = ["console_paths"]


def _errors(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Errors"}}},
    }


def console_paths() -> dict[str, Any]:
    bearer: list[dict[str, list[str]]] = [{"apiKey": []}]
    summary = {
        "description": "A session as GET /v1/sessions/{session_id} describes it, without "
        "`recipients` and `next_offset`.",
        "allOf": [{"$ref": "#/components/schemas/Session"}],
    }
    return {
        "/console/api/sessions": {
            "get": {
                "summary": "The web console's list: this client's most recent sessions, newest first",
                "description": "Every worker's part of the sessions table is scanned (the worker "
                "asked scans its own and asks the others): a call costs a scan of the "
                "sessions table's keys.",
                "security": bearer,
                "parameters": [
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 200, "default": 50},
                    }
                ],
                "responses": {
                    "200": {
                        "description": "The sessions; `partial` is true when a worker did not "
                        "answer (its sessions are missing).",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["sessions", "partial"],
                                    "properties": {
                                        "sessions": {"type": "array", "items": summary},
                                        "partial": {"type": "boolean"},
                                    },
                                }
                            }
                        },
                    },
                    "400": _errors("limit is not a whole number from 1 to 200."),
                    "401": _errors("Missing or unknown API key."),
                    "503": _errors("The worker is starting (client configuration not loaded)."),
                },
            }
        },
        "/console/api/events": {
            "get": {
                "summary": "The web console's live stream: this client's status events, folded",
                "description": "Server-sent events (text/event-stream) until the client closes "
                "it. `hello` (data: {client_id, session}) once the stream follows the status "
                "topic; then `activity` at most every 0.5 s while the client's sessions change, "
                "data: {sessions: [{session_id, statuses: {status: events}, completed}], "
                "events: [the newest StatusEvents, at most 20]}; a comment line every 15 s "
                "otherwise. Only this client's events are sent. The status topic is read only "
                "while at least one stream is open. Send the API key as a header (read the "
                "stream with fetch, or any SSE client that sends headers), never in the URL.",
                "security": bearer,
                "parameters": [
                    {
                        "name": "session",
                        "in": "query",
                        "description": "Only this session's events.",
                        "schema": {"type": "string", "format": "uuid"},
                    }
                ],
                "responses": {
                    "200": {
                        "description": "The stream.",
                        "content": {"text/event-stream": {"schema": {"type": "string"}}},
                    },
                    "401": _errors("Missing or unknown API key."),
                    "404": _errors("`session` is not a session id."),
                    "503": _errors("The worker is starting (client configuration not loaded)."),
                },
            }
        },
    }
