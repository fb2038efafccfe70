"""Channel fallback (``options.fallback``): which channel is tried next, and when. Pure.

An instruction may name an ordered list of channels, ``{"channels": ["sms", "email"],
"afterSeconds": 120}``: each recipient is sent its first channel, and the next one only when
the previous did not end ``delivered``:

* it ended for good without being delivered (:data:`MOVES_ON`: ``failed`` with no retry left,
  ``undelivered``, ``rejected``, ``suppressed`` or ``expired`` without a report): at once;
* or, with ``afterSeconds``, it was handed to the provider (``sent``) and no ``delivered``
  came within that many seconds of the hand-off (of its last attempt's, after a retry).

A recipient's *steps* are the plan's channels it has an address for, in order (:func:`steps`);
a channel it has no address for is passed over. A step is started once, by the report agent
(the one owner of every delivery's state, ``streams/reports.py``): its delivery's row is
written, ``accepted`` with ``detail.reason`` ``fallback`` and why (:func:`after_failure`,
:func:`after_timeout`), then the session agent dispatches it. Once any step is ``delivered``
nothing more is started (:func:`delivered`), so a late ``delivered`` on an earlier channel
stops the chain and the recipient is never sent one more time; and only the latest step
started can move on, so every channel is sent at most once per recipient.

What does not move on: a delivery ``delivered`` (or ``read``), a ``cancelled`` one (the session
or the provider cancelled it), one ``expired`` by the send-by deadline (every later step would
be too late as well: they end ``expired`` too, never sent) and one whose state was lost.

A recipient counts once in its session (``deliveries`` is the number of recipients), by its
:func:`outcome`: ``delivered`` as soon as one step is; otherwise open while a step is not final
(a step that timed out may still be delivered late), then the status of its latest step.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from switchboard.instruction import ADDRESS_FIELD, CHANNELS, Channel
from switchboard.status import FINAL, Status

__all__ = [
    "MAX_AFTER_SECONDS",
    "MOVES_ON",
    "REASON",
    "Move",
    "Plan",
    "Row",
    "address",
    "after_failure",
    "after_timeout",
    "delivered",
    "outcome",
    "plan_of",
    "recount",
    "steps",
    "timeout_due",
]

#: ``detail.reason`` of the ``accepted`` event that starts a fallback step.
REASON: Final = "fallback"
#: The longest ``afterSeconds``: a day.
MAX_AFTER_SECONDS: Final = 86_400
#: Final statuses after which the next channel is tried at once.
MOVES_ON: Final[frozenset[Status]] = frozenset(
    {"failed", "undelivered", "rejected", "suppressed", "expired"}
)
#: Error codes of those that do not move on: the send-by deadline (a later step would be too
#: late as well) and a recipient's lost record (a later step could not be built either).
_STOPS: Final = frozenset({"deadline", "state-lost"})
_DELIVERED: Final[frozenset[Status]] = frozenset({"delivered", "read"})


class Row(Protocol):
    """What the rules read of a delivery's state (``switchboard.records.DeliveryState``)."""

    @property
    def status(self) -> Status: ...
    @property
    def updated_at(self) -> float: ...
    @property
    def error_code(self) -> str | None: ...
    @property
    def error(self) -> str | None: ...


Rows = Mapping[str, Row | None]


@dataclass(frozen=True, slots=True)
class Plan:
    """``options.fallback``: the channels in order, and the seconds a handed-off step has to be
    ``delivered`` before the next is tried (None: only a failure moves on)."""

    channels: tuple[str, ...]
    after_seconds: int | None = None


@dataclass(frozen=True, slots=True)
class Move:
    """Start ``channel`` (the step after ``after``), because of ``why``."""

    channel: str
    after: str
    why: str
    step: int  # 1-based position of ``channel`` among the recipient's steps

    def detail(self) -> dict[str, Any]:
        """``detail`` of the ``accepted`` event that starts the step."""
        return {"reason": REASON, "fallback_from": self.after, "why": self.why, "step": self.step}


def plan_of(options: Mapping[str, Any] | None) -> Plan | None:
    """The plan of a session's options (the contract form, validated at intake); None: none."""
    raw = (options or {}).get("fallback")
    if not isinstance(raw, Mapping):
        return None
    after = raw.get("afterSeconds")
    return Plan(tuple(raw.get("channels") or ()), after if isinstance(after, int) else None)


def steps(channels: Sequence[str], addresses: Mapping[str, str]) -> tuple[str, ...]:
    """The channels of ``channels`` a recipient with ``addresses`` can be sent, in order."""
    return tuple(c for c in channels if address(c, addresses))


def address(channel: str, addresses: Mapping[str, str]) -> str:
    """A recipient's address for ``channel`` ("" when it has none)."""
    return addresses.get(ADDRESS_FIELD[_ch(channel)], "") if channel in CHANNELS else ""


def delivered(rows: Rows) -> bool:
    """Whether one of the recipient's steps was delivered: nothing more is ever started."""
    return any(r is not None and r.status in _DELIVERED for r in rows.values())


def _current(order: Sequence[str], rows: Rows) -> str | None:
    """The latest step started (the last of ``order`` with a row)."""
    for channel in reversed(order):
        if rows.get(channel) is not None:
            return channel
    return None


def _next(order: Sequence[str], channel: str, why: str) -> Move | None:
    if channel not in order:
        return None
    at = order.index(channel) + 1
    return Move(order[at], channel, why, at + 1) if at < len(order) else None


def after_failure(order: Sequence[str], rows: Rows, channel: str) -> Move | None:
    """The step to start now that ``channel``'s delivery (its row in ``rows``) changed; None
    when it does not move on. ``order``: the recipient's :func:`steps`."""
    row = rows.get(channel)
    if row is None or delivered(rows) or _current(order, rows) != channel:
        return None
    if row.status not in MOVES_ON or row.error_code in _STOPS:
        return None
    why = f"{channel} {row.status}" + (f": {row.error}" if row.error else "")
    return _next(order, channel, why)


def timeout_due(plan: Plan, rows: Rows) -> float | None:
    """When the recipient's latest step times out (None: no timeout applies to it): it was
    handed off (``sent``), nothing was delivered, and the plan has a channel after it."""
    if plan.after_seconds is None or delivered(rows):
        return None
    current = _current(plan.channels, rows)
    row = rows.get(current) if current is not None else None
    if row is None or row.status != "sent" or current == plan.channels[-1]:
        return None
    return row.updated_at + plan.after_seconds


def after_timeout(plan: Plan, order: Sequence[str], rows: Rows, now: float) -> Move | None:
    """The step to start at ``now`` because the latest one was not delivered in time; None
    when none is due. ``order``: the recipient's :func:`steps`."""
    due = timeout_due(plan, rows)
    current = _current(order, rows)
    if due is None or due > now or current is None:
        return None
    return _next(order, current, f"{current} not delivered within {plan.after_seconds} s")


def outcome(order: Sequence[str], rows: Rows) -> Status | None:
    """The recipient's final status in its session's counts; None while it is open."""
    present = [r for c in order if (r := rows.get(c)) is not None]
    if not present:
        return None
    for row in present:
        if row.status in _DELIVERED:
            return row.status
    if any(r.status not in FINAL for r in present):
        return None
    return present[-1].status


def recount(before: Status | None, after: Status | None) -> tuple[Status | None, Status | None]:
    """``(uncount, count)``: what leaves the counts and what enters them when a recipient's
    outcome goes from ``before`` to ``after``. A delivered recipient stays counted so (a
    ``read`` is still ``delivered``, as for a delivery without fallback)."""
    if before == after or before in _DELIVERED:
        return None, None
    return before, after


def _ch(name: str) -> Channel:
    return name  # type: ignore[return-value]  # checked against CHANNELS by the caller
