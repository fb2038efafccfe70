"""The Send API, served by Faust's aiohttp web server (README: "The Send API", and the OpenAPI document).

The views only authenticate, validate and produce: every state change goes through Kafka and
is made by the agent that owns it. ``POST /v1/messages`` answers 202 only after the broker
confirmed every write of the session (``acks=all``), and 503 when it did not within
``SWITCHBOARD_PRODUCE_TIMEOUT`` (which bounds Kafka's confirmations, not the validation of a
large audience); a 202 therefore always means the instruction is durable, and a 503 says
whether the session may still open (:func:`_submit`).

The session views are in :mod:`streams.web.sessions`.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from typing import Any

import aiohttp
from faust.web import Request, Response, View

from streams.app import Switchboard
from streams.sessions import load_idempotency
from streams.submit import Unconfirmed, checked_envelope, submit
from streams.web import console, protocol, routing, sessions, unsubscribe
from streams.web.claims import WINDOW as CLAIM_WINDOW
from streams.web.claims import Claims, KeyOutcome
from streams.web.common import (
    HTTPProblem,
    authenticate,
    errors_middleware,
    header_text,
    problem,
    read_json_object,
)
from streams.web.openapi import openapi_document
from switchboard import records
from switchboard.clients import ClientConfig
from switchboard.errors import ValidationFailed
from switchboard.idempotency import IdempotencyRecord, anchor, decide, fingerprint, scoped
from switchboard.instruction import Envelope
from switchboard.quota import Quotas
from switchboard.validation import ValidationPolicy

__all__ = ["register"]

log = logging.getLogger(__name__)


def register(sb: Switchboard) -> None:
    app = sb.app
    policy = ValidationPolicy(allow_http_webhooks=sb.settings.allow_http_webhooks)
    quotas = Quotas()
    # A claimed key's outcome is remembered while its record is written, and never past the
    # key's own window (the record is deleted then, and the key opens a new session).
    claims = Claims(window=min(CLAIM_WINDOW, sb.settings.idempotency_window))
    app.web.web_app.middlewares.append(errors_middleware(sb))  # type: ignore[attr-defined]
    protocol.install(sb)

    @app.page("/v1/messages", name="messages")
    class Messages(View):
        async def post(self, request: Request) -> Response:
            try:
                client = authenticate(sb, request)
                wait = quotas.take(client.client_id, client.rate_limit, time.monotonic())
                if wait > 0:
                    sb.metrics.rejections.labels("api-rate-limit").inc()
                    raise HTTPProblem(
                        429,
                        "",
                        f"rate limited: at most {client.rate_limit.per_second:g} requests per second "
                        f"(burst {client.rate_limit.burst}) for this client",
                        {"Retry-After": str(math.ceil(wait))},
                    )
                _, data = await read_json_object(request, sb.settings.max_body_bytes)
                _merge_idempotency_header(request, data)
                answer = await _accept(sb, client, data, request, policy, claims)
            except ValidationFailed as exc:
                sb.metrics.rejections.labels("api").inc()
                return self.json({"errors": exc.as_dicts()}, status=422)
            except HTTPProblem as exc:
                return problem(self, exc)
            sb.metrics.instructions.labels("api", "accepted").inc()
            return self.json(answer, status=202)

    sessions.register(sb)
    unsubscribe.register(sb)
    console.register(sb)

    @app.page("/healthz", name="healthz")
    class Health(View):
        async def get(self, request: Request) -> Response:
            # Liveness: the worker runs and knows its clients. A liveness probe must not kill a
            # worker that is recovering a large table, so recovery shows in the body only.
            body = _health(sb)
            return self.json(body, status=200 if sb.clients.ready.is_set() else 503)

    @app.page("/readyz", name="readyz")
    class Ready(View):
        async def get(self, request: Request) -> Response:
            # Readiness, for load balancers: this worker takes requests. A rebalance does not
            # take it out: the Send API keeps answering, and requests about a session wait for
            # the partitions to settle (streams/web/routing.py). Every worker going unready at
            # once, at every rebalance, would be an outage. "settled" tells the rest.
            body = _health(sb)
            return self.json(body, status=200 if body["ready"] else 503)

    @app.page("/metrics", name="metrics")
    class MetricsPage(View):  # not Metrics: that is the holder (streams/metrics.py)
        async def get(self, request: Request) -> Response:
            sb.metrics.clients.set(len(sb.clients))
            return self.bytes(sb.metrics.exposition(), content_type="text/plain; version=0.0.4")

    document = openapi_document()

    @app.page("/openapi.json", name="openapi")
    class OpenAPI(View):
        async def get(self, request: Request) -> Response:
            return self.json(document)


def _health(sb: Switchboard) -> dict[str, Any]:
    loaded = sb.clients.ready.is_set()
    rebalancing = bool(sb.app.rebalancing)
    recovery = getattr(sb.app.tables, "recovery", None)  # TableManagerT does not declare it
    recovering = bool(recovery is not None and recovery.in_recovery)
    sb.metrics.clients.set(len(sb.clients))
    stopping = bool(sb.app.should_stop)
    return {
        "status": "stopping" if stopping else "ok" if loaded else "starting",
        "ready": loaded and not stopping,
        "settled": loaded and not stopping and not rebalancing and not recovering,
        "clients": len(sb.clients),
        "rebalancing": rebalancing,
        "recovering": recovering,
    }


def _merge_idempotency_header(request: Request, data: dict[str, Any]) -> None:
    header = header_text(request, "Idempotency-Key")
    if header is None:
        return
    if data.get("idempotency_key") not in (None, header):
        raise HTTPProblem(422, "idempotency_key", "differs from the Idempotency-Key header")
    data["idempotency_key"] = header


async def _accept(
    sb: Switchboard,
    client: ClientConfig,
    data: dict[str, Any],
    request: Request,
    policy: ValidationPolicy,
    claims: Claims,
) -> dict[str, Any]:
    """Validate, then open the session (or find the one the idempotency key names): a request
    whose key names a session already, or is being claimed by a concurrent request on this
    worker, answers that session with ``repeat: true`` (:mod:`streams.web.claims`).

    Raises:
        ValidationFailed: 422, every problem named.
        HTTPProblem: 422 for an idempotency key used for a different instruction; 413 or 503
            when the broker refused or did not confirm the writes (see :func:`_submit`).
    """
    envelope = await checked_envelope(
        data, client=client, authenticated_client=client.client_id, policy=policy
    )
    answer: dict[str, Any] = {"status": "accepted", "recipients": envelope.recipients}
    if envelope.idempotency_key is None:
        session_id = str(uuid.uuid4())
        await _submit(sb, envelope, data["audience"], session_id, None, policy)
        return {"session_id": session_id, **answer}
    key = scoped(envelope.idempotency_key, envelope.options.priority)
    digest = fingerprint(data)
    where = anchor(client.client_id, key)
    # Concurrent requests with this key on this worker wait for the first one's outcome: the
    # key's record is only written once its claim is applied (streams/web/claims.py).
    claim = await claims.claim(where, time.time())
    if isinstance(claim, KeyOutcome):
        return _repeat(sb, answer, claim, digest)
    try:
        record = await _idempotency_record(sb, where, request)
        decision = decide(
            record, client.client_id, key, digest, time.time(), sb.settings.idempotency_window
        )
        if decision.kind != "new":
            assert record is not None
            claim.settle(KeyOutcome(record.session_id, record.fingerprint), time.time(), keep=False)
            return _repeat(sb, answer, KeyOutcome(record.session_id, record.fingerprint), digest)
        # New: identical requests racing each other through other workers compute the same
        # session id, and the key's partition opens it once when it applies the claims.
        await _submit(sb, envelope, data["audience"], decision.session_id, digest, policy)
    except BaseException:
        claim.settle(None, time.time(), keep=False)  # the next request decides anew
        raise
    claim.settle(KeyOutcome(decision.session_id, digest), time.time(), keep=True)
    return {"session_id": decision.session_id, **answer}


def _window(sb: Switchboard) -> str:
    """The idempotency window, as the 422 says it (``24 hours`` by default)."""
    seconds = sb.settings.idempotency_window
    return f"{seconds / 3600:g} hours" if seconds % 3600 == 0 else f"{seconds:g} seconds"


def _repeat(
    sb: Switchboard, answer: dict[str, Any], named: KeyOutcome, digest: str
) -> dict[str, Any]:
    """The answer to a request whose key names a session already: the session, with
    ``repeat: true``, when the instruction is the same; 422 when it is another one."""
    if named.fingerprint != digest:
        raise HTTPProblem(
            422,
            "idempotency_key",
            f"already used within {_window(sb)} for a different instruction (session {named.session_id})",
        )
    sb.metrics.idempotent_repeats.labels("api", "duplicate").inc()
    return {"session_id": named.session_id, **answer, "repeat": True}


async def _submit(
    sb: Switchboard,
    envelope: Envelope,
    audience: list[Any],
    session_id: str,
    digest: str | None,
    policy: ValidationPolicy,
) -> None:
    """Write the session and wait for the broker's acknowledgement of every write (``acks=all``).

    Validation has no deadline (a million recipients take tens of seconds, yielding to the
    event loop throughout): ``produce_timeout`` bounds Kafka's confirmations only, once for the
    audience's chunks and once for the session's opening (:func:`streams.submit.submit`).

    Raises:
        ValidationFailed: a recipient is invalid (what was written is discarded; no session).
        HTTPProblem: 413 when the broker refuses a chunk as too large for the topic; 503 when
            it refuses a write or does not confirm it in time. A 503 says which: either no
            session was opened and none will be (a retry is safe), or the opening was written
            and may still be stored, and the body names the session (``session_id``) to check
            with ``GET /v1/sessions/{id}``, or to reach again with the same Idempotency-Key.
    """
    from aiokafka.errors import MessageSizeTooLargeError

    started = time.monotonic()
    timeout = sb.settings.produce_timeout
    try:
        await submit(
            sb,
            envelope,
            audience,
            session_id=session_id,
            source="api",
            origin="api",
            fingerprint=digest,
            deadline=timeout,
            policy=policy,
        )
    except Unconfirmed as exc:
        # Only the exception's type: its text or repr may quote the record (recipients
        # included), which must never reach a log line.
        cause = type(exc.cause).__name__ if exc.cause is not None else None
        log.error(
            "instruction not confirmed",
            extra={
                "client_id": envelope.client_id,
                "session_id": session_id,
                "opening_sent": exc.opening_sent,
                "error": cause,
                "waited": round(time.monotonic() - started, 3),
            },
        )
        if isinstance(exc.cause, MessageSizeTooLargeError) and not exc.opening_sent:
            raise HTTPProblem(
                413,
                "",
                "the instruction is larger than the sessions topic accepts (max.message.bytes)",
            ) from None
        what = (
            f"refused the write ({cause})"
            if cause
            else f"did not confirm the write within {timeout:g}s"
        )
        if not exc.opening_sent:
            raise HTTPProblem(
                503,
                "",
                f"Kafka {what}; no session was opened and none will be: retrying is safe",
                {"Retry-After": "5"},
            ) from None
        again = (
            "retry with the same Idempotency-Key: it answers this session if it was stored"
            if envelope.idempotency_key is not None
            else f"GET /v1/sessions/{session_id} before sending it again (200: it opened; the producer may still be retrying the write)"
        )
        raise HTTPProblem(
            503,
            "",
            f"Kafka {what}: the session's opening was written, and session {session_id} may still open: {again}",
            {"Retry-After": "5"},
            {"session_id": session_id},
        ) from None


async def _idempotency_record(
    sb: Switchboard, where: str, request: Request
) -> IdempotencyRecord | None:
    """The key's record, from this worker's table, or from the worker that owns its partition.
    While partitions move, this waits for them to settle (:data:`routing.SETTLE_WAIT`), then
    answers 503: a key's record must never be read from a worker that does not hold it."""
    owner = await routing.settled_placement(sb, sb.tables.sessions, where)
    if owner == routing.HERE:
        return load_idempotency(sb, where)
    if owner is None:
        raise HTTPProblem(
            503, "", "partitions are moving between workers; retry", {"Retry-After": "1"}
        )
    headers = {
        "Authorization": request.headers.get("Authorization", ""),
        routing.FORWARDED_HEADER: "1",
    }
    try:
        async with sb.app.http_client.get(
            f"{str(owner).rstrip('/')}/internal/idempotency/{where}", headers=headers
        ) as answer:
            if answer.status == 404:
                return None
            answer.raise_for_status()
            return records.decode(IdempotencyRecord, await answer.read())
    except (OSError, aiohttp.ClientError, RuntimeError) as exc:
        # RuntimeError: the HTTP client is closed (this worker is stopping).
        log.error("idempotency record unreachable", extra={"owner": str(owner), "error": repr(exc)})
        raise HTTPProblem(
            503,
            "",
            "the worker holding this idempotency key did not answer; retry",
            {"Retry-After": "1"},
        ) from None
