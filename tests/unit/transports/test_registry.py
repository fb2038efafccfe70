"""transports.registry: which transport sends a client's channel, built lazily and rebuilt on change."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from switchboard.clients import ChannelConfig, ClientConfig, parse_client
from switchboard.errors import ConfigError
from transports import registry as registry_module
from transports.base import OutboundMessage, SendResult
from transports.registry import PROVIDERS, TransportRegistry, build
from transports.sandbox import SandboxTransport
from transports.smtp import SmtpTransport


class FakeTransport:
    name = "fake"
    built: list[FakeTransport] = []

    def __init__(self, channel: str, options: Mapping[str, Any], slots: Any = None) -> None:
        self.channel = channel
        self.slots = slots
        self.options = dict(options)
        self.closed = 0
        FakeTransport.built.append(self)

    async def send(self, message: OutboundMessage) -> SendResult:
        return SendResult("fake-1")

    async def aclose(self) -> None:
        self.closed += 1


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> list[FakeTransport]:
    FakeTransport.built = []
    monkeypatch.setitem(PROVIDERS, "fake", (frozenset({"sms", "voice"}), FakeTransport))
    return FakeTransport.built


def client(client_id: str = "acme", **channels: dict[str, Any]) -> ClientConfig:
    return parse_client(client_id, {"channels": channels})


def test_sandbox_all_overrides_every_provider(tmp_path: Path) -> None:
    reg = TransportRegistry(sandbox_all=True, outbox=tmp_path / "out.jsonl")
    c = client(email={"provider": "smtp"}, sms={"provider": "twilio"}, push={"provider": "nope"})
    email = reg.get(c, "email")
    assert isinstance(email, SandboxTransport)
    assert isinstance(reg.get(c, "sms"), SandboxTransport)
    assert isinstance(reg.get(c, "push"), SandboxTransport)  # even an unknown provider
    assert reg.get(c, "email") is email
    other = client("other", email={"provider": "smtp", "from": "x@y.example"})
    assert reg.get(other, "email") is email  # one sandbox per channel
    assert reg.get(c, "sms") is not email


async def test_provider_sandbox_uses_the_registry_outbox(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox.jsonl"
    reg = TransportRegistry(outbox=outbox)
    transport = reg.get(client(sms={"provider": "sandbox"}), "sms")
    assert isinstance(transport, SandboxTransport)
    assert transport.channel == "sms"
    assert (
        reg.get(client(sms={"provider": "sandbox", "from": ["+14155550100"]}), "sms") is transport
    )
    await transport.send(OutboundMessage(channel="sms", to="+14155550100", body="hi"))
    assert json.loads(outbox.read_text())["body"] == "hi"
    await reg.aclose()


def test_unconfigured_channel() -> None:
    reg = TransportRegistry()
    with pytest.raises(ConfigError, match="channel 'email' is not configured for client 'acme'"):
        reg.get(client(sms={"provider": "sandbox"}), "email")


def test_unknown_provider_names_the_known_ones() -> None:
    reg = TransportRegistry()
    with pytest.raises(ConfigError) as info:
        reg.get(client(sms={"provider": "nexmo"}), "sms")
    assert str(info.value) == (
        "unknown provider 'nexmo' for sms; known: apns, fcm, http, sandbox, slack, smtp, twilio"
    )


@pytest.mark.parametrize(
    ("channel", "provider", "sends"),
    [
        ("sms", "smtp", "email"),
        ("email", "twilio", "sms, voice, whatsapp"),
        ("slack", "apns", "push"),
    ],
)
def test_provider_that_cannot_send_the_channel(channel: str, provider: str, sends: str) -> None:
    reg = TransportRegistry()
    with pytest.raises(ConfigError) as info:
        reg.get(client(**{channel: {"provider": provider}}), channel)
    assert str(info.value) == f"provider {provider!r} cannot send {channel}; it sends {sends}"


def test_misconfigured_provider_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="from"):
        TransportRegistry().get(client(email={"provider": "smtp"}), "email")


async def test_real_provider_is_built_once_and_reused() -> None:
    reg = TransportRegistry()
    c = client(email={"provider": "smtp", "from": "Acme <noreply@acme.example>"})
    first = reg.get(c, "email")
    assert isinstance(first, SmtpTransport)
    assert reg.get(c, "email") is first
    # An equal configuration parsed again (a re-applied clients.yaml) reuses it too.
    again = client(email={"provider": "smtp", "from": "Acme <noreply@acme.example>"})
    assert reg.get(again, "email") is first
    await reg.aclose()


def test_transports_are_per_client(fake: list[FakeTransport]) -> None:
    reg = TransportRegistry()
    a = reg.get(client("a", sms={"provider": "fake"}), "sms")
    b = reg.get(client("b", sms={"provider": "fake"}), "sms")
    v = reg.get(client("a", sms={"provider": "fake"}, voice={"provider": "fake"}), "voice")
    assert len({id(a), id(b), id(v)}) == 3
    assert [t.channel for t in fake] == ["sms", "sms", "voice"]


def test_rebuilt_when_the_channel_config_changes(fake: list[FakeTransport]) -> None:
    reg = TransportRegistry()
    v1 = client(sms={"provider": "fake", "from": ["+14155550100"]})
    first = reg.get(v1, "sms")
    # Another channel of the client changing does not rebuild sms.
    v1b = client(sms={"provider": "fake", "from": ["+14155550100"]}, email={"provider": "sandbox"})
    assert reg.get(v1b, "sms") is first
    v2 = client(sms={"provider": "fake", "from": ["+14155550101"]})
    second = reg.get(v2, "sms")
    assert second is not first
    assert isinstance(second, FakeTransport) and second.options == {"from": ["+14155550101"]}
    assert reg.get(v2, "sms") is second
    assert first.closed == 0  # sends may still be in flight on it
    assert len(fake) == 2


async def test_switching_to_sandbox_and_back(fake: list[FakeTransport]) -> None:
    reg = TransportRegistry()
    real = reg.get(client(sms={"provider": "fake"}), "sms")
    assert isinstance(reg.get(client(sms={"provider": "sandbox"}), "sms"), SandboxTransport)
    assert reg.get(client(sms={"provider": "fake"}), "sms") is real


async def test_aclose_closes_everything(
    fake: list[FakeTransport], monkeypatch: pytest.MonkeyPatch
) -> None:
    reg = TransportRegistry()
    reg.get(client("a", sms={"provider": "fake", "v": 1}), "sms")
    reg.get(client("a", sms={"provider": "fake", "v": 2}), "sms")  # retires the first
    reg.get(client("b", voice={"provider": "fake"}), "voice")
    sandbox = reg.get(client("c", email={"provider": "sandbox"}), "email")
    sandbox_closed: list[bool] = []

    async def record_close() -> None:
        sandbox_closed.append(True)

    monkeypatch.setattr(sandbox, "aclose", record_close)
    await reg.aclose()
    assert [t.closed for t in fake] == [1, 1, 1]
    assert sandbox_closed == [True]
    # After closing, a new get builds afresh rather than handing out a closed transport.
    again = reg.get(client("a", sms={"provider": "fake", "v": 2}), "sms")
    assert isinstance(again, FakeTransport) and again.closed == 0
    assert len(fake) == 4


def test_build_directly() -> None:
    sandbox = build("push", ChannelConfig("sandbox"))
    assert isinstance(sandbox, SandboxTransport) and sandbox.channel == "push"
    smtp = build("email", ChannelConfig("smtp", {"from": "a@b.example"}))
    assert isinstance(smtp, SmtpTransport)
    with pytest.raises(ConfigError, match="known: apns, fcm, http, sandbox, slack, smtp, twilio"):
        build("email", ChannelConfig("mailgun"))


def test_every_provider_names_its_channels() -> None:
    served = {name: channels for name, (channels, _) in registry_module.PROVIDERS.items()}
    assert served["smtp"] == {"email"}
    assert served["twilio"] == {"sms", "whatsapp", "voice"}
    assert served["apns"] == served["fcm"] == {"push"}
    assert served["slack"] == {"slack"}
    assert served["http"] == {"sms", "whatsapp"}
