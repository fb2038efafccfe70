"""The Send API, served by Faust's aiohttp web server (CONTRACT.md section 3).

The views only authenticate, validate and produce: every state change goes through Kafka and
is made by the agent that owns it. ``POST /v1/messages`` answers 202 only after the broker
confirmed the write of the session's opening (``acks=all``), and 503 when it did not within
``SWITCHBOARD_PRODUCE_TIMEOUT``; a 202 therefore always means the instruction is durable.

The session views are in :mod:`streams.web.sessions`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from typing import Any

from faust.web import Request, Response, View

from streams.app import Switchboard
from streams.web import sessions
from streams.web.common import HTTPProblem, authenticate, problem
from streams.web.openapi import openapi_document
from switchboard.errors import ValidationFailed
from switchboard.instruction import Instruction
from switchboard.records import OpenSession
from switchboard.validation import ValidationPolicy, validate_instruction

__all__ = ["register"]

log = logging.getLogger(__name__)


def register(sb: Switchboard) -> None:
    app = sb.app
    policy = ValidationPolicy(allow_http_webhooks=sb.settings.allow_http_webhooks)

    @app.page("/v1/messages", name="messages")
    class Messages(View):
        async def post(self, request: Request) -> Response:
            try:
                client = authenticate(sb, request)
                body = await _read_body(request, sb.settings.max_body_bytes)
                data = _parse_json(body)
                _merge_idempotency_header(request, data)
                try:
                    instruction = validate_instruction(
                        data, client=client, authenticated_client=client.client_id, policy=policy
                    )
                except ValidationFailed as exc:
                    sb.metrics.rejections.labels("api").inc()
                    return self.json({"errors": exc.as_dicts()}, status=422)
                session_id = await _open_session(sb, instruction)
            except HTTPProblem as exc:
                return problem(self, exc)
            sb.metrics.instructions.labels("api", "accepted").inc()
            return self.json(
                {
                    "session_id": session_id,
                    "status": "accepted",
                    "recipients": len(instruction.audience),
                },
                status=202,
            )

    sessions.register(sb)

    @app.page("/healthz", name="healthz")
    class Health(View):
        async def get(self, request: Request) -> Response:
            ready = sb.clients.ready.is_set()
            sb.metrics.clients.set(len(sb.clients))
            body = {
                "status": "ok" if ready else "starting",
                "clients": len(sb.clients),
                "rebalancing": bool(app.rebalancing),
            }
            return self.json(body, status=200 if ready else 503)

    @app.page("/metrics", name="metrics")
    class Metrics(View):
        async def get(self, request: Request) -> Response:
            sb.metrics.clients.set(len(sb.clients))
            return self.bytes(sb.metrics.exposition(), content_type="text/plain; version=0.0.4")

    document = openapi_document()

    @app.page("/openapi.json", name="openapi")
    class OpenAPI(View):
        async def get(self, request: Request) -> Response:
            return self.json(document)


async def _read_body(request: Request, limit: int) -> bytes:
    too_large = HTTPProblem(413, "", f"the request body is larger than {limit:,} bytes")
    length = request.headers.get("Content-Length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(64 * 1024):  # type: ignore[attr-defined]
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _parse_json(body: bytes) -> dict[str, Any]:
    if not body.strip():
        raise HTTPProblem(400, "", "the request body is empty; send the instruction as JSON")
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HTTPProblem(400, "", f"the request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise HTTPProblem(400, "", "the request body is JSON nested too deeply") from None
    if not isinstance(data, dict):
        raise HTTPProblem(400, "", "the instruction must be a JSON object")
    return data


def _merge_idempotency_header(request: Request, data: dict[str, Any]) -> None:
    header = request.headers.get("Idempotency-Key")
    if header is None:
        return
    if data.get("idempotency_key") not in (None, header):
        raise HTTPProblem(422, "idempotency_key", "differs from the Idempotency-Key header")
    data["idempotency_key"] = header


async def _open_session(sb: Switchboard, instruction: Instruction) -> str:
    """Open the session: write its ``OpenSession`` command, keyed by the new session id, and
    wait for the broker's acknowledgement (``acks=all``). Returns the session id.

    The instruction was validated here, so it skips intake and goes straight to the session's
    own partition: every later command for the session (a trigger, a cancel) is ordered after
    it there.

    Raises:
        HTTPProblem: 413 when the broker refuses the record as too large for the topic; 503
            when it refuses the write or does not confirm it within ``produce_timeout``. After
            a timeout the write may still complete: the client retries with the same
            Idempotency-Key to be safe.
    """
    from aiokafka.errors import MessageSizeTooLargeError

    session_id = str(uuid.uuid4())
    command = OpenSession(
        session_id, instruction.to_record(), received_at=time.time(), source="api", origin="api"
    )
    started = time.monotonic()
    try:
        # Shielded: an unconfirmed write is not cancelled (it cannot be taken back anyway).
        await asyncio.wait_for(
            asyncio.shield(sb.command(command, confirm=True)), sb.settings.produce_timeout
        )
    except MessageSizeTooLargeError:
        raise HTTPProblem(
            413, "", "the instruction is larger than the sessions topic accepts (max.message.bytes)"
        ) from None
    except TimeoutError:
        log.error("instruction not confirmed in time", extra={"client_id": instruction.client_id, "session_id": session_id,
                                                               "waited": round(time.monotonic() - started, 3)})  # fmt: skip
        raise HTTPProblem(503, "", f"Kafka did not confirm the write within {sb.settings.produce_timeout:g}s; the instruction may or may not be stored: retry with the same Idempotency-Key",
                          {"Retry-After": "5"}) from None  # fmt: skip
    except Exception as exc:  # noqa: BLE001 - a refused write is not durable: 503
        log.error(
            "instruction refused by the broker",
            extra={"client_id": instruction.client_id, "error": repr(exc)},
        )
        raise HTTPProblem(503, "", f"Kafka refused the write ({type(exc).__name__}); nothing was stored, retry later",
                          {"Retry-After": "5"}) from None  # fmt: skip
    return session_id
