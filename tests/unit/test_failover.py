"""``streams/failover.py`` without a broker: sends through scripted providers, the circuits they
leave, and a send held while every provider is down."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from prometheus_client import CollectorRegistry, Gauge

from streams.failover import Failover
from switchboard.circuit import Breaker
from transports.base import OutboundMessage, SendResult, Transport
from transports.errors import PermanentError, RetryableError, TransportError, Withdrawn


class Scripted:
    """A provider whose answer is whatever ``answer`` says at the time of the call."""

    def __init__(self, name: str, answer: Callable[[], TransportError | None]) -> None:
        self.name = name
        self.answer = answer
        self.calls = 0

    async def send(self, message: OutboundMessage) -> SendResult:
        self.calls += 1
        error = self.answer()
        if error is not None:
            raise error
        return SendResult(f"{self.name}-{self.calls}", "sent", {})

    async def aclose(self) -> None:
        return None


def down() -> TransportError:
    return RetryableError("503", code="http-503")


def up() -> None:
    return None


def failover(cooldown: float = 30.0) -> tuple[Failover, CollectorRegistry]:
    registry = CollectorRegistry()
    circuit = Gauge("c", "c", ["client", "channel", "position"], registry=registry)
    held = Gauge("h", "h", ["channel"], registry=registry)
    return Failover(Breaker(failures=3, cooldown=cooldown), circuit, held), registry


async def send(
    f: Failover, providers: list[Scripted], wanted: Withdrawn | None = None
) -> tuple[SendResult, int, str]:
    async def call(position: int, transport: Transport) -> SendResult:
        return await transport.send(OutboundMessage(channel="sms", to="+14155550100", body="hi"))

    return await f.send("acme", "sms", len(providers), providers.__getitem__, call, lambda: wanted)


async def test_a_down_provider_opens_and_sends_go_to_the_next() -> None:
    f, registry = failover()
    first, second = Scripted("a", down), Scripted("b", up)
    result, position, name = await send(f, [first, second])
    assert (position, name) == (1, "b") and result.status == "sent", "the same send moved on"
    for _ in range(2):
        await send(f, [first, second])
    assert first.calls == 3 and [c.state for c in f.circuits("acme", "sms")] == ["open", "closed"]
    await send(f, [first, second])
    assert first.calls == 3, "an open circuit gets no sends"
    assert (
        registry.get_sample_value("c", {"client": "acme", "channel": "sms", "position": "0"}) == 2
    )


async def test_a_permanent_error_does_not_move_the_channel() -> None:
    f, _ = failover()
    first, second = (
        Scripted("a", lambda: PermanentError("invalid number", code="21211")),
        Scripted("b", up),
    )
    for _ in range(5):
        with pytest.raises(PermanentError):
            await send(f, [first, second])
    assert second.calls == 0 and [c.state for c in f.circuits("acme", "sms")] == [
        "closed",
        "closed",
    ]


async def test_the_only_provider_down_holds_the_send_until_a_trial_answers() -> None:
    f, registry = failover(cooldown=0.05)
    outage = {"down": True}
    opened = asyncio.Event()

    def answer() -> TransportError | None:
        if only.calls == 3:
            opened.set()  # the third error in a row: the circuit opens, the send is held
        return down() if outage["down"] else None

    only = Scripted("a", answer)
    held = asyncio.ensure_future(send(f, [only]))
    await opened.wait()
    assert registry.get_sample_value("h", {"channel": "sms"}) == 1, "held, no attempt spent"
    assert only.calls == 3 and not held.done()
    outage["down"] = False
    result, position, _ = await held
    assert position == 0 and result.status == "sent"
    assert [c.state for c in f.circuits("acme", "sms")] == ["closed"]


async def test_a_held_send_ends_when_it_is_no_longer_wanted() -> None:
    f, _ = failover(cooldown=0.01)
    expired = Withdrawn("deadline passed", status="expired", code="deadline")
    with pytest.raises(Withdrawn):
        await send(f, [Scripted("a", down)], wanted=expired)
