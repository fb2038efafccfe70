"""Posting a webhook: one HTTP attempt, classified, with SSRF protection at connect time.

:class:`WebhookSender` makes exactly one ``POST`` per :meth:`~WebhookSender.post` and says what
came of it (:class:`WebhookResult`). It never retries, sleeps or schedules: retrying for a day is
the webhook agent's job, through Kafka (:func:`switchboard.webhooks.next_delay` gives the
delays), so a crash loses no retry. Bodies and headers are built by :mod:`switchboard.webhooks`.

Outcomes (Standard Webhooks, "Delivery success and failure")
============================================================

``delivered``
    A ``2xx`` answer.
``gone``
    ``410 Gone``: the receiver wants no more webhooks from us. Stop retrying this event; the
    specification also recommends disabling the endpoint (the agent's decision).
``retryable``
    Every other answer and every failure to get one: ``3xx`` (redirects are never followed:
    following them costs both sides and lets a public URL bounce us to an internal one; the
    ``Location`` is kept in :attr:`WebhookResult.location` so the owner can fix the URL),
    ``429``, ``5xx``, and the other ``4xx`` too. The specification treats every non-``2xx``
    except ``410`` as a failure to retry, as most providers do: a ``404`` or ``401`` is often a
    receiver's deployment in progress or a secret being rotated, and the retries end after a
    day anyway. Also: timeouts (connect or read), refused or reset connections, TLS failures,
    DNS failures. ``Retry-After`` (seconds or an HTTP date) is in
    :attr:`WebhookResult.retry_after`, to be used as a floor for the next delay.
``refused``
    Not sent, by policy, and sending again cannot help until the URL changes: a scheme other
    than https (http only with ``allow_http``), credentials in the URL, no host, a malformed
    URL, or a host that is, or resolves only to, forbidden addresses (below).

SSRF protection
===============

A webhook URL is chosen by a client, and the worker sits inside our network, so the worker
must not become the client's way into it. Every address the sender would connect to is checked
by :func:`address_problem`; refused are loopback, private (RFC 1918, ``fc00::/7``), link-local
(``169.254/16``, ``fe80::/10``), carrier-grade NAT (``100.64/10``), unspecified, multicast,
reserved, documentation and benchmarking ranges, anything else not globally routable, the
cloud metadata endpoints (``169.254.169.254``, ``fd00:ec2::254``, ``100.100.100.200``,
``169.254.170.2``), and IPv6 addresses embedding a forbidden IPv4 one (IPv4-mapped, NAT64,
6to4).

The check is made where the connection is made, not before it, which is what defeats DNS
rebinding (a name that resolves to a public address when checked and to ``127.0.0.1`` when
connected to):

* the session's connector uses :class:`GuardedResolver`, wrapping aiohttp's own resolver: every
  name is resolved by it, for every new connection, and the forbidden addresses are dropped
  from its answer. aiohttp then connects to the addresses that answer contains, and no other:
  there is no second lookup between the check and the connect for the DNS to change in. (The
  connector caches answers for a few seconds; the cache holds the filtered answer.)
* aiohttp does not call a resolver for an IP-literal host (``https://10.0.0.1/``,
  ``https://[::1]/``); :meth:`WebhookSender.post` checks those itself, with aiohttp's own test
  for what counts as a literal, and refuses the non-canonical IPv4 forms (``127.1``,
  ``2130706433``) that ``socket`` would map onto an address.
* as a last line, the connector's socket factory checks the socket address each socket is
  about to connect to; nothing reaches ``connect()`` unchecked even if one of the above were
  bypassed.
* no proxy from the environment is used (``trust_env=False``): a proxy would do the resolving.

``allow_private=True`` (for tests and trusted networks) lifts the address checks, except the
cloud metadata endpoints, which no webhook receiver ever is.

Timeouts and resources
======================

``connect_timeout`` (default 3 s) bounds the TCP connect and TLS handshake per connection
attempt; ``read_timeout`` (10 s) bounds each wait for the receiver (its answer after the
request, then each read); ``total_timeout`` (30 s) bounds the whole attempt, so a receiver
dribbling bytes cannot hold a connection. Standard Webhooks suggests 15-30 s for receivers to
answer; the issue asks for a short read timeout, so it is a parameter. At most 64 KiB of an
answer is read (to let the connection be reused) and none of it is kept.

One :class:`aiohttp.ClientSession` per sender, created on the first post in the running loop
and closed by :meth:`~WebhookSender.aclose`; a sender is used from one event loop only.

Nothing logged or returned carries a body, a header value or a full URL: only the URL's origin
(scheme, host, port), since paths and queries of webhook URLs often carry tokens.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import ssl
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Final, Literal, Self

import aiohttp
from aiohappyeyeballs import AddrInfoType, SocketFactoryType
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

from switchboard.retry import retry_after_seconds
from switchboard.webhooks import url_problem

__all__ = [
    "BlockedAddressError",
    "GuardedResolver",
    "Outcome",
    "WebhookResult",
    "WebhookSender",
    "address_problem",
    "guarded_socket_factory",
]

_LOG: Final = logging.getLogger(__name__)

Outcome = Literal["delivered", "retryable", "gone", "refused"]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

USER_AGENT: Final = "Switchboard-Webhooks/1.0"
#: How much of an answer is read: enough for any acknowledgement, so the connection is reused.
_DRAIN_LIMIT: Final = 64 * 1024

#: Instance metadata services: never a webhook receiver, refused even with allow_private.
METADATA_ADDRESSES: Final[frozenset[IPAddress]] = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, Oracle, DigitalOcean, OpenStack
        "169.254.170.2",  # AWS ECS task metadata and credentials
        "fd00:ec2::254",  # AWS, over IPv6
        "100.100.100.200",  # Alibaba Cloud
    )
)

# Spelled out rather than left to ipaddress's is_private / is_global alone: those tables have
# changed between Python patch releases. The is_global test below still catches the rest.
_FORBIDDEN: Final[tuple[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str], ...]] = tuple(
    (ipaddress.ip_network(net), reason)
    for net, reason in (
        ("0.0.0.0/8", "unspecified"),
        ("10.0.0.0/8", "private (RFC 1918)"),
        ("100.64.0.0/10", "carrier-grade NAT (RFC 6598)"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local"),
        ("172.16.0.0/12", "private (RFC 1918)"),
        ("192.0.0.0/24", "IETF protocol assignments"),
        ("192.0.2.0/24", "documentation"),
        ("192.168.0.0/16", "private (RFC 1918)"),
        ("198.18.0.0/15", "benchmarking"),
        ("198.51.100.0/24", "documentation"),
        ("203.0.113.0/24", "documentation"),
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved"),
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("::/96", "IPv4-compatible (deprecated)"),
        ("64:ff9b:1::/48", "local-use NAT64"),
        ("100::/64", "discard-only"),
        ("2001:db8::/32", "documentation"),
        ("fc00::/7", "unique local (private)"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "site-local (deprecated)"),
        ("ff00::/8", "multicast"),
    )
)
_NAT64: Final = ipaddress.IPv6Network("64:ff9b::/96")


class BlockedAddressError(OSError):
    """A connection was refused by the address policy (the host, or what it resolves to)."""

    def __init__(self, host: str, reasons: Sequence[str]) -> None:
        self.host = host
        self.reasons = tuple(reasons)
        super().__init__(f"{host}: forbidden address ({', '.join(sorted(set(reasons)))})")


def address_problem(address: IPAddress | str, *, allow_private: bool = False) -> str | None:
    """Why a webhook must not connect to ``address``, or ``None`` when it may (see module docs).

    A string that is not an IP address is a problem too (the check fails closed); an IPv6
    zone (``fe80::1%eth0``) is ignored.
    """
    if isinstance(address, str):
        try:
            address = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return "not an IP address"
    # An IPv6 address that embeds an IPv4 one (IPv4-mapped, NAT64, 6to4) reaches that IPv4
    # address, so that is the one judged; the IPv6 wrapper's own ranges say nothing about it.
    embedded = _embedded_ipv4(address)
    if any(candidate in METADATA_ADDRESSES for candidate in (address, *embedded)):
        return "cloud metadata endpoint"
    if allow_private:
        return None
    candidates: list[IPAddress] = [*embedded] if embedded else [address]
    for candidate in candidates:
        for network, reason in _FORBIDDEN:
            if candidate.version == network.version and candidate in network:
                return reason
        if not candidate.is_global:
            return "not globally routable"
    return None


def _embedded_ipv4(address: IPAddress) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address reaches: IPv4-mapped, NAT64 (64:ff9b::/96), 6to4."""
    if not isinstance(address, ipaddress.IPv6Address):
        return []
    found: list[ipaddress.IPv4Address] = []
    if address.ipv4_mapped is not None:
        found.append(address.ipv4_mapped)
    if address in _NAT64:
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    if address.sixtofour is not None:
        found.append(address.sixtofour)
    return found


def _is_ip_literal(host: str) -> bool:
    # aiohttp's own test (aiohttp.helpers.is_ip_address), copied here because it is not public
    # API: a host it calls a literal never reaches the resolver, so this check must cover at
    # least every such host. It errs towards "literal": a literal that does not parse is refused.
    return ":" in host or host.replace(".", "").isdigit()


class GuardedResolver(AbstractResolver):
    """An aiohttp resolver that drops forbidden addresses from another resolver's answers.

    Raises :class:`BlockedAddressError` (an ``OSError``: aiohttp reports it as a
    ``ClientConnectorDNSError``) when no address is left. An answer that does not parse as an
    IP address is dropped. :meth:`close` closes the wrapped resolver.
    """

    def __init__(self, inner: AbstractResolver, *, allow_private: bool = False) -> None:
        self._inner = inner
        self._allow_private = allow_private

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        answers = await self._inner.resolve(host, port, family)
        kept: list[ResolveResult] = []
        reasons: list[str] = []
        for answer in answers:
            problem = address_problem(answer["host"], allow_private=self._allow_private)
            if problem is None:
                kept.append(answer)
            else:
                reasons.append(problem)
        if reasons:
            _LOG.info(
                "webhook host %s: dropped %d of %d resolved addresses (%s)",
                host,
                len(reasons),
                len(answers),
                ", ".join(sorted(set(reasons))),
            )
        if not kept:
            raise BlockedAddressError(host, reasons or ["no address"])
        return kept

    async def close(self) -> None:
        await self._inner.close()


def guarded_socket_factory(*, allow_private: bool = False) -> SocketFactoryType:
    """A socket factory for :class:`aiohttp.TCPConnector` that refuses forbidden addresses.

    It sees the exact socket address each socket is created to connect to, whatever resolved
    it, so it is the last check before ``connect()``; raises :class:`BlockedAddressError`.
    """

    def create(addr_info: AddrInfoType) -> socket.socket:
        family, type_, proto, _, sockaddr = addr_info
        host = str(sockaddr[0])
        problem = address_problem(host, allow_private=allow_private)
        if problem is not None:
            raise BlockedAddressError(host, [problem])
        return socket.socket(family=family, type=type_, proto=proto)

    return create


@dataclass(frozen=True, slots=True)
class WebhookResult:
    """What one attempt came to (see the module docs for each outcome).

    ``status`` is the HTTP status when the receiver answered; ``retry_after`` its
    ``Retry-After`` in seconds (a floor for the next delay); ``location`` a redirect's target,
    not followed; ``error`` a short description for the status event and logs, never holding a
    body, a header value or a URL's path; ``duration`` the attempt's seconds.
    """

    outcome: Outcome
    status: int | None = None
    retry_after: float | None = None
    location: str | None = None
    error: str | None = None
    duration: float = 0.0

    @property
    def delivered(self) -> bool:
        return self.outcome == "delivered"

    @property
    def retryable(self) -> bool:
        """Whether another attempt may succeed (the schedule still decides if there is one)."""
        return self.outcome == "retryable"

    @property
    def final(self) -> bool:
        """Whether this event is done with: delivered, gone or refused."""
        return self.outcome != "retryable"


class WebhookSender:
    """Posts webhooks (see the module docs for guarantees and outcomes).

    Arguments:
        allow_http: accept ``http://`` URLs (the ``allow_http_webhooks`` setting).
        allow_private: lift the address checks, except cloud metadata (tests, trusted networks).
        connect_timeout: seconds for the TCP connect and TLS handshake.
        read_timeout: seconds for each wait on the receiver.
        total_timeout: seconds for the whole attempt.
        ssl_context: the TLS context (default: the system's trust store, host names checked);
            tests pass one trusting their own CA.
        resolver: the resolver to wrap (default aiohttp's); the sender owns and closes it.
        limit: connections open at once, over all receivers.
    """

    def __init__(
        self,
        *,
        allow_http: bool = False,
        allow_private: bool = False,
        connect_timeout: float = 3.0,
        read_timeout: float = 10.0,
        total_timeout: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
        resolver: AbstractResolver | None = None,
        limit: int = 100,
    ) -> None:
        for name, value in (
            ("connect_timeout", connect_timeout),
            ("read_timeout", read_timeout),
            ("total_timeout", total_timeout),
        ):
            if not value > 0:
                raise ValueError(f"{name} must be > 0 seconds, got {value!r}")
        self.allow_http = allow_http
        self.allow_private = allow_private
        self._timeout = aiohttp.ClientTimeout(
            total=total_timeout, sock_connect=connect_timeout, sock_read=read_timeout
        )
        self._ssl_context = ssl_context
        self._inner_resolver = resolver
        self._limit = limit
        self._session: aiohttp.ClientSession | None = None
        self._resolver: GuardedResolver | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def check_url(self, url: str) -> str | None:
        """Why ``url`` is refused before any connection (its text, and an IP-literal host's
        address); ``None`` when it may be posted to. Where a name resolves is checked later,
        when connecting."""
        problem = url_problem(url, allow_http=self.allow_http)
        if problem is not None:
            return problem
        host = URL(url).raw_host or ""
        if _is_ip_literal(host):
            try:
                # yarl strips an IPv6 literal's brackets; aiohttp refuses 127.1, 2130706433 and
                # the other legacy IPv4 spellings, and so do we (ip_address is as strict).
                address = ipaddress.ip_address(host.split("%", 1)[0])
            except ValueError:
                return "the webhook URL's host is not a canonical IP address"
            reason = address_problem(address, allow_private=self.allow_private)
            if reason is not None:
                return f"the webhook URL's address is forbidden ({reason})"
        return None

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> WebhookResult:
        """POST ``body`` with ``headers`` to ``url`` once; classify what happened.

        Never raises for anything the receiver, the network or the URL does: every such failure
        is a :class:`WebhookResult`. Raises ``RuntimeError`` after :meth:`aclose` or from a
        loop other than the first post's; ``asyncio.CancelledError`` propagates.
        """
        started = time.monotonic()
        problem = self.check_url(url)
        if problem is not None:
            _LOG.warning("webhook to %s refused: %s", _origin(url), problem)
            return WebhookResult("refused", error=problem)
        session = self._ensure_session()
        request_headers = {"User-Agent": USER_AGENT, **headers}
        try:
            async with session.post(
                URL(url), data=body, headers=request_headers, allow_redirects=False
            ) as response:
                await _drain(response)
                result = _classify(response, time.monotonic() - started)
        except aiohttp.ClientConnectorError as exc:
            result = _connect_failure(exc, time.monotonic() - started)
        except aiohttp.InvalidURL:
            result = WebhookResult("refused", error="the webhook URL cannot be used")
        except TimeoutError as exc:  # aiohttp's own timeout errors are TimeoutErrors too
            result = WebhookResult(
                "retryable", error=_timeout_kind(exc), duration=time.monotonic() - started
            )
        except aiohttp.ClientError as exc:
            # Dropped or reset connections, malformed answers: the receiver's side, retryable.
            # The exception's text may quote the URL, so only its class is kept.
            result = WebhookResult(
                "retryable",
                error=f"request failed: {type(exc).__name__}",
                duration=time.monotonic() - started,
            )
        if result.outcome == "delivered":
            _LOG.debug("webhook to %s delivered (%s)", _origin(url), result.status)
        else:
            _LOG.info("webhook to %s %s: %s", _origin(url), result.outcome, result.error)
        return result

    async def aclose(self) -> None:
        """Close the session, its connections and the resolver; the sender cannot post again.
        Idempotent."""
        self._closed = True
        session, self._session = self._session, None
        resolver, self._resolver = self._resolver, None
        if session is not None:
            await session.close()
        if resolver is not None:
            await resolver.close()
        elif self._inner_resolver is not None:
            await self._inner_resolver.close()

    def _ensure_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("this WebhookSender is closed")
        loop = asyncio.get_running_loop()
        if self._session is not None:
            # An aiohttp session is bound to the loop it was made in; using it from another
            # fails in obscure ways, so say so plainly.
            if loop is not self._loop:
                raise RuntimeError("a WebhookSender is used from one event loop only")
            return self._session
        # Built here, not in __init__: aiohttp's resolver and session take the running loop.
        self._resolver = GuardedResolver(
            self._inner_resolver or DefaultResolver(), allow_private=self.allow_private
        )
        connector = aiohttp.TCPConnector(
            resolver=self._resolver,
            socket_factory=guarded_socket_factory(allow_private=self.allow_private),
            ssl=self._ssl_context if self._ssl_context is not None else True,
            limit=self._limit,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=self._timeout,
            trust_env=False,  # no proxy from the environment: it would resolve names itself
            auto_decompress=False,  # the answer is drained and dropped, never decompressed
            cookie_jar=aiohttp.DummyCookieJar(),  # receivers' cookies must not travel between them
        )
        self._loop = loop
        return self._session


async def _drain(response: aiohttp.ClientResponse) -> None:
    # Reading the (small) answer to its end lets the connection be reused; a larger one is left
    # unread and aiohttp closes the connection on release instead.
    read = 0
    while read < _DRAIN_LIMIT:
        chunk = await response.content.readany()
        if not chunk:
            return
        read += len(chunk)


def _classify(response: aiohttp.ClientResponse, duration: float) -> WebhookResult:
    status = response.status
    if 200 <= status < 300:
        return WebhookResult("delivered", status=status, duration=duration)
    if status == 410:
        return WebhookResult(
            "gone",
            status=status,
            error="HTTP 410 Gone: the receiver wants no more webhooks",
            duration=duration,
        )
    retry_after = retry_after_seconds(response.headers.get("Retry-After"))
    location = None
    error = f"HTTP {status}"
    if 300 <= status < 400:
        location = response.headers.get("Location")
        if location is not None:
            location = location[:2048]
        error = f"HTTP {status}: redirect not followed (update the webhook URL)"
    return WebhookResult(
        "retryable",
        status=status,
        retry_after=retry_after,
        location=location,
        error=error,
        duration=duration,
    )


def _connect_failure(exc: aiohttp.ClientConnectorError, duration: float) -> WebhookResult:
    where = f"{exc.host}:{exc.port}"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return WebhookResult(
            "retryable", error=f"TLS certificate of {where} not accepted", duration=duration
        )
    cause = exc.os_error
    if isinstance(cause, BlockedAddressError):
        reasons = ", ".join(sorted(set(cause.reasons)))
        # From the resolver (a name) or, should anything get past it, the socket factory.
        what = (
            "resolves to forbidden addresses"
            if isinstance(exc, aiohttp.ClientConnectorDNSError)
            else "is a forbidden address"
        )
        return WebhookResult(
            "refused",
            error=f"{exc.host} {what} ({reasons})",
            duration=duration,
        )
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return WebhookResult("retryable", error=f"cannot resolve {exc.host}", duration=duration)
    if isinstance(exc, aiohttp.ClientSSLError):
        return WebhookResult("retryable", error=f"TLS failure with {where}", duration=duration)
    return WebhookResult(
        "retryable", error=f"cannot connect to {where}: {exc.strerror or cause}", duration=duration
    )


def _timeout_kind(exc: TimeoutError) -> str:
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return "timeout: no connection within the connect timeout"
    if isinstance(exc, aiohttp.SocketTimeoutError):
        return "timeout: no answer within the read timeout"
    return "timeout: the attempt took longer than the total timeout"


def _origin(url: str) -> str:
    """``scheme://host:port`` of ``url``, for logs: paths and queries may carry tokens."""
    try:
        return str(URL(url).origin())
    except (ValueError, TypeError):
        return "<unparseable URL>"
