"""Overlapping provider I/O inside one agent without ever committing past unfinished work.

Faust's agent ``concurrency>1`` can commit an offset past a message still being processed
(faust #606). The mechanism is in the consumer's commit arithmetic: ``Consumer._new_offset``
commits the first run of consecutive acked offsets, and its guard against a hole at the head
(``min(acked) - committed > 1``) lets exactly one unacked offset through, and is skipped
entirely while the committed offset is 0. Acks that arrive out of order therefore lose messages
on a crash (``tests/unit/test_inflight.py`` reproduces this against Faust's own code).

So the dispatch agents run with concurrency 1, start many sends as tasks, and acknowledge
strictly in offset order per partition: an event is acked only when it and every event before
it on its partition have finished. Faust then only ever sees in-order acks, for which its
commit arithmetic is right. The cost is head-of-line blocking of acks, not of sends: a slow
send delays the commit of the ones after it, never their sending.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

__all__ = ["Ackable", "InOrderAcker", "run_overlapped"]


class Ackable(Protocol):
    """What the acker needs of a Faust event (``faust.types.EventT``)."""

    @property
    def message(self) -> Any: ...

    def ack(self) -> bool: ...


class _Slot:
    __slots__ = ("done", "event", "handed_off", "task")

    def __init__(self, event: Ackable) -> None:
        self.event = event
        self.done = False
        self.handed_off = False
        self.task: asyncio.Task[None] | None = None


class InOrderAcker:
    """Acks events in offset order per topic-partition, whatever order they finish in."""

    def __init__(self) -> None:
        self._queues: dict[tuple[str, int], deque[_Slot]] = {}

    def track(self, event: Ackable) -> _Slot:
        """Register ``event`` as started. Events must be tracked in the order they arrive."""
        slot = _Slot(event)
        tp = (event.message.topic, event.message.partition)
        self._queues.setdefault(tp, deque()).append(slot)
        return slot

    def finish(self, slot: _Slot) -> int:
        """Mark ``slot`` finished; ack every finished event at the head of its partition.
        Returns how many events were acked."""
        if slot.done:
            return 0
        slot.done = True
        tp = (slot.event.message.topic, slot.event.message.partition)
        queue = self._queues[tp]
        acked = 0
        while queue and queue[0].done:
            queue.popleft().event.ack()
            acked += 1
        if not queue:
            del self._queues[tp]
        return acked

    @property
    def pending(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def unfinished(self) -> list[_Slot]:
        return [slot for queue in self._queues.values() for slot in queue if not slot.done]


class _Capacity:
    """Units of work in flight (a batch of jobs weighs its jobs), taken by one acquirer (the
    stream's loop) and given back by the handlers as they finish."""

    def __init__(self, total: int) -> None:
        self.total = max(1, total)
        self.free = self.total
        self._freed = asyncio.Event()

    async def acquire(self, units: int) -> int:
        units = min(max(1, units), self.total)  # a batch heavier than the whole fits alone
        while self.free < units:
            self._freed.clear()
            await self._freed.wait()
        self.free -= units
        return units

    def release(self, units: int) -> None:
        self.free += units
        self._freed.set()


def _one(event: Any) -> tuple[Any, int]:
    return event, 1


async def run_overlapped(
    events: Any,
    handle: Callable[[Any], Awaitable[None]],
    *,
    max_in_flight: int,
    prepare: Callable[[Any], tuple[Any, int]] = _one,
    drain_timeout: float,
    on_error: Callable[[Any, Exception], Awaitable[None]],
    on_fatal: Callable[[BaseException], Awaitable[None]],
    rebalancing: Callable[[], bool] | None = None,
    hand_off: Callable[[Any], Awaitable[None]] | None = None,
) -> None:
    """Run ``handle`` for each event of ``events`` (an async iterator of un-acked Faust events),
    up to ``max_in_flight`` units of work at a time, acking in order.

    ``prepare(event)`` returns what ``handle`` is called with and the event's weight in units
    (by default the event itself, weighing 1): a batch of jobs weighs its jobs, so the bound
    is on sends in flight, whatever the records carry. An event heavier than ``max_in_flight``
    runs alone. A ``prepare`` that raises is a failure of the event (``on_error``).

    Each handler runs as a task created while its event is the stream's current event, so the
    task's context carries that event and table writes inside it land on the event's partition.

    Failure modes:
        * ``handle`` raises: ``on_error(event, exc)`` decides what the failure means (the
          dispatcher reports it); the event is acked after it returns. Faust's default of
          silently acking a failed event never applies.
        * ``on_error`` raises too (Kafka itself is failing): the event is never acked and
          ``on_fatal`` is awaited; it should stop the worker, so the partition's next owner
          processes the event again from the committed offset.
        * the stream stops (shutdown): sends in flight get ``drain_timeout`` seconds to finish,
          so their events are acked rather than sent again by the next owner.
        * partitions are being taken away (``rebalancing()``): Faust waits for every event in
          flight to be acked before the group can move on, so a send still unfinished after
          ``drain_timeout`` is *handed off*: ``hand_off(event)`` puts a copy of its event back
          on its topic (the next owner sends it), and only then is it cancelled and acked. A
          provider that hangs never holds a rebalance (and every other worker) hostage.
    """
    acker = InOrderAcker()
    slots = _Capacity(max_in_flight)
    tasks: set[asyncio.Task[None]] = set()

    async def run(event: Any, slot: _Slot, payload: Any, units: int) -> None:
        try:
            try:
                if isinstance(payload, _Unprepared):
                    raise payload.error
                await handle(payload)
            except Exception as exc:  # noqa: BLE001 - the error policy decides, not Faust
                await on_error(event, exc)
        except asyncio.CancelledError:
            slots.release(units)
            raise  # not acked (unless handed off): processed again by the partition's next owner
        except BaseException as exc:  # noqa: BLE001
            slots.release(units)
            await on_fatal(exc)
            return
        slots.release(units)
        acker.finish(slot)

    watchdog = (
        asyncio.create_task(
            _hand_off_when_stuck(acker, rebalancing, hand_off, drain_timeout, on_fatal)
        )
        if rebalancing is not None and hand_off is not None
        else None
    )
    try:
        async for event in events:
            payload: Any
            try:
                payload, weight = prepare(event)
            except Exception as exc:  # noqa: BLE001 - reported by on_error, in order
                payload, weight = _Unprepared(exc), 1
            units = await slots.acquire(weight)
            slot = acker.track(event)
            task = slot.task = asyncio.create_task(run(event, slot, payload, units))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
    finally:
        if watchdog is not None:
            watchdog.cancel()
        if tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(asyncio.wait(set(tasks), timeout=drain_timeout))


class _Unprepared:
    """An event whose ``prepare`` failed: its handler reports the error."""

    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
        self.error = error


async def _hand_off_when_stuck(
    acker: InOrderAcker,
    rebalancing: Callable[[], bool],
    hand_off: Callable[[Any], Awaitable[None]],
    drain_timeout: float,
    on_fatal: Callable[[BaseException], Awaitable[None]],
) -> None:
    """During a rebalance, hand off the events still unfinished after ``drain_timeout``."""
    loop = asyncio.get_running_loop()
    since: float | None = None
    while True:
        await asyncio.sleep(0.25)
        if not rebalancing():
            since = None
            continue
        since = since if since is not None else loop.time()
        if loop.time() - since < drain_timeout:
            continue
        for slot in acker.unfinished():
            if slot.handed_off:
                continue
            try:
                await hand_off(slot.event)
            except Exception as exc:  # noqa: BLE001 - Kafka failing: stop without acking
                await on_fatal(exc)
                return
            slot.handed_off = True
            if slot.task is not None:
                slot.task.cancel()
            acker.finish(slot)
