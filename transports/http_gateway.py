"""Any HTTP SMS gateway (``provider: http``): a request built from templates in ``clients.yaml``.

The options, the templates and the reading of answers are pure and live in
:mod:`switchboard.gateway` (parsed, with every problem named, when the transport is built: at
``switchboard clients apply`` and at a worker's start). This module only runs them with aiohttp:

* **Single mode** (no ``bulk``): one request per message.
* **Bulk mode** (``bulk.max_addresses``): one request for many addresses of the same message.
  Messages whose requests would differ only in ``{{to}}`` (the same text, sender, extras...: see
  :meth:`~switchboard.gateway.GatewayConfig.group_key`) are gathered for up to ``bulk.linger``
  seconds (default 0.05) or until ``max_addresses`` are waiting, then sent together. The
  dispatcher already sends a batch's jobs concurrently, so a campaign's slice of 100 recipients
  reaches the transport within the same moment and goes out as one request, with no change to
  the dispatcher: every message keeps its own claim, last check and report. A bulk request is
  therefore at most the dispatcher's sends in flight (``SWITCHBOARD_MAX_IN_FLIGHT``, 100) wide,
  and a high-priority message (``urgent``) does not wait: it goes at once with whatever is
  gathered. An address appears at most once per request (a second message to it starts the next
  request), so per-address results are never ambiguous. Each message's
  :func:`~transports.base.final_check` runs right before the request (after the wait for a free
  request slot, ``max_in_flight``): a message withdrawn meanwhile (cancelled, opted out) is left
  out of it.

What a message comes to (each address of a bulk request separately,
:func:`switchboard.gateway.classify`): success is ``delivered``, since no delivery report comes
back from a generic gateway, so its acceptance is the last word (as with SMTP), with the
provider message id from the answer; a retryable failure is a
:class:`~transports.errors.RetryableError` (with ``Retry-After``), tried again per the session's
``retries``; anything else a :class:`~transports.errors.PermanentError`. Timeouts (``timeout``,
default 15 s per request) and network errors are retryable: the gateway may have taken the
message, so a retry can send it twice (at least once). Redirects are not followed.

Secrets (``secrets: {token: SPARROW_TOKEN}``) are read from the environment once, when built.
Errors name the gateway's host, never its URL (whose query may hold a secret), and any secret
the gateway echoes in its error text is masked. Nothing here logs a body or a header.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp

from switchboard.gateway import GatewayConfig, Outcome, classify
from switchboard.gateway.response import parse_json
from switchboard.retry import retry_after_seconds
from transports.base import OutboundMessage, SendResult, final_check
from transports.errors import PermanentError, RetryableError, TransportError
from transports.ratelimit import Slots

__all__ = ["HttpGatewayTransport", "http_gateway_transport"]

#: The most bytes of an answer read: gateways answer a few hundred.
MAX_ANSWER: Final = 1 << 20


@dataclass
class _Waiting:
    """One message waiting for its bulk request."""

    message: OutboundMessage
    address: str
    values: dict[str, Any]
    result: asyncio.Future[SendResult]


@dataclass
class _Group:
    entries: list[_Waiting] = field(default_factory=list)
    addresses: set[str] = field(default_factory=set)
    timer: asyncio.TimerHandle | None = None


class HttpGatewayTransport:
    """One client's channel through a generic HTTP gateway (module docs)."""

    name = "http"

    def __init__(
        self, channel: str, options: Mapping[str, Any], environ: Mapping[str, str] | None = None
    ) -> None:
        self.config = GatewayConfig.parse(
            channel, options, os.environ if environ is None else environ
        )
        url = urlsplit(str(self.config.url.source))
        #: How errors and status events name the gateway: never its URL (module docs).
        self._host = f"{url.hostname}:{url.port}" if url.port else str(url.hostname)
        self._session: aiohttp.ClientSession | None = None
        self._gate = asyncio.Semaphore(self.config.max_in_flight)
        self._groups: dict[str, _Group] = {}
        self._requests: set[asyncio.Task[None]] = set()

    # -- sending -----------------------------------------------------------------------------

    async def send(self, message: OutboundMessage) -> SendResult:
        if not message.body and not (message.file_url and "file_url" in self.config.names):
            raise PermanentError(
                f"nothing to send: the {message.channel} has no body", code="empty-message"
            )
        address = self.config.address.apply(message.to)
        values = self._values(message, address)
        if self.config.bulk is None:
            async with self._gate:  # the last check comes after the wait for a free request
                await final_check(message)
                [outcome] = await self._call(values, [address])
            return self._result(outcome, 1)
        waiting = _Waiting(message, address, values, asyncio.get_running_loop().create_future())
        self._enqueue(waiting)
        return await waiting.result

    def _values(self, message: OutboundMessage, address: str) -> dict[str, Any]:
        return {
            "to": address,
            "body": message.body,
            "subject": message.subject,
            "from": message.sender or self.config.sender,
            "file_url": message.file_url,
            "reference": message.reference or None,
            "session_id": message.reference.split("/", 1)[0] or None,
            "attempt": message.attempt,
            "channel": message.channel,
            "locale": message.locale,
            "extras": dict(message.extras),
        }

    def _enqueue(self, waiting: _Waiting) -> None:
        assert self.config.bulk is not None
        key = self.config.group_key(waiting.values)
        group = self._groups.get(key)
        if group is not None and waiting.address in group.addresses:
            self._flush(key)  # the same address twice in one request would be ambiguous
            group = None
        if group is None:
            group = self._groups[key] = _Group()
            group.timer = asyncio.get_running_loop().call_later(
                self.config.bulk.linger, self._flush, key
            )
        group.entries.append(waiting)
        group.addresses.add(waiting.address)
        if waiting.message.urgent or len(group.entries) >= self.config.bulk.max_addresses:
            self._flush(key)  # a one-time password does not wait for company

    def _flush(self, key: str) -> None:
        group = self._groups.pop(key, None)
        if group is None:
            return
        if group.timer is not None:
            group.timer.cancel()
        task = asyncio.get_running_loop().create_task(self._send_group(group.entries))
        self._requests.add(task)
        task.add_done_callback(self._requests.discard)

    async def _send_group(self, entries: list[_Waiting]) -> None:
        """Send one bulk request; settle each waiting message's future, whatever happens."""
        try:
            async with self._gate:  # the last checks come after the wait for a free request
                live = await _still_wanted(entries)
                if not live:
                    return
                values = {**live[0].values, "to": [w.address for w in live]}
                outcomes = await self._call(values, [w.address for w in live])
        except TransportError as exc:
            for waiting in entries:
                _settle(waiting, exc=_copy(exc))
            return
        except BaseException as exc:  # cancelled at close, or a bug: no message waits forever
            failure = f"the bulk request did not finish ({type(exc).__name__})"
            for waiting in entries:
                _settle(waiting, exc=RetryableError(failure, code="http-bulk"))
            raise
        for waiting, outcome in zip(live, outcomes, strict=True):
            try:
                _settle(waiting, result=self._result(outcome, len(live)))
            except TransportError as exc:
                _settle(waiting, exc=exc)

    async def _call(self, values: Mapping[str, Any], addresses: list[str]) -> list[Outcome]:
        """Make the request (the caller holds ``_gate``); classify the answer per address.
        Network failures raise."""
        request = self.config.request(values)
        session = self._ensure_session()
        try:
            async with session.request(
                request.method,
                request.url,
                headers=request.headers,
                data=request.content,
                allow_redirects=False,
            ) as response:
                body = await _read(response)
                status = response.status
                retry_after = retry_after_seconds(response.headers.get("Retry-After"))
        except TimeoutError:
            raise RetryableError(
                f"the gateway at {self._host} did not answer within {self.config.timeout:g}s",
                code="http-timeout",
            ) from None
        except ValueError as exc:  # aiohttp.InvalidURL, a header aiohttp will not send
            # Raised before anything was sent, and the same on every try: permanent. The
            # exception's text may quote the URL or a header, so only its type is kept.
            raise PermanentError(
                f"the request to the gateway at {self._host} cannot be sent ({type(exc).__name__})",
                code="http-request",
            ) from None
        except aiohttp.ClientError as exc:
            raise RetryableError(
                f"cannot reach the gateway at {self._host} ({type(exc).__name__})",
                code="http-connection",
            ) from None
        return classify(self.config.rules, status, parse_json(body), addresses, retry_after)

    def _result(self, outcome: Outcome, size: int) -> SendResult:
        """The message's :class:`SendResult`, or its failure raised."""
        if outcome.kind == "ok":
            detail: dict[str, Any] = {"gateway": self._host}
            if self.config.bulk is not None:
                detail["bulk_size"] = size
            return SendResult(outcome.message_id, "delivered", detail)
        text = self._mask(outcome.error or "the gateway refused the message")
        code = self._mask(outcome.code or "http")
        if outcome.kind == "retryable":
            raise RetryableError(text, code=code, retry_after=outcome.retry_after)
        raise PermanentError(text, code=code)

    def _mask(self, text: str) -> str:
        # A gateway may echo a request's credentials in its error text; never carry them on.
        for secret in self.config.secrets.values():
            if len(secret) >= 4:
                text = text.replace(secret, "[secret]")
        return text

    def _ensure_session(self) -> aiohttp.ClientSession:
        # Built on first use: an aiohttp session belongs to the loop it was created in.
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.config.timeout),
                connector=aiohttp.TCPConnector(limit=self.config.max_in_flight),
                raise_for_status=False,
            )
        return self._session

    async def aclose(self) -> None:
        """Send what is still gathered for a bulk request, wait for the requests, close."""
        for key in list(self._groups):
            self._flush(key)
        if self._requests:
            await asyncio.gather(*self._requests, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None


def http_gateway_transport(
    channel: str, options: Mapping[str, Any], slots: Slots | None = None
) -> HttpGatewayTransport:
    """The registry's factory (``transports.registry.PROVIDERS``). ``slots`` is unused: a
    generic gateway is not paced (see the README)."""
    return HttpGatewayTransport(channel, options)


async def _read(response: aiohttp.ClientResponse) -> bytes:
    body = bytearray()
    async for chunk in response.content.iter_chunked(64 * 1024):
        body += chunk
        if len(body) >= MAX_ANSWER:
            break
    return bytes(body[:MAX_ANSWER])


async def _still_wanted(entries: list[_Waiting]) -> list[_Waiting]:
    """The messages still to send, each checked last (:func:`final_check`) right before their
    request; a withdrawn one gets its :class:`~transports.errors.Withdrawn`."""
    live: list[_Waiting] = []
    for waiting in entries:
        if waiting.result.done():  # its send was given up (the dispatcher's deadline)
            continue
        try:
            await final_check(waiting.message)
        except Exception as exc:  # noqa: BLE001 - Withdrawn, or a bug: that message's own failure
            # (in single mode it would have raised in its own send, and the dispatcher classifies it)
            waiting.result.set_exception(exc)
            continue
        live.append(waiting)
    return live


def _settle(
    waiting: _Waiting, *, result: SendResult | None = None, exc: BaseException | None = None
) -> None:
    if waiting.result.done():
        return
    if exc is not None:
        waiting.result.set_exception(exc)
    elif result is not None:
        waiting.result.set_result(result)


def _copy(exc: TransportError) -> TransportError:
    """The same failure for another waiting message (an exception object is raised once)."""
    return type(exc)(exc.message, code=exc.code, retry_after=exc.retry_after)
