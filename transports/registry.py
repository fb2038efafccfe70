"""Which transport sends a client's channel, built from the client's configuration.

Transports are built lazily, one per (client, channel), and rebuilt when that client's channel
configuration changes (a ``switchboard clients apply`` reaches every worker without a restart).
With ``sandbox_all`` (``SWITCHBOARD_SANDBOX=true``) every channel of every client uses the
sandbox whatever its configured provider.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from switchboard.clients import ChannelConfig, ClientConfig
from switchboard.errors import ConfigError
from switchboard.gateway.config import CHANNELS as GATEWAY_CHANNELS
from transports.apns import ApnsTransport
from transports.base import Transport
from transports.fcm import FcmTransport
from transports.http_gateway import http_gateway_transport
from transports.ratelimit import Slots
from transports.sandbox import SandboxTransport
from transports.slack import SlackTransport
from transports.smtp import SmtpTransport
from transports.twilio import TWILIO_CHANNELS, twilio_transport

__all__ = ["PROVIDERS", "TransportRegistry"]

Factory = Callable[[str, Mapping[str, Any], Slots | None], Transport]

#: provider name -> (channels it serves, factory(channel, options, pacing slots))
PROVIDERS: dict[str, tuple[frozenset[str], Factory]] = {
    "smtp": (frozenset({"email"}), lambda channel, options, slots: SmtpTransport(options)),
    "twilio": (TWILIO_CHANNELS, twilio_transport),
    "apns": (frozenset({"push"}), lambda channel, options, slots: ApnsTransport(options)),
    "fcm": (frozenset({"push"}), lambda channel, options, slots: FcmTransport(options)),
    "slack": (frozenset({"slack"}), lambda channel, options, slots: SlackTransport(options)),
    "http": (GATEWAY_CHANNELS, http_gateway_transport),
}


@dataclass
class _Entry:
    config: ChannelConfig
    transport: Transport


class TransportRegistry:
    def __init__(
        self, *, sandbox_all: bool = False, outbox: Path | None = None, slots: Slots | None = None
    ) -> None:
        self.sandbox_all = sandbox_all
        self.outbox = outbox
        #: The pacing slots this worker may use, shared by every paced transport it builds.
        self.slots = slots
        self._sandboxes: dict[str, SandboxTransport] = {}
        self._built: dict[tuple[str, str, int], _Entry] = {}
        self._retired: list[Transport] = []
        self._closers: set[asyncio.Task[None]] = set()
        #: Seconds a replaced transport stays open for the sends already in flight on it.
        self.retire_after = 600.0

    def sandbox(self, channel: str) -> SandboxTransport:
        if channel not in self._sandboxes:
            self._sandboxes[channel] = SandboxTransport(channel, self.outbox)
        return self._sandboxes[channel]

    def get(self, client: ClientConfig, channel: str, position: int = 0) -> Transport:
        """The transport for ``client``'s ``channel`` (its ``position``-th provider when the
        channel lists ``providers``).

        Raises:
            ConfigError: the channel is not configured, or its provider is unknown or misconfigured.
        """
        channel_config = client.channels.get(channel)  # type: ignore[call-overload]
        if channel_config is None:
            raise ConfigError(
                f"channel {channel!r} is not configured for client {client.client_id!r}"
            )
        config = channel_config if position == 0 else channel_config.providers[position]
        if self.sandbox_all or config.provider == "sandbox":
            return self.sandbox(channel)
        key = (client.client_id, channel, position)
        entry = self._built.get(key)
        if entry is not None and entry.config == config:
            return entry.transport
        transport = build(channel, config, self.slots)
        if entry is not None:
            self._retire(entry.transport)
        self._built[key] = _Entry(config, transport)
        return transport

    def _retire(self, transport: Transport) -> None:
        """Close a replaced transport once the sends it may still have in flight are done."""
        self._retired.append(transport)

        async def close_later() -> None:
            await asyncio.sleep(self.retire_after)
            if transport in self._retired:
                self._retired.remove(transport)
                await transport.aclose()

        try:
            task = asyncio.get_running_loop().create_task(close_later())
        except RuntimeError:  # no loop (a synchronous caller): closed by aclose()
            return
        self._closers.add(task)
        task.add_done_callback(self._closers.discard)

    async def aclose(self) -> None:
        for transport in [
            *(e.transport for e in self._built.values()),
            *self._retired,
            *self._sandboxes.values(),
        ]:
            await transport.aclose()
        self._built.clear()
        self._retired.clear()


def build(channel: str, config: ChannelConfig, slots: Slots | None = None) -> Transport:
    """Build a transport from a channel's configuration, its first provider's when it lists
    ``providers`` (no connection is made)."""
    if config.provider == "sandbox":
        return SandboxTransport(channel)
    try:
        channels, factory = PROVIDERS[config.provider]
    except KeyError:
        known = ", ".join(sorted([*PROVIDERS, "sandbox"]))
        raise ConfigError(
            f"unknown provider {config.provider!r} for {channel}; known: {known}"
        ) from None
    if channel not in channels:
        raise ConfigError(
            f"provider {config.provider!r} cannot send {channel}; it sends {', '.join(sorted(channels))}"
        )
    return factory(channel, config.options, slots)
