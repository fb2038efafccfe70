"""Circuit breakers for provider failover (a channel's ``providers`` list). Pure.

Each provider of such a channel has a :class:`Circuit`::

    closed ──(``Breaker.failures`` retryable errors in a row)──► open
    open ──(``Breaker.cooldown`` seconds later, the next send is a trial)──► half-open
    half-open ──(the trial answers: sent, or a permanent error)──► closed
    half-open ──(the trial fails retryably)──► open (a new cool-down)

Only a retryable error (a timeout, a 5xx, a 429) counts against a provider: a permanent one (an
invalid number) is about the message, and shows that the provider answers, so it counts as a
success for the circuit and never moves the channel. While a circuit is half-open, only its one
trial goes to that provider; other sends go to the next provider whose circuit admits them.

:func:`choose` picks, in the channel's order, the first provider that admits a send; ``None``
when every circuit is open, in which case the send is held (not failed: no attempt is spent)
until :func:`next_trial_at`, when the first cool-down ends.

The circuits are per worker (``streams/failover.py`` keeps them in memory): each worker learns
of an outage from its own sends, and a restarted worker starts with every circuit closed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Final, Literal

__all__ = [
    "CLOSED",
    "Breaker",
    "Circuit",
    "State",
    "admit",
    "choose",
    "failed",
    "next_trial_at",
    "succeeded",
    "trial_abandoned",
]

State = Literal["closed", "open", "half-open"]


@dataclass(frozen=True, slots=True)
class Breaker:
    """When a circuit opens and how long it stays open (``SWITCHBOARD_CIRCUIT_*``)."""

    #: Retryable errors in a row that open a closed circuit.
    failures: int = 5
    #: Seconds an open circuit waits before its trial request.
    cooldown: float = 30.0


@dataclass(frozen=True, slots=True)
class Circuit:
    state: State = "closed"
    #: Retryable errors in a row (while closed).
    failures: int = 0
    #: When it last opened (epoch s).
    opened_at: float = 0.0
    #: A half-open circuit's trial request is in flight: no other send goes to it.
    trial: bool = False


CLOSED: Final = Circuit()


def admit(circuit: Circuit, now: float, breaker: Breaker) -> Circuit | None:
    """The circuit once a send is admitted to its provider, or None when it is not: an open
    circuit admits its trial once its cool-down is over, a half-open one only its trial."""
    if circuit.state == "closed":
        return circuit
    if circuit.state == "open":
        if now < circuit.opened_at + breaker.cooldown:
            return None
        return replace(circuit, state="half-open", trial=True)
    return None if circuit.trial else replace(circuit, trial=True)


def choose(
    circuits: Sequence[Circuit], now: float, breaker: Breaker, skip: frozenset[int] = frozenset()
) -> tuple[int, Circuit] | None:
    """The first provider (by index, not in ``skip``) whose circuit admits a send, with its
    circuit once admitted; None when none does (hold the send until :func:`next_trial_at`)."""
    for index, circuit in enumerate(circuits):
        if index in skip:
            continue
        admitted = admit(circuit, now, breaker)
        if admitted is not None:
            return index, admitted
    return None


def succeeded(circuit: Circuit) -> Circuit:
    """The provider answered (sent, or a permanent error for the message): closed."""
    return CLOSED if circuit != CLOSED else circuit


def failed(circuit: Circuit, now: float, breaker: Breaker) -> Circuit:
    """The provider failed retryably. A closed circuit opens at the ``failures``-th error in a
    row; a half-open one (its trial failed) opens again for a new cool-down; an open one (a
    send admitted before it opened) stays as it is."""
    if circuit.state == "half-open":
        return Circuit("open", 0, now, trial=False)
    if circuit.state == "open":
        return circuit
    failures = circuit.failures + 1
    if failures >= breaker.failures:
        return Circuit("open", 0, now)
    return replace(circuit, failures=failures)


def trial_abandoned(circuit: Circuit) -> Circuit:
    """A trial that ended without the provider's answer (withdrawn at the last check, or the
    worker stopping): the next send may be the trial."""
    return replace(circuit, trial=False) if circuit.state == "half-open" else circuit


def next_trial_at(circuits: Sequence[Circuit], breaker: Breaker) -> float | None:
    """When the first open circuit may take a trial (None: none is open)."""
    due = [c.opened_at + breaker.cooldown for c in circuits if c.state == "open"]
    return min(due) if due else None
