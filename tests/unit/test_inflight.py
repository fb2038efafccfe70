"""Overlapped sends with in-order acks (streams/inflight.py), and why (faust #606).

The first tests run Faust 0.15.3's own commit arithmetic (``Consumer._new_offset``) to show that
out-of-order acks let it commit past a message still in flight. The others show that the
acker never lets Faust see an out-of-order ack, and pin the error policy of ``run_overlapped``.
"""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
from faust.transport.consumer import Consumer
from faust.types import TP
from intervaltree import IntervalTree

from streams.inflight import InOrderAcker, run_overlapped

TOPIC = "comms.dispatch.sms"


def faust_commit_offset(committed: int | None, acked: list[int]) -> int | None:
    """What Faust 0.15.3 would commit for one partition, given its acked offsets."""
    tp = TP(TOPIC, 0)
    state = SimpleNamespace(
        _acked={tp: list(acked)},
        _acked_index={tp: set(acked)},
        _gap=defaultdict(IntervalTree),
        _committed_offset={tp: committed},
    )
    result: int | None = Consumer._new_offset(state, tp)  # type: ignore[arg-type]
    return result


@pytest.mark.parametrize(
    ("committed", "acked", "in_flight"),
    [
        (31, [32, 33], 31),  # the head of the partition is still being sent
        (0, [5, 6], 0),  # committed 0 is falsy: the guard is skipped altogether
    ],
)
def test_faust_commits_past_an_unacked_message_when_acks_arrive_out_of_order(
    committed: int, acked: list[int], in_flight: int
) -> None:
    offset = faust_commit_offset(committed, acked)
    assert offset is not None and offset > in_flight, (
        "if this fails, Faust fixed #606: revisit inflight.py"
    )


def test_faust_commits_correctly_when_acks_arrive_in_order() -> None:
    assert faust_commit_offset(31, [31, 32, 33]) == 34
    assert faust_commit_offset(31, []) is None


@dataclass
class FakeEvent:
    partition: int
    offset: int
    acks: list[tuple[int, int]]
    message: Any = field(init=False)

    def __post_init__(self) -> None:
        self.message = SimpleNamespace(topic=TOPIC, partition=self.partition, offset=self.offset)

    def ack(self) -> bool:
        self.acks.append((self.partition, self.offset))
        return True


def test_acker_acks_in_offset_order_per_partition_whatever_the_finishing_order() -> None:
    acks: list[tuple[int, int]] = []
    acker = InOrderAcker()
    slots = {(p, o): acker.track(FakeEvent(p, o, acks)) for o in range(5) for p in (0, 1)}
    for key in [(0, 3), (1, 0), (0, 1), (0, 0), (1, 2), (0, 2), (1, 1), (0, 4), (1, 4), (1, 3)]:
        acker.finish(slots[key])
        per_partition = defaultdict(list)
        for p, o in acks:
            per_partition[p].append(o)
        for offsets in per_partition.values():
            assert offsets == list(range(len(offsets))), "acks are contiguous from the head"
    assert acker.pending == 0
    assert sorted(acks) == sorted(slots)


def test_faust_never_commits_past_unfinished_work_behind_the_acker() -> None:
    """Random finishing orders; after each finish, what Faust would commit is never beyond the
    first event still in flight."""
    rng = random.Random(606)
    for _ in range(200):
        n = rng.randint(1, 30)
        acks: list[tuple[int, int]] = []
        acker = InOrderAcker()
        slots = [acker.track(FakeEvent(0, 100 + i, acks)) for i in range(n)]
        finished: set[int] = set()
        for i in rng.sample(range(n), n):
            acker.finish(slots[i])
            finished.add(i)
            offset = faust_commit_offset(100, [o for _, o in acks])
            first_unfinished = next((100 + k for k in range(n) if k not in finished), None)
            if offset is not None and first_unfinished is not None:
                assert offset <= first_unfinished


async def _events(events: list[FakeEvent]) -> Any:
    for event in events:
        yield event


async def test_run_overlapped_bounds_concurrency_and_acks_everything_in_order() -> None:
    acks: list[tuple[int, int]] = []
    events = [FakeEvent(i % 3, i // 3, acks) for i in range(60)]
    running = 0
    peak = 0

    async def handle(event: FakeEvent) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(random.uniform(0, 0.01))
        running -= 1

    async def never(*_: Any) -> None:
        raise AssertionError("not called")

    await run_overlapped(
        _events(events), handle, max_in_flight=8, drain_timeout=5, on_error=never, on_fatal=never
    )
    assert peak == 8
    assert sorted(acks) == sorted((e.partition, e.offset) for e in events)
    for partition in range(3):
        mine = [o for p, o in acks if p == partition]
        assert mine == sorted(mine)


async def test_a_failing_handler_goes_to_the_error_policy_then_is_acked() -> None:
    acks: list[tuple[int, int]] = []
    events = [FakeEvent(0, i, acks) for i in range(3)]
    seen: list[tuple[int, str]] = []

    async def handle(event: FakeEvent) -> None:
        if event.offset == 1:
            raise ValueError("poison")

    async def on_error(event: FakeEvent, exc: Exception) -> None:
        seen.append((event.offset, str(exc)))

    async def never(*_: Any) -> None:
        raise AssertionError("not called")

    await run_overlapped(
        _events(events), handle, max_in_flight=2, drain_timeout=5, on_error=on_error, on_fatal=never
    )
    assert seen == [(1, "poison")]
    assert acks == [(0, 0), (0, 1), (0, 2)]


async def test_when_the_error_policy_fails_the_event_is_never_acked() -> None:
    acks: list[tuple[int, int]] = []
    events = [FakeEvent(0, i, acks) for i in range(3)]
    fatal: list[BaseException] = []

    async def handle(event: FakeEvent) -> None:
        if event.offset == 0:
            raise ValueError("poison")

    async def on_error(event: FakeEvent, exc: Exception) -> None:
        raise ConnectionError("the rejected topic cannot be written")

    async def on_fatal(exc: BaseException) -> None:
        fatal.append(exc)

    await run_overlapped(
        _events(events),
        handle,
        max_in_flight=3,
        drain_timeout=5,
        on_error=on_error,
        on_fatal=on_fatal,
    )
    assert [type(e) for e in fatal] == [ConnectionError]
    assert acks == [], "offset 0 is never acked, so nothing after it is either"


async def test_stopping_lets_sends_in_flight_finish_and_acks_them() -> None:
    acks: list[tuple[int, int]] = []
    started = asyncio.Event()

    async def endless() -> Any:
        yield FakeEvent(0, 0, acks)
        started.set()
        await asyncio.Event().wait()  # the stream never yields again, until cancelled

    async def handle(event: FakeEvent) -> None:
        await asyncio.sleep(0.05)

    async def never(*_: Any) -> None:
        raise AssertionError("not called")

    task = asyncio.create_task(
        run_overlapped(
            endless(), handle, max_in_flight=4, drain_timeout=5, on_error=never, on_fatal=never
        )
    )
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert acks == [(0, 0)], "the send in flight finished and was acked during the drain"


async def test_a_send_stuck_through_a_rebalance_is_handed_off_then_acked() -> None:
    """Faust waits for every event in flight to be acked before a rebalance completes: a send
    that hangs past the drain timeout is put back on its topic for the next owner, then
    cancelled and acked, so the group moves on; the sends that finish are acked as usual."""
    acks: list[tuple[int, int]] = []
    all_acked = asyncio.Event()

    class Event(FakeEvent):
        def ack(self) -> bool:
            super().ack()
            if len(acks) == 3:
                all_acked.set()
            return True

    events = [Event(0, i, acks) for i in range(3)]
    handed: list[int] = []
    cancelled: list[int] = []
    rebalancing = False

    async def handle(event: FakeEvent) -> None:
        if event.offset == 1:
            try:
                await asyncio.sleep(3600)  # a provider that never answers
            except asyncio.CancelledError:
                cancelled.append(event.offset)
                raise

    async def hand_off(event: FakeEvent) -> None:
        assert (0, event.offset) not in acks, "handed off before it is acked"
        handed.append(event.offset)

    async def never(*_: Any) -> None:
        raise AssertionError("not called")

    async def stream() -> Any:
        nonlocal rebalancing
        for event in events:
            yield event
        await asyncio.sleep(0.05)
        assert acks == [(0, 0)], "the stuck send holds the acks behind it"
        rebalancing = True
        await all_acked.wait()

    run = run_overlapped(
        stream(),
        handle,
        max_in_flight=4,
        drain_timeout=0.2,
        on_error=never,
        on_fatal=never,
        rebalancing=lambda: rebalancing,
        hand_off=hand_off,
    )
    await asyncio.wait_for(run, timeout=10)
    assert handed == [1] and cancelled == [1]
    assert acks == [(0, 0), (0, 1), (0, 2)]


async def test_weighted_events_bound_the_units_in_flight_not_the_events() -> None:
    """A batch of jobs weighs its jobs: with room for 10 units, batches of 4 run two at a time,
    a batch heavier than the whole runs alone, and everything is acked in order."""
    acks: list[tuple[int, int]] = []
    weights = [4, 4, 4, 1, 1, 25, 4, 2]
    events = [FakeEvent(0, i, acks) for i in range(len(weights))]
    running = 0
    peak = 0

    async def handle(payload: tuple[FakeEvent, int]) -> None:
        nonlocal running, peak
        _, weight = payload
        running += min(weight, 10)
        peak = max(peak, running)
        await asyncio.sleep(0.001)
        running -= min(weight, 10)

    async def never(*_: Any) -> None:
        raise AssertionError("not called")

    await run_overlapped(
        _events(events),
        handle,
        max_in_flight=10,
        drain_timeout=5,
        on_error=never,
        on_fatal=never,
        prepare=lambda e: ((e, weights[e.offset]), weights[e.offset]),
    )
    assert peak == 10
    assert acks == [(0, i) for i in range(len(weights))]


async def test_an_event_that_cannot_be_prepared_goes_to_the_error_policy_in_order() -> None:
    acks: list[tuple[int, int]] = []
    events = [FakeEvent(0, i, acks) for i in range(3)]
    failed: list[int] = []

    def prepare(event: FakeEvent) -> tuple[FakeEvent, int]:
        if event.offset == 1:
            raise ValueError("not JSON")
        return event, 1

    async def handle(event: FakeEvent) -> None:
        await asyncio.sleep(0)

    async def on_error(event: FakeEvent, exc: Exception) -> None:
        assert isinstance(exc, ValueError)
        failed.append(event.offset)

    async def never(*_: Any) -> None:
        raise AssertionError("not called")

    await run_overlapped(
        _events(events),
        handle,
        max_in_flight=4,
        drain_timeout=5,
        on_error=on_error,
        on_fatal=never,
        prepare=prepare,
    )
    assert failed == [1]
    assert acks == [(0, 0), (0, 1), (0, 2)]
