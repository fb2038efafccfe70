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

Time comes from the injected ``clock`` and ``sleep``, so tests drive it with a fake clock.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

__all__ = ["RateLimiter"]

_MIN_SWEEP = 1024


@dataclass(slots=True)
class _Bucket:
    #: GCRA's theoretical arrival time: when the bucket will be full (fully rested) again.
    tat: float
    #: Callers waiting for a slot, oldest first. Only the head sleeps.
    waiters: deque[asyncio.Future[None]] = field(default_factory=deque)
    #: The urgent callers among ``waiters``: they queue ahead of the others.
    urgent: set[asyncio.Future[None]] = field(default_factory=set)


class RateLimiter:
    """At most ``rate_per_second`` acquisitions per key, with bursts of up to ``burst``.

    Arguments:
        rate_per_second: the sustained rate per key; must be positive and finite.
        burst: how many acquisitions a rested key may make at once (at least 1).
        clock: a monotonic clock in seconds.
        sleep: an awaitable sleep in seconds, consistent with ``clock``.
    """

    def __init__(
        self,
        rate_per_second: float,
        burst: int = 1,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if not (rate_per_second > 0 and math.isfinite(rate_per_second)):
            raise ValueError(f"rate_per_second must be positive, not {rate_per_second!r}")
        if burst < 1:
            raise ValueError(f"burst must be at least 1, not {burst!r}")
        self.rate_per_second = rate_per_second
        self.burst = burst
        self._interval = 1.0 / rate_per_second
        # A key may be up to this far "ahead of schedule": the GCRA tolerance.
        self._tolerance = (burst - 1) * self._interval
        self._clock = clock
        self._sleep = sleep
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
            bucket = self._buckets[key] = _Bucket(now)
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

    def _wait(self, bucket: _Bucket, now: float) -> float:
        return max(bucket.tat, now) - self._tolerance - now

    def _take(self, bucket: _Bucket, now: float) -> bool:
        """Consume a slot if one is free at ``now``."""
        if self._wait(bucket, now) > 0:
            return False
        bucket.tat = max(bucket.tat, now) + self._interval
        return True

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
        idle = [k for k, b in self._buckets.items() if not b.waiters and b.tat <= now]
        for key in idle:
            del self._buckets[key]
        # Doubling keeps the sweep amortised O(1) per new key while memory stays proportional
        # to the keys actually in use.
        self._sweep_at = max(_MIN_SWEEP, 2 * len(self._buckets))
