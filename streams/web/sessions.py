"""Session views: ``GET /v1/sessions/{id}``, ``POST .../trigger`` and ``POST .../cancel``.

All three are answered by the worker that owns the session's partition, from its tables: a
request reaching another worker is forwarded there, and a request arriving while partitions move
waits for them to settle, or answers 503 with ``Retry-After`` (``streams/web/routing.py``). Another client's session answers 404, exactly like a session that
does not exist. A session deleted after its retention (``streams/retention.py``) answers 410 Gone
to its client, saying when it completed and when it was removed, while its marker is kept
(``SWITCHBOARD_GONE_FOR``), then 404. Trigger and cancel produce a command for the session agent; cancel answers 202
only once the session is fenced: every dispatcher, on every worker, has passed its cancel fence,
so no send of it is in flight and none can start (``streams/fences.py``). An acknowledged
cancel is never followed by a send.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

from aiohttp import web
from faust.web import Request, Response, View

from streams.app import Switchboard
from streams.reports import load_delivery, load_progress
from streams.retention import purged
from streams.sessions import RESENDABLE, load_idempotency, load_session
from streams.web.common import (
    HTTPProblem,
    authenticate,
    confirmed,
    iso,
    problem,
    session_uuid,
    until,
)
from streams.web.routing import on_owner
from switchboard import fallback, records
from switchboard.clients import ClientConfig
from switchboard.console import parse_statuses
from switchboard.reasons import reason_for
from switchboard.records import Cancel, SessionState, Trigger, delivery_key

__all__ = ["MAX_SCAN", "own_session", "register", "session_document"]

MAX_PAGE = 500
#: Recipients a filtered page (``status=``) examines at most (see :func:`session_document`).
MAX_SCAN = 10_000
CANCEL_WAIT = 30.0  # seconds a cancel waits to be fenced before it answers 503 (retry it)
FRESH_WAIT = 1.5  # seconds an unknown session id is waited for before 404


def register(sb: Switchboard) -> None:
    app = sb.app

    def route(handler: Any) -> Any:
        return _routed(sb, handler)

    async def get_session(view: View, request: Request, *args: Any, **kwargs: Any) -> Response:
        try:
            client = authenticate(sb, request)
            offset, limit = _page(request)  # before the wait for a fresh session: it is cheap
            statuses = _statuses(request)
            state = await own_session(sb, client, request)
        except HTTPProblem as exc:
            return problem(view, exc)
        return view.json(session_document(sb, state, offset, limit, statuses))

    async def trigger_session(view: View, request: Request, *args: Any, **kwargs: Any) -> Response:
        try:
            client = authenticate(sb, request)
            state = await own_session(sb, client, request)
            include_failed = request.query.get("include_failed", "false").lower() in (
                "true",
                "1",
                "yes",
            )
            _check_triggerable(sb, state, include_failed)
            await confirmed(
                sb,
                sb.command(
                    Trigger(state.session_id, include_failed), priority=state.priority, confirm=True
                ),
            )
        except HTTPProblem as exc:
            return problem(view, exc)
        return view.json(
            {
                "session_id": state.session_id,
                "status": "triggered",
                "include_failed": include_failed,
            },
            status=202,
        )

    async def cancel_session(view: View, request: Request, *args: Any, **kwargs: Any) -> Response:
        try:
            client = authenticate(sb, request)
            state = await own_session(sb, client, request)
            if state.status != "cancelled":
                await confirmed(
                    sb, sb.command(Cancel(state.session_id), priority=state.priority, confirm=True)
                )
            # Fencing waits for every dispatcher to reach the fence, and for a commit (1 s).
            await until(
                lambda: _cancelled(sb, state.session_id),
                max(sb.settings.produce_timeout, CANCEL_WAIT),
            )
        except HTTPProblem as exc:
            return problem(view, exc)
        return view.json({"session_id": state.session_id, "status": "cancelled"}, status=202)

    async def idempotency_record(
        view: View, request: Request, *args: Any, **kwargs: Any
    ) -> Response:
        # For the Send API of other workers (see streams.web.api._claim): a key's record lives
        # on its anchor's partition. Only the client it belongs to may read it.
        try:
            client = authenticate(sb, request)
            record = load_idempotency(sb, session_uuid(request.match_info["session_id"]))
            if record is None or record.client_id != client.client_id:
                raise HTTPProblem(404, "session_id", "no such idempotency key")
        except HTTPProblem as exc:
            return problem(view, exc)
        return view.bytes(records.encode(record), content_type="application/json")

    @app.page("/internal/idempotency/{session_id}", name="idempotency")
    class IdempotencyView(View):
        get = route(idempotency_record)

    @app.page("/v1/sessions/{session_id}", name="session")
    class SessionView(View):
        get = route(get_session)

    @app.page("/v1/sessions/{session_id}/trigger", name="trigger")
    class TriggerView(View):
        post = route(trigger_session)

    @app.page("/v1/sessions/{session_id}/cancel", name="cancel")
    class CancelView(View):
        post = route(cancel_session)


def _routed(sb: Switchboard, handler: Any) -> Any:
    """``handler``, answered on the worker holding the session (or idempotency key) of the URL."""

    async def routed(view: View, request: Request, *args: Any, **kwargs: Any) -> Response:
        try:
            key = session_uuid(request.match_info["session_id"])
            forwarded = await on_owner(
                sb, view, cast(web.Request, request), sb.tables.sessions, key
            )
        except HTTPProblem as exc:
            return problem(view, exc)
        if forwarded is not None:
            return forwarded
        return cast(Response, await handler(view, request))

    return routed


async def own_session(sb: Switchboard, client: ClientConfig, request: Request) -> SessionState:
    """The session of the URL, if this client's: another client's is as absent as a missing one.

    A session accepted a moment ago may not be applied yet (its opening is on its way to this
    worker): an unknown id is given up to :data:`FRESH_WAIT` seconds before it answers 404."""
    session_id = session_uuid(request.match_info["session_id"])
    state = load_session(sb, session_id)
    if state is None:
        _check_gone(sb, client, session_id)
    deadline = time.monotonic() + FRESH_WAIT
    while state is None and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        state = load_session(sb, session_id)
    if state is None or state.client_id != client.client_id:
        raise HTTPProblem(404, "session_id", "no such session")
    return state


def _check_gone(sb: Switchboard, client: ClientConfig, session_id: str) -> None:
    """410 for a session of this client deleted after its retention (while its marker is kept,
    ``SWITCHBOARD_GONE_FOR``); another client's is as unknown as an id never seen."""
    marker = purged(sb, session_id)
    if marker is None or marker.client_id != client.client_id:
        return
    retention = sb.settings.retention
    raise HTTPProblem(
        410,
        "session_id",
        f"session {session_id} completed at {iso(marker.completed_at)} and was removed at "
        f"{iso(marker.purged_at)}, after the retention period "
        f"(SWITCHBOARD_RETENTION, {retention:g} seconds): its recipients and deliveries are no "
        "longer kept",
        more={
            "session_id": session_id,
            "status": "removed",
            "completed_at": iso(marker.completed_at),
            "removed_at": iso(marker.purged_at),
        },
    )


def _check_triggerable(sb: Switchboard, state: SessionState, include_failed: bool) -> None:
    if state.status in ("waiting", "scheduled"):
        return
    if include_failed and fallback.plan_of(state.options) is not None:
        raise HTTPProblem(
            409,
            "include_failed",
            "a session with a channel fallback tried its failed recipients on each of their "
            "channels already: send a new instruction to try them again",
        )
    if include_failed and any(
        load_progress(sb, state.session_id).counts.get(s) for s in RESENDABLE
    ):
        return
    why = (
        "the session was cancelled"
        if state.status == "cancelled"
        else "it is not waiting for a trigger"
    )
    if include_failed:
        why += " and has no failed deliveries"
    raise HTTPProblem(409, "session_id", f"nothing to trigger: {why}")


def _cancelled(sb: Switchboard, session_id: str) -> bool:
    """Applied, and fenced on every partition of its dispatch topics."""
    state = load_session(sb, session_id)
    # Fenced: every dispatcher, on every worker, is past the session's fences, so none of its
    # sends is in flight and none can start (``streams/fences.py``).
    return state is not None and state.status == "cancelled" and state.fenced


def _page(request: Request) -> tuple[int, int]:
    try:
        offset = int(request.query.get("offset", "0")[:20])
        limit = int(request.query.get("limit", "100")[:20])
    except ValueError:
        raise HTTPProblem(400, "offset", "offset and limit must be whole numbers") from None
    if offset < 0 or not 1 <= limit <= MAX_PAGE:
        raise HTTPProblem(400, "limit", f"offset must be 0 or more and limit 1 to {MAX_PAGE}")
    return offset, limit


def _statuses(request: Request) -> frozenset[str]:
    statuses, unknown = parse_statuses(request.query.get("status"))
    if unknown:
        raise HTTPProblem(
            400, "status", f"not a delivery status: {', '.join(sorted(unknown))[:200]}"
        )
    return statuses


def session_document(
    sb: Switchboard,
    state: SessionState,
    offset: int,
    limit: int,
    statuses: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """``GET /v1/sessions/{id}``: the session, its counts, and a page of its recipients.

    With ``statuses``, only the deliveries in one of them are listed: recipients from ``offset``
    are examined until ``limit`` entries are found or :data:`MAX_SCAN` recipients were examined,
    and ``next_offset`` is the first recipient not examined (None at the end), so a filtered
    page costs at most MAX_SCAN reads however rare the status is."""
    progress = load_progress(sb, state.session_id)
    status = "completed" if progress.completed_at is not None else state.status
    # A delivery without a report yet: held with its scheduled session, else accepted.
    pending = "scheduled" if state.status == "scheduled" else "accepted"
    recipients: list[dict[str, Any]] = []
    end = min(state.recipients, offset + (MAX_SCAN if statuses else limit))
    index = offset
    plan = fallback.plan_of(state.options)
    while index < end and not (statuses and len(recipients) >= limit):
        rows = [
            (channel, load_delivery(sb, delivery_key(state.session_id, index, channel)))
            for channel in state.channels
        ]
        if plan is not None:  # the fallback steps started (a step not started has no entry)
            rows = [row for row in rows if row[1] is not None] or rows[:1]
        for channel, delivery in rows:
            entry: dict[str, Any] = {"index": index, "channel": channel}
            if delivery is None:
                entry["status"] = pending
            else:
                entry.update(
                    {
                        "recipient": delivery.address or None,
                        "status": delivery.status,
                        "attempt": delivery.attempt,
                        "provider_message_id": delivery.provider_message_id,
                        "error_code": delivery.error_code,
                        "error": delivery.error,
                        "updated_at": iso(delivery.updated_at),
                        "reason": reason_for(delivery.status, delivery.error_code),
                    }
                )
                if delivery.release_at is not None:
                    entry["release_at"] = delivery.release_at
            if not statuses or entry["status"] in statuses:
                recipients.append(entry)
        index += 1
    end = index
    document = {
        "session_id": state.session_id,
        "client_id": state.client_id,
        "status": status,
        "trigger": state.trigger,
        "priority": state.priority,
        "channels": state.channels,
        "created_at": iso(state.created_at),
        "completed_at": iso(progress.completed_at) if progress.completed_at else None,
        "recipient_count": state.recipients,
        "deliveries": state.deliveries,
        "final": progress.final,
        "counts": progress.counts,
        "deferred": progress.deferred,
        "recipients": recipients,
        "next_offset": end if end < state.recipients else None,
    }
    if plan is not None:
        document["fallback"] = state.options["fallback"]
    return document
