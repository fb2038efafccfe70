"""Twilio's requests about messages: delivery status callbacks and inbound SMS.

``POST /twilio/messages/status?d=<delivery>&a=<attempt>&c=<client>``
    The status callback Switchboard gives every message it sends through Twilio (see
    ``streams/dispatch.py``). The URL names the delivery and attempt, and Twilio signs the
    URL, so a callback needs no lookup and cannot be redirected to another delivery. Its
    ``MessageStatus`` becomes a report on the reports topic, where the report agent that owns
    the delivery applies it, on whichever worker that is: callbacks arriving out of order, twice,
    or before the send itself is recorded change nothing they should not (a final state is never
    downgraded), and a callback whose ``MessageSid`` is not the delivery's changes nothing and goes
    to the rejected topic (``switchboard/deliveries.py``, ``provider_id_conflict``, says why the
    first callback may still set the id). The callback is answered 200 only once the broker has its report: 503 (Twilio
    retries) when Kafka does not confirm it within ``SWITCHBOARD_PRODUCE_TIMEOUT``, and while the
    worker is starting and does not know its clients yet. A callback that names no delivery
    Switchboard knows is answered 200 once it is recorded on the rejected topic, never crashed on.

``POST /twilio/messages/inbound``
    An SMS to one of a client's numbers: STOP and the other opt-out keywords opt the sender out
    of that client's messages, START opts them back in, HELP answers the client's help text
    (``switchboard/optout.py``), in TwiML. The opt-out is answered only once this worker applied
    it (the replicated table is checked before every send); 503 while the worker is starting.

Every request is checked with ``X-Twilio-Signature`` against ``SWITCHBOARD_PUBLIC_URL`` and the
exact path (``streams/twilio/signature.py``): 403 otherwise, and nothing changes.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final, cast

from aiohttp import web
from faust.web import Request, Response, View

from streams.app import Switchboard
from streams.dispatch import optout_record
from streams.twilio.signature import verified_params
from streams.web.common import HTTPProblem, problem_text, twilio_form
from switchboard import optout
from switchboard.addresses import AddressError, normalize_phone
from switchboard.clients import MAX_PROVIDERS, ClientConfig
from switchboard.errors import FieldError
from switchboard.records import Report
from switchboard.status import Status
from transports.twilio import auth_token

__all__ = ["STATUS_MAP", "register"]

log = logging.getLogger(__name__)

#: Twilio's MessageStatus -> the delivery status it means (None: no news beyond ``sent``).
STATUS_MAP: Final[dict[str, Status | None]] = {
    "queued": None,
    "accepted": None,
    "scheduled": None,
    "sending": None,
    "sent": "sent",
    "delivered": "delivered",
    "read": "read",
    "undelivered": "undelivered",
    "failed": "failed",
    "canceled": "cancelled",
    "partially_delivered": "undelivered",
}
#: Twilio's CallStatus (a voice broadcast's final callback) -> the delivery status it means.
#: An answered call is the delivery; busy and no-answer are failures worth another attempt.
CALL_STATUS_MAP: Final[dict[str, Status | None]] = {
    "queued": None,
    "initiated": None,
    "ringing": None,
    "in-progress": None,
    "completed": "delivered",
    "busy": "failed",
    "no-answer": "failed",
    "failed": "failed",
    "canceled": "cancelled",
}
_CALL_RETRYABLE: Final = frozenset({"busy", "no-answer"})
_TWIML: Final = "application/xml"


def register(sb: Switchboard) -> None:
    app = sb.app

    @app.page("/twilio/messages/status", name="twilio-message-status")
    class MessageStatus(View):
        async def post(self, request: Request) -> Response:
            return await _checked(sb, self, cast(web.Request, request), _status_callback)

    @app.page("/twilio/messages/inbound", name="twilio-inbound")
    class Inbound(View):
        async def post(self, request: Request) -> Response:
            return await _checked(sb, self, cast(web.Request, request), _inbound)


async def _checked(
    sb: Switchboard,
    view: View,
    request: web.Request,
    handler: Callable[[Switchboard, View, web.Request], Awaitable[Response]],
) -> Response:
    """``handler``'s answer for a request shaped like Twilio's (:func:`twilio_form`: 415, 413 or
    400 otherwise, before the signature is checked or anything is recorded)."""
    try:
        await twilio_form(request)
    except HTTPProblem as exc:
        sb.metrics.rejections.labels("twilio-malformed").inc()
        return problem_text(view, exc)
    return await handler(sb, view, request)


def _starting(view: View) -> Response:
    """503 with Retry-After: this worker cannot judge a Twilio request yet (it is starting and
    has not read its clients' configuration); Twilio retries, or the load balancer tries another."""
    return view.text("starting; retry", status=503, headers={"Retry-After": "1"})


async def _durably(sb: Switchboard, view: View, send: Awaitable[Awaitable[Any]]) -> Response | None:
    """Produce a record and wait for the broker: None once it is durable, else a 503 answer."""
    try:
        async with asyncio.timeout(sb.settings.produce_timeout):
            await (await send)
    except Exception as exc:  # noqa: BLE001 - not durable: the provider must retry
        log.error(
            "Twilio callback not recorded: Kafka did not confirm it", extra={"error": repr(exc)}
        )
        return view.text("not recorded; retry", status=503, headers={"Retry-After": "2"})
    return None


#: The positions a ``v`` query field may name (``switchboard.clients.MAX_PROVIDERS``).
_POSITIONS: Final = tuple(str(n) for n in range(MAX_PROVIDERS))


async def _status_callback(sb: Switchboard, view: View, request: web.Request) -> Response:
    if not sb.clients.ready.is_set():
        return _starting(view)
    query = request.query
    delivery, attempt, client_id = query.get("d", ""), query.get("a", "0"), query.get("c", "")
    session_id, _, rest = delivery.partition("/")
    index, _, channel = rest.partition("/")
    client = sb.clients.get(client_id)
    channel_config = client.channels.get(channel) if client is not None else None  # type: ignore[call-overload]
    if channel_config is not None:  # ``v``: a failover provider sent it, its account signs
        position = query.get("v", "0")
        providers = channel_config.providers
        channel_config = (
            providers[int(position)] if position in _POSITIONS[: len(providers)] else None
        )
    token = auth_token(channel_config.options) if channel_config is not None else None
    params = await verified_params(request, sb.settings.public_url or "", token) if token else None
    if params is None:
        if token is None:  # no account to check it against: a callback for nothing we sent
            return await _record_unknown(
                sb, view, request, "a status callback for no delivery Switchboard knows"
            )
        sb.metrics.rejections.labels("twilio-signature").inc()
        return view.text("invalid signature", status=403)
    if params.get("CallStatus") and not params.get("MessageStatus"):
        return await _call_status(
            sb, view, request, params, delivery, int(attempt) if attempt.isdigit() else -1
        )
    twilio_status = params.get("MessageStatus") or params.get("SmsStatus") or ""
    if not index.isdigit() or not attempt.isdigit() or twilio_status not in STATUS_MAP:
        return await _record_unknown(
            sb,
            view,
            request,
            f"a status callback Switchboard cannot use ({twilio_status or 'no status'})",
        )
    status = STATUS_MAP[twilio_status]
    if status is not None:
        assert client is not None
        error_code = params.get("ErrorCode") or None
        report = Report(
            session_id=session_id,
            client_id=client.client_id,
            channel=channel,
            index=int(index),
            address=params.get("To", "").removeprefix("whatsapp:"),
            status=status,
            attempt=int(attempt),
            provider_message_id=params.get("MessageSid") or None,
            error_code=error_code,
            error=f"Twilio error {error_code}" if error_code else None,
            occurred_at=time.time(),
            detail=_callback_detail(params, twilio_status),
            priority=_lane(request),
            from_callback=True,
        )
        refused = await _durably(sb, view, sb.report(report))
        if refused is not None:
            return refused
    sb.metrics.provider_callbacks.labels("twilio", twilio_status).inc()
    return view.text("", status=200)


async def _call_status(
    sb: Switchboard,
    view: View,
    request: web.Request,
    params: Mapping[str, str],
    delivery: str,
    attempt: int,
) -> Response:
    """A voice broadcast's status callback (``CallStatus``). Busy and no-answer ask the report
    agent for another attempt, which it schedules when the session's ``retries`` allow one."""
    session_id, _, rest = delivery.partition("/")
    index, _, channel = rest.partition("/")
    call_status = params.get("CallStatus", "")
    if (
        channel != "voice"
        or not index.isdigit()
        or attempt < 1
        or call_status not in CALL_STATUS_MAP
    ):
        return await _record_unknown(
            sb, view, request, f"a call status callback Switchboard cannot use ({call_status})"
        )
    status = CALL_STATUS_MAP[call_status]
    if status is not None:
        retryable = call_status in _CALL_RETRYABLE
        error_code = params.get("ErrorCode") or (call_status if status == "failed" else None)
        error = _CALL_ERRORS.get(call_status) or (
            f"Twilio error {error_code}" if error_code else None
        )
        detail = {"twilio_status": call_status}
        detail.update(
            {
                k: params[v]
                for k, v in (("answered_by", "AnsweredBy"), ("duration", "CallDuration"))
                if params.get(v)
            }
        )
        report = Report(
            session_id=session_id,
            client_id=request.query.get("c", ""),
            channel="voice",
            index=int(index),
            address=params.get("To", ""),
            status=status,
            attempt=attempt,
            provider_message_id=params.get("CallSid") or None,
            error_code=error_code,
            error=error,
            occurred_at=time.time(),
            retryable=retryable,
            retry_if_allowed=retryable,
            detail=detail,
            priority=_lane(request),
            from_callback=True,
        )
        refused = await _durably(sb, view, sb.report(report))
        if refused is not None:
            return refused
    sb.metrics.provider_callbacks.labels("twilio", f"call-{call_status}").inc()
    return view.text("", status=200)


def _lane(request: web.Request) -> str:
    """The delivery's lane, which its callback URL carries (``p``): its report must travel in
    the lane of its session's other reports (``streams/reports.py``)."""
    return "high" if request.query.get("p") == "high" else "normal"


_CALL_ERRORS: Final = {"busy": "the line was busy", "no-answer": "nobody answered the call"}


async def _inbound(sb: Switchboard, view: View, request: web.Request) -> Response:
    if not sb.clients.ready.is_set():
        return _starting(view)
    form = await request.post()
    to = str(form.get("To", "")).removeprefix("whatsapp:")
    client = _client_for_number(sb, to, str(form.get("MessagingServiceSid", "")))
    token = (
        auth_token(client.channels["sms"].options)
        if client is not None and "sms" in client.channels
        else None
    )
    params = await verified_params(request, sb.settings.public_url or "", token) if token else None
    if client is None or params is None:
        if token is None:
            refused = await _record_unknown(
                sb, view, request, "an inbound message to a number no client sends from"
            )
            if refused.status != 200:
                return refused
            return view.text(optout.reply(None, None), content_type=_TWIML)
        sb.metrics.rejections.labels("twilio-signature").inc()
        return view.text("invalid signature", status=403)
    kind = optout.keyword(params.get("Body"))
    try:
        sender = normalize_phone(params.get("From", ""))
    except AddressError:
        kind = None
        sender = ""
    if kind in ("opt-out", "opt-in"):
        value = (
            optout_record("keyword", params.get("Body", "").strip()) if kind == "opt-out" else None
        )
        applied = await sb.optouts.put(
            optout.key(client.client_id, sender), value, wait_applied=sb.settings.produce_timeout
        )
        log.info(
            "opt-out" if kind == "opt-out" else "opt-in",
            extra={"client_id": client.client_id, "applied": applied},
        )
        sb.metrics.optouts.labels(kind).inc()
        if kind == "opt-out":
            await sb.managers.opted_out(
                client, "sms", sender, sender=to or None, reason="keyword", at=time.time()
            )
    return view.text(optout.reply(kind, client.help_text), content_type=_TWIML)


def _callback_detail(params: Mapping[str, str], twilio_status: str) -> dict[str, str]:
    """What a status callback tells beyond the status: the sender the message went out from
    (sticky-sender remembers it), without Twilio's ``whatsapp:`` prefix."""
    detail = {"twilio_status": twilio_status}
    sender = params.get("From", "").removeprefix("whatsapp:")
    if sender:
        detail["from"] = sender
    return detail


def _client_for_number(
    sb: Switchboard, number: str, messaging_service_sid: str
) -> ClientConfig | None:
    """The client that sends SMS from ``number`` (or through the Messaging Service): inbound
    messages are addressed to the client's own numbers."""
    for client in sorted(sb.clients.all(), key=lambda c: c.client_id):
        sms = client.channels.get("sms")
        if sms is None:
            continue
        senders = sms.options.get("from") or []
        senders = [senders] if isinstance(senders, str) else list(senders)
        if number in senders or (
            messaging_service_sid
            and sms.options.get("messaging_service_sid") == messaging_service_sid
        ):
            return client
    return None


#: How much of an unusable Twilio request is kept on the rejected topic. These requests are
#: unsigned (nobody we know sent them), so what anyone can make this worker write is bounded:
#: the start of the body and of the query, with the body's size and SHA-256 to match it.
RECORDED_BYTES: Final = 1024


async def _record_unknown(sb: Switchboard, view: View, request: web.Request, why: str) -> Response:
    """Record an unusable Twilio request on the rejected topic: 200 once the broker has it
    (Twilio need not retry what can never be used), 503 when it could not be recorded. Only a
    summary is recorded (:data:`RECORDED_BYTES` of body and query, the body's size and digest),
    keyed by the path."""
    body = await request.read()  # at most MAX_TWILIO_BODY: twilio_form checked it
    log.warning("unusable Twilio request recorded", extra={"path": request.path[:200], "why": why})
    sb.metrics.rejections.labels("twilio-unknown").inc()
    query = urllib.parse.urlencode(dict(request.query)).encode()[:RECORDED_BYTES]
    headers = [
        ("query", query),
        ("body-bytes", str(len(body)).encode()),
        ("body-sha256", hashlib.sha256(body).hexdigest().encode()),
    ]
    rejection = sb.reject(
        errors=[FieldError("", why)],
        topic=f"http:{request.path[:200]}",
        partition=-1,
        offset=-1,
        key=request.path[:200].encode(),
        value=body[:RECORDED_BYTES],
        headers=headers,
    )
    refused = await _durably(sb, view, rejection)
    return refused if refused is not None else view.text("", status=200)
