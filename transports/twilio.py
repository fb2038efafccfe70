"""SMS, MMS, WhatsApp and voice broadcasts through Twilio's REST API, with the official SDK.

Channel options (``channels.<sms|whatsapp|voice>`` of a client)::

    provider: twilio
    account_sid: AC0123...                  # required
    auth_token_env: ACME_TWILIO_TOKEN        # required: the variable holding the token, never the token
    from: ["+14155550100", "+14155550101"]   # E.164 senders (sms also: short codes, alphanumeric IDs)
    messaging_service_sid: MG0123...         # sms/whatsapp: send through a Messaging Service
    rate_per_second: 1                       # per sender; default: by sender type (below)
    max_in_flight: 50                        # concurrent API requests of this transport
    timeout: 15                              # seconds per API request (not counting rate waits)
    api_base: http://127.0.0.1:8080          # tests: a local server instead of api.twilio.com
    machine_detection: Enable                # voice only: Twilio answering-machine detection

The sender is ``message.sender`` when set; else the Messaging Service (``extras.messaging_service_sid``
when a service manager chose one, else the channel's); else the first ``from``. What is sent:

- ``sms``: the Messages API. A ``file_url`` that is an image (``.jpg .jpeg .png .gif``, or
  ``extras.media: true``) makes it an MMS (``MediaUrl``); any other file is appended to the body
  as a link. ``extras.send_as_mms: true`` asks Twilio to deliver the text as one MMS.
- ``whatsapp``: the Messages API with ``whatsapp:`` addresses; a pre-approved template is
  ``extras.content_sid`` with ``extras.content_variables`` (a mapping, sent as JSON); free text
  and media follow the sms rules.
- ``voice``: the Calls API with inline TwiML that ``<Play>``\\ s ``file_url``, else ``<Say>``\\ s
  the body in ``message.locale``.

``message.status_callback`` is passed as ``StatusCallback``. The answer is ``sent`` with the
Message/Call SID; the delivery itself arrives later on that callback.

Pacing: before each request the transport takes a slot from a :class:`~transports.ratelimit.RateLimiter`
keyed by sender (messages) or by account (calls: Twilio's calls-per-second limit is per
account), so a large audience drains at the provider's pace instead of being rejected; callers
wait in FIFO order (a high-priority message first). In a worker the slots are shared across
workers (:class:`~transports.ratelimit.Slots`): a sender's rate is a global limit, not per
process. At most ``max_in_flight`` requests are open at once.

A sender's rate is ``rate_per_second`` when the channel sets it, else Twilio's default for its
type (:func:`default_rate`): a long code 1/s, a toll-free number 3/s, a short code 100/s, an
alphanumeric sender ID 10/s, a Messaging Service 10/s (set ``rate_per_second`` to the
throughput of its sender pool), a WhatsApp sender 80/s, and voice calls 1/s per account.

Errors (:mod:`transports.errors`; ``code`` is Twilio's numeric error code when it sent one, else
``http-<status>`` or one of ours, ``twilio-timeout``, ``twilio-connection``...):

- retryable: HTTP 429 (``retry_after`` from ``Retry-After``), 5xx, codes 20429 and 30001 (queue
  overflow), timeouts, refused or dropped connections, unreadable answers;
- suppressed: 21610 (the recipient replied STOP);
- permanent: every other 4xx (21211 invalid number, 21408/21612 unreachable, 20003 bad
  credentials...), and a message with nothing to send.

A timeout or a dropped connection after the request was written is ambiguous: Twilio may have
accepted the message. It is reported retryable, so a retry can send it twice (at-least-once).

The auth token is read from the environment once, at construction, and is never logged, put
in an error, or kept anywhere but the SDK client. Nothing here logs message bodies; the SDK's
own request log (method, URL, headers without ``Authorization``) goes to the
``transports.twilio.sdk`` logger, which is set to WARNING so it stays quiet unless lowered.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp
from twilio.base.exceptions import TwilioRestException, TwilioServiceException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client
from twilio.twiml.voice_response import VoiceResponse

from switchboard.errors import ConfigError
from switchboard.retry import retry_after_seconds
from transports.base import OutboundMessage, SendResult, Transport, final_check
from transports.errors import PermanentError, RetryableError, SuppressedError, TransportError
from transports.ratelimit import RateLimiter, Slots

__all__ = [
    "TWILIO_CHANNELS",
    "TwilioMessagingTransport",
    "TwilioOptions",
    "TwilioVoiceTransport",
    "auth_token",
    "call_request",
    "classify_error",
    "message_request",
    "twilio_transport",
]

TWILIO_CHANNELS: Final = frozenset({"sms", "whatsapp", "voice"})

_E164: Final = re.compile(r"\+[1-9]\d{1,14}")
_SHORT_CODE: Final = re.compile(r"\d{3,8}")
_ALPHANUMERIC_ID: Final = re.compile(r"(?=.*[A-Za-z])[A-Za-z0-9 ]{1,11}")
_ACCOUNT_SID: Final = re.compile(r"AC[0-9a-fA-F]{32}")
_SERVICE_SID: Final = re.compile(r"MG[0-9a-fA-F]{32}")
_LANGUAGE: Final = re.compile(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*")
_IMAGE_EXTENSIONS: Final = (".jpg", ".jpeg", ".png", ".gif")
_WHATSAPP: Final = "whatsapp:"
_TWIML_MAX: Final = 4000  # Twilio's limit for the Twiml parameter
_KNOWN_OPTIONS: Final = frozenset(
    {
        "account_sid",
        "auth_token_env",
        "from",
        "messaging_service_sid",
        "api_base",
        "rate_per_second",
        "max_in_flight",
        "timeout",
        "machine_detection",
    }
)

#: Twilio error codes that mean "later" whatever the HTTP status: too many requests, and the
#: sender's queue is full (more than four hours of messages waiting).
RETRYABLE_CODES: Final = frozenset({20429, 30001})
#: The recipient opted out (replied STOP): never send to them again on this sender.
SUPPRESSED_CODES: Final = frozenset({21610})

# The SDK logs four INFO lines per request; keep them out of the service's logs unless asked for.
_sdk_log = logging.getLogger(f"{__name__}.sdk")
_sdk_log.setLevel(logging.WARNING)


# -- options ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TwilioOptions:
    """A channel's validated options. Holds the token's variable name, never the token."""

    channel: str
    account_sid: str
    auth_token_env: str
    senders: tuple[str, ...]
    messaging_service_sid: str | None
    api_base: str | None
    #: None: each sender's rate is :func:`default_rate` of its type.
    rate_per_second: float | None
    max_in_flight: int
    timeout: float
    machine_detection: str | None

    @classmethod
    def parse(cls, channel: str, options: Mapping[str, Any]) -> TwilioOptions:
        """Validate ``options`` for ``channel``; raise :class:`ConfigError` naming every problem."""
        if channel not in TWILIO_CHANNELS:
            raise ConfigError(f"twilio cannot send {channel}; it sends sms, whatsapp and voice")
        problems: list[str] = []
        # A key set to null (`messaging_service_sid: null`) is the same as an absent one.
        opts = {k: v for k, v in options.items() if v is not None}
        problems.extend(f"unknown option {k!r}" for k in sorted(set(opts) - _KNOWN_OPTIONS))
        account_sid = opts.get("account_sid")
        if not (isinstance(account_sid, str) and _ACCOUNT_SID.fullmatch(account_sid)):
            problems.append("account_sid is required: AC followed by 32 hex digits")
        token_env = opts.get("auth_token_env")
        if not (isinstance(token_env, str) and token_env):
            problems.append(
                "auth_token_env is required: the environment variable holding the token"
            )
        elif not os.environ.get(token_env):
            problems.append(f"auth_token_env names {token_env}, which is not set")
        senders = _senders(channel, opts.get("from", []), problems)
        service = opts.get("messaging_service_sid")
        if service is not None and channel == "voice":
            problems.append("messaging_service_sid is for sms and whatsapp, not voice")
        elif service is not None and not (
            isinstance(service, str) and _SERVICE_SID.fullmatch(service)
        ):
            problems.append("messaging_service_sid must be MG followed by 32 hex digits")
        if not senders and service is None:
            problems.append(
                "`from` (a list of sender numbers) or messaging_service_sid is required"
            )
        api_base = opts.get("api_base")
        if api_base is not None and not (
            isinstance(api_base, str) and urlsplit(api_base).scheme in ("http", "https")
        ):
            problems.append("api_base must be an http(s) URL")
        rate = (
            _positive(opts, "rate_per_second", 1.0, problems)
            if opts.get("rate_per_second") is not None
            else None
        )
        timeout = _positive(opts, "timeout", 15.0, problems)
        in_flight = opts.get("max_in_flight", 50)
        if not (isinstance(in_flight, int) and not isinstance(in_flight, bool) and in_flight > 0):
            problems.append("max_in_flight must be a positive integer")
            in_flight = 1
        machine = opts.get("machine_detection")
        if machine is not None and (channel != "voice" or not isinstance(machine, str)):
            problems.append("machine_detection is a string (Enable, DetectMessageEnd), voice only")
        if problems:
            raise ConfigError(
                f"invalid twilio options for {channel}:\n" + "\n".join(f"  {p}" for p in problems)
            )
        return cls(
            channel=channel,
            account_sid=str(account_sid),
            auth_token_env=str(token_env),
            senders=senders,
            messaging_service_sid=service,
            api_base=api_base.rstrip("/") if isinstance(api_base, str) else None,
            rate_per_second=rate,
            max_in_flight=in_flight,
            timeout=timeout,
            machine_detection=machine,
        )


def _senders(channel: str, raw: Any, problems: list[str]) -> tuple[str, ...]:
    values = [raw] if isinstance(raw, str) else raw
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        problems.append("`from` must be a number or a list of numbers")
        return ()
    senders: list[str] = []
    for value in values:
        number = value.removeprefix(_WHATSAPP) if channel == "whatsapp" else value
        ok = bool(_E164.fullmatch(number)) or (
            channel == "sms"
            and bool(_SHORT_CODE.fullmatch(number) or _ALPHANUMERIC_ID.fullmatch(number))
        )
        if not ok:
            kinds = (
                "an E.164 number, short code or alphanumeric ID"
                if channel == "sms"
                else "an E.164 number"
            )
            problems.append(f"`from` {value!r} is not {kinds}")
        senders.append(number)
    return tuple(senders)


def _positive(opts: Mapping[str, Any], key: str, default: float, problems: list[str]) -> float:
    value = opts.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        problems.append(f"{key} must be a positive number")
        return default
    return float(value)


# -- requests (pure) -------------------------------------------------------------------------


def message_request(options: TwilioOptions, message: OutboundMessage) -> tuple[str, dict[str, Any]]:
    """The rate-limit key and the ``messages.create_async`` arguments for ``message``.

    Raises:
        PermanentError: the message has nothing to send, or unusable ``extras``.
    """
    whatsapp = options.channel == "whatsapp"
    params: dict[str, Any] = {"to": _address(message.to, whatsapp=whatsapp)}
    # A service manager (per-client-messageservices) may name the Messaging Service per message.
    service = message.extras.get("messaging_service_sid") or options.messaging_service_sid
    if not (service is None or (isinstance(service, str) and _SERVICE_SID.fullmatch(service))):
        raise PermanentError(
            "extras.messaging_service_sid must be MG followed by 32 hex digits", code="bad-extras"
        )
    if message.sender:
        key = message.sender.removeprefix(_WHATSAPP)
        params["from_"] = _address(key, whatsapp=whatsapp)
    elif service:
        key = service
        params["messaging_service_sid"] = key
    else:
        key = options.senders[0]
        params["from_"] = _address(key, whatsapp=whatsapp)
    if message.extras.get("content_sid") is not None:
        params.update(_template_params(message.extras))
    else:
        params.update(_content_params(options.channel, message))
    if message.status_callback:
        params["status_callback"] = message.status_callback
    return f"{options.channel}:{key}", params


def _template_params(extras: Mapping[str, Any]) -> dict[str, Any]:
    # A template's body and media are Twilio's (approved content); only the variables are ours.
    content_sid = extras.get("content_sid")
    if not (isinstance(content_sid, str) and content_sid):
        raise PermanentError("extras.content_sid must be a Content SID (HX...)", code="bad-extras")
    params: dict[str, Any] = {"content_sid": content_sid}
    variables = extras.get("content_variables")
    if isinstance(variables, Mapping):
        params["content_variables"] = json.dumps(dict(variables), ensure_ascii=False)
    elif isinstance(variables, str):
        params["content_variables"] = variables  # already JSON
    elif variables is not None:
        raise PermanentError(
            "extras.content_variables must be an object of template variables", code="bad-extras"
        )
    return params


def _content_params(channel: str, message: OutboundMessage) -> dict[str, Any]:
    params: dict[str, Any] = {}
    body = message.body or ""
    if message.file_url and _is_media(message.file_url, message.extras):
        params["media_url"] = [message.file_url]
    elif message.file_url:
        body = f"{body}\n{message.file_url}" if body else message.file_url
    if body:
        params["body"] = body
    elif "media_url" not in params:
        raise PermanentError(f"nothing to send: the {channel} has no body", code="empty-message")
    if message.extras.get("send_as_mms") is True and channel == "sms":
        params["send_as_mms"] = True
    return params


def call_request(options: TwilioOptions, message: OutboundMessage) -> tuple[str, dict[str, Any]]:
    """The rate-limit key and the ``calls.create_async`` arguments: a one-way broadcast call.

    Raises:
        PermanentError: nothing to play or say, or TwiML longer than Twilio accepts.
    """
    response = VoiceResponse()
    if message.file_url:
        response.play(message.file_url)
    elif message.body:
        language = (message.locale or "").replace("_", "-")
        if _LANGUAGE.fullmatch(language):
            response.say(message.body, language=language)
        else:
            response.say(message.body)
    else:
        raise PermanentError("nothing to send: the call has no body or file", code="empty-message")
    twiml = str(response)
    if len(twiml) > _TWIML_MAX:
        raise PermanentError(
            f"the call's TwiML is {len(twiml)} characters; Twilio accepts {_TWIML_MAX}",
            code="twiml-too-long",
        )
    sender = message.sender or options.senders[0]
    params: dict[str, Any] = {"to": message.to, "from_": sender, "twiml": twiml}
    if message.status_callback:
        params["status_callback"] = message.status_callback
    if options.machine_detection:
        params["machine_detection"] = options.machine_detection
    # Calls per second are limited per account at Twilio, not per number.
    return f"voice:{options.account_sid}", params


def _address(number: str, *, whatsapp: bool) -> str:
    return number if not whatsapp or number.startswith(_WHATSAPP) else _WHATSAPP + number


def _is_media(url: str, extras: Mapping[str, Any]) -> bool:
    flag = extras.get("media")
    if isinstance(flag, bool):
        return flag
    return urlsplit(url).path.lower().endswith(_IMAGE_EXTENSIONS)


# -- errors (pure) ---------------------------------------------------------------------------


def classify_error(exc: BaseException, *, retry_after: float | None = None) -> TransportError:
    """Map what the SDK raised to a classified :class:`TransportError` (see the module docs)."""
    if isinstance(exc, TwilioRestException | TwilioServiceException):
        return _classify_http(exc, retry_after)
    if isinstance(exc, TimeoutError):
        return RetryableError("Twilio did not answer in time", code="twilio-timeout")
    if isinstance(exc, aiohttp.ClientError | OSError):
        return RetryableError(
            f"connection to Twilio failed: {type(exc).__name__}: {exc}", code="twilio-connection"
        )
    if isinstance(exc, json.JSONDecodeError):
        return RetryableError("Twilio's answer was not JSON", code="twilio-bad-response")
    return RetryableError(f"{type(exc).__name__}: {exc}", code="twilio-unexpected")


def _classify_http(exc: Any, retry_after: float | None) -> TransportError:
    status = int(exc.status) if isinstance(exc.status, int) else 0
    number = exc.code if isinstance(exc.code, int) and not isinstance(exc.code, bool) else None
    if number == status:  # the SDK puts the HTTP status there when Twilio gave no code
        number = None
    code = str(number) if number is not None else f"http-{status}"
    if isinstance(exc, TwilioServiceException):
        text = " - ".join(str(t) for t in (exc.title, exc.detail) if t)
    else:
        text = str(exc.msg).removeprefix("Unable to create record: ")
    message = f"Twilio HTTP {status}, error {code}: {text[:300]}"
    if number in SUPPRESSED_CODES:
        return SuppressedError(message, code=code)
    if status == 429 or status >= 500 or number in RETRYABLE_CODES:
        return RetryableError(message, code=code, retry_after=retry_after)
    if 400 <= status < 500:
        return PermanentError(message, code=code)
    return RetryableError(message, code=code, retry_after=retry_after)  # 1xx/3xx: not Twilio's


# -- I/O -------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Probe:
    """What the HTTP layer saw that the SDK's exception does not carry."""

    retry_after: float | None = None


# Set by each send (its own task's context) and filled by the HTTP client below.
_PROBE: contextvars.ContextVar[_Probe | None] = contextvars.ContextVar("twilio_probe", default=None)


class _HttpClient:
    """The SDK's :class:`AsyncTwilioHttpClient`, plus the ``Retry-After`` of failed answers.

    The SDK turns an error answer into an exception without its headers; this wrapper notes the
    header in the calling send's probe first. The SDK only uses ``is_async`` and ``request``.
    """

    is_async = True

    def __init__(self) -> None:
        self._inner = AsyncTwilioHttpClient(logger=_sdk_log)

    async def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - the SDK's signature; send() bounds it
        allow_redirects: bool = False,
    ) -> Any:
        response = await self._inner.request(
            method,
            url,
            params=params,
            data=data,
            headers=headers,
            auth=auth,
            timeout=timeout,
            allow_redirects=allow_redirects,
        )
        probe = _PROBE.get()
        if probe is not None and response.status_code >= 400 and response.headers is not None:
            probe.retry_after = retry_after_seconds(response.headers.get("Retry-After"))
        return response

    async def close(self) -> None:
        await self._inner.close()


class _TwilioTransport:
    """Shared machinery: the lazily made SDK client, pacing, concurrency and error mapping."""

    name = "twilio"

    def __init__(
        self, channel: str, options: Mapping[str, Any], slots: Slots | None = None
    ) -> None:
        self.options = TwilioOptions.parse(channel, options)
        # Read once and kept private; `parse` checked that it is set.
        self._token = os.environ[self.options.auth_token_env]
        configured = self.options.rate_per_second
        self._limiter = RateLimiter(
            configured or 1.0,
            rate_for=None if configured is not None else partial(default_rate, channel),
            slots=slots,
        )
        self._slots = asyncio.Semaphore(self.options.max_in_flight)
        self._client: Any = None
        self._http: _HttpClient | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.options.channel} account={self.options.account_sid}>"

    def _sdk(self) -> Any:
        # Made on first use: AsyncTwilioHttpClient opens an aiohttp session bound to the
        # running loop, and transports are built outside it.
        if self._client is None:
            self._http = _HttpClient()
            client = Client(self.options.account_sid, self._token, http_client=self._http)
            if self.options.api_base:
                # Messages and Calls both live on the `api` domain; TWILIO_EDGE/REGION would
                # rewrite the host, so they do not apply to an explicit base.
                client.api.base_url = self.options.api_base
                client.edge = client.region = None
            self._client = client
        return self._client

    async def _create(
        self,
        resource: str,
        key: str,
        params: dict[str, Any],
        message: OutboundMessage | None = None,
    ) -> Any:
        """Create a Message or Call, paced per ``key``; raise classified errors only."""
        await self._limiter.acquire(key, urgent=message is not None and message.urgent)
        probe = _Probe()
        reset = _PROBE.set(probe)
        try:
            async with self._slots:
                if message is not None:
                    await final_check(message)  # after the waits for a rate slot and a request slot
                async with asyncio.timeout(self.options.timeout):
                    return await getattr(self._sdk(), resource).create_async(**params)
        except (
            TwilioRestException,
            TwilioServiceException,
            TimeoutError,
            aiohttp.ClientError,
            OSError,
            json.JSONDecodeError,
        ) as exc:
            error = classify_error(exc, retry_after=probe.retry_after)
            text = self._redact(error.message)
            if error.code == "20003":  # say what to fix, naming the variable, never its value
                text += f" (check account_sid and the token in ${self.options.auth_token_env})"
            raise type(error)(text, code=error.code, retry_after=error.retry_after) from None
        finally:
            _PROBE.reset(reset)

    def _redact(self, text: str) -> str:
        # Twilio never echoes the token, but an error text is built from outside input.
        return text.replace(self._token, "[redacted]")

    async def aclose(self) -> None:
        http, self._http, self._client = self._http, None, None
        if http is not None:
            await http.close()


class TwilioMessagingTransport(_TwilioTransport):
    """``sms`` (and MMS) or ``whatsapp`` through the Messages API."""

    def __init__(
        self, channel: str, options: Mapping[str, Any], slots: Slots | None = None
    ) -> None:
        if channel == "voice":
            raise ConfigError("voice goes through TwilioVoiceTransport, not the Messages API")
        super().__init__(channel, options, slots)

    async def send(self, message: OutboundMessage) -> SendResult:
        key, params = message_request(self.options, message)
        created = await self._create("messages", key, params, message)
        detail: dict[str, Any] = {
            "twilio_status": created.status,
            "from": created.from_ or params.get("from_"),
        }
        segments = _int_or_none(created.num_segments)
        if segments is not None:
            detail["segments"] = segments
        if "messaging_service_sid" in params:
            detail["messaging_service_sid"] = params["messaging_service_sid"]
        return SendResult(_str_or_none(created.sid), "sent", detail)


class TwilioVoiceTransport(_TwilioTransport):
    """``voice`` broadcasts through the Calls API with inline TwiML."""

    def __init__(self, options: Mapping[str, Any], slots: Slots | None = None) -> None:
        super().__init__("voice", options, slots)

    async def send(self, message: OutboundMessage) -> SendResult:
        key, params = call_request(self.options, message)
        created = await self._create("calls", key, params, message)
        detail = {"twilio_status": created.status, "from": params["from_"]}
        return SendResult(_str_or_none(created.sid), "sent", detail)

    async def create_call(self, params: Mapping[str, Any]) -> str:
        """Create a call with ``params`` (the Calls API's arguments: ``to``, ``from_``, ``url``,
        callbacks...), paced like every call of this account; returns its SID. Raises
        classified :mod:`transports.errors` only (the call tool's interactive calls)."""
        created = await self._create("calls", f"voice:{self.options.account_sid}", dict(params))
        sid = _str_or_none(getattr(created, "sid", None))
        if not sid:
            raise RetryableError("Twilio's answer has no call SID", code="twilio-bad-response")
        return sid


def auth_token(options: Mapping[str, Any]) -> str | None:
    """The auth token of a channel configured for Twilio (from the variable ``auth_token_env``
    names), to check the signatures of Twilio's requests; None when it is not set."""
    name = options.get("auth_token_env")
    return os.environ.get(name) or None if isinstance(name, str) and name else None


def twilio_transport(
    channel: str, options: Mapping[str, Any], slots: Slots | None = None
) -> Transport:
    """The registry's factory: the Twilio transport for ``channel`` (sms, whatsapp or voice)."""
    if channel == "voice":
        return TwilioVoiceTransport(options, slots)
    return TwilioMessagingTransport(channel, options, slots)


#: Twilio's toll-free prefixes in North America (+1 8XX).
_TOLL_FREE: Final = ("+1800", "+1833", "+1844", "+1855", "+1866", "+1877", "+1888")


def default_rate(channel: str, sender: str) -> float:
    """Requests per second Twilio takes from ``sender`` (a pacing key) by default, by its type.

    Twilio queues what comes faster and fails it after hours (error 30001 when its queue
    overflows), so a sender is paced at its type's throughput: a long code 1/s, a toll-free
    number 3/s, a short code 100/s, an alphanumeric sender ID 10/s, a Messaging Service 10/s
    (its real throughput is its pool's: set ``rate_per_second``), WhatsApp 80/s, and calls 1/s
    per account. Pure."""
    if channel == "voice" or sender.startswith("voice:"):
        return 1.0
    if channel == "whatsapp":
        return 80.0
    if _SERVICE_SID.fullmatch(sender):
        return 10.0
    if sender.isdigit() and 3 <= len(sender) <= 8:
        return 100.0
    if sender.startswith(_TOLL_FREE):
        return 3.0
    if not sender.startswith("+"):
        return 10.0
    return 1.0


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return int(value) if isinstance(value, str) and value.isdigit() else None
