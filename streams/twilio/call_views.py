"""The call tool's HTTP side (README: "The Send API" and "The call tool"): ``POST /api/call``,
``GET /v1/calls/{id}`` and the Twilio endpoints ``/twilio/calls/{id}/{step}``.

The views never write state: they validate, then produce commands to ``<prefix>.calls`` for the
calls agent (:mod:`streams.twilio.call_agent`). Each request is handled on the worker that owns the
partition of its key, because that worker holds the state the answer needs:

* ``POST /api/call``: the member's line (``<client>/<campaign>/<member>``), whose agent decides
  the reservation against the limit;
* the Twilio steps: the call id, whose record tells the client (hence the auth token that signs
  the request), the campaign and the target.

A request that reaches another worker is forwarded there *with its body* (Faust's
``table_route`` drops bodies, so it serves only ``GET /v1/calls/{id}``), with its headers and
its raw path, so the owner checks the same API key or the same Twilio signature over the same
URL. A forwarded request is never forwarded again (``X-Switchboard-Forwarded``). So every worker
must have the same ``SWITCHBOARD_PUBLIC_URL`` (the address Twilio calls, e.g. the load balancer's):
the worker that checks a signature is the call's owner, not necessarily the one Twilio reached.

``POST /api/call``, step by step:

1. authenticate the API key (401); read ``campaign_id``, ``member_phone_number`` and
   ``target_id`` or ``target_phone_number`` + ``target_checksum``
   (:func:`switchboard.calltool.campaigns.resolve_call_request`; 422 with every field's error);
2. forward to the line's owner, which produces ``Reserve`` and waits for its agent's decision
   (403 over the limit; 503 when no decision came within ``SWITCHBOARD_PRODUCE_TIMEOUT``, and
   the reservation is abandoned);
3. ask Twilio's Calls API (through the client's ``voice`` channel transport) to call the member
   with the start URL and a status callback for initiated, ringing, answered and completed;
4. ``Created`` and 201 ``{"call_id"}``; or ``CreationFailed`` and 422 with Twilio's code (503
   when Twilio could not be reached or was overloaded; the call is ``failed`` either way, and
   does not count against the limit).

Every Twilio endpoint checks ``X-Twilio-Signature`` against ``SWITCHBOARD_PUBLIC_URL`` + the raw
path (:mod:`streams.twilio.signature`) and answers 403, changing nothing, when it is wrong.
TwiML comes from :mod:`switchboard.calltool.twiml`. The state a step changes is acknowledged by the broker
before its TwiML is answered; if Kafka cannot take it in time the TwiML is answered anyway (the
member's call goes on; the error is logged), except for the pure callbacks (``status``,
``dial-status``), which answer 503 so that the loss is visible in Twilio's debugger.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import Callable
from typing import Any, Final, cast

from aiohttp import web
from faust.types import TableT
from faust.web import Request, Response, View
from twilio.twiml.voice_response import VoiceResponse

from streams.app import Switchboard
from streams.twilio.call_agent import CallDesk
from streams.twilio.signature import Params, verified_params
from streams.web import routing
from streams.web.common import (
    HTTPProblem,
    authenticate,
    problem,
    problem_text,
    read_json_object,
    twilio_form,
)
from switchboard.calltool.calls import (
    UnknownStatus,
    combined_state,
    parse_member_status,
    parse_target_status,
)
from switchboard.calltool.campaigns import (
    MANUAL_TARGETS_MISCONFIGURED,
    CallRequest,
    Campaign,
    InvalidCampaigns,
    checksum_secret_problems,
    parse_campaigns,
    resolve_call_request,
    secret_from,
)
from switchboard.calltool.commands import (
    Abandon,
    CallRecord,
    Command,
    Created,
    CreationFailed,
    MemberStatus,
    Reserve,
    Step,
    TargetStatus,
    line_key,
)
from switchboard.calltool.twiml import (
    STEPS,
    CallScript,
    CallUrls,
    DialTarget,
    after_dial_twiml,
    connect_twiml,
    goodbye_twiml,
    menu_step_twiml,
    parse_attempt,
    start_twiml,
)
from switchboard.clients import ClientConfig
from switchboard.errors import ValidationFailed
from transports.errors import TransportError
from transports.twilio import TwilioVoiceTransport

__all__ = ["FORWARDED_HEADER", "STATUS_EVENTS", "register"]

FORWARDED_HEADER: Final = routing.FORWARDED_HEADER

log = logging.getLogger(__name__)

#: The member call's progress Twilio reports to the status callback.
STATUS_EVENTS: Final = ("initiated", "ringing", "answered", "completed")
MAX_BODY: Final = 16 * 1024
#: How long a Twilio step waits for its call to appear in the table: Twilio may fetch the start
#: URL a moment after the call's creation, before the agent has applied its ``Open``, and right
#: after a rebalance the partition's table is being recovered. Twilio waits 15 s for TwiML.
RECORD_WAIT: Final = 5.0
#: How long ``GET /v1/calls/{id}`` waits for an unknown call before it answers 404.
FRESH_WAIT: Final = 1.5
_XML: Final = "text/xml"
#: Twilio error codes about the number called (the member's), and about the caller id.
_MEMBER_CODES: Final = frozenset(
    {"13223", "13224", "21211", "21214", "21215", "21216", "21217", "21610"}
)
_CALLER_ID_CODES: Final = frozenset({"21210", "21212", "21213"})


def register(sb: Switchboard, desk: CallDesk) -> None:
    """Add the call tool's views to the app (see the module docs)."""
    views = _CallViews(sb, desk)
    app = sb.app

    @app.page("/api/call", name="call_tool")
    class CallTool(View):
        async def post(self, request: Request) -> Response:
            try:
                return await views.create(self, cast(web.Request, request))
            except HTTPProblem as exc:
                return problem(self, exc)

    @app.page("/v1/calls/{call_id}", name="call")
    class CallState(View):
        async def get(self, request: Request, call_id: str) -> Response:
            try:
                authenticate(sb, request)  # 401 before anything else, on every worker
                if not _is_call_id(call_id):
                    raise HTTPProblem(404, "call_id", "no such call")
                forwarded = await routing.on_owner(
                    sb, self, cast(web.Request, request), desk.calls, call_id
                )
                return forwarded if forwarded is not None else await views.state(self, request)
            except HTTPProblem as exc:
                return problem(self, exc)

    @app.page("/twilio/calls/{call_id}/{step}", name="call_twiml")
    class CallSteps(View):
        async def post(self, request: Request, call_id: str, step: str) -> Response:
            return await views.twilio(self, cast(web.Request, request), call_id, step)


class _CallViews:
    """The handlers, with what they share: the app, the desk and parsed campaigns."""

    def __init__(self, sb: Switchboard, desk: CallDesk) -> None:
        self.sb = sb
        self.desk = desk
        # Campaigns parsed once per client configuration (the registry replaces the object
        # when `switchboard clients apply` changes it).
        self._campaigns: dict[str, tuple[ClientConfig, dict[str, Campaign] | InvalidCampaigns]] = {}

    # -- POST /api/call --------------------------------------------------------------------

    async def create(self, view: View, request: web.Request) -> Response:
        client = authenticate(self.sb, cast(Request, request))
        body, data = await read_json_object(request, MAX_BODY)
        campaigns, secret = self.campaigns(client), secret_from(os.environ)
        try:
            call = resolve_call_request(data, campaigns, secret)
        except ValidationFailed as exc:
            if any(e.error == MANUAL_TARGETS_MISCONFIGURED for e in exc.errors):
                campaign = campaigns[data["campaign_id"]]
                for why in checksum_secret_problems(
                    client.client_id, {campaign.campaign_id: campaign}, secret
                ):
                    log.error(
                        "manual target refused: %s", why, extra={"client_id": client.client_id}
                    )
            return view.json({"errors": exc.as_dicts()}, status=422)
        voice = self.voice(client)
        public = self.public_url()
        line = line_key(client.client_id, call.campaign.campaign_id, call.member_number)
        forwarded = await self.on_owner(view, request, self.desk.lines, line, body)
        if forwarded is not None:
            return forwarded
        call_id = str(uuid.uuid4())
        if not await self.reserve(line, _reservation(call_id, client, call)):
            raise HTTPProblem(
                403,
                "member_phone_number",
                "this member has been called the most times allowed for this campaign",
            )
        caller_id = call.campaign.caller_id or voice.options.senders[0]
        try:
            sid = await _place_call(voice, CallUrls(public, call_id), call.member_number, caller_id)
        except TransportError as exc:
            return await self.creation_failed(view, call_id, exc)
        # The call is placed whatever happens now: a lost `Created` is made good by the SID
        # every Twilio callback carries.
        await self.record(Created(call_id, sid, time.time()), required=False)
        log.info(
            "call placed",
            extra={"call_id": call_id, "client_id": client.client_id, "call_sid": sid},
        )
        return view.json({"call_id": call_id}, status=201)

    async def reserve(self, line: str, reservation: Reserve) -> bool:
        """The agent's decision on ``reservation``; 503 (and the reservation abandoned) when none
        comes in time, e.g. because the line's partition moved during a rebalance."""
        call_id = reservation.call_id
        decision = self.desk.expect(call_id)
        try:
            async with asyncio.timeout(self.sb.settings.produce_timeout):
                await self.desk.send(line, reservation, wait=True)
                return await decision
        except Exception as exc:  # noqa: BLE001 - a timeout or a refused write: 503 either way
            self.desk.forget(call_id)
            log.error("call reservation undecided", extra={"call_id": call_id, "error": repr(exc)})
            await _quietly(self.desk.send(line, Abandon(call_id)))
            raise HTTPProblem(
                503,
                "",
                "the call could not be registered in time; nothing was placed, retry",
                {"Retry-After": "2"},
            ) from None

    async def creation_failed(self, view: View, call_id: str, exc: TransportError) -> Response:
        code = exc.code or "twilio"
        await self.record(CreationFailed(call_id, code, exc.message, time.time()), required=True)
        log.warning(
            "call creation failed", extra={"call_id": call_id, "code": code, "error": exc.message}
        )
        field = (
            "member_phone_number"
            if code in _MEMBER_CODES
            else "campaign_id"
            if code in _CALLER_ID_CODES
            else ""
        )
        if exc.retryable:
            error = (
                f"Twilio could not take the call now ({exc.message}); nothing was placed, try again"
            )
            body = {
                "errors": [{"field": field, "error": error}],
                "call_id": call_id,
                "twilio_error_code": code,
            }
            retry = str(round(exc.retry_after)) if exc.retry_after else "5"
            return view.json(body, status=503, headers={"Retry-After": retry})
        error = f"Twilio refused the call (error {code}): {exc.message}"
        body = {
            "errors": [{"field": field, "error": error}],
            "call_id": call_id,
            "twilio_error_code": code,
        }
        return view.json(body, status=422)

    # -- GET /v1/calls/{id} ----------------------------------------------------------------

    async def state(self, view: View, request: Request) -> Response:
        client = authenticate(self.sb, request)
        # A call placed a moment ago may not be applied yet (its record is on its way to this
        # worker's table): an unknown id is waited for briefly before it answers 404.
        record = await self.wait_for(request.match_info["call_id"], FRESH_WAIT)
        if record is None or record.client_id != client.client_id:
            raise HTTPProblem(404, "call_id", "no such call")
        return view.json(combined_state(record.call))

    # -- Twilio ----------------------------------------------------------------------------

    async def twilio(self, view: View, request: web.Request, call_id: str, step: str) -> Response:
        if step not in STEPS:
            return view.text("no such step", status=404)
        if not _is_call_id(call_id):  # no wait for a call that cannot exist
            return view.text("no such call", status=404)
        try:
            await twilio_form(request)  # 415, 413 or 400 before anything else reads it
            body = await request.read()
            forwarded = await self.on_owner(view, request, self.desk.calls, call_id, body)
        except HTTPProblem as exc:  # Twilio retries a callback answered 503
            return problem_text(view, exc)
        if forwarded is not None:
            return forwarded
        record = await self.wait_for(call_id)
        client = self.sb.clients.get(record.client_id) if record is not None else None
        if record is None or client is None:
            return view.text("no such call", status=404)
        token, public = _auth_token(self.sb, client), self.sb.settings.public_url
        if token is None or public is None:
            log.error(
                "Twilio request for a call that cannot be verified: no Twilio voice channel or public URL",
                extra={"call_id": call_id},
            )
            return view.text("not configured", status=503)
        params = await verified_params(request, public, token)
        if params is None:
            log.warning(
                "Twilio request with a bad signature refused",
                extra={"call_id": call_id, "step": step},
            )
            return view.text("invalid X-Twilio-Signature", status=403)
        campaign = self.campaign_of(client, record.call.campaign_id)
        return await self.answer(view, request, record, campaign, step, params)

    async def answer(
        self,
        view: View,
        request: web.Request,
        record: CallRecord,
        campaign: Campaign | None,
        step: str,
        params: Params,
    ) -> Response:
        """The TwiML of a verified step, after its state change is recorded."""
        call_id, public = record.call.call_id, cast(str, self.sb.settings.public_url)
        script = campaign.script() if campaign is not None else CallScript()
        now, sid = time.time(), params.get("CallSid")
        if step == "start":
            await self.record(Step(call_id, "start", now, sid), required=False)
            xml = start_twiml(call_id, public, script) if campaign else goodbye_twiml(script)
        elif step == "menu":
            attempt = parse_attempt(request.query.get("attempt"))
            xml = menu_step_twiml(params.get("Digits"), call_id, public, script, attempt)
        elif step == "connect":
            await self.record(Step(call_id, "connect", now, sid), required=False)
            target = DialTarget(
                record.call.target_number, record.target_extension, record.target_caller_id
            )
            xml = connect_twiml(call_id, public, target)
        elif step == "dial-status":
            status = params.get("DialCallStatus")
            if status is not None and _known(parse_target_status, status):
                target_status = TargetStatus(call_id, status, now, params.get("DialCallSid"))
                await self.record(target_status, required=False)
            xml = after_dial_twiml(status, script)
        else:  # status: the member call's progress; Twilio ignores the answer's content
            status = params.get("CallStatus")
            if status is not None and _known(parse_member_status, status):
                sequence = params.get("SequenceNumber")
                sequence_number = int(sequence) if sequence and sequence.isdigit() else None
                member = MemberStatus(
                    call_id, status, now, sid, sequence_number, params.get("ErrorCode")
                )
                if not await self.record(member, required=True):
                    return view.text("state not recorded; Kafka unavailable", status=503)
            xml = str(VoiceResponse().to_xml())
        return view.text(xml, content_type=_XML)

    async def record(self, command: Command, *, required: bool) -> bool:
        """Produce ``command`` and wait for the broker; False (logged) when it did not confirm."""
        try:
            async with asyncio.timeout(self.sb.settings.produce_timeout):
                await self.desk.send(command.call_id, command, wait=True)
        except Exception as exc:  # noqa: BLE001 - the member's call must go on: log, answer
            level = logging.ERROR if required else logging.WARNING
            log.log(
                level,
                "call state change not confirmed by Kafka",
                extra={"call_id": command.call_id, "kind": command.KIND, "error": repr(exc)},
            )
            return False
        return True

    async def wait_for(self, call_id: str, wait: float = RECORD_WAIT) -> CallRecord | None:
        deadline = time.monotonic() + wait
        while True:
            record = self.desk.load(call_id)
            if record is not None or time.monotonic() > deadline:
                return record
            await asyncio.sleep(0.05)

    # -- configuration ---------------------------------------------------------------------

    def campaigns(self, client: ClientConfig) -> dict[str, Campaign]:
        """The client's parsed campaigns; 422 when its configuration is invalid (logged)."""
        cached = self._campaigns.get(client.client_id)
        if cached is None or cached[0] is not client:
            try:
                parsed: dict[str, Campaign] | InvalidCampaigns = parse_campaigns(client.campaigns)
            except InvalidCampaigns as exc:
                log.error(
                    "invalid campaigns configuration",
                    extra={"client_id": client.client_id, "error": str(exc)},
                )
                parsed = exc
            cached = self._campaigns[client.client_id] = (client, parsed)
        if isinstance(cached[1], InvalidCampaigns):
            raise HTTPProblem(
                422,
                "campaign_id",
                "the campaigns of this client are misconfigured; the operator's log says why",
            )
        return cached[1]

    def campaign_of(self, client: ClientConfig, campaign_id: str) -> Campaign | None:
        try:
            return self.campaigns(client).get(campaign_id)
        except HTTPProblem:
            return None

    def voice(self, client: ClientConfig) -> TwilioVoiceTransport:
        transport = _twilio_voice(self.sb, client)
        if transport is None:
            raise HTTPProblem(
                422,
                "campaign_id",
                "the call tool needs this client's voice channel on Twilio (provider: twilio)",
            )
        return transport

    def public_url(self) -> str:
        public = self.sb.settings.public_url
        if not public:
            log.error("the call tool needs SWITCHBOARD_PUBLIC_URL: the address Twilio calls back")
            raise HTTPProblem(
                503, "", "the call tool is not configured on this server (public URL)"
            )
        return public

    # -- routing to the partition's owner --------------------------------------------------

    async def on_owner(
        self, view: View, request: web.Request, table: TableT[bytes, bytes], key: str, body: bytes
    ) -> Response | None:
        """The owner's answer when another worker owns ``key``'s partition of ``table``; None
        when this worker must answer (``streams/web/routing.py``: 503 while partitions move)."""
        return await routing.on_owner(self.sb, view, request, table, key, body)


# -- helpers ---------------------------------------------------------------------------------


def _is_call_id(value: str) -> bool:
    """Whether ``value`` can name a call: call ids are UUIDs (:meth:`_CallViews.create`), in
    their canonical form."""
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


def _reservation(call_id: str, client: ClientConfig, call: CallRequest) -> Reserve:
    target = call.target
    return Reserve(
        call_id=call_id,
        client_id=client.client_id,
        campaign_id=call.campaign.campaign_id,
        member_number=call.member_number,
        target_number=target.phone_number,
        requested_at=time.time(),
        target_id=call.target_id,
        target_extension=target.extension,
        target_caller_id=target.caller_id,
        silence_limit=call.campaign.silence_limit,
    )


async def _place_call(
    voice: TwilioVoiceTransport, urls: CallUrls, member: str, caller_id: str
) -> str:
    """Ask Twilio to call the member; the transport paces, bounds and classifies (its errors
    are :class:`TransportError` with Twilio's code)."""
    params = {
        "to": member,
        "from_": caller_id,
        "url": urls.start,
        "method": "POST",
        "status_callback": urls.status,
        "status_callback_method": "POST",
        "status_callback_event": list(STATUS_EVENTS),
    }
    # Paced per Twilio account, like voice broadcasts.
    return await voice.create_call(params)


def _twilio_voice(sb: Switchboard, client: ClientConfig) -> TwilioVoiceTransport | None:
    try:
        transport = sb.transports.get(client, "voice")
    except Exception:  # noqa: BLE001 - not configured, or misconfigured: no call tool
        return None
    return transport if isinstance(transport, TwilioVoiceTransport) else None


def _auth_token(sb: Switchboard, client: ClientConfig) -> str | None:
    """The auth token of the client's Twilio account (it signs Twilio's requests)."""
    voice = _twilio_voice(sb, client)
    if voice is None:
        return None
    return os.environ.get(voice.options.auth_token_env) or None


def _known(parse: Callable[[str], object], status: str) -> bool:
    try:
        parse(status)
    except UnknownStatus:
        log.warning("Twilio callback with an unknown status ignored", extra={"status": status[:40]})
        return False
    return True


async def _quietly(send: Any) -> None:
    try:
        await send
    except Exception as exc:  # noqa: BLE001 - best effort; the silence timer is the backstop
        log.error("could not abandon a call reservation", extra={"error": repr(exc)})
