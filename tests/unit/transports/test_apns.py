"""ApnsTransport through aioapns against a local HTTP/2 APNs (tests/fakes/apns_server.py)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aioapns.connection import APNsDevelopmentClientProtocol, APNsProductionClientProtocol

from switchboard.errors import ConfigError
from tests.fakes.apns_server import ApnsReply, FakeApnsServer
from tests.fakes.tls import ApnsKey, Pki, make_apns_key, make_pki
from transports.apns import ApnsTransport, build_request
from transports.base import OutboundMessage, Transport
from transports.errors import PermanentError, RetryableError, SuppressedError

TOPIC = "com.example.app"
TOKEN = "ab" * 32
OTHER = "cd" * 32


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


@pytest.fixture
def key(tmp_path: Path) -> ApnsKey:
    return make_apns_key(tmp_path / "keys")


@pytest.fixture
async def server(pki: Pki, key: ApnsKey) -> AsyncIterator[FakeApnsServer]:
    async with FakeApnsServer(pki, key, topics=(TOPIC,)) as fake:
        yield fake


@pytest.fixture
async def loop_errors() -> list[dict[str, Any]]:
    """Whatever reaches the loop's exception handler (an aioapns callback failing, say)."""
    errors: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda loop, context: errors.append(context))
    return errors


@pytest.fixture
async def make(
    server: FakeApnsServer, pki: Pki, key: ApnsKey
) -> AsyncIterator[Callable[..., ApnsTransport]]:
    built: list[ApnsTransport] = []

    def factory(**overrides: Any) -> ApnsTransport:
        options: dict[str, Any] = {
            "key_path": str(key.path),
            "key_id": key.key_id,
            "team_id": key.team_id,
            "topic": TOPIC,
            "sandbox": True,
            "host": server.host,
            "port": server.port,
            "ca_file": str(pki.ca_file),
            "timeout": 5,
        }
        options.update(overrides)
        transport = ApnsTransport({k: v for k, v in options.items() if v is not None})
        built.append(transport)
        return transport

    yield factory
    for transport in built:
        await transport.aclose()


def push(to: str = TOKEN, **kwargs: Any) -> OutboundMessage:
    kwargs.setdefault("body", "Your order shipped")
    kwargs.setdefault("subject", "Order 1234")
    return OutboundMessage(channel="push", to=to, reference="s1/0/push", **kwargs)


async def test_sends_an_authenticated_alert(
    make: Callable[..., ApnsTransport], server: FakeApnsServer, key: ApnsKey
) -> None:
    transport = make()
    assert isinstance(transport, Transport)
    extras = {"data": {"order": "1234"}, "badge": 3, "collapse_id": "order-1234", "priority": 5}
    result = await transport.send(push(extras=extras))

    assert result.status == "delivered"  # the provider reports no device receipt: final
    [request] = server.requests
    assert result.provider_message_id == request.headers["apns-id"]
    assert request.token == TOKEN
    assert request.headers[":path"] == f"/3/device/{TOKEN}"
    assert request.headers["apns-topic"] == TOPIC
    assert request.headers["apns-push-type"] == "alert"
    assert request.headers["apns-priority"] == "5"
    assert request.headers["apns-collapse-id"] == "order-1234"
    assert request.claims is not None
    assert request.claims["iss"] == key.team_id
    assert request.payload == {
        "aps": {
            "alert": {"title": "Order 1234", "body": "Your order shipped"},
            "sound": "default",
            "badge": 3,
        },
        "order": "1234",
    }


async def test_connections_are_reused_and_multiplexed(
    make: Callable[..., ApnsTransport], server: FakeApnsServer
) -> None:
    transport = make(max_connections=1)
    results = await asyncio.gather(*(transport.send(push()) for _ in range(20)))
    assert len({r.provider_message_id for r in results}) == 20
    assert server.connections_made == 1


async def test_key_from_environment(
    make: Callable[..., ApnsTransport],
    server: FakeApnsServer,
    key: ApnsKey,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TEST_APNS_KEY", key.pem)
    transport = make(key_path=None, key_env="TEST_APNS_KEY")
    await transport.send(push())
    assert server.requests[0].claims is not None


async def test_background_push_is_silent(
    make: Callable[..., ApnsTransport], server: FakeApnsServer
) -> None:
    await make().send(push(extras={"push_type": "background", "data": {"sync": True}}))
    [request] = server.requests
    assert request.payload == {"aps": {"content-available": 1}, "sync": True}
    assert request.headers["apns-push-type"] == "background"
    assert request.headers["apns-priority"] == "5"


async def test_unregistered_token_is_suppressed(
    make: Callable[..., ApnsTransport], server: FakeApnsServer
) -> None:
    server.fail(TOKEN, "Unregistered")
    with pytest.raises(SuppressedError) as caught:
        await make().send(push())
    assert caught.value.code == "Unregistered"
    assert "no longer valid" in caught.value.message


@pytest.mark.parametrize(
    "reason", ["BadDeviceToken", "DeviceTokenNotForTopic", "PayloadTooLarge", "BadCollapseId"]
)
async def test_permanent_reasons(
    make: Callable[..., ApnsTransport], server: FakeApnsServer, reason: str
) -> None:
    server.fail(TOKEN, reason)
    with pytest.raises(PermanentError) as caught:
        await make().send(push())
    assert not isinstance(caught.value, SuppressedError)
    assert caught.value.code == reason


@pytest.mark.parametrize(
    "reason", ["TooManyRequests", "InternalServerError", "ServiceUnavailable", "Shutdown"]
)
async def test_retryable_reasons(
    make: Callable[..., ApnsTransport], server: FakeApnsServer, reason: str
) -> None:
    server.fail(TOKEN, reason)
    with pytest.raises(RetryableError) as caught:
        await make().send(push())
    assert caught.value.code == reason


async def test_429_with_retry_after_is_retryable(
    make: Callable[..., ApnsTransport], server: FakeApnsServer
) -> None:
    # APNs itself sends no Retry-After, and aioapns exposes no headers: retry_after stays unset.
    server.fail(TOKEN, "TooManyRequests", headers={"retry-after": "30"})
    with pytest.raises(RetryableError) as caught:
        await make().send(push())
    assert caught.value.code == "TooManyRequests"
    assert caught.value.retry_after is None


async def test_an_error_status_without_a_reason_is_classified_at_once(
    make: Callable[..., ApnsTransport], server: FakeApnsServer
) -> None:
    server.script(TOKEN, ApnsReply(status=502, times=1))
    transport = make(timeout=2)
    with pytest.raises(RetryableError) as caught:
        await asyncio.wait_for(transport.send(push()), 1)  # not the transport's own timeout
    assert caught.value.code == "http-502"
    await transport.send(push())


async def test_the_server_checks_the_signing_key(
    make: Callable[..., ApnsTransport], server: FakeApnsServer, tmp_path: Path, key: ApnsKey
) -> None:
    impostor = make_apns_key(tmp_path / "impostor", key_id=key.key_id, team_id=key.team_id)
    with pytest.raises(PermanentError) as caught:
        await make(key_path=str(impostor.path)).send(push())
    assert caught.value.code == "InvalidProviderToken"


async def test_malformed_token_is_refused_before_sending(
    make: Callable[..., ApnsTransport], server: FakeApnsServer
) -> None:
    with pytest.raises(PermanentError) as caught:
        await make().send(push(to="not/a/token"))
    assert caught.value.code == "BadDeviceToken"
    assert server.requests == []


async def test_timeout_is_retryable_and_the_connection_stays_usable(
    make: Callable[..., ApnsTransport],
    server: FakeApnsServer,
    loop_errors: list[dict[str, Any]],
) -> None:
    server.script(TOKEN, ApnsReply(delay=0.5, times=1))
    transport = make(timeout=0.1, max_connections=1)
    with pytest.raises(RetryableError) as caught:
        await transport.send(push())
    assert caught.value.code == "apns-timeout"
    await asyncio.sleep(0.6)  # the late answer arrives for a send nobody waits for
    assert (await transport.send(push(to=OTHER))).provider_message_id
    assert server.connections_made == 1
    assert loop_errors == []


async def test_cancelled_sends_free_their_streams(
    make: Callable[..., ApnsTransport], server: FakeApnsServer
) -> None:
    server.script(TOKEN, ApnsReply(delay=5))
    transport = make(max_connections=1)
    tasks = [asyncio.ensure_future(transport.send(push())) for _ in range(5)]
    await asyncio.sleep(0.3)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    [connection] = transport._ensure_client().pool.connections
    assert connection.requests == {}
    assert connection.request_streams == {}
    assert connection.free_channels._value == connection.free_channels.bound
    await transport.send(push(to=OTHER))


async def test_dropped_connection_is_retryable(
    make: Callable[..., ApnsTransport], server: FakeApnsServer
) -> None:
    server.script(TOKEN, ApnsReply(drop=True))
    transport = make()
    with pytest.raises(RetryableError) as caught:
        await transport.send(push())
    assert caught.value.code == "apns-connection"
    assert len(server.requests) == 2  # aioapns tried again on a fresh connection
    await transport.send(push(to=OTHER))


async def test_refused_connection_is_retryable(make: Callable[..., ApnsTransport]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    with pytest.raises(RetryableError) as caught:
        await make(port=closed_port).send(push())
    assert caught.value.code == "apns-connection"


async def test_endpoints_are_per_transport(
    make: Callable[..., ApnsTransport], server: FakeApnsServer, pki: Pki, key: ApnsKey
) -> None:
    async with FakeApnsServer(pki, key, topics=(TOPIC,)) as second:
        await asyncio.gather(make().send(push()), make(port=second.port).send(push()))
        assert len(server.requests) == len(second.requests) == 1
    # aioapns's own classes are untouched.
    assert APNsProductionClientProtocol.APNS_SERVER == "api.push.apple.com"
    assert APNsDevelopmentClientProtocol.APNS_SERVER == "api.development.push.apple.com"
    assert APNsProductionClientProtocol.APNS_PORT == 443


@pytest.mark.parametrize(
    ("extras", "code"),
    [
        ({"data": {"aps": {}}}, "bad-extras"),
        ({"data": ["x"]}, "bad-extras"),
        ({"badge": "3"}, "bad-extras"),
        ({"push_type": "carrier-pigeon"}, "bad-extras"),
        ({"priority": 7}, "bad-extras"),
        ({"collapse_id": "x" * 65}, "bad-extras"),
        ({"ttl": -1}, "bad-extras"),
    ],
)
def test_unusable_extras_are_permanent(extras: dict[str, Any], code: str) -> None:
    with pytest.raises(PermanentError) as caught:
        build_request(push(extras=extras))
    assert caught.value.code == code


def test_a_push_needs_words() -> None:
    with pytest.raises(PermanentError) as caught:
        build_request(push(body=None, subject=None))
    assert caught.value.code == "empty-push"


def test_configuration_errors(key: ApnsKey, tmp_path: Path) -> None:
    base = {"key_id": key.key_id, "team_id": key.team_id, "topic": TOPIC}
    with pytest.raises(ConfigError, match="topic"):
        ApnsTransport({"key_path": str(key.path), "key_id": "k", "team_id": "t"})
    with pytest.raises(ConfigError, match="exactly one"):
        ApnsTransport(base)
    with pytest.raises(ConfigError, match="exactly one"):
        ApnsTransport({**base, "key_path": str(key.path), "key_env": "X"})
    with pytest.raises(ConfigError, match="not set"):
        ApnsTransport({**base, "key_env": "SWITCHBOARD_TEST_UNSET_VARIABLE"})
    garbage = tmp_path / "garbage.p8"
    garbage.write_text("not a key")
    with pytest.raises(ConfigError, match="PEM"):
        ApnsTransport({**base, "key_path": str(garbage)})
    with pytest.raises(ConfigError, match="cannot read"):
        ApnsTransport({**base, "key_path": str(tmp_path / "missing.p8")})
