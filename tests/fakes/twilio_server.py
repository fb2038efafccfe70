"""A local Twilio REST API (Messages, Calls and Lookup v2) for tests, speaking Twilio's real wire
protocol.

It answers what the official ``twilio`` SDK sends, so transports are tested through the SDK:

- ``POST /2010-04-01/Accounts/{AccountSid}/Messages.json`` and ``.../Calls.json``, form-encoded,
  with HTTP Basic auth (account SID and auth token). Bad credentials get ``401`` with Twilio's
  error body ``{"code": 20003, "message", "more_info", "status"}``; another account's path gets
  ``404``/20404.
- ``201`` with a JSON body shaped like Twilio's MessageInstance / CallInstance: a 34-character
  SID (``SM``, ``MM`` when media is attached, ``CA`` for calls), status ``queued`` (``accepted``
  for a Messaging Service send without a ``From``), ``num_segments`` counted the way a handset
  does (:mod:`switchboard.segments`), ``num_media``, ``uri`` and the rest.
- The checks Twilio makes on the request, with its codes: a missing ``To`` (21604 / 21201), an
  invalid ``To`` (21211), no sender (21603 / 21213), nothing to send (21602), a body over 1600
  characters (21617), WhatsApp and non-WhatsApp addresses mixed (21910), a call without
  ``Url``/``Twiml``/``ApplicationSid`` (21205).
- ``GET /v2/PhoneNumbers/{PhoneNumber}?Fields=line_type_intelligence`` (Lookup v2, the number
  URL-escaped: ``%2B1415...``), with the same HTTP Basic auth (``401``/20003 otherwise). ``200``
  with Lookup's JSON: ``calling_country_code``, ``country_code``, ``phone_number``,
  ``national_format``, ``valid``, ``validation_errors``, ``caller_name``, ``sim_swap``,
  ``call_forwarding``, ``line_type_intelligence`` (``carrier_name``, ``error_code``,
  ``mobile_country_code``, ``mobile_network_code``, ``type``; null unless ``Fields`` asks for
  it), ``url`` and the other packages' keys (null). A number's line type is ``mobile`` unless
  scripted in :attr:`FakeTwilioServer.line_types` (Twilio's ``type`` values, or ``invalid``:
  ``valid: false`` with ``validation_errors``, as Twilio answers a number that cannot exist);
  :attr:`FakeTwilioServer.line_type_errors` gives a number a line-type ``error_code`` instead
  (60600 unprovisioned, 60601 Canadian numbers need approval)::

      server.line_types["+14155550123"] = "landline"
      server.line_type_errors["+16135550123"] = 60601
      server.lookup_counts()                       # {"+14155550123": 1, ...}

Every request is recorded (:attr:`FakeTwilioServer.requests`, in arrival order, with every form
value) before it is answered. Answers can be scripted, for one destination or for all, forever or
``times`` times (the first matching script wins; a destination's scripts before global ones):

    server.script(Behaviour.error(400, 21610), to="+14155550199")
    server.script(Behaviour.rate_limited(retry_after=7), times=1)
    server.script(Behaviour(delay=2.0))          # answer normally, two seconds late
    server.script(Behaviour.dropped())           # read the request, close the connection
    server.script(Behaviour.error(503, 20500), to="+14155550123", lookup=True)  # Lookup only

Lookup requests have scripts of their own (``lookup=True``, keyed by the number looked up), so
a lookup never consumes a Messages or Calls script, nor the other way round. A lookup is recorded
with ``resource="Lookups"``, its number in ``phone_number`` and its query in ``form``
(:meth:`FakeTwilioServer.lookups`, :meth:`FakeTwilioServer.lookup_counts`).

:meth:`FakeTwilioServer.send_status_callback` plays Twilio's part afterwards: it POSTs (or GETs,
per ``StatusCallbackMethod``) the status to the ``StatusCallback`` URL a resource was created
with, signed with ``X-Twilio-Signature`` by :class:`twilio.request_validator.RequestValidator`.

A call can also be *driven* as Twilio drives a real one (:meth:`FakeTwilioServer.plan_call`):
after a ``Calls.json`` create to a planned number, the fake posts the member call's status
callbacks (``initiated``, ``ringing``, ``answered``, then the final one, each only when the call
asked for it in ``StatusCallbackEvent``), fetches the call's ``Url`` and then follows the TwiML
it gets back: ``<Gather>`` (pressing the plan's next key, or nothing), ``<Redirect>``,
``<Dial>`` (posting the plan's ``DialCallStatus`` to the dial's action), ``<Say>``, ``<Play>``,
``<Hangup>``. Every request is a signed POST, exactly as Twilio signs it. What happened is kept
in :attr:`FakeTwilioServer.drives` (:class:`CallDrive`)::

    server.plan_call(CallPlan(keys=(None, "1"), dial="no-answer"), to="+14155550123")
    # ... the service creates a call to +14155550123 ...
    drive = background.wait_records(lambda d: d.to == number and d.finished, attribute="drives")[0]
    drive.steps  # ['start', 'menu?attempt=1', 'menu?attempt=1 Digits=1', 'connect', 'dial-status']

Use it inside the test's event loop::

    async with FakeTwilioServer() as server:
        options = {"api_base": server.base_url, "account_sid": server.account_sid, ...}

Closing cuts scripted delays short, so a test never waits for a slow answer nobody reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import re
import secrets
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from email.utils import formatdate
from types import TracebackType
from typing import Any, Literal, Self
from urllib.parse import urlencode, urljoin, urlsplit

import aiohttp
import phonenumbers
from aiohttp import web
from twilio.request_validator import RequestValidator
from yarl import URL

from switchboard.segments import count_segments

__all__ = [
    "TEST_ACCOUNT_SID",
    "TEST_AUTH_TOKEN",
    "Behaviour",
    "CallDrive",
    "CallPlan",
    "FakeTwilioServer",
    "RecordedRequest",
]

TEST_ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
TEST_AUTH_TOKEN = "fake-twilio-token-" + "5" * 14

API_VERSION = "2010-04-01"
_E164 = re.compile(r"(whatsapp:)?\+[1-9]\d{1,14}")
_PATH = "/2010-04-01/Accounts/{account_sid}/{resource:Messages|Calls}.json"
_LOOKUP_PATH = "/v2/PhoneNumbers/{phone_number}"

Resource = Literal["Messages", "Calls", "Lookups"]

#: What the fake answers for each Lookup ``type``: (carrier_name, mobile_country_code,
#: mobile_network_code). Twilio gives no carrier data for the types not listed here.
_CARRIERS: Mapping[str, tuple[str, str | None, str | None]] = {
    "mobile": ("Fake Wireless", "310", "260"),
    "landline": ("Fake Telephone Company", None, None),
    "fixedVoip": ("Fake Cable - Fixed VoIP", None, None),
    "nonFixedVoip": ("Fake VoIP - SVR", "313", "981"),
}
#: The keys of a Lookup v2 answer for the data packages the fake does not implement (null).
_OTHER_PACKAGES = (
    "caller_name",
    "sim_swap",
    "call_forwarding",
    "line_status",
    "identity_match",
    "reassigned_number",
    "sms_pumping_risk",
    "phone_number_quality_score",
    "pre_fill",
)


@dataclass(frozen=True, slots=True)
class Behaviour:
    """How the server answers a scripted request.

    ``delay`` (seconds) comes first; then ``drop`` closes the connection without an answer, or
    ``status`` answers with Twilio's error body (``code``, ``message``) and ``Retry-After``, or,
    with neither, the request is answered as usual (authentication and checks included).
    """

    status: int | None = None
    code: int | None = None
    message: str | None = None
    retry_after: str | None = None
    delay: float = 0.0
    drop: bool = False

    @classmethod
    def error(cls, status: int, code: int | None = None, message: str | None = None) -> Behaviour:
        """Answer ``status`` with Twilio error ``code``."""
        return cls(status=status, code=code, message=message)

    @classmethod
    def rate_limited(cls, retry_after: float | str | None = 1, code: int = 20429) -> Behaviour:
        """Answer 429 Too Many Requests, with ``Retry-After`` unless it is None."""
        header = f"{retry_after:g}" if isinstance(retry_after, float | int) else retry_after
        return cls(status=429, code=code, message="Too Many Requests", retry_after=header)

    @classmethod
    def slow(cls, milliseconds: float) -> Behaviour:
        """Answer as usual, ``milliseconds`` late."""
        return cls(delay=milliseconds / 1000)

    @classmethod
    def dropped(cls, after_ms: float = 0) -> Behaviour:
        """Read the request, then close the connection without answering."""
        return cls(drop=True, delay=after_ms / 1000)


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request as received (before it was answered)."""

    resource: Resource
    #: The account in the path; for ``Lookups`` (no account in the path), the Basic login.
    account_sid: str
    #: Every form field with all its values, in the order sent (``MediaUrl`` may repeat); for
    #: ``Lookups``, the query parameters (``Fields``).
    form: Mapping[str, tuple[str, ...]]
    #: Whether the Basic credentials were the server's.
    authorized: bool
    #: The server loop's clock (``loop.time()``) when the request arrived.
    received_at: float
    headers: Mapping[str, str] = field(default_factory=dict)
    #: ``Lookups``: the number looked up, unescaped (``+14155550123``); None otherwise.
    phone_number: str | None = None
    #: The request's path and query as sent, still escaped (``/v2/PhoneNumbers/%2B1415...``).
    raw_path: str = ""

    def get(self, name: str) -> str | None:
        """The (first) value of form field ``name``, or None."""
        values = self.form.get(name)
        return values[0] if values else None

    def getall(self, name: str) -> tuple[str, ...]:
        return self.form.get(name, ())

    @property
    def to(self) -> str | None:
        return self.get("To")


MemberOutcome = Literal["in-progress", "busy", "no-answer", "failed", "canceled"]
#: Most TwiML documents one driven call fetches: a loop in the TwiML ends the call, not the test.
MAX_TWIML_FETCHES = 40


@dataclass(frozen=True, slots=True)
class CallPlan:
    """How a driven call goes.

    ``member``: ``in-progress`` (the member answers and the TwiML runs), or how the call ends
    unanswered (``busy``, ``no-answer``, ``failed``, ``canceled``). ``keys``: the key pressed at
    each ``<Gather>`` in order, the campaign clip's included; ``None`` (or running out of keys)
    presses nothing. ``dial``: the ``DialCallStatus`` of every ``<Dial>``. ``delay``: seconds
    between the create's answer and the first callback. ``empty_result``: a ``<Gather>`` where
    no key is pressed posts an empty ``Digits`` to its action, as Twilio does with
    ``actionOnEmptyResult`` (and when ``#`` is pressed alone), instead of going on to the next
    verb (Twilio's default).
    """

    member: MemberOutcome = "in-progress"
    keys: tuple[str | None, ...] = ()
    dial: str = "completed"
    delay: float = 0.05
    empty_result: bool = False


@dataclass(frozen=True, slots=True)
class TwimlFetch:
    """One request the fake made to the application while driving a call, and the answer."""

    url: str
    params: Mapping[str, str]
    status: int
    body: str

    @property
    def step(self) -> str:
        """The URL's last path segment and query, and the key pressed if any, e.g. ``start``,
        ``menu?attempt=2`` (the menu played) or ``menu?attempt=2 Digits=1`` (its answer)."""
        parts = urlsplit(self.url)
        step = parts.path.rsplit("/", 1)[-1] + (f"?{parts.query}" if parts.query else "")
        digits = self.params.get("Digits")
        return f"{step} Digits={digits}" if digits is not None else step


@dataclass(slots=True)
class CallDrive:
    """What happened while the fake drove one call. Read it once ``finished`` is set."""

    sid: str
    to: str
    fetches: list[TwimlFetch] = field(default_factory=list)
    #: (CallStatus, the receiver's HTTP status) of each status callback, in order.
    callbacks: list[tuple[str, int]] = field(default_factory=list)
    said: list[str] = field(default_factory=list)
    played: list[str] = field(default_factory=list)
    #: Each ``<Dial>``: number, sendDigits, callerId, action.
    dials: list[dict[str, str | None]] = field(default_factory=list)
    hung_up: bool = False
    finished: bool = False
    error: str | None = None

    @property
    def steps(self) -> list[str]:
        return [f.step for f in self.fetches]


@dataclass(slots=True)
class _Script:
    behaviour: Behaviour
    remaining: int | None  # None: forever


class FakeTwilioServer:
    """Twilio's Messages, Calls and Lookup v2 APIs on ``127.0.0.1`` (see the module docs)."""

    def __init__(
        self,
        account_sid: str = TEST_ACCOUNT_SID,
        auth_token: str = TEST_AUTH_TOKEN,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.host = host
        self.port = port
        #: Every request received, in arrival order.
        self.requests: list[RecordedRequest] = []
        #: Created resources by SID: the JSON answered, updated by status callbacks.
        self.resources: dict[str, dict[str, Any]] = {}
        #: The creating request of each resource, by SID.
        self.created_by: dict[str, RecordedRequest] = {}
        self._scripts: dict[str | None, list[_Script]] = {}
        self._lookup_scripts: dict[str | None, list[_Script]] = {}
        #: Lookup: the line ``type`` answered per E.164 number (Twilio's values: ``mobile``,
        #: ``landline``, ``fixedVoip``, ``nonFixedVoip``, ``tollFree``, ``personal``,
        #: ``premium``, ``sharedCost``, ``uan``, ``voicemail``, ``pager``, ``unknown``), or
        #: ``invalid`` for ``valid: false``. Numbers not here are :attr:`default_line_type`.
        self.line_types: dict[str, str] = {}
        self.default_line_type = "mobile"
        #: Lookup: a line-type ``error_code`` per number (``type`` and carrier then null).
        self.line_type_errors: dict[str, int] = {}
        #: Every driven call, in the order the driving started (see :meth:`plan_call`).
        self.drives: list[CallDrive] = []
        self._plans: dict[str | None, CallPlan] = {}
        self._drivers: set[asyncio.Task[None]] = set()
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._sequence: dict[str, int] = {}

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> Self:
        app = web.Application()
        app.router.add_post(_PATH, self._handle)
        app.router.add_get(_LOOKUP_PATH, self._handle_lookup)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = site._server  # aiohttp has no public accessor for the bound port
        assert isinstance(server, asyncio.Server)
        self.port = server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        self._closing.set()
        for task in list(self._drivers):
            task.cancel()
        if self._drivers:
            await asyncio.gather(*self._drivers, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``: what a client uses in place of ``https://api.twilio.com``."""
        return f"http://{self.host}:{self.port}"

    # -- scripting and inspection ------------------------------------------------------------

    def script(
        self,
        behaviour: Behaviour,
        *,
        to: str | None = None,
        times: int | None = None,
        lookup: bool = False,
    ) -> None:
        """Answer requests to ``to`` (any destination when None) with ``behaviour``.

        ``times`` limits how many requests it answers; None means all of them. A destination is
        matched with or without its ``whatsapp:`` prefix. ``lookup``: the script answers Lookup
        requests for the number ``to`` (any number when None) instead of Messages and Calls.
        """
        if times is not None and times < 1:
            raise ValueError("times must be at least 1")
        key = None if to is None else to.removeprefix("whatsapp:")
        scripts = self._lookup_scripts if lookup else self._scripts
        scripts.setdefault(key, []).append(_Script(behaviour, times))

    def clear_scripts(self) -> None:
        self._scripts.clear()
        self._lookup_scripts.clear()

    def plan_call(self, plan: CallPlan, *, to: str | None = None) -> None:
        """Drive every call created to ``to`` (any destination when None) as ``plan`` says.
        Calls to a number without a plan (and no global plan) are created and left alone."""
        self._plans[to] = plan

    def signature(self, url: str, params: Mapping[str, str]) -> str:
        """``X-Twilio-Signature`` of a POST of ``params`` to ``url``, with this account's token."""
        return str(RequestValidator(self.auth_token).compute_signature(url, dict(params)))

    def messages(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.resource == "Messages"]

    def calls(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.resource == "Calls"]

    def lookups(self, phone_number: str | None = None) -> list[RecordedRequest]:
        """The Lookup requests received (of ``phone_number`` only, when given), in order."""
        return [
            r
            for r in self.requests
            if r.resource == "Lookups" and (phone_number is None or r.phone_number == phone_number)
        ]

    def lookup_counts(self) -> Counter[str]:
        """How many Lookup requests each number got (authorized or not, answered or not)."""
        return Counter(str(r.phone_number) for r in self.lookups())

    # -- status callbacks --------------------------------------------------------------------

    async def send_status_callback(
        self,
        sid: str,
        status: str,
        error_code: int | str | None = None,
        *,
        extra: Mapping[str, str] | None = None,
    ) -> int:
        """Report ``status`` of resource ``sid`` to its ``StatusCallback``, as Twilio does.

        The request is signed with ``X-Twilio-Signature`` over the exact URL and parameters.
        Returns the receiver's HTTP status.

        Raises:
            LookupError: no such resource, or it was created without a ``StatusCallback``.
        """
        created = self.created_by.get(sid)
        url = created.get("StatusCallback") if created else None
        if created is None or url is None:
            raise LookupError(f"{sid} is unknown or has no StatusCallback")
        resource = self.resources[sid]
        resource["status"] = status
        params = self._callback_params(created.resource, resource, status, error_code)
        params.update(extra or {})
        validator = RequestValidator(self.auth_token)
        headers = {"User-Agent": "TwilioProxy/1.1"}
        async with aiohttp.ClientSession() as session:
            if (created.get("StatusCallbackMethod") or "POST").upper() == "GET":
                full = f"{url}{'&' if '?' in url else '?'}{urlencode(params)}"
                headers["X-Twilio-Signature"] = validator.compute_signature(full, {})
                request = session.get(URL(full, encoded=True), headers=headers)
            else:
                headers["X-Twilio-Signature"] = validator.compute_signature(url, params)
                # encoded=True: call the URL exactly as given, as Twilio does (no re-quoting).
                request = session.post(URL(url, encoded=True), data=params, headers=headers)
            async with request as response:
                await response.read()
                return response.status

    def _callback_params(
        self, kind: Resource, resource: Mapping[str, Any], status: str, error_code: int | str | None
    ) -> dict[str, str]:
        sid = str(resource["sid"])
        common = {
            "AccountSid": self.account_sid,
            "From": str(resource.get("from") or ""),
            "To": str(resource["to"]),
            "ApiVersion": API_VERSION,
        }
        if kind == "Messages":
            params = {
                **common,
                "MessageSid": sid,
                "SmsSid": sid,
                "MessageStatus": status,
                "SmsStatus": status,
            }
            if resource.get("messaging_service_sid"):
                params["MessagingServiceSid"] = str(resource["messaging_service_sid"])
            if str(resource["to"]).startswith("whatsapp:"):
                params["ChannelPrefix"] = "whatsapp"
        else:
            sequence = self._sequence[sid] = self._sequence.get(sid, -1) + 1
            params = {
                **common,
                "CallSid": sid,
                "CallStatus": status,
                "Direction": "outbound-api",
                "CallbackSource": "call-progress-events",
                "SequenceNumber": str(sequence),
                "Timestamp": formatdate(usegmt=True),
            }
            if status == "completed":
                params["CallDuration"] = "0"
        if error_code is not None:
            params["ErrorCode"] = str(error_code)
        return params

    # -- the API -----------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        resource: Resource = "Messages" if request.match_info["resource"] == "Messages" else "Calls"
        account_sid = request.match_info["account_sid"]
        form = await request.post()
        recorded = RecordedRequest(
            resource=resource,
            account_sid=account_sid,
            form=_fields(form.items()),
            authorized=self._authorized(request.headers.get("Authorization")),
            received_at=asyncio.get_running_loop().time(),
            headers={k: v for k, v in request.headers.items() if k.lower() != "authorization"},
            raw_path=request.raw_path,
        )
        self.requests.append(recorded)
        behaviour = self._next_behaviour(self._scripts, recorded.to)
        if await self._delay_or_drop(behaviour, request):
            return web.Response()  # never reaches the client: the connection is gone
        if not recorded.authorized:
            return _error(401, 20003, "Authenticate")
        if account_sid != self.account_sid:
            return _error(404, 20404, f"The requested resource {request.path} was not found")
        if behaviour is not None and behaviour.status is not None:
            return _error(
                behaviour.status,
                behaviour.code,
                behaviour.message or f"Scripted error {behaviour.code}",
                retry_after=behaviour.retry_after,
            )
        if resource == "Messages":
            return self._create_message(recorded)
        return self._create_call(recorded)

    async def _handle_lookup(self, request: web.Request) -> web.StreamResponse:
        number = request.match_info["phone_number"]  # unescaped by the router: %2B -> +
        header = request.headers.get("Authorization")
        recorded = RecordedRequest(
            resource="Lookups",
            account_sid=_basic_login(header),
            form=_fields(request.query.items()),
            authorized=self._authorized(header),
            received_at=asyncio.get_running_loop().time(),
            headers={k: v for k, v in request.headers.items() if k.lower() != "authorization"},
            phone_number=number,
            raw_path=request.raw_path,
        )
        self.requests.append(recorded)
        behaviour = self._next_behaviour(self._lookup_scripts, number)
        if await self._delay_or_drop(behaviour, request):
            return web.Response()  # never reaches the client: the connection is gone
        if not recorded.authorized:
            return _error(401, 20003, "Authenticate")
        if behaviour is not None and behaviour.status is not None:
            return _error(
                behaviour.status,
                behaviour.code,
                behaviour.message or f"Scripted error {behaviour.code}",
                retry_after=behaviour.retry_after,
            )
        fields = {f.strip() for v in recorded.getall("Fields") for f in v.split(",")}
        return web.json_response(self._lookup_answer(number, "line_type_intelligence" in fields))

    def _lookup_answer(self, number: str, line_type_wanted: bool) -> dict[str, Any]:
        """Lookup v2's PhoneNumber answer for ``number``, as scripted (see the module docs)."""
        try:
            parsed: phonenumbers.PhoneNumber | None = phonenumbers.parse(number, None)
        except phonenumbers.NumberParseException:
            parsed = None
        kind = self.line_types.get(number, self.default_line_type)
        valid = parsed is not None and _E164.fullmatch(number) is not None and kind != "invalid"
        answer: dict[str, Any] = {
            "calling_country_code": str(parsed.country_code) if parsed is not None else None,
            "country_code": phonenumbers.region_code_for_number(parsed) if parsed else None,
            "phone_number": number,
            "national_format": phonenumbers.format_number(
                parsed, phonenumbers.PhoneNumberFormat.NATIONAL
            )
            if parsed is not None and valid
            else None,
            "valid": valid,
            "validation_errors": []
            if valid
            else ["INVALID_BUT_POSSIBLE" if parsed is not None else "NOT_A_NUMBER"],
            **dict.fromkeys(_OTHER_PACKAGES),
            "line_type_intelligence": None,
            "url": f"{self.base_url}/v2/PhoneNumbers/{number}",
        }
        if valid and line_type_wanted:
            error = self.line_type_errors.get(number)
            carrier, mcc, mnc = _CARRIERS.get(kind, (None, None, None))
            answer["line_type_intelligence"] = {
                "carrier_name": carrier if error is None else None,
                "error_code": error,
                "mobile_country_code": mcc if error is None else None,
                "mobile_network_code": mnc if error is None else None,
                "type": kind if error is None else None,
            }
        return answer

    async def _delay_or_drop(self, behaviour: Behaviour | None, request: web.Request) -> bool:
        """Wait out ``behaviour``'s delay; close the connection (True) when it drops it."""
        if behaviour is not None and behaviour.delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), behaviour.delay)
        if behaviour is not None and behaviour.drop:
            assert request.transport is not None
            request.transport.close()
            return True
        return False

    def _authorized(self, header: str | None) -> bool:
        if not header:
            return False
        try:
            auth = aiohttp.BasicAuth.decode(header)
        except ValueError:
            return False
        return auth.login == self.account_sid and hmac.compare_digest(
            auth.password.encode(), self.auth_token.encode()
        )

    @staticmethod
    def _next_behaviour(table: dict[str | None, list[_Script]], to: str | None) -> Behaviour | None:
        keys: list[str | None] = [None]
        if to is not None:
            keys.insert(0, to.removeprefix("whatsapp:"))
        for key in keys:
            scripts = table.get(key)
            if not scripts:
                continue
            first = scripts[0]
            if first.remaining is not None:
                first.remaining -= 1
                if first.remaining == 0:
                    scripts.pop(0)
            return first.behaviour
        return None

    def _create_message(self, req: RecordedRequest) -> web.Response:
        to, sender, service = req.get("To"), req.get("From"), req.get("MessagingServiceSid")
        body, media = req.get("Body") or "", req.getall("MediaUrl")
        if not to:
            return _error(400, 21604, "A 'To' phone number is required.")
        if not _E164.fullmatch(to):
            return _error(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        if not sender and not service:
            return _error(400, 21603, "A 'From' phone number is required.")
        if sender and sender.startswith("whatsapp:") != to.startswith("whatsapp:"):
            return _error(
                400, 21910, "Invalid From and To pair. From and To should be of the same channel"
            )
        if not body and not media and not req.get("ContentSid"):
            return _error(400, 21602, "Message body is required.")
        if len(body) > 1600:
            return _error(
                400, 21617, "The concatenated message body exceeds the 1600 character limit."
            )
        sid = _sid("MM" if media else "SM")
        whatsapp = to.startswith("whatsapp:")
        resource = {
            **self._common(sid, "Messages"),
            "body": body,
            "date_sent": None,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": sender,
            "messaging_service_sid": service,
            "num_media": str(len(media)),
            "num_segments": "1" if whatsapp or media or not body else str(count_segments(body)),
            "status": "queued" if sender else "accepted",
            "to": to,
            "subresource_uris": {
                "media": f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{sid}/Media.json"
            },
        }
        return self._created(sid, resource, req)

    def _create_call(self, req: RecordedRequest) -> web.Response:
        to, sender = req.get("To"), req.get("From")
        if not to:
            return _error(400, 21201, "No 'To' number is specified")
        if not _E164.fullmatch(to) or to.startswith("whatsapp:"):
            return _error(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        if not sender:
            return _error(400, 21213, "No 'From' number is specified")
        if not (req.get("Url") or req.get("Twiml") or req.get("ApplicationSid")):
            return _error(400, 21205, "Url, Twiml or ApplicationSid is required")
        sid = _sid("CA")
        resource = {
            **self._common(sid, "Calls"),
            "annotation": None,
            "answered_by": None,
            "caller_name": None,
            "direction": "outbound-api",
            "duration": None,
            "end_time": None,
            "forwarded_from": None,
            "from": sender,
            "from_formatted": sender,
            "group_sid": None,
            "parent_call_sid": None,
            "phone_number_sid": _sid("PN"),
            "queue_time": "0",
            "start_time": None,
            "status": "queued",
            "to": to,
            "to_formatted": to,
            "trunk_sid": None,
            "subresource_uris": {
                "recordings": f"/{API_VERSION}/Accounts/{self.account_sid}/Calls/{sid}/Recordings.json",
                "notifications": f"/{API_VERSION}/Accounts/{self.account_sid}/Calls/{sid}/Notifications.json",
            },
        }
        return self._created(sid, resource, req)

    def _common(self, sid: str, kind: Resource) -> dict[str, Any]:
        now = formatdate(usegmt=True)
        return {
            "sid": sid,
            "account_sid": self.account_sid,
            "api_version": API_VERSION,
            "date_created": now,
            "date_updated": now,
            "price": None,
            "price_unit": "USD",
            "uri": f"/{API_VERSION}/Accounts/{self.account_sid}/{kind}/{sid}.json",
        }

    def _created(self, sid: str, resource: dict[str, Any], req: RecordedRequest) -> web.Response:
        self.resources[sid] = resource
        self.created_by[sid] = req
        plan = self._plans.get(req.to) or self._plans.get(None)
        if req.resource == "Calls" and plan is not None:
            task = asyncio.get_running_loop().create_task(self._drive(sid, plan))
            self._drivers.add(task)
            task.add_done_callback(self._drivers.discard)
        return web.json_response(resource, status=201)

    # -- driving a call ----------------------------------------------------------------------

    async def _drive(self, sid: str, plan: CallPlan) -> None:
        created = self.created_by[sid]
        drive = CallDrive(sid, str(created.to))
        self.drives.append(drive)
        events = set(created.getall("StatusCallbackEvent")) or {"completed"}

        async def callback(status: str, event: str) -> None:
            if event in events and created.get("StatusCallback"):
                extra = {"CallDuration": "7"} if status == "completed" else None
                code = await self.send_status_callback(sid, status, extra=extra)
                drive.callbacks.append((status, code))

        try:
            await asyncio.sleep(plan.delay)
            await callback("initiated", "initiated")
            await callback("ringing", "ringing")
            if plan.member != "in-progress":
                await callback(plan.member, "completed")
                return
            await callback("in-progress", "answered")
            async with aiohttp.ClientSession() as session:
                await self._run_twiml(session, drive, created, plan)
            await callback("completed", "completed")
        except Exception as exc:  # a broken drive is the test's finding, not the loop's crash
            drive.error = f"{type(exc).__name__}: {exc}"
        finally:
            drive.finished = True

    async def _run_twiml(
        self,
        session: aiohttp.ClientSession,
        drive: CallDrive,
        created: RecordedRequest,
        plan: CallPlan,
    ) -> None:
        """Fetch the call's Url and follow the TwiML as Twilio does, until it hangs up."""
        keys = iter(plan.keys)
        base = {
            "AccountSid": self.account_sid,
            "CallSid": drive.sid,
            "From": created.get("From") or "",
            "To": drive.to,
            "CallStatus": "in-progress",
            "Direction": "outbound-api",
            "ApiVersion": API_VERSION,
        }
        url, method = created.get("Url"), (created.get("Method") or "POST").upper()
        extra: dict[str, str] = {}
        for _ in range(MAX_TWIML_FETCHES):
            if url is None:
                return
            root = await self._fetch(session, drive, url, method, {**base, **extra})
            if root is None:
                return
            follow = self._interpret(drive, url, root, keys, plan)
            if follow is None:
                return
            url, method, extra = follow
        drive.error = f"more than {MAX_TWIML_FETCHES} TwiML documents: a loop"

    def _interpret(
        self, drive: CallDrive, url: str, root: ET.Element, keys: Any, plan: CallPlan
    ) -> tuple[str, str, dict[str, str]] | None:
        """Play one TwiML document; the next request to make, or None when the call is over."""
        for verb in root:
            method = (verb.get("method") or "POST").upper()
            if verb.tag in ("Say", "Play"):
                self._speak(drive, verb)
            elif verb.tag == "Gather":
                for child in verb:
                    self._speak(drive, child)
                key = next(keys, None)
                if key is not None:  # no key: Twilio goes on with the next verb
                    return urljoin(url, verb.get("action") or url), method, {"Digits": key}
                if plan.empty_result:
                    return urljoin(url, verb.get("action") or url), method, {"Digits": ""}
            elif verb.tag == "Redirect":
                return urljoin(url, (verb.text or "").strip()), method, {}
            elif verb.tag == "Dial":
                number = verb.find("Number")
                action = verb.get("action")
                drive.dials.append(
                    {
                        "number": (number.text or "").strip()
                        if number is not None
                        else (verb.text or "").strip(),
                        "sendDigits": number.get("sendDigits") if number is not None else None,
                        "callerId": verb.get("callerId"),
                        "action": action,
                    }
                )
                if action:
                    outcome = {
                        "DialCallStatus": plan.dial,
                        "DialCallSid": _sid("CA"),
                        "DialCallDuration": "30" if plan.dial == "completed" else "0",
                    }
                    return urljoin(url, action), method, outcome
            elif verb.tag == "Hangup":
                drive.hung_up = True
                return None
        drive.hung_up = True  # the end of a document hangs up
        return None

    @staticmethod
    def _speak(drive: CallDrive, verb: ET.Element) -> None:
        if verb.tag == "Say":
            drive.said.append((verb.text or "").strip())
        elif verb.tag == "Play":
            drive.played.append((verb.text or "").strip())

    async def _fetch(
        self,
        session: aiohttp.ClientSession,
        drive: CallDrive,
        url: str,
        method: str,
        params: dict[str, str],
    ) -> ET.Element | None:
        validator = RequestValidator(self.auth_token)
        headers = {"User-Agent": "TwilioProxy/1.1"}
        if method == "GET":
            full = f"{url}{'&' if '?' in url else '?'}{urlencode(params)}"
            headers["X-Twilio-Signature"] = validator.compute_signature(full, {})
            request = session.get(URL(full, encoded=True), headers=headers)
        else:
            headers["X-Twilio-Signature"] = validator.compute_signature(url, params)
            request = session.post(URL(url, encoded=True), data=params, headers=headers)
        async with request as response:
            body = await response.text()
            drive.fetches.append(TwimlFetch(url, dict(params), response.status, body))
        if response.status != 200:
            drive.error = f"{url} answered {response.status}: {body[:200]}"
            return None
        try:
            return ET.fromstring(body)
        except ET.ParseError as exc:
            drive.error = f"{url} answered something that is not TwiML: {exc}"
            return None


def _fields(items: Iterable[tuple[str, object]]) -> dict[str, tuple[str, ...]]:
    fields: dict[str, list[str]] = {}
    for name, value in items:
        if isinstance(value, bytes | bytearray):
            text = value.decode()
        elif isinstance(value, web.FileField):
            text = value.filename
        else:
            text = str(value)
        fields.setdefault(name, []).append(text)
    return {name: tuple(values) for name, values in fields.items()}


def _basic_login(header: str | None) -> str:
    try:
        return aiohttp.BasicAuth.decode(header).login if header else ""
    except ValueError:
        return ""


def _sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def _error(
    status: int, code: int | None, message: str, *, retry_after: str | None = None
) -> web.Response:
    body: dict[str, Any] = {"code": code, "message": message, "status": status}
    body["more_info"] = f"https://www.twilio.com/docs/errors/{code}" if code else None
    headers = {"Retry-After": retry_after} if retry_after is not None else None
    return web.json_response(body, status=status, headers=headers)
