"""Line type lookups for ``scrub-bad-mobilenums``: the interface, and Twilio Lookup v2. Pure.

:class:`LineTypeLookup` answers what kind of line a phone number is: ``mobile``, ``landline``,
``voip``, ``invalid`` (no such number) or ``unknown`` (the provider answered but could not
tell). A lookup that gets no answer raises :class:`LookupFailed`, classified:

* ``retryable``: try again later (HTTP 429 or 5xx, a timeout, a dropped connection, an
  unreadable answer);
* ``permanent``: this number cannot be looked up now (another 4xx, a line-type error code such
  as 60600 "unprovisioned or out of coverage", an answer without line type data);
* ``config``: no number can be looked up with these credentials (HTTP 401 or 403, or error
  60601: Canadian numbers need approval), so a caller stops asking.

:class:`TwilioLineTypeLookup` is Twilio's `Lookup v2 <https://www.twilio.com/docs/lookup/v2-api>`_
with the Line Type Intelligence package, which is billed per request. This module only builds
the request (:func:`twilio_lookup_request`) and reads the answer (:func:`parse_twilio_lookup`);
the HTTP call is an injected ``async (HttpRequest) -> HttpResponse`` callable, which also adds
the credentials (HTTP Basic: account SID and auth token, or an API key and secret), so neither
I/O nor secrets are here.

Twilio's types map as follows: ``mobile`` → mobile; ``landline`` → landline; ``fixedVoip``,
``nonFixedVoip`` → voip; ``personal``, ``tollFree``, ``premium``, ``sharedCost``, ``uan``,
``voicemail``, ``pager``, ``unknown``, a missing type or one added later → unknown (only the two
kinds that certainly cannot receive an SMS are scrubbed, so anything unclear stays in). An
answer with ``valid: false`` (Lookup v2 answers 200 for a number that does not exist, with
``validation_errors``) is invalid. A 404 is *not* taken as "invalid": a wrong base URL answers
404 for every number, and would otherwise scrub, and cache, a whole audience.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, Protocol, get_args
from urllib.parse import quote

from switchboard.errors import SwitchboardError

__all__ = [
    "LINE_TYPES",
    "TWILIO_LINE_TYPES",
    "TWILIO_LOOKUP_BASE",
    "HttpCall",
    "HttpRequest",
    "HttpResponse",
    "LineType",
    "LineTypeLookup",
    "LookupFailed",
    "LookupFailure",
    "TwilioLineTypeLookup",
    "parse_twilio_lookup",
    "twilio_lookup_request",
]

LineType = Literal["mobile", "landline", "voip", "invalid", "unknown"]
LINE_TYPES: Final[tuple[LineType, ...]] = get_args(LineType)

LookupFailure = Literal["retryable", "permanent", "config"]

TWILIO_LOOKUP_BASE: Final = "https://lookups.twilio.com"

#: Twilio's ``line_type_intelligence.type`` values; any other is ``unknown``.
TWILIO_LINE_TYPES: Final[Mapping[str, LineType]] = {
    "mobile": "mobile",
    "landline": "landline",
    "fixedVoip": "voip",
    "nonFixedVoip": "voip",
}

#: Line-type error codes that concern the account, not the number: 60601, Canadian numbers
#: need NPAC approval. Every Canadian number would fail alike.
_CONFIG_CODES: Final = frozenset({"60601"})
_E164: Final = re.compile(r"\+[1-9]\d{1,14}")


class LookupFailed(SwitchboardError):
    """A lookup got no answer. ``kind`` says whether trying again can help (module docs)."""

    def __init__(self, message: str, *, kind: LookupFailure, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.kind: LookupFailure = kind
        self.code = code


class LineTypeLookup(Protocol):
    """Looks up the line type of an E.164 number; raises :class:`LookupFailed` when it cannot.

    It must be safe to call concurrently (the scrub manager keeps a few lookups in flight)."""

    async def line_type(self, e164: str) -> LineType: ...


@dataclass(frozen=True, slots=True)
class HttpRequest:
    method: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)


#: Makes one HTTP request (adding the credentials) and answers the response, whatever its
#: status. Raising is for no answer at all (timeouts, connections): it is taken as retryable,
#: unless it raises :class:`LookupFailed` itself.
HttpCall = Callable[[HttpRequest], Awaitable[HttpResponse]]


def twilio_lookup_request(e164: str, *, base_url: str = TWILIO_LOOKUP_BASE) -> HttpRequest:
    """The Lookup v2 request for ``e164``'s line type (``ValueError`` if not E.164)."""
    if not _E164.fullmatch(e164):
        raise ValueError(f"not an E.164 number: {e164!r}")
    # The + must be escaped: in a query it would read as a space, and proxies differ on paths.
    number = quote(e164, safe="")
    return HttpRequest(
        "GET",
        f"{base_url.rstrip('/')}/v2/PhoneNumbers/{number}?Fields=line_type_intelligence",
        {"Accept": "application/json"},
    )


def _error_code(body: Any) -> str | None:
    code = body.get("code") if isinstance(body, Mapping) else None
    return str(code) if isinstance(code, int | str) and not isinstance(code, bool) else None


def parse_twilio_lookup(response: HttpResponse) -> LineType:
    """The line type in a Lookup v2 answer; :class:`LookupFailed` when it holds none."""
    try:
        body: Any = json.loads(response.body) if response.body else None
    except (ValueError, UnicodeDecodeError):
        body = None
    status = response.status
    if status != 200:
        code = _error_code(body) or f"http-{status}"
        message = body.get("message") if isinstance(body, Mapping) else None
        text = f"Twilio Lookup HTTP {status}, error {code}" + (
            f": {str(message)[:200]}" if message else ""
        )
        if status in (401, 403):
            raise LookupFailed(text, kind="config", code=code)
        if status == 429 or status >= 500:
            raise LookupFailed(text, kind="retryable", code=code)
        if 400 <= status < 500:
            raise LookupFailed(text, kind="permanent", code=code)
        raise LookupFailed(text, kind="retryable", code=code)  # 1xx/3xx: not Twilio's
    if not isinstance(body, Mapping):
        raise LookupFailed(
            "Twilio Lookup's answer is not a JSON object", kind="retryable", code="bad-response"
        )
    if body.get("valid") is False:
        return "invalid"
    intelligence = body.get("line_type_intelligence")
    if not isinstance(intelligence, Mapping):
        raise LookupFailed(
            "Twilio Lookup answered without line_type_intelligence",
            kind="permanent",
            code="no-line-type",
        )
    kind = intelligence.get("type")
    error = intelligence.get("error_code")
    if kind is None and error is not None:
        code = str(error)
        kind_of: LookupFailure = "config" if code in _CONFIG_CODES else "permanent"
        raise LookupFailed(f"Twilio Lookup line type error {code}", kind=kind_of, code=code)
    return TWILIO_LINE_TYPES.get(kind, "unknown") if isinstance(kind, str) else "unknown"


class TwilioLineTypeLookup:
    """:class:`LineTypeLookup` through Twilio Lookup v2; ``http`` makes the request."""

    def __init__(self, http: HttpCall, *, base_url: str = TWILIO_LOOKUP_BASE) -> None:
        self._http = http
        self._base_url = base_url

    async def line_type(self, e164: str) -> LineType:
        try:
            request = twilio_lookup_request(e164, base_url=self._base_url)
        except ValueError as exc:
            raise LookupFailed(str(exc), kind="permanent", code="not-e164") from None
        try:
            response = await self._http(request)
        except LookupFailed:
            raise
        except Exception as exc:
            # No answer at all (timeout, connection): the number may be fine; ask again later.
            raise LookupFailed(
                f"Twilio Lookup request failed: {type(exc).__name__}: {exc}",
                kind="retryable",
                code="lookup-connection",
            ) from exc
        return parse_twilio_lookup(response)
