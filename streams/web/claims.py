"""Idempotency keys being claimed by this worker's Send API, so that concurrent repeats answer
``"repeat": true``.

A key's record is written by the agent that owns the key's partition, a moment after the claim
is confirmed. Until then every request with the key reads no record and would decide "new":
all of them write a claim (the agent opens one session, so nothing is sent twice), and none
could tell the client that it was a repeat. Here, the first request with a key becomes its
*leader*; the ones that arrive while it runs wait for its outcome instead of reading the table,
and the outcome stays known for :data:`WINDOW` seconds after the claim was confirmed (by then
the record is in the table).

Guarantees, for requests reaching the same worker:
    * of concurrent requests with one key and the same instruction, exactly one answers without
      ``repeat`` (the one that opened the session) and every other one answers ``repeat: true``
      with the same session id;
    * one with another instruction answers 422, as against a stored record;
    * a leader that failed (503, 422) leaves no trace: the next request decides anew.
Requests with one key racing through *different* workers still open one session (the key's
partition decides), but each worker's first answers without ``repeat``.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

__all__ = ["WINDOW", "Claims", "KeyOutcome", "Lease"]

#: Seconds a confirmed claim's outcome is kept: far longer than the key's partition takes to
#: apply it, far shorter than a key's 24 hours.
WINDOW: Final = 120.0
#: The most keys remembered at once (the oldest are forgotten first).
CAPACITY: Final = 50_000


@dataclass(frozen=True, slots=True)
class KeyOutcome:
    """What a key names once its leader is done: the session and the fingerprint of the
    instruction that opened it."""

    session_id: str
    fingerprint: str


class Lease:
    """The leadership of one key: its holder decides, then calls :meth:`settle` exactly once."""

    __slots__ = ("_anchor", "_claims", "done_at", "outcome")

    def __init__(self, claims: Claims, anchor: str) -> None:
        self._claims = claims
        self._anchor = anchor
        self.outcome: asyncio.Future[KeyOutcome | None] = asyncio.get_running_loop().create_future()
        self.done_at: float | None = None

    def settle(self, outcome: KeyOutcome | None, now: float, *, keep: bool) -> None:
        """The leader's outcome: ``None`` when it failed. ``keep``: the outcome is not in the
        key's table yet (a claim just written), so it is remembered for :data:`WINDOW` seconds;
        otherwise the table answers the next request, and it is forgotten now."""
        if self.outcome.done():
            return
        self.outcome.set_result(outcome)
        if outcome is not None and keep:
            self.done_at = now
        else:
            self._claims._forget(self._anchor, self)


class Claims:
    """The keys this worker is claiming or has just claimed (see the module docstring)."""

    def __init__(self, window: float = WINDOW, capacity: int = CAPACITY) -> None:
        self._window = window
        self._capacity = capacity
        self._leases: OrderedDict[str, Lease] = OrderedDict()

    async def claim(self, anchor: str, now: float) -> KeyOutcome | Lease:
        """The outcome of the key's leader, waiting for it while one runs; or, when there is
        none, the key's :class:`Lease`: the caller decides, and settles it."""
        while True:
            lease = self._leases.get(anchor)
            if (
                lease is not None
                and lease.done_at is not None
                and now - lease.done_at > self._window
            ):
                self._forget(anchor, lease)
                lease = None
            if lease is None:
                return self._lead(anchor)
            # Shielded: a follower whose client went away does not cancel the leader's future.
            result = await asyncio.shield(lease.outcome)
            if result is not None:
                return result
            # The leader failed, and its lease is gone: decide anew (maybe as the new leader).

    def _lead(self, anchor: str) -> Lease:
        lease = self._leases[anchor] = Lease(self, anchor)
        while len(self._leases) > self._capacity:
            oldest, old = next(iter(self._leases.items()))
            if not old.outcome.done():
                old.outcome.set_result(None)  # its waiters decide themselves
            del self._leases[oldest]
        return lease

    def _forget(self, anchor: str, lease: Lease) -> None:
        if self._leases.get(anchor) is lease:
            del self._leases[anchor]
