"""Twilio Lookup v2 line types for ``scrub-bad-mobilenums``: the I/O half of
:mod:`switchboard.managers.lookup`.

:class:`TwilioLookups` answers each client's :class:`~switchboard.managers.lookup.LineTypeLookup`
(its :meth:`~TwilioLookups.for_client` is the scrubber's ``lookup`` option). A client is looked
up with the credentials of its ``sms`` channel when that channel's provider is ``twilio``::

    channels:
      sms:
        provider: twilio
        account_sid: AC0123...                 # the Basic login
        auth_token_env: ACME_TWILIO_TOKEN       # the variable holding the token
        api_base: http://127.0.0.1:8080         # tests: also the Lookup base (default
                                                # https://lookups.twilio.com)

A client without a Twilio ``sms`` channel has no lookup (``None``: only cached answers apply).

Guarantees:

- One lookup (and one HTTP session) per account SID, token and base URL, shared by every client
  using them and safe to call concurrently. A changed token (the variable was rotated) gets a
  new one. :meth:`TwilioLookups.aclose` closes every session.
- Each request goes through the official SDK's ``AsyncTwilioHttpClient`` (made on first use,
  inside the running event loop), bounded by ``timeout`` seconds.
- Every failure is a classified :class:`~switchboard.managers.lookup.LookupFailed`
  (``retryable``, ``permanent`` or ``config``; see that module for the HTTP answers):

  - ``config`` (``code="lookup-config"``) when the client's options cannot make a request: the
    variable ``auth_token_env`` names is not set (the message names the variable), no
    ``account_sid``, an ``api_base`` that is not an http(s) URL. Raised by the lookup's
    ``line_type``, not by ``for_client``, so the scrubber reports it and stops asking;
  - ``config`` for HTTP 401/403, with a hint naming the token's variable;
  - ``retryable`` for a timeout (``lookup-timeout``) or a refused or dropped connection
    (``lookup-connection``). aiohttp sends a GET once more when its connection drops, so one
    lookup may reach Twilio (and be billed) twice.

- The auth token is read from the environment when a client's lookup is asked for, and is kept
  only by the HTTP call that sends it. It is never logged, put in an error message (messages
  are redacted), or used as a cache key (a digest is). The SDK's own request log (method and
  URL, with the number looked up) goes to the ``transports.twilio_lookup.sdk`` logger, set to
  WARNING so it stays quiet unless lowered.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp
from twilio.http.async_http_client import AsyncTwilioHttpClient

from switchboard.clients import ClientConfig
from switchboard.managers.lookup import (
    TWILIO_LOOKUP_BASE,
    HttpRequest,
    HttpResponse,
    LineType,
    LineTypeLookup,
    LookupFailed,
    TwilioLineTypeLookup,
)

__all__ = ["DEFAULT_TIMEOUT", "TwilioLookups"]

#: Seconds one Lookup request may take, connection included.
DEFAULT_TIMEOUT: Final = 10.0

_ACCOUNT_SID: Final = re.compile(r"AC[0-9a-fA-F]{32}")
_CONFIG: Final = "lookup-config"

_sdk_log = logging.getLogger(f"{__name__}.sdk")
_sdk_log.setLevel(logging.WARNING)


class _SdkHttp:
    """An :data:`~switchboard.managers.lookup.HttpCall` through the SDK's async HTTP client,
    adding the account's Basic credentials. Holds the token; never shows it."""

    def __init__(self, account_sid: str, token: str, timeout: float) -> None:
        self._account_sid = account_sid
        self._token = token
        self._timeout = timeout
        self._client: AsyncTwilioHttpClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        return f"<_SdkHttp account={self._account_sid}>"

    def _sdk(self) -> AsyncTwilioHttpClient:
        # Made on first use: it opens an aiohttp session bound to the running loop. A session of
        # another (finished) loop cannot be used, nor closed from here: it is replaced.
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._client = AsyncTwilioHttpClient(logger=_sdk_log, timeout=self._timeout)
            self._loop = loop
        return self._client

    async def __call__(self, request: HttpRequest) -> HttpResponse:
        """Send ``request``; its answer whatever the status. :class:`LookupFailed` (retryable)
        when there is none: a timeout, a refused or dropped connection."""
        try:
            async with asyncio.timeout(self._timeout):
                response: Any = await self._sdk().request(
                    request.method,
                    request.url,
                    headers=dict(request.headers),
                    auth=(self._account_sid, self._token),
                    timeout=self._timeout,
                )
        except TimeoutError:
            raise LookupFailed(
                f"Twilio Lookup did not answer within {self._timeout:g}s",
                kind="retryable",
                code="lookup-timeout",
            ) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise LookupFailed(
                self.redact(f"connection to Twilio Lookup failed: {type(exc).__name__}: {exc}"),
                kind="retryable",
                code="lookup-connection",
            ) from None
        text = response.text if isinstance(response.text, str) else ""
        headers = response.headers
        return HttpResponse(
            status=int(response.status_code),
            body=text.encode(),
            headers={str(k): str(v) for k, v in headers.items()} if headers is not None else {},
        )

    def redact(self, text: str) -> str:
        # Twilio never echoes the token, but an error text is built from outside input.
        return text.replace(self._token, "[redacted]") if self._token else text

    async def aclose(self) -> None:
        client, self._client, self._loop = self._client, None, None
        if client is not None:
            await client.close()


class _AccountLookup:
    """:class:`LineTypeLookup` of one Twilio account: :class:`TwilioLineTypeLookup` over
    :class:`_SdkHttp`, with a hint naming the token's variable on a credentials failure."""

    def __init__(self, http: _SdkHttp, base_url: str, token_env: str) -> None:
        self._http = http
        self._lookup = TwilioLineTypeLookup(http, base_url=base_url)
        self._token_env = token_env
        self.base_url = base_url

    def __repr__(self) -> str:
        return f"<TwilioLookup {self._http!r} base={self.base_url}>"

    async def line_type(self, e164: str) -> LineType:
        """``e164``'s line type; :class:`LookupFailed` (classified) when Twilio gives none."""
        try:
            return await self._lookup.line_type(e164)
        except LookupFailed as exc:
            message = self._http.redact(exc.message)
            if exc.kind == "config" and exc.code in ("20003", "http-401", "http-403"):
                message += f" (check account_sid and the token in ${self._token_env})"
            if message == exc.message:
                raise
            raise LookupFailed(message, kind=exc.kind, code=exc.code) from None

    async def aclose(self) -> None:
        await self._http.aclose()


class _Unconfigured:
    """:class:`LineTypeLookup` of a client whose options cannot make a request: every lookup
    fails with ``config``, saying what to fix (never a secret)."""

    def __init__(self, message: str) -> None:
        self.message = message

    def __repr__(self) -> str:
        return f"<TwilioLookup unconfigured: {self.message}>"

    async def line_type(self, e164: str) -> LineType:
        raise LookupFailed(self.message, kind="config", code=_CONFIG)


class TwilioLookups:
    """Each client's Twilio Lookup, from its ``sms`` channel (see the module docs).

    Arguments:
        timeout: seconds per Lookup request (positive).
        environ: where tokens are read (default ``os.environ``, read at each ``for_client``).
    """

    def __init__(
        self, *, timeout: float = DEFAULT_TIMEOUT, environ: Mapping[str, str] | None = None
    ) -> None:
        if not timeout > 0:
            raise ValueError("timeout must be positive")
        self.timeout = timeout
        self._environ = environ
        # (account SID, SHA-256 of the token, base URL) -> the account's lookup.
        self._accounts: dict[tuple[str, str, str], _AccountLookup] = {}

    def __repr__(self) -> str:
        return f"<TwilioLookups accounts={len(self._accounts)}>"

    def for_client(self, client: ClientConfig) -> LineTypeLookup | None:
        """``client``'s lookup: None without a Twilio ``sms`` channel; one that fails every
        lookup with ``config`` when its options are unusable (a token variable that is not
        set...); else the shared lookup of its account, token and base URL. Never raises, and
        makes no request."""
        channel = client.channels.get("sms")
        if channel is None or channel.provider != "twilio":
            return None
        options = channel.options
        where = f"client {client.client_id}, sms channel"
        account_sid = options.get("account_sid")
        if not (isinstance(account_sid, str) and _ACCOUNT_SID.fullmatch(account_sid)):
            return _Unconfigured(
                f"Twilio Lookup is not configured ({where}): account_sid must be AC followed "
                "by 32 hex digits"
            )
        token_env = options.get("auth_token_env")
        if not (isinstance(token_env, str) and token_env):
            return _Unconfigured(
                f"Twilio Lookup is not configured ({where}): auth_token_env is required, the "
                "environment variable holding the token"
            )
        environ = os.environ if self._environ is None else self._environ
        token = environ.get(token_env)
        if not token:
            return _Unconfigured(
                f"Twilio Lookup is not configured ({where}): auth_token_env names {token_env}, "
                "which is not set"
            )
        api_base = options.get("api_base")
        if api_base is None:
            base = TWILIO_LOOKUP_BASE
        elif isinstance(api_base, str) and urlsplit(api_base).scheme in ("http", "https"):
            base = api_base.rstrip("/")
        else:
            return _Unconfigured(
                f"Twilio Lookup is not configured ({where}): api_base must be an http(s) URL"
            )
        key = (account_sid, hashlib.sha256(token.encode()).hexdigest(), base)
        lookup = self._accounts.get(key)
        if lookup is None:
            lookup = _AccountLookup(_SdkHttp(account_sid, token, self.timeout), base, token_env)
            self._accounts[key] = lookup
        return lookup

    async def aclose(self) -> None:
        """Close every HTTP session and forget the lookups (later ones open new sessions).
        Call it in the event loop that made the requests."""
        accounts = list(self._accounts.values())
        self._accounts.clear()
        for lookup in accounts:
            await lookup.aclose()
