"""The parts of the OpenAPI document about Twilio and the call tool: the message endpoints Twilio
calls (delivery status callbacks, inbound SMS), the call tool's endpoints (placing a call, its
combined state, Twilio's steps during it) and the schema of a call.

Kept apart from :mod:`streams.web.openapi` (the Send API) so that neither grows past a readable
size; :func:`streams.web.openapi.openapi_document` merges them. The Twilio endpoints are called
by Twilio, not by clients: they carry no API key but ``X-Twilio-Signature``, checked against
``SWITCHBOARD_PUBLIC_URL`` and the exact path and query (``streams/twilio/signature.py``).
The header is not marked required because a request without a valid one is not always
refused: one that names no delivery of a client with a Twilio channel is answered 200 once
recorded on the rejected topic (nothing to check it against, and nothing it could change).
"""

from __future__ import annotations

from typing import Any

from streams.web.common import MAX_TWILIO_BODY
from streams.web.openapi_parts import (
    JSON_BODY_ERRORS,
    MOVING,
    errors_response,
    optional,
    text_response,
)
from switchboard.calltool.calls import CALL_STATUSES, MEMBER_STATUSES, TARGET_STATUSES
from switchboard.calltool.twiml import STEPS

__all__ = ["call_schema", "call_tool_paths", "twilio_message_paths"]

_STRING: dict[str, Any] = {"type": "string"}
_SIGNATURE: dict[str, Any] = {
    "name": "X-Twilio-Signature",
    "in": "header",
    "required": False,
    "schema": _STRING,
    "description": "Twilio's signature of SWITCHBOARD_PUBLIC_URL + path and query, and the form "
    "parameters, with the auth token of the client's Twilio account.",
}


def _text(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"text/plain": {"schema": _STRING}}}


def _form(description: str, fields: dict[str, str]) -> dict[str, Any]:
    return {
        "required": True,
        "content": {
            "application/x-www-form-urlencoded": {
                "schema": {
                    "type": "object",
                    "description": f"{description} At most {MAX_TWILIO_BODY:,} bytes.",
                    "properties": {
                        name: {**_STRING, "description": d} for name, d in fields.items()
                    },
                    "additionalProperties": _STRING,
                }
            }
        },
    }


#: What both message endpoints answer besides their own outcomes.
_COMMON: dict[str, Any] = {
    "400": _text("The form is not text in its charset."),
    "403": _text("Bad X-Twilio-Signature: nothing changed."),
    "413": _text(f"The body is larger than {MAX_TWILIO_BODY:,} bytes."),
    "415": _text("The body is not application/x-www-form-urlencoded."),
}


def twilio_message_paths() -> dict[str, Any]:
    """``/twilio/messages/status`` and ``/twilio/messages/inbound``."""
    query = [
        {"name": name, "in": "query", "required": False, "schema": _STRING, "description": about}
        for name, about in (
            ("d", "The delivery: <session id>/<recipient index>/<channel>."),
            ("a", "The delivery's attempt."),
            ("c", "The client id."),
            ("p", "The session's lane: high, or absent."),
        )
    ]
    return {
        "/twilio/messages/status": {
            "post": {
                "summary": "Twilio's status callback of a message (or voice broadcast) Switchboard sent",
                "description": (
                    "Switchboard gives every message it sends through Twilio this URL as its "
                    "StatusCallback, with the delivery, attempt and client in the query; Twilio "
                    "signs the whole URL, so a callback cannot be moved to another delivery. Its "
                    "MessageStatus (or a voice broadcast's CallStatus) becomes a report applied by "
                    "the worker that owns the delivery: a delivery only moves forward. A callback "
                    "whose MessageSid is not the delivery's (once the delivery has one: the first "
                    "callback may arrive before Switchboard recorded the id Twilio answered) "
                    "changes nothing and is recorded on the rejected topic. Not called by clients."
                ),
                "parameters": [*query, _SIGNATURE],
                "requestBody": _form(
                    "Twilio's status callback parameters.",
                    {
                        "MessageSid": "The message (SM…/MM…); must be the delivery's.",
                        "MessageStatus": "queued, sent, delivered, read, undelivered, failed, canceled, ...",
                        "ErrorCode": "Twilio's error code on a failure.",
                        "To": "The recipient.",
                        "From": "The sender the message went out from.",
                        "CallSid": "A voice broadcast's call.",
                        "CallStatus": "A voice broadcast's status: completed, busy, no-answer, ...",
                    },
                ),
                "responses": {
                    "200": _text(
                        "The report is in Kafka (or, for a callback naming no delivery Switchboard "
                        "knows, it is recorded on the rejected topic)."
                    ),
                    **_COMMON,
                    "503": _text(
                        "Starting, or Kafka did not confirm the report in time: Twilio retries."
                    ),
                },
            }
        },
        "/twilio/messages/inbound": {
            "post": {
                "summary": "An SMS to one of a client's numbers (STOP, START, HELP): set it as the number's messaging webhook",
                "description": (
                    "The client is the one whose sms channel sends from the To number (its `from` "
                    "list), or through the MessagingServiceSid the message came through; the "
                    "signature is checked with that channel's auth token. STOP and the other "
                    "opt-out keywords opt the sender out of that client's messages on every "
                    "channel that reaches the number, START opts them back in, HELP answers the "
                    "client's help_text. In the Twilio console: Phone Numbers → the number → "
                    "Messaging → 'A message comes in': Webhook, HTTP POST, "
                    "<SWITCHBOARD_PUBLIC_URL>/twilio/messages/inbound (or the same on the "
                    "Messaging Service's integration)."
                ),
                "parameters": [_SIGNATURE],
                "requestBody": _form(
                    "Twilio's incoming message parameters.",
                    {
                        "From": "The sender, who opts out or in.",
                        "To": "The client's number the message was sent to.",
                        "Body": "The text: STOP, START, HELP and their synonyms are keywords.",
                        "MessagingServiceSid": "The Messaging Service, when the number is in one.",
                    },
                ),
                "responses": {
                    "200": {
                        "description": "TwiML: the reply to send, if any. A message to a number no "
                        "client sends from is recorded on the rejected topic and gets an empty reply.",
                        "content": {"application/xml": {"schema": _STRING}},
                    },
                    **_COMMON,
                    "503": _text("Starting, or Kafka did not confirm: Twilio retries."),
                },
            }
        },
    }


def call_schema() -> dict[str, Any]:
    """The answer of ``GET /v1/calls/{id}`` (``switchboard.calltool.calls.combined_state``)."""
    time: dict[str, Any] = {"type": ["string", "null"], "format": "date-time"}
    nullable: dict[str, Any] = {"type": ["string", "null"]}

    def events(status: tuple[str, ...], extra: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "array",
            "description": "Every callback, in arrival order.",
            "items": {
                "type": "object",
                "required": ["status", "at", "sequence", *extra],
                "properties": {
                    "status": {"type": "string", "enum": list(status)},
                    "at": {"type": "string", "format": "date-time"},
                    "sequence": {"type": "integer", "description": "Arrival order, from 0."},
                    **extra,
                },
            },
        }

    return {
        "type": "object",
        "description": "A call of the call tool: its own status, the member's call, the target's dial.",
        "required": [
            "call_id",
            "campaign_id",
            "target_id",
            "member_number",
            "target_number",
            "status",
            "error",
            "twilio_call_sid",
            "created_at",
            "failed_at",
            "started_at",
            "connected_at",
            "updated_at",
            "member",
            "target",
        ],
        "properties": {
            "call_id": {"type": "string", "format": "uuid"},
            "campaign_id": _STRING,
            "target_id": {**nullable, "description": "null for a manual target"},
            "member_number": {**_STRING, "description": "E.164"},
            "target_number": {**_STRING, "description": "E.164"},
            "status": {
                "type": "string",
                "enum": list(CALL_STATUSES),
                "description": "unstarted (placed; not answered, or never), started (answered, "
                "heard the message), connected (pressed 1, the target was dialled), failed "
                "(Twilio refused to create the call: see error)",
            },
            "error": nullable,
            "twilio_call_sid": nullable,
            "created_at": {"type": "string", "format": "date-time"},
            "failed_at": time,
            "started_at": time,
            "connected_at": time,
            "updated_at": {"type": "string", "format": "date-time"},
            "member": {
                "type": "object",
                "required": ["status", "updated_at", "final", "events"],
                "properties": {
                    "status": {
                        "type": ["string", "null"],
                        "enum": [*MEMBER_STATUSES, None],
                        "description": "The latest meaningful CallStatus; unknown after the "
                        "campaign's silence_limit without any callback.",
                    },
                    "updated_at": time,
                    "final": {"type": "boolean"},
                    "events": events(
                        MEMBER_STATUSES, {"provider_sequence": {"type": ["integer", "null"]}}
                    ),
                },
            },
            "target": {
                "type": "object",
                "required": ["status", "updated_at", "events"],
                "properties": {
                    "status": {
                        "type": ["string", "null"],
                        "enum": [*TARGET_STATUSES, None],
                        "description": "How the latest dial to the target ended (DialCallStatus).",
                    },
                    "updated_at": time,
                    "events": events(TARGET_STATUSES, {"dial_call_sid": nullable}),
                },
            },
        },
    }


def call_tool_paths(bearer: list[dict[str, list[str]]]) -> dict[str, Any]:
    """The call tool's endpoints: a client places a call (``bearer``: its API key), reads its
    state, and Twilio drives it step by step (``streams/twilio/call_views.py``)."""
    string: dict[str, Any] = {"type": "string"}
    non_empty: dict[str, Any] = {"type": "string", "minLength": 1}
    return {
        "/api/call": {
            "post": {
                "summary": "Call tool: call a member and connect them to a target",
                "security": bearer,
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["campaign_id", "member_phone_number"],
                                "properties": {
                                    "campaign_id": non_empty,
                                    "target_id": optional(non_empty),
                                    "member_phone_number": non_empty,
                                    "target_phone_number": optional(
                                        {
                                            "type": "string",
                                            "minLength": 1,
                                            "description": "A manual target, with target_checksum",
                                        }
                                    ),
                                    "target_checksum": optional(non_empty),
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "201": {
                        "description": "The call was placed.",
                        "content": {
                            "application/json": {
                                "schema": {"type": "object", "properties": {"call_id": string}}
                            }
                        },
                    },
                    **JSON_BODY_ERRORS,
                    "401": errors_response("Missing or unknown API key."),
                    "403": errors_response("Too many calls for this member and campaign."),
                    "422": errors_response(
                        "An invalid field, or Twilio refused the call (its code is given)."
                    ),
                    "503": errors_response(
                        "The call could not be registered or placed now (nothing was placed), or partitions are moving: retry."
                    ),
                },
            }
        },
        "/v1/calls/{call_id}": {
            "get": {
                "summary": "A call's combined state: call status, the member's CallStatus events, the target's DialCallStatus",
                "security": bearer,
                "parameters": [
                    {
                        "name": "call_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "format": "uuid"},
                    }
                ],
                "responses": {
                    "200": {
                        "description": "The call.",
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Call"}}
                        },
                    },
                    "401": errors_response("Missing or unknown API key."),
                    "404": errors_response("No such call for this client."),
                    "503": MOVING,
                },
            }
        },
        "/twilio/calls/{call_id}/{step}": {
            "post": {
                "summary": "Twilio's requests during a call (start, menu, connect, dial-status, status); TwiML answers",
                "description": "Authenticated by X-Twilio-Signature over SWITCHBOARD_PUBLIC_URL and the exact path.",
                "parameters": [
                    {
                        "name": "call_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "format": "uuid"},
                    },
                    {
                        "name": "step",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "enum": sorted(STEPS)},
                    },
                    {
                        "name": "X-Twilio-Signature",
                        "in": "header",
                        "required": True,
                        "schema": {"type": "string"},
                    },
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/x-www-form-urlencoded": {
                            "schema": {
                                "type": "object",
                                "description": f"Twilio's parameters (CallSid, CallStatus, Digits, ...); at most {MAX_TWILIO_BODY:,} bytes.",
                                "additionalProperties": {"type": "string"},
                            }
                        }
                    },
                },
                "responses": {
                    "200": {
                        "description": "TwiML.",
                        "content": {"text/xml": {"schema": {"type": "string"}}},
                    },
                    "400": text_response("The form is not text in its charset."),
                    "403": text_response("Bad signature."),
                    "404": text_response("No such step, or no such call."),
                    "413": text_response(f"The body is larger than {MAX_TWILIO_BODY:,} bytes."),
                    "415": text_response("The body is not application/x-www-form-urlencoded."),
                    "503": text_response(
                        "The state change was not recorded, the worker is not configured for Twilio, or partitions are moving: Twilio retries."
                    ),
                },
            }
        },
    }
