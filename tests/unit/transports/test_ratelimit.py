"""The per-key rate limiter, on a virtual clock: pace, FIFO order, bursts, independent keys,
cancellation, and memory. Each test runs in milliseconds of real time."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math

import pytest

from transports.ratelimit import RateLimiter, Slots


class VirtualClock:
    """A clock and a sleep for the limiter; time moves only in :meth:`advance`."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []
        self._timers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._timers, (self.now + seconds, next(self._order), future))
        await future

    async def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, waking sleepers in deadline order."""
        end = self.now + seconds
        await settle()
        while self._timers and self._timers[0][0] <= end:
            when, _, future = heapq.heappop(self._timers)
            self.now = max(self.now, when)
            if not future.done():
                future.set_result(None)
            await settle()
        self.now = end

    def wake_next(self) -> None:
        """Wake the earliest sleeper without letting anything run yet."""
        when, _, future = heapq.heappop(self._timers)
        self.now = max(self.now, when)
        future.set_result(None)


async def settle() -> None:
    """Let every runnable task run until it blocks again."""
    for _ in range(20):
        await asyncio.sleep(0)


def limiter(clock: VirtualClock, rate: float, burst: int = 1) -> RateLimiter:
    return RateLimiter(rate, burst, clock=clock, sleep=clock.sleep)


async def start(
    limits: RateLimiter,
    key: str,
    log: list[tuple[str, float]],
    name: str,
    clock: VirtualClock,
    *,
    urgent: bool = False,
) -> asyncio.Task[None]:
    async def run() -> None:
        await limits.acquire(key, urgent=urgent)
        log.append((name, clock.now))

    task = asyncio.create_task(run())
    await settle()  # it has called acquire: its place in the queue is taken
    return task


async def test_paces_one_key_at_its_rate() -> None:
    clock = VirtualClock()
    limits = limiter(clock, rate=4)
    log: list[tuple[str, float]] = []
    tasks = [await start(limits, "+1555", log, str(i), clock) for i in range(5)]
    await clock.advance(2)
    await asyncio.gather(*tasks)
    assert [t for _, t in log] == [0, 0.25, 0.5, 0.75, 1.0]


async def test_serves_callers_first_in_first_out() -> None:
    clock = VirtualClock()
    limits = limiter(clock, rate=8)
    log: list[tuple[str, float]] = []
    tasks = [await start(limits, "k", log, f"early{i}", clock) for i in range(4)]
    await clock.advance(0.125)  # the head is served; the rest wait
    tasks += [await start(limits, "k", log, f"late{i}", clock) for i in range(3)]
    await clock.advance(2)
    await asyncio.gather(*tasks)
    assert [name for name, _ in log] == [
        *(f"early{i}" for i in range(4)),
        *(f"late{i}" for i in range(3)),
    ]
    times = [t for _, t in log]
    assert times == sorted(times)
    assert all(b - a == pytest.approx(0.125) for a, b in itertools.pairwise(times))


async def test_an_urgent_caller_goes_ahead_of_a_campaigns_queue() -> None:
    clock = VirtualClock()
    limits = limiter(clock, rate=1)  # a Messaging Service's pace: a queue of 50 is 50 s
    log: list[tuple[str, float]] = []
    tasks = [await start(limits, "k", log, f"bulk{i}", clock) for i in range(50)]
    tasks.append(await start(limits, "k", log, "otp1", clock, urgent=True))
    tasks.append(await start(limits, "k", log, "otp2", clock, urgent=True))
    tasks.append(await start(limits, "k", log, "bulk-late", clock))
    await clock.advance(60)
    await asyncio.gather(*tasks)
    order = [name for name, _ in log]
    # bulk0 went at once; bulk1 was the sleeping head; then the urgent ones, in their order.
    assert order[:4] == ["bulk0", "bulk1", "otp1", "otp2"]
    assert order[4:] == [*(f"bulk{i}" for i in range(2, 50)), "bulk-late"]
    assert dict(log)["otp2"] == 3.0
    times = [t for _, t in log]
    assert all(b - a == pytest.approx(1.0) for a, b in itertools.pairwise(times))  # pace kept


async def test_a_cancelled_urgent_caller_leaves_the_fast_lane() -> None:
    clock = VirtualClock()
    limits = limiter(clock, rate=1)
    log: list[tuple[str, float]] = []
    tasks = [await start(limits, "k", log, f"bulk{i}", clock) for i in range(3)]
    gone = await start(limits, "k", log, "gone", clock, urgent=True)
    gone.cancel()
    await settle()
    tasks.append(await start(limits, "k", log, "otp", clock, urgent=True))
    await clock.advance(10)
    await asyncio.gather(*tasks)
    assert [name for name, _ in log] == ["bulk0", "bulk1", "otp", "bulk2"]


async def test_a_rested_key_may_burst_then_is_paced() -> None:
    clock = VirtualClock()
    limits = limiter(clock, rate=1, burst=3)
    log: list[tuple[str, float]] = []
    tasks = [await start(limits, "k", log, str(i), clock) for i in range(5)]
    await clock.advance(3)
    assert [t for _, t in log] == [0, 0, 0, 1, 2]
    await clock.advance(10)  # rested again: a full burst is available
    log.clear()
    tasks += [await start(limits, "k", log, str(i), clock) for i in range(4)]
    await clock.advance(1)
    await asyncio.gather(*tasks)
    assert [t for _, t in log] == [13, 13, 13, 14]


async def test_keys_are_independent() -> None:
    clock = VirtualClock()
    limits = limiter(clock, rate=2)
    log: list[tuple[str, float]] = []
    busy = [await start(limits, "a", log, "a", clock) for _ in range(4)]
    other = await start(limits, "b", log, "b", clock)
    assert ("b", 0) in log  # not queued behind "a"
    await clock.advance(2)
    await asyncio.gather(*busy, other)
    assert [t for name, t in log if name == "a"] == [0, 0.5, 1.0, 1.5]


async def test_only_the_head_sleeps_once_per_slot() -> None:
    clock = VirtualClock()
    limits = limiter(clock, rate=4)
    log: list[tuple[str, float]] = []
    tasks = [await start(limits, "k", log, str(i), clock) for i in range(6)]
    assert clock.sleeps == [0.25]  # one sleeper, however long the queue
    await clock.advance(5)
    await asyncio.gather(*tasks)
    assert clock.sleeps == [0.25] * 5


async def test_a_cancelled_waiter_leaves_without_using_a_slot() -> None:
    clock = VirtualClock()
    limits = limiter(clock, rate=4)
    log: list[tuple[str, float]] = []
    first = await start(limits, "k", log, "first", clock)
    head = await start(limits, "k", log, "head", clock)  # sleeping until 0.25
    middle = await start(limits, "k", log, "middle", clock)
    last = await start(limits, "k", log, "last", clock)
    head.cancel()
    middle.cancel()
    await settle()
    await clock.advance(2)
    await asyncio.gather(first, last)
    assert head.cancelled()
    assert middle.cancelled()
    assert log == [("first", 0), ("last", 0.25)]


async def test_a_waiter_cancelled_as_it_becomes_head_passes_the_turn_on() -> None:
    clock = VirtualClock()
    limits = limiter(clock, rate=4)
    log: list[tuple[str, float]] = []
    tasks = {name: await start(limits, "k", log, name, clock) for name in ("0", "head", "w", "z")}
    w_turn = limits._buckets["k"].waiters[1]
    clock.wake_next()  # the head's slot has come: it is served and hands the turn to "w"...
    # Step the loop one turn at a time (not an Event) to act after "head" ran but before "w" does.
    while not w_turn.done():  # noqa: ASYNC110
        await asyncio.sleep(0)
    tasks["w"].cancel()  # ...which is cancelled before it runs
    await clock.advance(1)
    await asyncio.gather(tasks["0"], tasks["head"], tasks["z"])
    assert tasks["w"].cancelled()
    assert log == [("0", 0), ("head", 0.25), ("z", 0.5)]


async def test_forgets_idle_keys() -> None:
    clock = VirtualClock()
    limits = limiter(clock, rate=1)
    largest = 0
    for batch in range(50):
        clock.now = batch * 10.0  # every earlier key is rested by now
        for i in range(100):
            await limits.acquire(f"{batch}-{i}")
            largest = max(largest, len(limits))
    assert largest <= 1024
    assert len(limits) < 1024


async def test_delay_reports_the_wait_of_a_new_caller() -> None:
    clock = VirtualClock()
    limits = limiter(clock, rate=2)
    assert limits.delay("k") == 0
    await limits.acquire("k")
    assert limits.delay("k") == 0.5
    clock.now = 0.5
    assert limits.delay("k") == 0


@pytest.mark.parametrize(("rate", "burst"), [(0, 1), (-1, 1), (math.inf, 1), (math.nan, 1), (1, 0)])
def test_rejects_unusable_settings(rate: float, burst: int) -> None:
    with pytest.raises(ValueError, match=r"rate_per_second|burst"):
        RateLimiter(rate, burst)


# -- shared pacing: slots of the partitions a worker owns ---------------------------------------


def slotted(clock: VirtualClock, rate: float, owned: set[int], partitions: int = 4) -> RateLimiter:
    slots = Slots(partitions)
    slots.assign(frozenset(owned))
    return RateLimiter(rate, clock=clock, sleep=clock.sleep, slots=slots)


async def test_two_workers_share_a_senders_rate_without_a_slot_used_twice() -> None:
    clock = VirtualClock()
    clock.now = 1000.0  # slots count from the epoch, so both workers agree on them
    first, second = slotted(clock, 5, {0, 2}), slotted(clock, 5, {1, 3})
    log: list[tuple[str, float]] = []
    tasks = [await start(first, "+1555", log, f"a{i}", clock) for i in range(20)]
    tasks += [await start(second, "+1555", log, f"b{i}", clock) for i in range(20)]
    await clock.advance(10)
    await asyncio.gather(*tasks)
    times = sorted(t for _, t in log)
    assert len(set(times)) == len(times) == 40  # never one slot twice
    assert all(b - a == pytest.approx(0.2) for a, b in itertools.pairwise(times))  # 5/s in all
    for second_start in range(1000, 1008):  # any slot-aligned second: at most the rate
        assert sum(1 for t in times if second_start <= t < second_start + 1) <= 5
    by_first = [t for name, t in log if name.startswith("a")]
    assert all(round(t * 5) % 4 in (0, 2) for t in by_first)  # its own partitions' slots


async def test_a_worker_with_no_partitions_waits_until_it_gets_some() -> None:
    clock = VirtualClock()
    limits = slotted(clock, 2, set())
    log: list[tuple[str, float]] = []
    task = await start(limits, "k", log, "x", clock)
    await clock.advance(3)
    assert not log
    assert limits._slots is not None
    limits._slots.assign(frozenset({1}))
    await clock.advance(3)
    await task
    assert log and round(log[0][1] * 2) % 4 == 1


async def test_each_key_may_have_its_own_rate() -> None:
    clock = VirtualClock()
    rates = {"short-code": 10.0, "long-code": 1.0}
    limits = RateLimiter(1, clock=clock, sleep=clock.sleep, rate_for=rates.__getitem__)
    log: list[tuple[str, float]] = []
    tasks = [await start(limits, key, log, key, clock) for key in rates for _ in range(3)]
    await clock.advance(5)
    await asyncio.gather(*tasks)
    assert [t for name, t in log if name == "short-code"] == pytest.approx([0.0, 0.1, 0.2])
    assert [t for name, t in log if name == "long-code"] == pytest.approx([0.0, 1.0, 2.0])
