"""A per-key asyncio rate limiter: each key (a sender number) gets ``rate_per_second`` requests.

The limiter is GCRA (the "generic cell rate algorithm", a token bucket kept as one timestamp
per key): a key may make ``burst`` requests at once after a quiet period, and then one every
``1 / rate_per_second`` seconds. :meth:`RateLimiter.acquire` returns when the caller may make its
request; it never rejects, so a large audience drains at the provider's pace.

Guarantees:

- **Pace.** Over any window, a key is granted at most ``burst + rate * window`` acquisitions.
- **FIFO, with a fast lane.** Callers of one key are served in the order they called
  :meth:`~RateLimiter.acquire` (a caller that finds no queue and a free slot goes at once;
  otherwise it joins the queue). An ``urgent`` caller (a one-time password) joins the queue
  behind its head and the urgent callers already waiting, ahead of every other: it waits at most
  one slot per urgent caller before it, however long the queue of a campaign is.
- **No busy loop.** Only the head of a key's queue sleeps, once per slot, until its slot; the others
  wait on a future the previous head resolves when it leaves. No background task is started.
- **Cancellation-safe.** A caller cancelled while waiting (e.g. by ``asyncio.wait_for``) leaves the
  queue without consuming a slot, so a timed-out crowd does not push later callers back.
- **Bounded memory.** A key whose bucket is full again (idle for ``burst / rate`` seconds) and
  has no waiters is the same as an unknown key; such keys are swept when the table grows
  (amortised O(1) per call), so memory follows the keys in use, not every key ever seen.

**Shared pacing across workers** (``slots``). A sender's rate is a limit at the provider, not
per process: with N workers each pacing a sender at its full rate, the provider would see N
times it. With :class:`Slots`, time is cut into slots of ``1 / rate`` seconds per key, counted
from the epoch (the wall clock, as every worker reads it), and slot ``s`` belongs to partition
``s mod partitions`` of the dispatch topics: a worker uses only the slots of the partitions it
owns, one acquisition per slot. The workers share no message and still never use one slot
twice, so the workers send at most ``rate`` requests of a key in any slot-aligned second (more
only by the workers' clock skew and during a rebalance, when the partitions' old and new owners
may briefly both use a moved partition's slots). What the provider sees also has the network's
jitter: a request that takes longer than a slot to arrive (a worker's first, which opens its
connection) can arrive in the next second. A worker owning ``k`` of ``P`` partitions gets
``k / P`` of each key's rate, which matches its share of the work, since jobs are spread over
the partitions. Slot pacing has no bursts.

Time comes from the injected ``clock`` and ``sleep``, so tests drive it with a fake clock.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

__all__ = ["RateLimiter", "Slots"]

_MIN_SWEEP = 1024
#: Seconds a key with no slot this worker may use waits before it looks again (its partitions
#: may be assigned meanwhile).
_NO_SLOT_WAIT = 1.0


class Slots:
    """Which pacing slots this worker may use: slot ``s`` belongs to partition
    ``s mod partitions``, and the worker uses the slots of the partitions it owns (module docs).
    Until :meth:`assign` is called it owns them all (one process alone)."""

    def __init__(self, partitions: int = 1) -> None:
        if partitions < 1:
            raise ValueError(f"partitions must be at least 1, not {partitions!r}")
        self.partitions = partitions
        self._owned: frozenset[int] = frozenset(range(partitions))

    @property
    def owned(self) -> frozenset[int]:
        return self._owned

    def assign(self, partitions: frozenset[int]) -> None:
        """The partitions of the dispatch topics this worker owns now."""
        self._owned = frozenset(p for p in partitions if 0 <= p < self.partitions)

    def next_owned(self, first: int) -> int | None:
        """The first slot at or after ``first`` this worker may use (None: it owns none)."""
        for slot in range(first, first + self.partitions):
            if slot % self.partitions in self._owned:
                return slot
        return None


@dataclass(slots=True)
class _Bucket:
    #: GCRA's theoretical arrival time: when the bucket will be full (fully rested) again. With
    #: slots: the first slot index not yet used.
    tat: float
    #: Seconds between two acquisitions of this key (``1 / rate``).
    interval: float
    #: Callers waiting for a slot, oldest first. Only the head sleeps.
    waiters: deque[asyncio.Future[None]] = field(default_factory=deque)
    #: The urgent callers among ``waiters``: they queue ahead of the others.
    urgent: set[asyncio.Future[None]] = field(default_factory=set)


class RateLimiter:
    """At most ``rate_per_second`` acquisitions per key, with bursts of up to ``burst``.

    Arguments:
        rate_per_second: the sustained rate per key; must be positive and finite.
        burst: how many acquisitions a rested key may make at once (at least 1).
        clock: a monotonic clock in seconds; with ``slots``, the wall clock (every worker must
            count slots from the same origin).
        sleep: an awaitable sleep in seconds, consistent with ``clock``.
        rate_for: the rate of each key, when keys differ (a short code is faster than a long
            code); ``rate_per_second`` otherwise.
        slots: pace across workers (module docs) instead of per process; ``burst`` is then 1.
    """

    def __init__(
        self,
        rate_per_second: float,
        burst: int = 1,
        *,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rate_for: Callable[[str], float] | None = None,
        slots: Slots | None = None,
    ) -> None:
        if not (rate_per_second > 0 and math.isfinite(rate_per_second)):
            raise ValueError(f"rate_per_second must be positive, not {rate_per_second!r}")
        if burst < 1:
            raise ValueError(f"burst must be at least 1, not {burst!r}")
        self.rate_per_second = rate_per_second
        self.burst = burst
        self._interval = 1.0 / rate_per_second
        self._clock = clock or (time.time if slots is not None else time.monotonic)
        self._sleep = sleep
        self._rate_for = rate_for
        self._slots = slots
        self._buckets: dict[str, _Bucket] = {}
        self._sweep_at = _MIN_SWEEP

    def __len__(self) -> int:
        """How many keys are tracked (idle ones are forgotten at the next sweep)."""
        return len(self._buckets)

    def delay(self, key: str) -> float:
        """Seconds a caller arriving now would wait if it were alone (0 if it may go at once)."""
        bucket = self._buckets.get(key)
        return 0.0 if bucket is None else max(0.0, self._wait(bucket, self._clock()))

    async def acquire(self, key: str, *, urgent: bool = False) -> None:
        """Wait until ``key`` may make one request, in FIFO order with other callers of ``key``;
        an ``urgent`` caller goes ahead of every caller that is not (module docs)."""
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            self._maybe_sweep(now)
            bucket = self._buckets[key] = self._new_bucket(key, now)
        if not bucket.waiters and self._take(bucket, now):
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if urgent and bucket.waiters:
            # Behind the head (already sleeping for its slot) and the urgent callers before us.
            at = 1
            while at < len(bucket.waiters) and bucket.waiters[at] in bucket.urgent:
                at += 1
            bucket.waiters.insert(at, turn)
        else:
            bucket.waiters.append(turn)
        if urgent:
            bucket.urgent.add(turn)
        if len(bucket.waiters) == 1:
            turn.set_result(None)
        try:
            await turn  # until we are the head of the queue
            while True:
                now = self._clock()
                if self._take(bucket, now):
                    break
                await self._sleep(self._wait(bucket, now))
        finally:
            self._leave(bucket, turn)

    # -- internals ---------------------------------------------------------------------------

    def _new_bucket(self, key: str, now: float) -> _Bucket:
        interval = self._interval
        if self._rate_for is not None:
            rate = self._rate_for(key)
            if not (rate > 0 and math.isfinite(rate)):
                raise ValueError(f"the rate of {key!r} must be positive, not {rate!r}")
            interval = 1.0 / rate
        return _Bucket(0.0 if self._slots is not None else now, interval)

    def _slot(self, bucket: _Bucket, now: float) -> int | None:
        """The next slot this worker may use for ``bucket`` (slot pacing)."""
        assert self._slots is not None
        return self._slots.next_owned(max(int(bucket.tat), math.floor(now / bucket.interval)))

    def _wait(self, bucket: _Bucket, now: float) -> float:
        if self._slots is None:
            tolerance = (self.burst - 1) * bucket.interval
            return max(bucket.tat, now) - tolerance - now
        slot = self._slot(bucket, now)
        return _NO_SLOT_WAIT if slot is None else slot * bucket.interval - now

    def _take(self, bucket: _Bucket, now: float) -> bool:
        """Consume a slot if one is free at ``now``."""
        if self._wait(bucket, now) > 0:
            return False
        if self._slots is None:
            bucket.tat = max(bucket.tat, now) + bucket.interval
        else:
            slot = self._slot(bucket, now)
            assert slot is not None
            bucket.tat = slot + 1
        return True

    def _idle(self, bucket: _Bucket, now: float) -> bool:
        """Whether ``bucket`` behaves like a new one: no waiters, and rested."""
        rested = bucket.tat * bucket.interval if self._slots is not None else bucket.tat
        return not bucket.waiters and rested <= now

    @staticmethod
    def _leave(bucket: _Bucket, turn: asyncio.Future[None]) -> None:
        """Leave the queue (served or cancelled) and, if we were its head, wake the next caller."""
        was_head = bool(bucket.waiters) and bucket.waiters[0] is turn
        bucket.waiters.remove(turn)
        bucket.urgent.discard(turn)
        if was_head and bucket.waiters:
            head = bucket.waiters[0]
            # A head cancelled before it ran passes the turn on itself, in its own _leave.
            if not head.done():
                head.set_result(None)

    def _maybe_sweep(self, now: float) -> None:
        if len(self._buckets) < self._sweep_at:
            return
        # A bucket that is full again and has no waiters behaves exactly like a new one.
        idle = [k for k, b in self._buckets.items() if self._idle(b, now)]
        for key in idle:
            del self._buckets[key]
        # Doubling keeps the sweep amortised O(1) per new key while memory stays proportional
        # to the keys actually in use.
        self._sweep_at = max(_MIN_SWEEP, 2 * len(self._buckets))
