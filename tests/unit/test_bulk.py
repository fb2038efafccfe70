"""The status producer's batches (streams/bulk.py): one future per turn of the event loop,
resolved only when every record of the batch is acknowledged, failed by any refusal; delivery
reports served on the event loop while records await theirs. The
producer itself runs against the real broker in every integration test that reads statuses."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

import pytest
from confluent_kafka import KafkaError

from streams import bulk
from streams.bulk import _Batch


async def test_a_batch_resolves_once_sealed_and_every_record_acknowledged() -> None:
    batch = _Batch(asyncio.get_running_loop())
    batch.pending = 2
    batch.delivered(None, None)
    batch.delivered(None, None)  # every record so far acknowledged, but more may join
    await asyncio.sleep(0)
    assert not batch.future.done(), "an open batch is never resolved"
    batch.pending += 1
    batch.seal()
    assert not batch.future.done()
    batch.delivered(None, None)  # from the producer's pump in production
    await asyncio.wait_for(batch.future, 1)


async def test_a_sealed_batch_with_nothing_pending_resolves_at_once() -> None:
    batch = _Batch(asyncio.get_running_loop())
    batch.seal()
    assert batch.future.done() and batch.future.result() == {}


async def test_one_refused_record_fails_the_batch() -> None:
    batch = _Batch(asyncio.get_running_loop())
    batch.pending = 2
    batch.seal()
    batch.delivered(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE), None)
    batch.delivered(None, None)
    with pytest.raises(RuntimeError, match="refused"):
        await asyncio.wait_for(batch.future, 1)


class _Message:
    """What a delivery report tells of its record."""

    def __init__(self, topic: str, partition: int, offset: int) -> None:
        self._where = (topic, partition, offset)

    def topic(self) -> str:
        return self._where[0]

    def partition(self) -> int:
        return self._where[1]

    def offset(self) -> int:
        return self._where[2]


class _FakeProducer:
    """librdkafka as the pump sees it: records wait for their delivery report until ``poll``."""

    def __init__(self, _config: dict[str, Any]) -> None:
        self.waiting: list[Callable[[KafkaError | None, Any], None]] = []
        self.polls = 0

    def produce(self, *_args: Any, on_delivery: Callable[..., None], **_kw: Any) -> None:
        self.waiting.append(on_delivery)

    def poll(self, _timeout: float) -> int:
        self.polls += 1
        served, self.waiting = self.waiting, []
        for offset, report in enumerate(served):
            report(None, _Message("t", 0, offset))
        return len(served)

    def __len__(self) -> int:
        return len(self.waiting)

    def flush(self, _timeout: float) -> int:
        return self.poll(0) and 0


async def test_a_cancelled_batch_stops_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """An awaiting gather that gives up cancels the shared future: nothing was refused, so the
    worker is not stopped (``BulkProducer._check``)."""
    monkeypatch.setattr(bulk, "Producer", _FakeProducer)
    stopped: list[BaseException] = []
    checker = bulk.BulkProducer({}, stopped.append, "test")
    batch = _Batch(asyncio.get_running_loop())
    batch.future.cancel()
    checker._check(batch.future)
    failed = _Batch(asyncio.get_running_loop())
    failed.future.set_exception(RuntimeError("the broker refused a record"))
    checker._check(failed.future)
    assert [str(e) for e in stopped] == ["the broker refused a record"]


async def test_delivery_reports_are_served_on_the_loop_until_none_is_awaited(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(bulk, "Producer", _FakeProducer)
    producer = bulk.BulkProducer({}, lambda exc: None, "test")
    fake = cast(_FakeProducer, producer._producer)
    futures = [await producer.produce("t", b"k", b"v") for _ in range(3)]
    assert futures[0] is futures[2], "one future for the records of one turn of the loop"
    assert fake.polls == 0, "no report is served in the turn that produced"
    await asyncio.wait_for(futures[0], 1)  # served by the pump, no thread
    polls = fake.polls
    await asyncio.sleep(0.02)
    assert fake.polls == polls, "nothing awaits a report: the pump stops"
    again = await producer.produce("t", b"k", b"v")
    await asyncio.wait_for(again, 1)  # and starts again with the next record
    assert producer.close(1) == 0


class _FullOnce(_FakeProducer):
    """librdkafka whose queue is full at the first record: ``BufferError`` until a report is
    served (the broker acknowledged what was queued)."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.refused = 0

    def produce(self, *args: Any, on_delivery: Callable[..., None], **kw: Any) -> None:
        if self.refused == 0:
            self.refused += 1
            raise BufferError("queue full")
        super().produce(*args, on_delivery=on_delivery, **kw)


async def test_a_full_queue_waits_for_room_and_the_record_joins_a_live_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(bulk, "Producer", _FullOnce)
    producer = bulk.BulkProducer({}, lambda exc: None, "test")
    fake = cast(_FullOnce, producer._producer)
    row = await producer.produce_row("t", 0, b"k", b"v")  # refused once, then taken
    located = await producer.produce_located("t", b"k", b"v")
    assert fake.refused == 1
    # Each batch counted its record once: resolved by that record's one report.
    assert await asyncio.wait_for(row, 1) == {("t", 0): 0}
    assert await asyncio.wait_for(located, 1) == bulk.Located("t", 0, 1)  # queued second
    assert producer.close(1) == 0


class _RoomFor(_FakeProducer):
    """librdkafka whose queue holds ``room`` records: ``BufferError`` beyond, until a report is
    served (the broker acknowledged what was queued). Remembers each record's value, in order."""

    room = 2

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.values: list[bytes] = []

    def produce(self, _topic: str, value: bytes, *_args: Any, **kw: Any) -> None:
        if len(self.waiting) >= self.room:
            raise BufferError("queue full")
        self.values.append(value)
        super().produce(on_delivery=kw["on_delivery"])


async def test_many_records_stop_at_a_full_queue_and_count_only_those_taken(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``produce_many_nowait`` enqueues in order until the queue is full and says how many it
    enqueued: the batch waits for exactly those (one more pending record would never resolve
    it; one fewer would resolve it before the broker has them all)."""
    monkeypatch.setattr(bulk, "Producer", _RoomFor)
    producer = bulk.BulkProducer({}, lambda exc: None, "test")
    fake = cast(_RoomFor, producer._producer)
    records: list[bulk.Keyed] = [(b"k", f"v{i}".encode(), None) for i in range(5)]
    future, handed = producer.produce_many_nowait("t", records)
    assert handed == 2 and future is not None
    assert producer.produce_many_nowait("t", records, 2) == (None, 0), "still full"
    await asyncio.sleep(0)  # the batch is sealed; no report served yet (the pump waits 1 ms)
    assert not future.done(), "resolved before the broker acknowledged the records"
    waited = await producer.produce("t", *records[2])  # waits for room: the pump serves reports
    rest, handed = producer.produce_many_nowait("t", records, 3)
    assert handed == 1  # the queue holds two: the third record and this one
    assert fake.values == [b"v0", b"v1", b"v2", b"v3"], "in order, each once"
    await asyncio.wait_for(asyncio.gather(future, waited, *([rest] if rest else [])), 1)
    assert producer.close(1) == 0
