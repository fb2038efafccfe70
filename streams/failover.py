"""Provider failover: the sends of a channel that lists ``providers`` (README: "Provider
failover"), behind this worker's circuit breakers (``switchboard/circuit.py``).

A send goes to the first provider whose circuit admits it. A retryable error counts against
that provider, and the send goes on at once (same attempt: the message was not accepted) to
the next provider that admits it; once every admitting provider has failed it, it starts another
round, up to ``SWITCHBOARD_CIRCUIT_FAILURES`` rounds. A run of errors therefore opens the circuit
of a provider that is down, whether it comes from many sends or from one. A permanent error is
the message's: it is returned as it is and counts as an answer.

When no provider admits the send and every circuit of the channel is open (or half-open with
its one trial in flight), the send is **held**: it waits in the dispatcher, its job
unacknowledged in Kafka, until a cool-down ends or a trial closes a circuit, and is then tried
again; no attempt is spent. While held it is checked again (``still_wanted``): a send-by
deadline that passes, a cancel or an opt-out ends it without a send. A held send counts against
``SWITCHBOARD_MAX_IN_FLIGHT``, so an outage holds at most that many jobs per lane in memory and
the rest wait in their topic; a stopping worker hands them to the next owner as any send in
flight. Held sends take their lane's slots: other clients' sends of the same channel and lane
on this worker may wait behind them (a per-job timer would free the slots, at the price of a
hold generation in every send's key, which the hot path would pay). A worker that stops or dies
while holding a send leaves its claim without an outcome, so the next owner sends it with
``detail.in_doubt`` although nothing was sent.

A send that fails every round while a circuit stays closed (a provider that refuses this
message retryably but answers others) ends with its last error, and the session's retries
apply as on any channel.

Circuits live in this worker's memory only: each worker learns of an outage from its own sends
(so each makes its own run of failing requests: the threshold, plus the sends already in
flight when the circuit opened), and a restart closes them.
``switchboard_provider_circuit`` shows each one (0 closed, 1 half-open, 2 open).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final

from prometheus_client import Gauge

from switchboard.circuit import (
    CLOSED,
    Breaker,
    Circuit,
    choose,
    failed,
    next_trial_at,
    succeeded,
    trial_abandoned,
)
from transports.base import SendResult, Transport
from transports.errors import RetryableError, TransportError, Withdrawn

__all__ = ["Failover", "Provider"]

#: A gauge's value per state.
_GAUGE: Final = {"closed": 0, "half-open": 1, "open": 2}

#: Returns the provider at a position of the channel (raises ConfigError when it cannot be built).
Provider = Callable[[int], Transport]


@dataclass
class _Channel:
    circuits: list[Circuit]
    #: Set (and replaced) whenever a circuit of the channel changes: held sends look again.
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class Failover:
    """The circuits of every providers-list channel on this worker, by (client, channel)."""

    def __init__(self, breaker: Breaker, gauge: Gauge, held: Gauge) -> None:
        self.breaker = breaker
        self._gauge = gauge
        self._held = held
        self._channels: dict[tuple[str, str], _Channel] = {}

    def circuits(self, client_id: str, channel: str) -> list[Circuit]:
        """The channel's circuits (a copy; for tests and the status page)."""
        found = self._channels.get((client_id, channel))
        return list(found.circuits) if found is not None else []

    async def send(
        self,
        client_id: str,
        channel: str,
        count: int,
        provider: Provider,
        call: Callable[[int, Transport], Awaitable[SendResult]],
        still_wanted: Callable[[], Withdrawn | None],
    ) -> tuple[SendResult, int, str]:
        """Send through the first of ``count`` providers that admits it: ``call(position,
        transport)`` makes one provider call. Returns the result, the provider's position and
        name; raises the :class:`TransportError` that is the send's outcome (module docs)."""
        state = self._state(client_id, channel, count)
        tried: set[int] = set()  # in this round: each admitting provider once
        rounds = 1
        last: TransportError | None = None
        while True:
            picked = choose(state.circuits, time.time(), self.breaker, frozenset(tried))
            if picked is None and last is not None and not _all_open(state.circuits):
                if rounds >= self.breaker.failures:
                    raise last  # failing where circuits stay closed: the message's own problem
                rounds += 1
                tried.clear()
                continue
            if picked is None:
                await self._hold(client_id, channel, state)
                withdrawn = still_wanted()
                if withdrawn is not None:
                    raise withdrawn
                tried.clear()
                rounds, last = 1, None
                continue
            position, admitted = picked
            self._set(client_id, channel, state, position, admitted)
            transport = provider(position)
            try:
                result = await call(position, transport)
            except RetryableError as exc:
                circuit = failed(state.circuits[position], time.time(), self.breaker)
                self._set(client_id, channel, state, position, circuit)
                tried.add(position)
                last = exc
                continue
            except Withdrawn:
                self._set(
                    client_id, channel, state, position, trial_abandoned(state.circuits[position])
                )
                raise
            except TransportError:  # permanent: about the message; the provider answered
                self._set(client_id, channel, state, position, succeeded(state.circuits[position]))
                raise
            except BaseException:  # cancelled (a stopping worker): no answer either way
                self._set(
                    client_id, channel, state, position, trial_abandoned(state.circuits[position])
                )
                raise
            self._set(client_id, channel, state, position, succeeded(state.circuits[position]))
            return result, position, transport.name

    def _state(self, client_id: str, channel: str, count: int) -> _Channel:
        key = (client_id, channel)
        state = self._channels.get(key)
        if state is None or len(state.circuits) != count:  # new, or its list was changed
            state = self._channels[key] = _Channel([CLOSED] * count)
            for position in range(count):
                self._gauge.labels(client_id, channel, str(position)).set(0)
        return state

    def _set(
        self, client_id: str, channel: str, state: _Channel, position: int, circuit: Circuit
    ) -> None:
        before = state.circuits[position]
        if circuit == before:
            return
        state.circuits[position] = circuit
        if circuit.state != before.state:
            self._gauge.labels(client_id, channel, str(position)).set(_GAUGE[circuit.state])
        if circuit.state != "open" or before.state != "open":
            state.changed.set()  # wake the held sends: a circuit closed, or a trial ended
            state.changed = asyncio.Event()

    async def _hold(self, client_id: str, channel: str, state: _Channel) -> None:
        """Wait until a cool-down ends or a circuit of the channel changes."""
        due = next_trial_at(state.circuits, self.breaker)
        wait = self.breaker.cooldown if due is None else max(0.0, due - time.time())
        gauge = self._held.labels(channel)
        gauge.inc()
        try:
            async with asyncio.timeout(wait):
                await state.changed.wait()
        except TimeoutError:
            pass  # the cool-down ended: the next look admits a trial
        finally:
            gauge.dec()


def _all_open(circuits: list[Circuit]) -> bool:
    """Whether no provider of the channel takes sends now (open, or half-open on its trial)."""
    return all(c.state != "closed" for c in circuits)
