"""The one small interface every channel adapter implements.

A transport turns an :class:`OutboundMessage` (one rendered message for one address) into one
provider request. It answers with a :class:`SendResult`, or raises one of the classified
:mod:`transports.errors`. It must be safe to call many times concurrently: the dispatcher keeps
up to ``SWITCHBOARD_MAX_IN_FLIGHT`` sends in flight per channel, and a transport limits its own
connections and rates below that if its provider needs it.

A transport bounds its own provider I/O: every request has a timeout (the channel's ``timeout``
option), and its expiry is a :class:`~transports.errors.RetryableError`. Waiting for a sender's
rate-limit slot is not provider time and is not bounded by it: a large audience on one sender
waits its turn instead of failing (the dispatcher's ``SWITCHBOARD_SEND_DEADLINE`` only catches
a send that is stuck).

Transports never see Kafka or tables, and never log message bodies or credentials.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

__all__ = ["OutboundMessage", "SendResult", "Transport", "final_check"]


@dataclass(slots=True)  # not frozen, yet a value: see "Hot records" in switchboard/records.py
class OutboundMessage:
    """What to send, already rendered for its recipient."""

    channel: str
    to: str
    body: str | None
    subject: str | None = None
    file_url: str | None = None
    extras: Mapping[str, Any] = field(default_factory=dict)
    sender: str | None = None
    locale: str | None = None
    #: Where the provider should report this message's later states, when it can.
    status_callback: str | None = None
    #: Identifies the delivery in logs and provider metadata: ``<session>/<index>/<channel>``.
    reference: str = ""
    attempt: int = 1
    #: Awaited by the transport at the last moment, after any wait for a rate-limit slot or a
    #: connection and right before the provider request: it raises
    #: :class:`~transports.errors.Withdrawn` when the message must not go out any more (its
    #: session was cancelled, its recipient opted out meanwhile).
    last_check: Callable[[], Awaitable[None]] | None = None
    #: A high-priority message (``options.priority: high``): it goes ahead of the others in its
    #: sender's rate-limit queue.
    urgent: bool = False
    #: Bulk email's one-click unsubscribe URL (``switchboard/unsubscribe.py``): the email
    #: transport sends it as ``List-Unsubscribe`` with ``List-Unsubscribe-Post``. ``None`` for a
    #: transactional message, any other channel, or a deployment without the settings.
    unsubscribe_url: str | None = None


@dataclass(slots=True)  # not frozen, yet a value (made per send, as OutboundMessage)
class SendResult:
    """A provider accepted the message.

    ``status`` is ``sent`` when a later report will say what happened (an SMS awaiting its
    delivery callback), or ``delivered`` when the acceptance is itself the delivery (an SMTP
    relay's 250, the sandbox).
    """

    provider_message_id: str | None
    status: Literal["sent", "delivered"] = "sent"
    detail: Mapping[str, Any] = field(default_factory=dict)


async def final_check(message: OutboundMessage) -> None:
    """Run the message's :attr:`OutboundMessage.last_check`, if any. Every transport calls it
    right before handing the message to its provider."""
    if message.last_check is not None:
        await message.last_check()


@runtime_checkable
class Transport(Protocol):
    """A channel adapter. ``name`` is the provider, e.g. ``smtp``, ``twilio``, ``sandbox``."""

    name: str

    async def send(self, message: OutboundMessage) -> SendResult:
        """Send one message. Raises :class:`transports.errors.TransportError` subclasses."""
        ...

    async def aclose(self) -> None:
        """Release connections. Called once when the worker stops or the config changes."""
        ...
