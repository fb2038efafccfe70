"""HttpGatewayTransport (``provider: http``) against a local gateway that records each request."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from switchboard.clients import ChannelConfig
from switchboard.errors import ConfigError
from switchboard.settings import Settings
from tests.fakes.sms_gateway import FakeSmsGateway, GatewayReply
from transports.base import OutboundMessage, SendResult
from transports.errors import PermanentError, RetryableError, Withdrawn
from transports.http_gateway import HttpGatewayTransport
from transports.registry import build

TOKEN = "tok-secret-123456"
ENV = {"GW_TOKEN": TOKEN}


@pytest.fixture
async def gateway() -> AsyncIterator[FakeSmsGateway]:
    async with FakeSmsGateway() as fake:
        yield fake


@pytest.fixture
async def make(gateway: FakeSmsGateway) -> AsyncIterator[Callable[..., HttpGatewayTransport]]:
    built: list[HttpGatewayTransport] = []

    def factory(**overrides: Any) -> HttpGatewayTransport:
        options: dict[str, Any] = {
            "url": f"{gateway.url}/send",
            "secrets": {"token": "GW_TOKEN"},
            "headers": {"Authorization": "Bearer {{secrets.token}}"},
            "body": {"to": "{{to}}", "text": "{{body}}", "from": "{{from}}"},
            "response": {"message_id": "data.message_id", "error": "error"},
            "timeout": 5,
        }
        options.update(overrides)
        transport = HttpGatewayTransport("sms", options, ENV)
        built.append(transport)
        return transport

    yield factory
    for transport in built:
        await transport.aclose()


def sms(to: str, body: str | None = "Hello", **kwargs: Any) -> OutboundMessage:
    return OutboundMessage(channel="sms", to=to, body=body, reference="s1/0/sms", **kwargs)


BULK = {
    "max_addresses": 10,
    "linger": 0.05,
    "results": "data.messages",
    "match": "to",
    "message_id": "id",
    "success_when": {"path": "status", "equals": "queued"},
}


# -- single mode ----------------------------------------------------------------------------------


async def test_one_request_per_message_with_the_secret_header(
    gateway: FakeSmsGateway, make: Callable[..., HttpGatewayTransport]
) -> None:
    transport = make(**{"from": "ACME"}, address={"prefix": "tel:", "digits_only": True})
    result = await transport.send(sms("+1 415 555 0100"))
    assert result == SendResult("gw-1", "delivered", {"gateway": gateway.url.split("//")[1]})
    [request] = gateway.requests
    assert request.method == "POST" and request.path == "/send"
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.fields == {"to": "tel:14155550100", "text": "Hello", "from": "ACME"}


async def test_a_retryable_answer_carries_retry_after(
    gateway: FakeSmsGateway, make: Callable[..., HttpGatewayTransport]
) -> None:
    gateway.script("+14155550101", GatewayReply(status=503, retry_after="7"))
    with pytest.raises(RetryableError) as caught:
        await make().send(sms("+14155550101"))
    assert caught.value.code == "http-503" and caught.value.retry_after == 7


async def test_a_permanent_answer_masks_an_echoed_secret(
    gateway: FakeSmsGateway, make: Callable[..., HttpGatewayTransport]
) -> None:
    gateway.script(
        "+14155550102", GatewayReply(status=400, body={"error": f"bad number; token={TOKEN}"})
    )
    with pytest.raises(PermanentError) as caught:
        await make().send(sms("+14155550102"))
    assert caught.value.code == "http-400"
    assert caught.value.message == "the gateway answered HTTP 400: bad number; token=[secret]"


async def test_a_timeout_is_retryable_and_names_the_host_not_the_url(
    gateway: FakeSmsGateway, make: Callable[..., HttpGatewayTransport]
) -> None:
    gateway.script("+14155550103", GatewayReply(delay=2))
    transport = make(url=f"{gateway.url}/send?token={{{{secrets.token}}}}", timeout=0.2)
    with pytest.raises(RetryableError) as caught:
        await transport.send(sms("+14155550103"))
    assert caught.value.code == "http-timeout" and TOKEN not in str(caught.value)
    assert "did not answer within 0.2s" in str(caught.value)


async def test_an_unreachable_gateway_is_retryable(
    make: Callable[..., HttpGatewayTransport],
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(RetryableError) as caught:
        await make(url=f"http://127.0.0.1:{port}/send").send(sms("+14155550104"))
    assert caught.value.code == "http-connection"


async def test_nothing_to_send_is_permanent(
    gateway: FakeSmsGateway, make: Callable[..., HttpGatewayTransport]
) -> None:
    with pytest.raises(PermanentError, match="nothing to send"):
        await make().send(sms("+14155550105", body=None))
    assert gateway.requests == []


async def test_a_withdrawn_message_is_not_sent(
    gateway: FakeSmsGateway, make: Callable[..., HttpGatewayTransport]
) -> None:
    async def cancelled() -> None:
        raise Withdrawn("the session was cancelled", status="cancelled")

    with pytest.raises(Withdrawn):
        await make().send(sms("+14155550106", last_check=cancelled))
    assert gateway.requests == []


# -- bulk mode ------------------------------------------------------------------------------------


async def test_bulk_sends_one_request_and_maps_each_address(
    gateway: FakeSmsGateway, make: Callable[..., HttpGatewayTransport]
) -> None:
    transport = make(bulk=BULK)
    numbers = [f"+1415555020{i}" for i in range(5)]
    gateway.refuse(numbers[3])
    results = await asyncio.gather(
        *(transport.send(sms(n)) for n in numbers), return_exceptions=True
    )
    [request] = gateway.requests
    assert request.fields["to"] == numbers, "the addresses stay a list"
    refused = results.pop(3)
    assert isinstance(refused, PermanentError) and refused.code == "gateway-refused"
    assert [r.provider_message_id for r in results if isinstance(r, SendResult)] == [
        "gw-1-0",
        "gw-1-1",
        "gw-1-2",
        "gw-1-4",
    ]
    assert all(isinstance(r, SendResult) and r.detail["bulk_size"] == 5 for r in results)


async def test_bulk_groups_by_text_size_and_address(
    gateway: FakeSmsGateway, make: Callable[..., HttpGatewayTransport]
) -> None:
    transport = make(
        bulk={**BULK, "max_addresses": 2}, format="form", body={"to": "{{to}}", "text": "{{body}}"}
    )
    messages = [
        sms("+14155550300"),
        sms("+14155550301"),
        sms("+14155550302"),
        sms("+14155550300", body="Other"),
        sms("+14155550302"),
    ]
    await asyncio.gather(*(transport.send(m) for m in messages))
    batches = sorted((r.fields["text"][0], tuple(r.addresses)) for r in gateway.requests)
    assert batches == [
        ("Hello", ("+14155550300", "+14155550301")),  # max_addresses: 2
        ("Hello", ("+14155550302",)),
        ("Hello", ("+14155550302",)),  # the same number again: the next request
        ("Other", ("+14155550300",)),
    ]
    assert all(
        r.headers["content-type"] == "application/x-www-form-urlencoded" for r in gateway.requests
    )


async def test_bulk_shares_a_failure_and_leaves_out_a_withdrawn_message(
    gateway: FakeSmsGateway, make: Callable[..., HttpGatewayTransport]
) -> None:
    transport = make(
        bulk={"max_addresses": 10, "join": ","}, response={"message_id": "data.message_id"}
    )

    async def opted_out() -> None:
        raise Withdrawn("the recipient opted out", status="suppressed")

    gateway.script("+14155550400", GatewayReply(status=500))
    results = await asyncio.gather(
        transport.send(sms("+14155550400")),
        transport.send(sms("+14155550401")),
        transport.send(sms("+14155550402", last_check=opted_out)),
        return_exceptions=True,
    )
    [request] = gateway.requests
    assert request.fields["to"] == "+14155550400,+14155550401"
    assert [type(r) for r in results] == [RetryableError, RetryableError, Withdrawn]
    ok = await asyncio.gather(
        transport.send(sms("+14155550400")), transport.send(sms("+14155550401"))
    )
    assert [r.provider_message_id for r in ok] == ["gw-2", "gw-2"], "one id for the whole request"


async def test_close_sends_what_is_gathered(
    gateway: FakeSmsGateway, make: Callable[..., HttpGatewayTransport]
) -> None:
    transport = make(bulk={**BULK, "linger": 5})
    pending = asyncio.ensure_future(transport.send(sms("+14155550500")))
    await asyncio.sleep(0.05)
    await transport.aclose()
    assert (await pending).provider_message_id == "gw-1-0"


# -- registry -------------------------------------------------------------------------------------


def test_the_registry_builds_it_and_refuses_bad_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GW_TOKEN", TOKEN)
    options = {"url": "https://gw.example/send", "body": {"to": "{{to}}", "text": "{{body}}"}}
    assert isinstance(build("whatsapp", ChannelConfig("http", options)), HttpGatewayTransport)
    with pytest.raises(ConfigError, match="provider 'http' cannot send email"):
        build("email", ChannelConfig("http", options))
    with pytest.raises(ConfigError, match=r"body.text: unknown placeholder \{\{bdy\}\}"):
        build(
            "sms", ChannelConfig("http", {**options, "body": {"to": "{{to}}", "text": "{{bdy}}"}})
        )


def test_clients_apply_refuses_bad_options_naming_the_field_before_kafka(tmp_path: Path) -> None:
    """A bad template, URL or path stops ``switchboard clients apply`` (and a worker's start,
    which applies its clients file the same way), not the first send."""
    from streams.worker import apply_clients_file  # the worker module: Faust, imported on use

    path = tmp_path / "clients.yaml"
    sms = {
        "provider": "http",
        "url": "https://gw.example/send",
        "secrets": {"token": "GW_UNSET_VAR"},
        "body": {"to": "{{to}}", "text": "{{body}}", "token": "{{secrets.token}}"},
        "response": {"message_id": "data..id"},
    }
    path.write_text(
        yaml.safe_dump(
            {
                "clients": {
                    "acme": {
                        "api_keys": ["sha256:" + "0" * 64],
                        "default_channels": ["sms"],
                        "channels": {"sms": sms},
                    }
                }
            }
        )
    )
    settings = Settings.from_env({"SWITCHBOARD_BOOTSTRAP_SERVERS": "127.0.0.1:9"})
    with pytest.raises(ConfigError) as caught:
        apply_clients_file(settings, path)
    text = str(caught.value)
    assert "clients.acme.channels.sms: invalid http options for sms" in text
    assert "secrets.token: names GW_UNSET_VAR, which is not set" in text
    assert "response.message_id: a path into the JSON answer" in text


async def test_an_urgent_message_does_not_wait_for_the_linger(
    gateway: FakeSmsGateway, make: Callable[..., HttpGatewayTransport]
) -> None:
    transport = make(bulk={**BULK, "linger": 5})
    result = await asyncio.wait_for(transport.send(sms("+14155550600", urgent=True)), 2)
    assert result.provider_message_id == "gw-1-0"


async def test_a_request_that_cannot_be_sent_is_permanent_and_quotes_nothing(
    gateway: FakeSmsGateway, make: Callable[..., HttpGatewayTransport]
) -> None:
    # A header value with a line break (from extras: a secret with one is refused at build).
    transport = make(headers={"X-Note": "{{extras.note}}"})
    with pytest.raises(PermanentError) as caught:
        await transport.send(sms("+14155550700", extras={"note": f"a\r\nInjected: {TOKEN}"}))
    assert caught.value.code == "http-request" and TOKEN not in str(caught.value)
    assert gateway.requests == []
