"""Delivery statuses and the status event (README: "Following what happened"). Pure.

A recipient's delivery moves forward only::

    accepted ─► scheduled / deferred ─► sent ─► delivered ─► read
        │                                 │
        └──────────────► failed, undelivered, suppressed, cancelled, expired, rejected

:func:`is_final` tells when a delivery needs nothing more (the session completes when every
delivery is final); :func:`supersedes` is the rule that keeps late or repeated provider reports
from moving a delivery backwards.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from hashlib import sha1
from typing import Any, Final, Literal, get_args

Status = Literal[
    "accepted",
    "scheduled",
    "deferred",
    "sent",
    "delivered",
    "read",
    "failed",
    "undelivered",
    "suppressed",
    "cancelled",
    "expired",
    "rejected",
    "completed",
]
STATUSES: Final[tuple[Status, ...]] = get_args(Status)

#: Statuses after which a delivery needs nothing more. ``delivered`` is final although ``read``
#: may still follow it: nothing more has to happen for the session to complete.
FINAL: Final[frozenset[Status]] = frozenset(
    {"delivered", "read", "failed", "undelivered", "suppressed", "cancelled", "expired", "rejected"}
)

_RANK: Final[Mapping[Status, int]] = {
    "accepted": 0,
    "scheduled": 1,
    "deferred": 1,
    "sent": 2,
    "delivered": 3,
    "read": 4,
}

__all__ = [
    "FINAL",
    "STATUSES",
    "Status",
    "StatusEvent",
    "advances",
    "event_id",
    "is_final",
    "supersedes",
]

_EVENT_IDS: Final = uuid.UUID("3d0c7f9e-2b1a-4c55-8e6f-9a1b2c3d4e5f")
_EVENT_ID_PREFIX: Final = _EVENT_IDS.bytes


def event_id(*parts: object) -> str:
    """A status event's id, derived from what identifies its state change (never random).

    The same change always gets the same id, whoever publishes it and however often: a
    replay after a crash, or an event published again, carries the id it had the first time,
    and a reader (a webhook receiver, ``webhook-id``) de-duplicates by it. The parts name the
    change: for a delivery its key, attempt and status (and what tells two such changes apart,
    such as a new release time); for a session its id, status and round."""
    return _uuid5("\x1f".join("" if p is None else str(p) for p in parts))


def delivery_change_id(key: str, attempt: int, status: str, *more: object) -> str:
    """``event_id(key, attempt, status, *more)`` for a delivery's change (the key a ``str``,
    the attempt an ``int``), without the general form's generator: three per delivery."""
    name = f"{key}\x1f{attempt}\x1f{status}"
    for part in more:
        name += "\x1f" + ("" if part is None else str(part))
    return _uuid5(name)


def _uuid5(name: str) -> str:
    """``str(uuid.uuid5(_EVENT_IDS, name))``, without building a ``UUID`` (three per delivery):
    the digest's hex with the version (5) and the RFC 4122 variant written into it. (Hashing
    the namespace and the name joined costs less than copying a hasher of the namespace.)"""
    h = sha1(_EVENT_ID_PREFIX + name.encode(), usedforsecurity=False).hexdigest()
    # Version: the 13th hex digit is 5. Variant: the 17th digit's top two bits are 10.
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}"


#: A hex digit -> the same digit with its top two bits set to 10 (the RFC 4122 variant).
_VARIANT: Final = {f"{n:x}": f"{(n & 0x3) | 0x8:x}" for n in range(16)}


_NOT_SENT: Final[frozenset[Status]] = frozenset({"accepted", "scheduled", "deferred"})


def is_final(status: Status) -> bool:
    return status in FINAL


def supersedes(new: Status, old: Status | None) -> bool:
    """Whether a delivery in state ``old`` moves to ``new``.

    Progress statuses only move forward (a ``sent`` after ``delivered`` changes nothing); a
    failure ends a delivery that is not final yet; nothing replaces a final failure, and
    ``read`` may still follow ``delivered``. ``cancelled`` only ends a delivery that has not
    been sent: a message already with the provider cannot be called back.
    """
    if old is None:
        return True
    if new == old:
        return False
    if old in FINAL and old not in ("delivered",):
        return False
    if new == "cancelled":
        return old in _NOT_SENT
    if new in _RANK and old in _RANK:
        # scheduled and deferred share a rank: a scheduled delivery may be held by a time
        # window (deferred), and a deferred one rescheduled for a retry.
        return _RANK[new] > _RANK[old] or {new, old} == {"scheduled", "deferred"}
    if old == "delivered":
        return False  # only ``read`` (ranked above) may follow a delivery
    return new in FINAL


def advances(new: Status, new_attempt: int, old: Status | None, old_attempt: int) -> bool:
    """:func:`supersedes`, knowing attempts: a later attempt of a delivery that is not final
    (waiting for a retry) always moves it, whatever the order of statuses within attempts; an
    earlier attempt's news (a late callback, its expiry timer) never moves a later attempt."""
    if old is not None and new_attempt > old_attempt and old not in FINAL:
        return True
    if old is not None and new_attempt < old_attempt:
        return False
    return supersedes(new, old)


@dataclass(slots=True)  # not frozen, yet a value: see "Hot records" in switchboard/records.py
class StatusEvent:
    """One entry of the status topic: a delivery's or a session's state change."""

    session_id: str
    client_id: str
    status: Status
    recipient: str | None = None
    channel: str | None = None
    attempt: int = 0
    provider_message_id: str | None = None
    error_code: str | None = None
    error: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)
    occurred_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    #: Deterministic (:func:`event_id`). Publishers name the change; by default it is derived
    #: from the session, channel, recipient, attempt, status and time.
    event_id: str = ""

    def __post_init__(self) -> None:
        if not self.event_id:
            derived = event_id(
                self.session_id,
                self.channel,
                self.recipient,
                self.attempt,
                self.status,
                self.occurred_at.isoformat(),
            )
            object.__setattr__(self, "event_id", derived)

    def to_avro(self) -> dict[str, Any]:
        """The ``StatusEvent`` Avro record (``schemas/status_event.avsc``)."""
        return {
            "event_id": self.event_id,
            "session_id": self.session_id,
            "client_id": self.client_id,
            "recipient": self.recipient,
            "channel": self.channel,
            "status": self.status,
            "attempt": self.attempt,
            "provider_message_id": self.provider_message_id,
            "error_code": self.error_code,
            "error": self.error,
            "occurred_at": self.occurred_at,
            "detail": plain_detail(self.detail) or None,
        }

    def to_json(self) -> dict[str, Any]:
        """The JSON form (webhook bodies, the HTTP API): ``occurred_at`` as ISO 8601 UTC."""
        out = self.to_avro()
        out["occurred_at"] = self.occurred_at.astimezone(UTC).isoformat().replace("+00:00", "Z")
        out["detail"] = plain_detail(self.detail)
        return out


_PLAIN = (type(None), bool, int, float, str)
_LONG = range(-(2**63), 2**63)
#: Values kept as they are without a look further (exactly these types, not subclasses).
_AS_IS: Final = frozenset({type(None), bool, float, str})


def plain_detail(detail: Mapping[str, Any]) -> dict[str, Any]:
    """``detail`` in the shape the status topic's schema holds, the same for every reader.

    A value may be a plain value (null, boolean, integer, number, string), a list of plain
    values, or a map of plain values. Anything deeper (a third-party service manager's nested
    detail, say) is kept as its JSON text rather than refused: the event must never be lost for
    its detail. Integers beyond 64 bits become text for the same reason.
    """
    out: dict[str, Any] = {}
    for key, value in detail.items():
        if type(value) in _AS_IS:  # the usual detail: no list, no map (about three per delivery)
            out[str(key)] = value
        elif isinstance(value, list | tuple):
            out[str(key)] = [_plain(v) for v in value]
        elif isinstance(value, Mapping):
            out[str(key)] = {str(k): _plain(v) for k, v in value.items()}
        else:
            out[str(key)] = _plain(value)
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool) and value not in _LONG:
        return str(value)
    if isinstance(value, _PLAIN):
        return value
    return json.dumps(value, default=str, sort_keys=True, ensure_ascii=False)
