"""The OpenAPI 3.1 document served at ``GET /openapi.json``.

Built from the same constants the validator uses (channels, triggers, statuses, lengths), so the
document cannot drift from what the API accepts. Every status code a view can answer is
documented; an optional field may be ``null`` wherever the validator reads ``null`` as absent,
and a string the validator refuses empty has ``minLength: 1``. ``tests/unit/test_docs.py``
validates it against the OpenAPI specification, and
``tests/integration/test_openapi_conformance.py`` runs schemathesis against a real worker.
"""

from __future__ import annotations

from typing import Any, Final

from streams.web.openapi_console import console_paths
from streams.web.openapi_parts import (
    GONE,
    JSON_BODY_ERRORS,
    MOVING,
    bounded_text,
    errors_response,
    optional,
    text_response,
)
from streams.web.openapi_twilio import call_schema, call_tool_paths, twilio_message_paths
from switchboard.deadline import MAX_TTL_SECONDS
from switchboard.fallback import MAX_AFTER_SECONDS
from switchboard.instruction import (
    CHANNELS,
    MAX_AUDIENCE,
    MAX_PRIORITY_RECIPIENTS,
    PRIORITIES,
    TRIGGERS,
)
from switchboard.reasons import REASONS
from switchboard.status import STATUSES
from switchboard.validation import MAX_MESSAGE, MAX_RETRIES

__all__ = ["openapi_document"]


#: One delivery status, as the ``status`` filter of ``GET /v1/sessions/{id}`` takes it.
_ANY_STATUS: Final = "|".join(s for s in STATUSES if s != "completed")


def openapi_document() -> dict[str, Any]:
    string = {"type": "string"}
    nullable_string = {"type": ["string", "null"]}
    recipient = {
        "type": "object",
        "additionalProperties": False,
        "description": "A recipient profile with per-channel addresses.",
        "properties": {
            "phone": optional(
                {
                    "type": "string",
                    "minLength": 1,
                    "description": "E.164, e.g. +14155550100 (sms, voice, whatsapp)",
                }
            ),
            "email": optional({"type": "string", "format": "email"}),
            "push_token": optional(
                {
                    "type": "string",
                    "minLength": 1,
                    "description": "APNs device token or FCM registration token",
                }
            ),
            "slack": optional(
                {
                    "type": "string",
                    "minLength": 1,
                    "description": "Slack conversation id, #channel or incoming-webhook URL",
                }
            ),
            "name": bounded_text(200, "Available to templates as {{name}}"),
            "timezone": bounded_text(64, "IANA zone, e.g. America/Los_Angeles"),
            "locale": bounded_text(35),
            "vars": optional({"type": "object", "additionalProperties": {"type": "string"}}),
        },
    }
    instruction = {
        "type": "object",
        "additionalProperties": False,
        "required": ["transport", "audience"],
        "properties": {
            "client_id": optional(
                {
                    "type": "string",
                    "minLength": 1,
                    "description": "Optional over HTTP: must match the API key's client.",
                }
            ),
            "idempotency_key": bounded_text(255, pattern=r"\S"),
            "transport": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "type": optional(
                        {
                            "type": "string",
                            "enum": list(CHANNELS),
                            "description": (
                                "Omitted: the client's default channels (all at once), or with "
                                "options.fallback its first channel, which it may name."
                            ),
                        }
                    ),
                    "subject": bounded_text(998),
                    "message": bounded_text(
                        MAX_MESSAGE,
                        "{{var}} placeholders from extras.template_vars and the recipient profile.",
                    ),
                    "fileUrl": bounded_text(2048, format="uri"),
                    "extras": optional(
                        {
                            "type": "object",
                            "description": (
                                "template_vars, html, reply_to, headers, ...; on sms through "
                                "Twilio: send_as_mms (true: Twilio's SendAsMms, the text "
                                "delivered as one MMS), media (true: file_url is sent as media)"
                            ),
                        }
                    ),
                },
            },
            "audience": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_AUDIENCE,
                "items": {
                    "oneOf": [
                        {"type": "string", "description": "An address for the chosen channel"},
                        {"$ref": "#/components/schemas/Recipient"},
                    ]
                },
            },
            "options": optional(
                {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "trigger": optional(
                            {"type": "string", "enum": list(TRIGGERS), "default": "immediate"}
                        ),
                        "scheduledTimestamp": optional({"type": "string", "format": "date-time"}),
                        "retries": optional(
                            {
                                "type": "integer",
                                "minimum": 0,
                                "maximum": MAX_RETRIES,
                                "default": 0,
                                "description": (
                                    f"Attempts after the first, 0 to {MAX_RETRIES}, made only "
                                    "after a retryable failure (a timeout, a 5xx, a busy or "
                                    "unanswered call); a permanent failure is final at once."
                                ),
                            }
                        ),
                        "retryIntervalMinutes": optional(
                            {
                                "type": ["string", "number"],
                                "default": "60",
                                "description": (
                                    "Minutes before each retry: a comma list, or one number; "
                                    "each above 0 and at most 10080 (7 days). The n-th retry "
                                    "waits the n-th interval, and the last one repeats."
                                ),
                                "examples": ["60,180,600"],
                            }
                        ),
                        "webhookUrl": bounded_text(2048, format="uri"),
                        "priority": {
                            "type": ["string", "null"],
                            "enum": [*PRIORITIES, None],
                            "default": "normal",
                            "description": (
                                "The lane. 'high' is for small transactional sends (a one-time "
                                f"password; at most {MAX_PRIORITY_RECIPIENTS} recipients): its jobs "
                                "and reports have topics and agents of their own and go first in "
                                "their sender's rate limit, so they never wait behind a campaign."
                            ),
                        },
                        "transactional": {
                            "type": ["boolean", "null"],
                            "default": False,
                            "description": (
                                "true for a message the recipient asked for (a receipt, a password "
                                "reset): its email carries no List-Unsubscribe header, and an email "
                                "unsubscribe does not withhold it. false (default): bulk, with a "
                                "one-click unsubscribe (RFC 8058) when the deployment has "
                                "SWITCHBOARD_PUBLIC_URL and SWITCHBOARD_UNSUBSCRIBE_SECRET. A "
                                "number's opt-out (STOP) applies either way."
                            ),
                        },
                        "expiresAt": optional(
                            {
                                "type": "string",
                                "format": "date-time",
                                "description": (
                                    "Send-by deadline, RFC 3339 with an offset. A delivery not "
                                    "handed to a provider by then ends 'expired' (error_code "
                                    "and detail.reason 'deadline', error saying why), never sent "
                                    "late through a window, a retry or a backlog. Not with "
                                    "ttlSeconds; after scheduledTimestamp when both are given. "
                                    "One already passed is accepted: every delivery expires."
                                ),
                                "examples": ["2026-12-06T10:00:00Z"],
                            }
                        ),
                        "ttlSeconds": optional(
                            {
                                "type": "integer",
                                "minimum": 1,
                                "maximum": MAX_TTL_SECONDS,
                                "description": (
                                    "Send-by deadline in seconds from the acceptance (the 202), "
                                    "or from scheduledTimestamp for a scheduled instruction; "
                                    "otherwise as expiresAt. Giving both is a 422."
                                ),
                            }
                        ),
                        "fallback": optional(
                            {
                                "type": "object",
                                "additionalProperties": False,
                                "required": ["channels"],
                                "description": (
                                    "Channel fallback: each recipient is sent these channels "
                                    "one after the other (those it has an address for), the "
                                    "next only when the previous ended without being delivered "
                                    "(failed with no retry left, undelivered, rejected, "
                                    "suppressed, expired without a report), or, with "
                                    "afterSeconds, was handed off and not delivered within that "
                                    "time. Each step is an 'accepted' event with detail.reason "
                                    "'fallback', detail.fallback_from and detail.why. Once one "
                                    "is delivered nothing more is sent; a late delivered on an "
                                    "earlier channel is recorded (detail.after_fallback_to). "
                                    "The session then counts recipients, each by its outcome."
                                ),
                                "properties": {
                                    "channels": {
                                        "type": "array",
                                        "items": {"type": "string", "enum": list(CHANNELS)},
                                        "minItems": 2,
                                        "maxItems": len(CHANNELS),
                                        "uniqueItems": True,
                                        "description": (
                                            "Distinct channels configured for the client, in "
                                            "the order they are tried."
                                        ),
                                    },
                                    "afterSeconds": optional(
                                        {
                                            "type": "integer",
                                            "minimum": 1,
                                            "maximum": MAX_AFTER_SECONDS,
                                            "description": (
                                                "Move on when a channel's message, handed to "
                                                "its provider, is not delivered within this "
                                                "many seconds. Absent: only a failure moves on."
                                            ),
                                        }
                                    ),
                                },
                            }
                        ),
                    },
                }
            ),
        },
    }
    delivery = {
        "type": "object",
        "properties": {
            "index": {"type": "integer"},
            "channel": {"type": "string", "enum": list(CHANNELS)},
            "recipient": nullable_string,
            "status": {"type": "string", "enum": list(STATUSES)},
            "attempt": {"type": "integer"},
            "provider_message_id": nullable_string,
            "error_code": nullable_string,
            "error": nullable_string,
            "reason": {
                "type": ["string", "null"],
                "enum": [*sorted({code for codes in REASONS.values() for code in codes}), None],
                "description": (
                    "Why a deferred, suppressed, cancelled, expired or rejected delivery is so: a "
                    "code of the closed set of its status (README: 'Why a delivery was held or "
                    "not sent'); null for the other statuses. error says it in words."
                ),
            },
            "updated_at": {"type": "string", "format": "date-time"},
            "release_at": {
                "type": "string",
                "format": "date-time",
                "description": "A deferred delivery's release time (present only then).",
            },
        },
    }
    session = {
        "type": "object",
        "properties": {
            "session_id": {"type": "string", "format": "uuid"},
            "client_id": string,
            "status": {
                "type": "string",
                "enum": [
                    "accepted",
                    "scheduled",
                    "waiting",
                    "dispatching",
                    "cancelled",
                    "completed",
                ],
            },
            "trigger": {"type": "string", "enum": list(TRIGGERS)},
            "priority": {"type": "string", "enum": list(PRIORITIES)},
            "channels": {"type": "array", "items": {"type": "string", "enum": list(CHANNELS)}},
            "created_at": {"type": "string", "format": "date-time"},
            "completed_at": {"type": ["string", "null"], "format": "date-time"},
            "recipient_count": {"type": "integer"},
            "deliveries": {
                "type": "integer",
                "description": "recipients x channels; with a channel fallback, recipients",
            },
            "final": {"type": "integer", "description": "deliveries in a final state"},
            "counts": {
                "type": "object",
                "additionalProperties": {"type": "integer"},
                "description": (
                    "final deliveries by status; with a channel fallback, recipients by their "
                    "outcome (delivered once any channel is)"
                ),
            },
            "fallback": {
                "type": "object",
                "description": "The session's options.fallback (present only then).",
            },
            "deferred": {
                "type": "integer",
                "description": "deliveries held by a time window now (not final)",
            },
            "recipients": {"type": "array", "items": {"$ref": "#/components/schemas/Delivery"}},
            "next_offset": {"type": ["integer", "null"]},
        },
    }
    status_event = {
        "type": "object",
        "description": "One state change of one delivery, or of the session (recipient null).",
        "required": ["event_id", "session_id", "client_id", "status", "attempt", "occurred_at"],
        "properties": {
            "event_id": {"type": "string", "format": "uuid", "description": "De-duplicate by it."},
            "session_id": {"type": "string", "format": "uuid"},
            "client_id": string,
            "recipient": nullable_string,
            "channel": nullable_string,
            "status": {"enum": list(STATUSES)},
            "attempt": {"type": "integer"},
            "provider_message_id": nullable_string,
            "error_code": {
                "type": ["string", "null"],
                "description": (
                    "The provider's code when a provider decided, else Switchboard's (for "
                    "deferred, suppressed, cancelled, expired and rejected: detail.reason)."
                ),
            },
            "error": {
                "type": ["string", "null"],
                "description": "Why, in words: set on every deferred, suppressed, cancelled, "
                "expired and rejected event (which window and zone held a deferral).",
            },
            "occurred_at": {"type": "string", "format": "date-time"},
            "detail": {
                "type": "object",
                "description": (
                    "More facts. reason: on deferred, suppressed, cancelled, expired and rejected "
                    "events, one code of the closed set of the status: "
                    + "; ".join(
                        f"{status}: {', '.join(codes)}" for status, codes in REASONS.items()
                    )
                    + ". A deferral also has window ({days, start, end, timezone}), zone (the "
                    "zone the window is closed in; of several, the last to open), zones (when "
                    "several) and release_at."
                ),
            },
        },
    }
    webhook_headers = [
        {"name": name, "in": "header", "required": True, "schema": string, "description": about}
        for name, about in (
            ("webhook-id", "The event id: the same on every retry."),
            ("webhook-timestamp", "Unix seconds of this attempt."),
            (
                "webhook-signature",
                "Space-separated v1,<base64 HMAC-SHA256>; two during a secret rotation.",
            ),
        )
    ]
    bearer: list[dict[str, list[str]]] = [{"apiKey": []}]
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Switchboard Send API",
            "version": "1.0.0",
            "description": "Send one message to an audience over SMS, email, push, voice, WhatsApp or Slack.",
        },
        "servers": [{"url": "http://127.0.0.1:6066"}],
        "components": {
            "securitySchemes": {
                "apiKey": {"type": "http", "scheme": "bearer", "description": "A client's API key."}
            },
            "schemas": {
                "Instruction": instruction,
                "Recipient": recipient,
                "Delivery": delivery,
                "Session": session,
                "Call": call_schema(),
                "Errors": {
                    "type": "object",
                    "required": ["errors"],
                    "properties": {
                        "errors": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["field", "error"],
                                "properties": {"field": string, "error": string},
                            },
                        },
                        "session_id": {
                            "type": "string",
                            "format": "uuid",
                            "description": "On a 503 from POST /v1/messages: the session that may still open. On a 410: the session that was removed.",
                        },
                    },
                },
                "Gone": {
                    "description": "A session removed after the retention period (SWITCHBOARD_RETENTION after it completed): its recipients and deliveries are no longer kept. Answered while the removal is remembered (SWITCHBOARD_GONE_FOR), then 404.",
                    "allOf": [
                        {"$ref": "#/components/schemas/Errors"},
                        {
                            "type": "object",
                            "required": ["session_id", "status", "completed_at", "removed_at"],
                            "properties": {
                                "status": {"const": "removed"},
                                "completed_at": {"type": "string", "format": "date-time"},
                                "removed_at": {"type": "string", "format": "date-time"},
                            },
                        },
                    ],
                },
                "StatusEvent": status_event,
                "WebhookPayload": {
                    "type": "object",
                    "required": ["type", "timestamp", "data"],
                    "properties": {
                        "type": {
                            "type": "string",
                            "description": "message.<status> for a delivery, session.completed for the session's end",
                            "examples": ["message.delivered", "session.completed"],
                        },
                        "timestamp": {"type": "string", "format": "date-time"},
                        "data": {"$ref": "#/components/schemas/StatusEvent"},
                    },
                },
                "Accepted": {
                    "type": "object",
                    "required": ["session_id", "status", "recipients"],
                    "properties": {
                        "session_id": {"type": "string", "format": "uuid"},
                        "status": {"const": "accepted"},
                        "recipients": {"type": "integer"},
                        "repeat": {
                            "type": "boolean",
                            "description": "true: the idempotency key named this session already; nothing new was opened",
                        },
                    },
                },
            },
        },
        "webhooks": {
            "statusEvent": {
                "post": {
                    "summary": "A status event of a session sent with options.webhookUrl (Standard Webhooks)",
                    "parameters": webhook_headers,
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/WebhookPayload"}
                            }
                        },
                    },
                    "responses": {
                        "2XX": {"description": "Received; not sent again."},
                        "410": {"description": "Gone: no more attempts for this event."},
                        "default": {
                            "description": "Retried with backoff and jitter for up to a day."
                        },
                    },
                }
            }
        },
        "paths": {
            "/v1/messages": {
                "post": {
                    "summary": "Accept an instruction",
                    "security": bearer,
                    "parameters": [
                        {
                            "name": "Idempotency-Key",
                            "in": "header",
                            "required": False,
                            "schema": {
                                "type": "string",
                                "minLength": 1,
                                "maxLength": 255,
                                "pattern": r"\S",
                            },
                        }
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/Instruction"},
                                "examples": {
                                    "one-time-password": {
                                        "summary": (
                                            "A one-time password, in the high-priority lane, "
                                            "sent within 5 minutes or not at all (then expired)"
                                        ),
                                        "value": {
                                            "client_id": "acme",
                                            "transport": {
                                                "type": "sms",
                                                "message": "Your code is 492 817",
                                            },
                                            "audience": ["+14155550100"],
                                            "options": {"priority": "high", "ttlSeconds": 300},
                                        },
                                    },
                                    "push-then-sms": {
                                        "summary": (
                                            "Push first; an sms to whoever's push is not "
                                            "delivered within a minute (or fails)"
                                        ),
                                        "value": {
                                            "client_id": "acme",
                                            "transport": {"message": "Your table is ready."},
                                            "audience": [
                                                {
                                                    "push_token": "ab" * 32,
                                                    "phone": "+14155550101",
                                                }
                                            ],
                                            "options": {
                                                "fallback": {
                                                    "channels": ["push", "sms"],
                                                    "afterSeconds": 60,
                                                }
                                            },
                                        },
                                    },
                                    "campaign": {
                                        "summary": "A campaign to many recipients",
                                        "value": {
                                            "client_id": "acme",
                                            "transport": {
                                                "type": "sms",
                                                "message": "Hi {{name}}, polls open at 7am.",
                                            },
                                            "audience": [
                                                {"phone": "+14155550101", "name": "Ada"},
                                                {"phone": "+14155550102", "name": "Grace"},
                                            ],
                                        },
                                    },
                                },
                            }
                        },
                    },
                    "responses": {
                        "202": {
                            "description": "Durably stored in Kafka; a session was opened. Synchronous at any size: answered once every write is confirmed (a million recipients take tens of seconds to validate; SWITCHBOARD_PRODUCE_TIMEOUT bounds Kafka's confirmations only).",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Accepted"}
                                }
                            },
                        },
                        **JSON_BODY_ERRORS,
                        "401": errors_response("Missing or unknown API key."),
                        "409": errors_response(
                            "Idempotency conflict (not produced: repeats of one key are serialized)."
                        ),
                        "422": errors_response(
                            "The instruction breaks the rules; every problem is listed."
                        ),
                        "429": errors_response("Rate limited; see Retry-After."),
                        "503": errors_response(
                            "Kafka refused a write or did not confirm it in time (Retry-After). Without `session_id` in the body, no session was opened and none will be: retrying is safe. With it, the session's opening was written and that session may still open: retry with the same Idempotency-Key, or check GET /v1/sessions/{session_id} before sending again."
                        ),
                    },
                }
            },
            "/v1/sessions/{session_id}": {
                "get": {
                    "summary": "A session and its recipients' states",
                    "security": bearer,
                    "parameters": [
                        {
                            "name": "session_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string", "format": "uuid"},
                        },
                        {
                            "name": "offset",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 0, "default": 0},
                        },
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {
                                "type": "integer",
                                "minimum": 1,
                                "maximum": 500,
                                "default": 100,
                            },
                        },
                        {
                            "name": "status",
                            "in": "query",
                            "description": "Only the deliveries in these statuses (a comma list; "
                            "empty: every status): "
                            "recipients from `offset` are examined until `limit` entries are found "
                            "or 10,000 recipients were examined; `next_offset` is the first "
                            "recipient not examined.",
                            "schema": {
                                "type": "string",
                                "pattern": f"^(({_ANY_STATUS})(,({_ANY_STATUS}))*)?$",
                                "example": "failed,deferred",
                            },
                        },
                    ],
                    "responses": {
                        "200": {
                            "description": "The session.",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Session"}
                                }
                            },
                        },
                        "400": errors_response(
                            "offset or limit is not a whole number in its range, or status names "
                            "something that is not a delivery status."
                        ),
                        "401": errors_response("Missing or unknown API key."),
                        "404": errors_response("No such session for this client."),
                        "410": GONE,
                        "503": MOVING,
                    },
                }
            },
            "/v1/sessions/{session_id}/trigger": {
                "post": {
                    "summary": "Start a manual (or scheduled) session now; with include_failed, send its failed deliveries again",
                    "security": bearer,
                    "parameters": [
                        {
                            "name": "session_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string", "format": "uuid"},
                        },
                        {
                            "name": "include_failed",
                            "in": "query",
                            "schema": {"type": "boolean", "default": False},
                        },
                    ],
                    "responses": {
                        "202": {"description": "Triggered."},
                        "401": errors_response("Missing or unknown API key."),
                        "404": errors_response("No such session for this client."),
                        "410": GONE,
                        "409": errors_response(
                            "Nothing to trigger: not waiting, cancelled, or no failed deliveries."
                        ),
                        "503": errors_response(
                            "Kafka did not confirm the trigger, or partitions are moving: retry."
                        ),
                    },
                }
            },
            "/v1/sessions/{session_id}/cancel": {
                "post": {
                    "summary": "Cancel what has not been sent yet",
                    "description": "Answered once the cancel is applied on every worker: every dispatcher has passed the session's fence, so its sends in flight are done and none can start. Nothing of the session is sent after a 202.",
                    "security": bearer,
                    "parameters": [
                        {
                            "name": "session_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string", "format": "uuid"},
                        }
                    ],
                    "responses": {
                        "202": {"description": "Cancelled."},
                        "401": errors_response("Missing or unknown API key."),
                        "404": errors_response("No such session for this client."),
                        "410": GONE,
                        "503": errors_response(
                            "The cancel is stored but not yet applied everywhere (30 s): retry."
                        ),
                    },
                }
            },
            **call_tool_paths(bearer),
            **twilio_message_paths(),
            **console_paths(),
            "/v1/unsubscribe": {
                "parameters": [
                    {
                        "name": "t",
                        "in": "query",
                        "required": True,
                        "description": "The signed token of a bulk email's List-Unsubscribe link.",
                        "schema": {
                            "type": "string",
                            "maxLength": 2048,
                            "pattern": "^[A-Za-z0-9_-]+[.][A-Za-z0-9_-]+$",
                        },
                    }
                ],
                "get": {
                    "summary": "The confirmation page of an email unsubscribe link (changes nothing: mail scanners fetch links)",
                    "responses": {
                        "200": {
                            "description": "A page whose button POSTs the one-click form.",
                            "content": {"text/html": {"schema": {"type": "string"}}},
                        },
                        "400": errors_response(
                            "The request line cannot be read (over 8 kB, or not HTTP)."
                        ),
                        "403": text_response("Not a link this deployment signed."),
                        "404": text_response(
                            "Unsubscribe links are not enabled (SWITCHBOARD_PUBLIC_URL or SWITCHBOARD_UNSUBSCRIBE_SECRET unset)."
                        ),
                    },
                },
                "post": {
                    "summary": "One-click unsubscribe (RFC 8058): the address stops getting the client's bulk email",
                    "description": (
                        "Recorded on the opt-out topic before the 200: a later non-transactional "
                        "email to the address is `suppressed` with code `opted-out`."
                    ),
                    "requestBody": {
                        "required": True,
                        "content": {
                            media: {
                                "schema": {
                                    "type": "object",
                                    "required": ["List-Unsubscribe"],
                                    "properties": {
                                        "List-Unsubscribe": {
                                            "type": "string",
                                            "enum": ["One-Click"],
                                        }
                                    },
                                }
                            }
                            for media in (
                                "application/x-www-form-urlencoded",
                                "multipart/form-data",
                            )
                        },
                    },
                    "responses": {
                        "200": {
                            "description": "Unsubscribed (durably recorded).",
                            "content": {"text/html": {"schema": {"type": "string"}}},
                        },
                        "400": {
                            "description": (
                                "The form is unreadable or has no List-Unsubscribe=One-Click "
                                "(text), or the request line cannot be read (JSON errors)."
                            ),
                            "content": {
                                "text/plain": {"schema": {"type": "string"}},
                                "application/json": {"schema": {"type": "object"}},
                            },
                        },
                        "403": text_response(
                            "Not a link this deployment signed; nothing is recorded."
                        ),
                        "404": text_response("Unsubscribe links are not enabled."),
                        "413": text_response("The body is larger than 4 kB."),
                        "415": text_response("The body is not a form."),
                        "503": text_response("Kafka did not confirm the record: retry."),
                    },
                },
            },
            "/healthz": {
                "get": {
                    "summary": "Liveness: the worker runs and knows its clients",
                    "responses": {
                        "200": {"description": "Alive."},
                        "503": {"description": "Starting."},
                    },
                }
            },
            "/readyz": {
                "get": {
                    "summary": "Readiness: the worker takes requests (also while partitions move)",
                    "responses": {
                        "200": {
                            "description": "Ready. `settled` in the body tells whether partitions are settled and tables recovered."
                        },
                        "503": {
                            "description": "Starting (client configuration not loaded) or stopping."
                        },
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "responses": {"200": {"description": "Text exposition format."}},
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "responses": {"200": {"description": "OpenAPI 3.1."}},
                }
            },
        },
    }
