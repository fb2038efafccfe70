"""Service manager tests, and the small helpers they share (clients, contexts, a fake lookup)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, cast

from switchboard.clients import ChannelConfig, ClientConfig
from switchboard.instruction import Channel
from switchboard.managers import (
    LineType,
    LookupFailed,
    MemoryState,
    ReportContext,
    SendContext,
    SendMessage,
    SessionStartContext,
)

POOL = ("+14155550100", "+14155550101", "+14155550102", "+14155550103")
RECIPIENT = "+14155550199"


def make_client(
    client_id: str = "acme",
    *,
    service_managers: tuple[str, ...] | None = None,
    sms: Mapping[str, Any] | None = None,
    **channels: Mapping[str, Any],
) -> ClientConfig:
    """A client with an sms channel (``from``: :data:`POOL` unless ``sms`` says otherwise)."""
    configs: dict[Channel, ChannelConfig] = {
        "sms": ChannelConfig("twilio", dict(sms) if sms is not None else {"from": list(POOL)})
    }
    for name, options in channels.items():
        provider = str(options.get("provider", "twilio"))
        configs[cast(Channel, name)] = ChannelConfig(
            provider, {k: v for k, v in options.items() if k != "provider"}
        )
    return ClientConfig(client_id=client_id, channels=configs, service_managers=service_managers)


def send_ctx(
    client: ClientConfig,
    state: MemoryState,
    *,
    address: str = RECIPIENT,
    channel: str = "sms",
    body: str | None = "Hello",
    file_url: str | None = None,
    extras: dict[str, Any] | None = None,
    sender: str | None = None,
) -> SendContext:
    return SendContext(
        client=client,
        channel=channel,
        state=state,
        address=address,
        message=SendMessage(
            channel=channel, body=body, file_url=file_url, extras=extras or {}, sender=sender
        ),
        session_id="s1",
    )


def report_ctx(
    client: ClientConfig,
    state: MemoryState,
    *,
    status: str = "delivered",
    sender: str | None = POOL[2],
    error_code: str | None = None,
    address: str = RECIPIENT,
    channel: str = "sms",
    detail: Mapping[str, Any] | None = None,
) -> ReportContext:
    return ReportContext(
        client=client,
        channel=channel,
        state=state,
        address=address,
        status=status,
        session_id="s1",
        provider_message_id="SM1",
        error_code=error_code,
        sender=sender,
        detail=detail or {},
        occurred_at=1_700_000_000.0,
    )


def start_ctx(
    client: ClientConfig, state: MemoryState, addresses: list[str], channel: str = "sms"
) -> SessionStartContext:
    return SessionStartContext(
        client=client, channel=channel, state=state, session_id="s1", addresses=addresses
    )


class CountingState(MemoryState):
    """A :class:`MemoryState` that counts its writes."""

    def __init__(self) -> None:
        super().__init__()
        self.puts: list[tuple[str, str, Any]] = []

    async def put(self, namespace: str, key: str, value: Any | None) -> None:
        self.puts.append((namespace, key, value))
        await super().put(namespace, key, value)


class FakeLookup:
    """A :class:`~switchboard.managers.lookup.LineTypeLookup` answering from a table.

    A number mapped to a :class:`LookupFailed` raises it; an unmapped number is ``mobile``.
    Records every number asked, and the most lookups seen in flight at once."""

    def __init__(self, answers: Mapping[str, LineType | LookupFailed] | None = None) -> None:
        self.answers = dict(answers or {})
        self.asked: list[str] = []
        self.in_flight = 0
        self.most_in_flight = 0

    async def line_type(self, e164: str) -> LineType:
        self.asked.append(e164)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0)  # let the other workers start theirs
            answer = self.answers.get(e164, "mobile")
            if isinstance(answer, LookupFailed):
                raise answer
            return answer
        finally:
            self.in_flight -= 1
