"""WebhookSender against a local receiver that verifies with the official library; SSRF checks."""

from __future__ import annotations

import asyncio
import base64
import logging
import random
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any, cast

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from switchboard.status import StatusEvent
from switchboard.webhooks import encode, headers, next_delay, payload
from tests.fakes.background import BackgroundServer
from tests.fakes.tls import make_pki
from tests.fakes.webhook_receiver import Reply, WebhookReceiver
from transports.webhook import (
    BlockedAddressError,
    GuardedResolver,
    WebhookResult,
    WebhookSender,
    address_problem,
    guarded_socket_factory,
)

SECRET = "whsec_" + base64.b64encode(b"switchboard-webhook-test-secret!").decode()
OLD_SECRET = "whsec_" + base64.b64encode(b"the-previous-webhook-secret-0000").decode()


def event(status: str = "delivered", **overrides: Any) -> StatusEvent:
    fields: dict[str, Any] = {
        "session_id": "s-1",
        "client_id": "acme",
        "status": status,
        "recipient": "+15551230000",
        "channel": "sms",
        "attempt": 1,
    }
    fields.update(overrides)
    return StatusEvent(**fields)


async def deliver(
    sender: WebhookSender, url: str, ev: StatusEvent, secrets: Iterable[str] = (SECRET,)
) -> WebhookResult:
    """One attempt as the agent makes it: the event's body, signed now."""
    body = encode(ev)
    return await sender.post(url, body, headers(list(secrets), ev.event_id, int(time.time()), body))


class StubResolver(AbstractResolver):
    """Answers from a table, counting lookups: what DNS would say, without DNS."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.lookups: list[str] = []
        self.closed = False

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.lookups.append(host)
        if host not in self.table:
            raise OSError(f"{host}: no such host")
        return [
            {
                "hostname": host,
                "host": address,
                "port": port,
                "family": socket.AF_INET6 if ":" in address else socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
            for address in self.table[host]
        ]

    async def close(self) -> None:
        self.closed = True


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    async with WebhookReceiver(SECRET) as fake:
        yield fake


@pytest.fixture
async def make() -> AsyncIterator[Callable[..., WebhookSender]]:
    built: list[WebhookSender] = []

    def factory(**kwargs: Any) -> WebhookSender:
        kwargs.setdefault("allow_http", True)
        kwargs.setdefault("allow_private", True)  # the receiver is on loopback
        sender = WebhookSender(**kwargs)
        built.append(sender)
        return sender

    yield factory
    for sender in built:
        await sender.aclose()


# -- outcomes ---------------------------------------------------------------------------------


async def test_a_delivery_is_signed_verified_and_recorded(
    receiver: WebhookReceiver, make: Callable[..., WebhookSender]
) -> None:
    ev = event()
    result = await deliver(make(), receiver.url + "/hook", ev)
    assert result == WebhookResult("delivered", status=204, duration=result.duration)
    assert result.delivered and result.final and not result.retryable
    [got] = receiver.received("/hook")
    assert got.verified, got.error
    assert got.payload == payload(ev)
    assert got.webhook_id == ev.event_id
    assert got.headers["content-type"] == "application/json"
    assert got.headers["user-agent"].startswith("Switchboard-Webhooks/")


async def test_a_receiver_knowing_only_the_previous_secret_verifies_during_rotation(
    make: Callable[..., WebhookSender],
) -> None:
    async with WebhookReceiver(OLD_SECRET) as old:
        result = await deliver(make(), old.url + "/hook", event(), [SECRET, OLD_SECRET])
        assert result.delivered
        assert old.received()[0].verified
        unsigned_for_it = await deliver(make(), old.url + "/hook", event(), [SECRET])
        assert unsigned_for_it.outcome == "retryable"  # the receiver answers 401
        assert unsigned_for_it.status == 401


async def test_fails_twice_then_succeeds_in_three_posts_with_one_webhook_id(
    receiver: WebhookReceiver, make: Callable[..., WebhookSender]
) -> None:
    receiver.script("/flaky", Reply.fail(2))
    sender, ev, rng = make(), event(), random.Random(0)
    outcomes, attempt = [], 1
    while True:
        result = await deliver(sender, receiver.url + "/flaky", ev)
        outcomes.append((result.outcome, result.status))
        if result.final:
            break
        # The agent would schedule this through Kafka; here it only has to exist.
        assert next_delay(attempt, rng, result.retry_after) is not None
        attempt += 1
    assert outcomes == [("retryable", 500), ("retryable", 500), ("delivered", 204)]
    got = receiver.received("/flaky")
    assert len(got) == 3
    assert all(r.verified for r in got)
    assert {r.webhook_id for r in got} == {ev.event_id}


async def test_410_is_gone(receiver: WebhookReceiver, make: Callable[..., WebhookSender]) -> None:
    receiver.script("/gone", Reply.gone())
    result = await deliver(make(), receiver.url + "/gone", event())
    assert result.outcome == "gone"
    assert result.status == 410
    assert result.final and not result.retryable


@pytest.mark.parametrize("status", [400, 401, 404, 500, 502, 503])
async def test_other_failures_are_retryable(
    receiver: WebhookReceiver, make: Callable[..., WebhookSender], status: int
) -> None:
    receiver.script("/x", Reply.fail(1, status=status))
    result = await deliver(make(), receiver.url + "/x", event())
    assert (result.outcome, result.status, result.error) == ("retryable", status, f"HTTP {status}")


@pytest.mark.parametrize(("header", "seconds"), [("7", 7.0), ("soon", None)])
async def test_retry_after_is_reported(
    receiver: WebhookReceiver,
    make: Callable[..., WebhookSender],
    header: str,
    seconds: float | None,
) -> None:
    receiver.script("/busy", Reply(status=429, retry_after=header))
    result = await deliver(make(), receiver.url + "/busy", event())
    assert (result.outcome, result.status, result.retry_after) == ("retryable", 429, seconds)


@pytest.mark.parametrize("status", [301, 302, 307, 308])
async def test_a_redirect_is_not_followed(
    receiver: WebhookReceiver, make: Callable[..., WebhookSender], status: int
) -> None:
    receiver.script("/moved", Reply.redirect("/elsewhere", status=status))
    result = await deliver(make(), receiver.url + "/moved", event())
    assert (result.outcome, result.status, result.location) == ("retryable", status, "/elsewhere")
    assert result.error is not None and "redirect not followed" in result.error
    assert receiver.received("/elsewhere") == []
    assert len(receiver.received("/moved")) == 1


async def test_a_redirect_to_an_internal_address_is_not_followed_either(
    receiver: WebhookReceiver, make: Callable[..., WebhookSender]
) -> None:
    receiver.script("/bounce", Reply.redirect("http://169.254.169.254/latest/meta-data/"))
    result = await deliver(make(), receiver.url + "/bounce", event())
    assert result.outcome == "retryable"
    assert result.location == "http://169.254.169.254/latest/meta-data/"


async def test_a_slow_receiver_times_out_retryably(
    receiver: WebhookReceiver, make: Callable[..., WebhookSender]
) -> None:
    receiver.script("/slow", Reply.slow(5.0))
    started = time.monotonic()
    result = await deliver(make(read_timeout=0.3), receiver.url + "/slow", event())
    assert result.outcome == "retryable"
    assert result.error == "timeout: no answer within the read timeout"
    assert time.monotonic() - started < 3
    await asyncio.sleep(0.05)  # the receiver's handler is cancelled when the client leaves
    assert len(receiver.received("/slow")) == 1


async def test_the_total_timeout_bounds_an_attempt(
    receiver: WebhookReceiver, make: Callable[..., WebhookSender]
) -> None:
    receiver.script("/slow", Reply.slow(5.0))
    result = await deliver(make(total_timeout=0.3), receiver.url + "/slow", event())
    assert (result.outcome, result.error) == (
        "retryable",
        "timeout: the attempt took longer than the total timeout",
    )


async def test_a_dropped_connection_is_retryable(
    receiver: WebhookReceiver, make: Callable[..., WebhookSender]
) -> None:
    receiver.script("/drop", Reply(drop=True))
    result = await deliver(make(), receiver.url + "/drop", event())
    assert result.outcome == "retryable"
    assert result.status is None


async def test_a_refused_connection_is_retryable(make: Callable[..., WebhookSender]) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = await deliver(make(), f"http://127.0.0.1:{port}/hook", event())
    assert result.outcome == "retryable"
    assert result.error is not None and result.error.startswith(
        f"cannot connect to 127.0.0.1:{port}"
    )


async def test_https_with_a_trusted_certificate(
    tmp_path: Path, make: Callable[..., WebhookSender]
) -> None:
    pki = make_pki(tmp_path)
    async with WebhookReceiver(SECRET, ssl_context=pki.server_context()) as tls:
        assert tls.url.startswith("https://")
        trusted = make(allow_http=False, ssl_context=pki.client_context())
        assert (await deliver(trusted, tls.url + "/hook", event())).delivered
        untrusted = await deliver(make(allow_http=False), tls.url + "/hook", event())
        assert untrusted.outcome == "retryable"
        assert untrusted.error is not None and "TLS certificate" in untrusted.error
        assert len(tls.received()) == 1


def test_the_receiver_runs_in_a_background_thread_too() -> None:
    ev = event()

    async def attempts(url: str) -> list[WebhookResult]:
        async with WebhookSender(allow_http=True, allow_private=True) as sender:
            return [await deliver(sender, url, ev) for _ in range(3)]

    with BackgroundServer(lambda: WebhookReceiver(SECRET)) as server:
        server.script("/bg", Reply.fail(2, status=503))
        results = asyncio.run(attempts(server.url + "/bg"))
        assert [r.outcome for r in results] == ["retryable", "retryable", "delivered"]
        got = server.wait_records(lambda r: r.verified, count=3)
        assert {r.webhook_id for r in got} == {ev.event_id}
    assert server.loop_errors == []


# -- SSRF -------------------------------------------------------------------------------------

FORBIDDEN_LITERALS = [
    "127.0.0.1",
    "127.8.9.10",
    "10.0.0.1",
    "172.16.0.1",
    "192.168.1.1",
    "169.254.169.254",
    "169.254.1.1",
    "100.64.0.1",
    "100.100.100.200",
    "0.0.0.0",
    "224.0.0.1",
    "255.255.255.255",
    "[::1]",
    "[::]",
    "[fd00:ec2::254]",
    "[fc00::1]",
    "[fe80::1]",
    "[ff02::1]",
    "[::ffff:127.0.0.1]",
    "[::ffff:a9fe:a9fe]",
    "[64:ff9b::a9fe:a9fe]",  # NAT64 of 169.254.169.254
    "[2002:7f00:1::1]",  # 6to4 of 127.0.0.1
]


@pytest.mark.parametrize("host", FORBIDDEN_LITERALS)
async def test_forbidden_ip_literals_are_refused_before_connecting(
    make: Callable[..., WebhookSender], host: str
) -> None:
    resolver = StubResolver({})
    result = await deliver(
        make(allow_private=False, resolver=resolver), f"https://{host}/h", event()
    )
    assert result.outcome == "refused"
    assert result.error is not None and "forbidden" in result.error
    assert resolver.lookups == []  # aiohttp never asks a resolver about a literal


@pytest.mark.parametrize(
    "host", ["127.1", "2130706433", "0x7f000001", "017700000001", "127.0.0.1."]
)
async def test_legacy_ipv4_spellings_are_refused(
    make: Callable[..., WebhookSender], host: str
) -> None:
    result = await deliver(make(allow_private=False), f"https://{host}/h", event())
    assert result.outcome == "refused"


async def test_the_loopback_receiver_is_unreachable_without_allow_private(
    receiver: WebhookReceiver, make: Callable[..., WebhookSender]
) -> None:
    sender = make(allow_private=False)
    for url in (f"http://127.0.0.1:{receiver.port}/h", f"http://localhost:{receiver.port}/h"):
        result = await deliver(sender, url, event())
        assert result.outcome == "refused", url
    assert receiver.received() == []


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.31.255.255",
        "192.168.0.10",
        "169.254.169.254",
        "100.64.12.34",
        "100.100.100.200",
        "0.0.0.0",
        "::1",
        "fd00:ec2::254",
        "fe80::1%eth0",
        "fc00::5",
        "::ffff:10.0.0.1",
        "64:ff9b::7f00:1",
    ],
)
async def test_a_name_resolving_to_a_forbidden_address_is_refused(
    make: Callable[..., WebhookSender], address: str
) -> None:
    resolver = StubResolver({"hooks.evil.example": [address]})
    result = await deliver(
        make(allow_private=False, resolver=resolver), "https://hooks.evil.example/h", event()
    )
    assert result.outcome == "refused"
    assert result.error is not None and "resolves to forbidden addresses" in result.error
    assert resolver.lookups == ["hooks.evil.example"]


async def test_the_address_is_checked_when_connecting_with_the_answer_connected_to(
    receiver: WebhookReceiver, make: Callable[..., WebhookSender]
) -> None:
    # No lookup precedes the connection's own: the URL passes the early check, the one lookup
    # happens in the connector, and the address it returns is both the one checked and the one
    # connected to (with allow_private, the request does reach the loopback receiver).
    table = {"rebind.example": ["127.0.0.1"]}
    guarded = StubResolver(table)
    sender = make(allow_private=False, resolver=guarded)
    assert sender.check_url(f"http://rebind.example:{receiver.port}/h") is None
    refused = await deliver(sender, f"http://rebind.example:{receiver.port}/h", event())
    assert refused.outcome == "refused"
    assert guarded.lookups == ["rebind.example"]
    assert receiver.received() == []

    open_resolver = StubResolver(table)
    allowed = make(allow_private=True, resolver=open_resolver)
    assert (await deliver(allowed, f"http://rebind.example:{receiver.port}/h", event())).delivered
    assert open_resolver.lookups == ["rebind.example"]
    assert len(receiver.received("/h")) == 1


async def test_forbidden_answers_are_dropped_and_the_public_ones_kept() -> None:
    stub = StubResolver({"mixed.example": ["127.0.0.1", "93.184.215.14", "10.0.0.1", "::1"]})
    resolver = GuardedResolver(stub)
    answers = await resolver.resolve("mixed.example", 443)
    assert [a["host"] for a in answers] == ["93.184.215.14"]
    await resolver.close()
    assert stub.closed


async def test_a_resolver_answer_that_is_not_an_address_is_dropped() -> None:
    resolver = GuardedResolver(StubResolver({"odd.example": ["not-an-ip"]}))
    with pytest.raises(BlockedAddressError, match="not an IP address"):
        await resolver.resolve("odd.example", 443)


async def test_allow_private_still_refuses_cloud_metadata(
    make: Callable[..., WebhookSender],
) -> None:
    resolver = StubResolver({"meta.example": ["169.254.169.254", "fd00:ec2::254"]})
    sender = make(allow_private=True, resolver=resolver)
    for url in (
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/",
        "http://100.100.100.200/",
    ):
        assert (await deliver(sender, url, event())).outcome == "refused", url
    assert (await deliver(sender, "http://meta.example/", event())).outcome == "refused"


@pytest.mark.parametrize("host", ["127.0.0.1:9", "[::1]:9", "169.254.169.254", "10.0.0.1"])
async def test_past_the_early_check_the_socket_factory_still_refuses(
    make: Callable[..., WebhookSender], monkeypatch: pytest.MonkeyPatch, host: str
) -> None:
    sender = make(allow_private=False)
    monkeypatch.setattr(sender, "check_url", lambda url: None)  # as if the literal check missed
    result = await deliver(sender, f"http://{host}/h", event())
    assert result.outcome == "refused"
    assert result.error is not None and "is a forbidden address" in result.error


def test_the_socket_factory_is_the_last_check_before_connect() -> None:
    create = guarded_socket_factory()
    with pytest.raises(BlockedAddressError, match="loopback"):
        create((socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.1", 443)))
    with pytest.raises(BlockedAddressError, match="link-local"):
        create(
            (socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("fe80::1%1", 443, 0, 1))
        )
    sock = create((socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("8.8.8.8", 443)))
    sock.close()
    permissive = guarded_socket_factory(allow_private=True)
    permissive(
        (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.1", 1))
    ).close()
    with pytest.raises(BlockedAddressError, match="metadata"):
        permissive(
            (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("169.254.169.254", 80))
        )


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("8.8.8.8", None),
        ("1.1.1.1", None),
        ("93.184.215.14", None),
        ("2606:4700:4700::1111", None),
        ("2a00:1450:4001:82b::200e", None),
        ("127.0.0.1", "loopback"),
        ("10.255.255.255", "private (RFC 1918)"),
        ("172.20.0.1", "private (RFC 1918)"),
        ("192.168.255.1", "private (RFC 1918)"),
        ("100.127.255.255", "carrier-grade NAT (RFC 6598)"),
        ("169.254.0.1", "link-local"),
        ("169.254.169.254", "cloud metadata endpoint"),
        ("100.100.100.200", "cloud metadata endpoint"),
        ("fd00:ec2::254", "cloud metadata endpoint"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.251", "multicast"),
        ("ff02::fb", "multicast"),
        ("240.0.0.1", "reserved"),
        ("198.18.0.1", "benchmarking"),
        ("192.0.2.1", "documentation"),
        ("2001:db8::1", "documentation"),
        ("fe80::1", "link-local"),
        ("fe80::1%eth0", "link-local"),
        ("fdab::1", "unique local (private)"),
        ("::ffff:192.168.0.1", "private (RFC 1918)"),
        ("::ffff:8.8.8.8", None),
        ("64:ff9b::a00:1", "private (RFC 1918)"),
        ("64:ff9b::808:808", None),
        ("2002:c0a8:1::1", "private (RFC 1918)"),
        ("2001::1", "not globally routable"),  # Teredo
        ("example.com", "not an IP address"),
    ],
)
def test_address_policy(address: str, reason: str | None) -> None:
    assert address_problem(address) == reason
    if reason != "cloud metadata endpoint" and reason != "not an IP address":
        assert address_problem(address, allow_private=True) is None


# -- URL policy -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "kwargs", "problem"),
    [
        ("http://hooks.example.com/h", {"allow_http": False}, "must be https"),
        ("ftp://hooks.example.com/h", {"allow_http": True}, "must be https"),
        ("https://user:secret@hooks.example.com/h", {}, "credentials"),
        ("https:///h", {}, "no host"),
    ],
)
async def test_urls_refused_by_policy_are_not_contacted(
    make: Callable[..., WebhookSender], url: str, kwargs: dict[str, Any], problem: str
) -> None:
    resolver = StubResolver({"hooks.example.com": ["8.8.8.8"]})
    result = await deliver(make(resolver=resolver, **kwargs), url, event())
    assert result.outcome == "refused"
    assert result.error is not None and problem in result.error
    assert resolver.lookups == []


async def test_http_reaches_the_receiver_only_when_allowed(
    receiver: WebhookReceiver, make: Callable[..., WebhookSender]
) -> None:
    url = receiver.url + "/h"
    assert (await deliver(make(allow_http=False), url, event())).outcome == "refused"
    assert receiver.received() == []
    assert (await deliver(make(allow_http=True), url, event())).delivered


# -- lifecycle and hygiene --------------------------------------------------------------------


async def test_nothing_secret_is_logged(
    receiver: WebhookReceiver, make: Callable[..., WebhookSender], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    receiver.script("/hook/tok-3f9a", Reply.fail(1))
    ev = event(detail={"note": "private-detail-text"})
    sender = make()
    for url in (receiver.url + "/hook/tok-3f9a?key=qs-token", receiver.url + "/hook/tok-3f9a"):
        await deliver(sender, url, ev)
    await deliver(make(allow_http=False), receiver.url + "/hook/tok-3f9a", ev)
    text = caplog.text
    assert "retryable" in text and "refused" in text  # something was logged
    for secret_part in ("tok-3f9a", "qs-token", "private-detail-text", SECRET[6:], "v1,"):
        assert secret_part not in text


async def test_one_session_is_reused_and_closed(
    receiver: WebhookReceiver, make: Callable[..., WebhookSender]
) -> None:
    resolver = StubResolver({})
    sender = make(resolver=resolver)
    for _ in range(3):
        assert (await deliver(sender, receiver.url + "/h", event())).delivered
    session = sender._session
    assert session is not None
    open_before = not session.closed
    await sender.aclose()
    await sender.aclose()  # idempotent
    assert open_before and session.closed
    assert resolver.closed
    with pytest.raises(RuntimeError, match="closed"):
        await deliver(sender, receiver.url + "/h", event())


def test_a_sender_belongs_to_one_loop() -> None:
    url = "http://127.0.0.1:9/h"  # the discard port: refused, which is all this needs
    sender = WebhookSender(allow_http=True, allow_private=True)
    home = asyncio.new_event_loop()
    try:
        home.run_until_complete(deliver(sender, url, event()))  # the session is made here

        async def elsewhere() -> None:
            with pytest.raises(RuntimeError, match="one event loop"):
                await deliver(sender, url, event())

        asyncio.run(elsewhere())
        home.run_until_complete(sender.aclose())
    finally:
        home.close()


@pytest.mark.parametrize("name", ["connect_timeout", "read_timeout", "total_timeout"])
def test_timeouts_must_be_positive(name: str) -> None:
    with pytest.raises(ValueError, match=name):
        WebhookSender(**cast(dict[str, Any], {name: 0}))
