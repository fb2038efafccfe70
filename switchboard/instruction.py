"""The instruction: what a client asks Switchboard to send (README: "The Send API").

These are plain immutable values. :mod:`switchboard.validation` is the only way to build them
from untrusted input (an :class:`Envelope`, then the audience's recipients a chunk at a time);
``to_contract`` gives back the contract's JSON shape, which is also what travels inside
Switchboard's internal topics.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Literal, get_args

Channel = Literal["sms", "email", "push", "voice", "whatsapp", "slack"]
CHANNELS: Final[tuple[Channel, ...]] = get_args(Channel)

Trigger = Literal["immediate", "scheduled", "manual"]
TRIGGERS: Final[tuple[Trigger, ...]] = get_args(Trigger)

#: The lane an instruction's work travels in. ``high`` is for small transactional sends (a
#: one-time password): its jobs and reports have topics and agents of their own, so they never
#: queue behind a bulk campaign's backlog.
Priority = Literal["normal", "high"]
PRIORITIES: Final[tuple[Priority, ...]] = get_args(Priority)
#: The most recipients a ``high`` priority instruction may have: the lane stays fast only while
#: what travels in it is small.
MAX_PRIORITY_RECIPIENTS: Final = 100

#: Which recipient-profile field holds the address for each channel.
ADDRESS_FIELD: Final[Mapping[Channel, str]] = {
    "sms": "phone",
    "voice": "phone",
    "whatsapp": "phone",
    "email": "email",
    "push": "push_token",
    "slack": "slack",
}

MAX_AUDIENCE: Final = 1_000_000
SMS_MAX_CHARS: Final = 1600  # Twilio's limit for one Messages API body

__all__ = [
    "ADDRESS_FIELD",
    "CHANNELS",
    "MAX_AUDIENCE",
    "MAX_PRIORITY_RECIPIENTS",
    "PRIORITIES",
    "SMS_MAX_CHARS",
    "TRIGGERS",
    "Channel",
    "Envelope",
    "Fallback",
    "Instruction",
    "Options",
    "Priority",
    "Recipient",
    "Transport",
    "Trigger",
    "recipient_from_record",
    "recipient_record",
]


@dataclass(slots=True)  # not frozen, yet a value: see "Hot records" in switchboard/records.py
class Recipient:
    """One audience entry. ``addresses`` maps a channel's address field (``phone``, ``email``,
    ``push_token``, ``slack``) to a normalised address. ``given`` is the original string when the
    entry was a bare address rather than a profile."""

    addresses: Mapping[str, str]
    name: str | None = None
    timezone: str | None = None
    locale: str | None = None
    vars: Mapping[str, str] = field(default_factory=dict)
    given: str | None = None

    def address_for(self, channel: Channel) -> str | None:
        return self.addresses.get(ADDRESS_FIELD[channel])

    def to_contract(self) -> str | dict[str, Any]:
        if self.given is not None:
            return self.given
        out: dict[str, Any] = dict(self.addresses)
        for key in ("name", "timezone", "locale"):
            if (value := getattr(self, key)) is not None:
                out[key] = value
        if self.vars:
            out["vars"] = dict(self.vars)
        return out


@dataclass(frozen=True, slots=True)
class Transport:
    """The message and the channel it goes over (``None``: the client's default channels)."""

    type: Channel | None
    message: str | None = None
    subject: str | None = None
    file_url: str | None = None
    extras: Mapping[str, Any] = field(default_factory=dict)

    def to_contract(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type}
        if self.subject is not None:
            out["subject"] = self.subject
        if self.message is not None:
            out["message"] = self.message
        if self.file_url is not None:
            out["fileUrl"] = self.file_url
        if self.extras:
            out["extras"] = dict(self.extras)
        return out


@dataclass(frozen=True, slots=True)
class Fallback:
    """``options.fallback``: the channels to try in order, each only when the one before did
    not end delivered, or was not delivered within ``after_seconds`` of its hand-off
    (``switchboard/fallback.py``)."""

    channels: tuple[Channel, ...]
    after_seconds: int | None = None

    def to_contract(self) -> dict[str, Any]:
        out: dict[str, Any] = {"channels": list(self.channels)}
        if self.after_seconds is not None:
            out["afterSeconds"] = self.after_seconds
        return out


@dataclass(frozen=True, slots=True)
class Options:
    trigger: Trigger = "immediate"
    scheduled_at: datetime | None = None
    retries: int = 0
    retry_intervals_minutes: tuple[float, ...] = (60.0,)
    webhook_url: str | None = None
    priority: Priority = "normal"
    #: A message the recipient asked for (a receipt, a password reset): an email goes without
    #: ``List-Unsubscribe``, and an email unsubscribe does not withhold it.
    transactional: bool = False
    #: The send-by deadline (``switchboard/deadline.py``): at most one of the two is set.
    expires_at: datetime | None = None
    ttl_seconds: int | None = None
    #: Channel fallback: the instruction's channels, tried one after the other per recipient.
    fallback: Fallback | None = None

    def to_contract(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "trigger": self.trigger,
            "retries": self.retries,
            "retryIntervalMinutes": ",".join(_minutes(m) for m in self.retry_intervals_minutes),
        }
        if self.scheduled_at is not None:
            out["scheduledTimestamp"] = self.scheduled_at.isoformat()
        if self.webhook_url is not None:
            out["webhookUrl"] = self.webhook_url
        if self.priority != "normal":  # absent means normal, as in every record before the lanes
            out["priority"] = self.priority
        if self.transactional:  # absent means bulk, as in every record before it
            out["transactional"] = True
        if self.expires_at is not None:
            out["expiresAt"] = self.expires_at.isoformat()
        if self.ttl_seconds is not None:
            out["ttlSeconds"] = self.ttl_seconds
        if self.fallback is not None:
            out["fallback"] = self.fallback.to_contract()
        return out


@dataclass(frozen=True, slots=True)
class Instruction:
    """A validated instruction, audience and all. ``channels`` is resolved: the transport's type,
    or the client's default channels when the instruction named none. Switchboard itself never
    holds one (it reads an :class:`Envelope`, then the audience a chunk at a time); it is the
    whole value, for library use and the tests."""

    client_id: str
    transport: Transport
    audience: tuple[Recipient, ...]
    channels: tuple[Channel, ...]
    options: Options = field(default_factory=Options)
    idempotency_key: str | None = None

    def to_contract(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "client_id": self.client_id,
            "transport": self.transport.to_contract(),
            "audience": [r.to_contract() for r in self.audience],
            "options": self.options.to_contract(),
        }
        if self.idempotency_key is not None:
            out["idempotency_key"] = self.idempotency_key
        return out

    @property
    def deliveries(self) -> int:
        """How many deliveries the session counts: one per (recipient, channel), or one per
        recipient with a fallback (its outcome over the channels it was tried on)."""
        if self.options.fallback is not None:
            return len(self.audience)
        return len(self.audience) * len(self.channels)


@dataclass(frozen=True, slots=True)
class Envelope:
    """An instruction without its audience: what is validated before the audience is read, so
    an audience of a million recipients can be validated and stored a chunk at a time."""

    client_id: str
    transport: Transport
    channels: tuple[Channel, ...]
    recipients: int
    options: Options = field(default_factory=Options)
    idempotency_key: str | None = None

    def to_record(self, chunks: int) -> dict[str, Any]:
        """The internal form of an instruction whose audience was stored as ``chunks`` chunks."""
        return {
            "client_id": self.client_id,
            "idempotency_key": self.idempotency_key,
            "channels": list(self.channels),
            "transport": self.transport.to_contract(),
            "options": self.options.to_contract(),
            "recipients": self.recipients,
            "chunks": chunks,
        }


def recipient_record(r: Recipient) -> dict[str, Any]:
    """A recipient in the internal form; absent fields are left out (audiences can be large)."""
    out: dict[str, Any] = {"addresses": dict(r.addresses)}
    for key in ("name", "timezone", "locale", "given"):
        if (value := getattr(r, key)) is not None:
            out[key] = value
    if r.vars:
        out["vars"] = dict(r.vars)
    return out


def recipient_from_record(data: Mapping[str, Any]) -> Recipient:
    return Recipient(
        addresses=data.get("addresses", {}),
        name=data.get("name"),
        timezone=data.get("timezone"),
        locale=data.get("locale"),
        vars=data.get("vars", {}),
        given=data.get("given"),
    )


def _minutes(value: float) -> str:
    return str(int(value)) if value == int(value) else repr(value)
