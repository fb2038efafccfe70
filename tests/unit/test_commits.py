"""The producer flush Faust commits behind (streams/producer.py), and routing's partitioner.

Faust commits an offset right after ``producer.flush()``; its own buffer flush returns after
0.1 s without progress, with table writes still waiting. Switchboard's waits for all of them,
including the one being handed to aiokafka.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections import defaultdict
from types import SimpleNamespace
from typing import Any
from weakref import WeakSet

import pytest
from aiokafka.partitioner import DefaultPartitioner
from faust.transport.consumer import Consumer as FaustConsumer
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.transport.producer import ProducerBuffer
from faust.types import TP
from intervaltree import IntervalTree
from mode.utils.futures import maybe_async

from streams.commits import SafeConsumer, _DurableBuffer, _SeekingThread
from streams.web.routing import partition_of


class SlowChannel:
    """A topic whose publish takes as long as the test says (aiokafka's accumulator is full)."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.published: list[Any] = []

    async def publish_message(self, fut: Any, wait: bool = False) -> None:
        await self.release.wait()
        self.published.append(fut)


def message(channel: SlowChannel) -> Any:
    return SimpleNamespace(message=SimpleNamespace(channel=channel))


async def buffer_with(cls: type[ProducerBuffer], channel: SlowChannel, n: int) -> ProducerBuffer:
    buffer = cls()
    buffer.app = SimpleNamespace(conf=SimpleNamespace(producer_threaded=False))  # type: ignore[assignment]
    await buffer.start()
    for _ in range(n):
        buffer.put(message(channel))  # type: ignore[arg-type]
    await asyncio.sleep(0)
    return buffer


async def test_faust_s_own_flush_returns_with_writes_still_waiting() -> None:
    """Why the durable buffer exists: the premise, against Faust's own code."""
    channel = SlowChannel()
    buffer = await buffer_with(ProducerBuffer, channel, 3)
    try:
        await asyncio.wait_for(buffer.flush(), timeout=5)
        assert channel.published == [], "Faust's flush returned before anything was sent"
    finally:
        channel.release.set()
        await asyncio.wait_for(buffer.flush(), timeout=5)  # Faust's flush, now unblocked
        await asyncio.sleep(0.05)
        await buffer.stop()


async def test_the_durable_flush_waits_for_every_write_even_the_one_handed_over() -> None:
    channel = SlowChannel()
    buffer = await buffer_with(_DurableBuffer, channel, 3)
    try:
        flush = asyncio.ensure_future(buffer.flush())
        await asyncio.sleep(0.5)
        assert not flush.done(), "a flush with writes waiting must wait"
        channel.release.set()
        await asyncio.wait_for(flush, timeout=5)
        assert len(channel.published) == 3
    finally:
        channel.release.set()
        await buffer.stop()


async def test_a_full_buffer_holds_the_conductor_until_a_batch_of_writes_is_handed_over() -> None:
    """Faust's ``wait_until_ebb``, without a task per record: past ``max_messages`` waiting,
    the conductor waits for that many to be handed over; under it, not at all; when nothing
    moves for 0.1 s, it is given back."""
    channel = SlowChannel()
    buffer = await buffer_with(_DurableBuffer, channel, 5)
    buffer.max_messages = 2
    try:
        stuck = asyncio.ensure_future(buffer.wait_until_ebb())
        await asyncio.wait_for(stuck, timeout=5)  # nothing moves: given back after 0.1 s
        waiting = asyncio.ensure_future(buffer.wait_until_ebb())
        await asyncio.sleep(0)
        assert not waiting.done()
        channel.release.set()
        await asyncio.wait_for(waiting, timeout=5)
        await asyncio.wait_for(buffer.flush(), timeout=5)
        assert len(channel.published) == 5
        await asyncio.wait_for(buffer.wait_until_ebb(), timeout=0.05)  # empty: at once
    finally:
        channel.release.set()
        await buffer.stop()


def test_routing_places_a_key_where_kafka_s_default_partitioner_does() -> None:
    partitioner = DefaultPartitioner()
    rng = random.Random(7)
    for _ in range(500):
        key = rng.randbytes(rng.randint(1, 40))
        for partitions in (1, 4, 8, 12):
            assert partition_of(key, partitions) == partitioner(key, list(range(partitions)), [])


# -- the consumer's commits ------------------------------------------------------------------

TOPIC = "comms.sessions"
TP0 = TP(TOPIC, 0)


def faust_commit(
    committed: int | None, acked: list[int], gap: tuple[int, int] | None = None
) -> int | None:
    """What Faust 0.15.3 commits for one partition (its own ``_new_offset``)."""
    gaps: defaultdict[TP, IntervalTree] = defaultdict(IntervalTree)
    if gap is not None:
        gaps[TP0].addi(*gap)
    state = SimpleNamespace(
        _acked={TP0: list(acked)},
        _acked_index={TP0: set(acked)},
        _gap=gaps,
        _committed_offset={TP0: committed},
    )
    result: int | None = FaustConsumer._new_offset(state, TP0)  # type: ignore[arg-type]
    return result


def test_faust_commits_past_a_gap_no_agent_processed() -> None:
    """A record fetched before a seek arrives after it, 16 offsets ahead: Faust records a gap
    (331..345) and, once that record is acknowledged, commits past records that never reached
    an agent (and drops them when they come again: they are below its last read offset)."""
    assert faust_commit(329, [330, 346], gap=(331, 346)) == 347


def test_faust_commits_any_run_once_a_revocation_made_it_forget_its_offset() -> None:
    """Acks of 335..340 arriving after Faust forgot the committed offset (330) at a revocation:
    it commits 341 although 330..334 were never processed."""
    assert faust_commit(None, [335, 336, 337, 338, 339, 340]) == 341


class _Message:
    def __init__(self, offset: int, tp: TP = TP0) -> None:
        self.tp, self.offset, self.topic, self.acked = tp, offset, tp.topic, False


def safe_consumer(resume_at: int) -> Any:
    """The commit bookkeeping of :class:`SafeConsumer`, without a broker."""
    consumer: Any = SafeConsumer.__new__(SafeConsumer)
    consumer._next, consumer._done = {TP0: resume_at}, defaultdict(set)
    consumer._unacked_messages, consumer._n_acked, consumer._waiting_for_ack = WeakSet(), 0, None
    return consumer


def commits(consumer: Any) -> dict[TP, int]:
    result: dict[TP, int] = consumer._filter_committable_offsets(
        consumer._filter_tps_with_pending_acks()
    )
    return result


def test_the_safe_consumer_commits_only_the_contiguous_run_processed() -> None:
    consumer = safe_consumer(330)
    for offset in (335, 336, 337, 338, 339, 340):  # the same acks as above
        consumer.ack(_Message(offset))
    assert commits(consumer) == {}, "330..334 are not processed: nothing may be committed"
    for offset in (330, 331, 333):
        consumer.ack(_Message(offset))
    assert commits(consumer) == {TP0: 332}
    consumer.ack(_Message(332))
    consumer.ack(_Message(334))
    assert commits(consumer) == {TP0: 341}
    assert commits(consumer) == {}, "nothing new"


def test_a_record_processed_twice_counts_once() -> None:
    consumer = safe_consumer(10)
    for offset in (10, 11, 10, 11, 12):  # a repeat after a seek: new message objects
        consumer.ack(_Message(offset))
    assert commits(consumer) == {TP0: 13}
    consumer.ack(_Message(12))  # acknowledged again after its commit: ignored
    assert commits(consumer) == {}


def test_a_partition_not_seeked_yet_commits_nothing() -> None:
    consumer = safe_consumer(0)
    other = TP(TOPIC, 1)
    consumer.ack(_Message(0, other))
    assert commits(consumer) == {}


# -- the consumer's delivery order -------------------------------------------------------------


class _Ordering:
    """A SafeConsumer's delivery rule, with the broker calls it makes recorded."""

    def __init__(self, due: int | None, earliest: int = 0) -> None:
        consumer: Any = SafeConsumer.__new__(SafeConsumer)
        consumer._next, consumer._done = {}, defaultdict(set)
        consumer._due = {TP0: due} if due is not None else {}
        consumer._sought, consumer._checked = {}, {}
        consumer._epoch, consumer._fetched = defaultdict(int), {}
        consumer.app = SimpleNamespace(
            topics=SimpleNamespace(acks_enabled_for=lambda t: t == TOPIC)
        )
        consumer.log = SimpleNamespace(warning=lambda *a, **k: None)
        self.delivered: list[int] = []
        self.seeks: list[int] = []

        async def deliver(message: Any) -> None:
            self.delivered.append(message.offset)

        async def seek(tp: TP, offset: int) -> None:
            consumer._sought_now([tp])
            self.seeks.append(offset)

        async def earliest_offsets(*tps: TP) -> dict[TP, int]:
            return {tp: earliest for tp in tps}

        async def seek_wait(partitions: dict[TP, int]) -> None:
            consumer._sought_now(partitions)

        consumer._deliver, consumer.seek, consumer.seek_wait = deliver, seek, seek_wait
        consumer.earliest_offsets = earliest_offsets
        self.consumer = consumer

    def fetched(self) -> None:
        """A new fetch: what it returns follows every seek so far."""
        self.consumer._fetched = dict(self.consumer._epoch)

    async def feed(self, *offsets: int, tp: TP = TP0) -> None:
        for offset in offsets:
            await self.consumer._in_order(_Message(offset, tp))


async def test_records_reach_the_agents_in_offset_order_and_once() -> None:
    ordering = _Ordering(due=10)
    await ordering.feed(10, 11, 11, 10, 12)
    assert ordering.delivered == [10, 11, 12] and ordering.seeks == []


async def test_a_record_beyond_the_one_due_is_held_back_and_the_partition_read_again() -> None:
    """After a rebalance cleared the agents' queues (13 and 14 were in them), records fetched
    before the seek (15, 16) arrive first: they wait, and the partition is read again from 13."""
    ordering = _Ordering(due=13)
    await ordering.feed(15, 16)
    assert ordering.delivered == [] and ordering.seeks == [13]
    ordering.fetched()
    await ordering.feed(13, 14, 15, 16)
    assert ordering.delivered == [13, 14, 15, 16] and ordering.seeks == [13]


async def test_nothing_is_handed_over_while_a_partition_is_revoked() -> None:
    ordering = _Ordering(due=None)
    await ordering.feed(3, 4)
    assert ordering.delivered == []


async def test_records_removed_by_retention_before_processing_are_not_waited_for() -> None:
    ordering = _Ordering(due=5, earliest=8)
    await ordering.feed(8)  # the first time: read again from 5 (it may be a jump)
    ordering.fetched()
    await ordering.feed(8, 9)  # from 5 again it starts at 8: retention removed 5..7
    assert ordering.delivered == [8, 9] and ordering.seeks == [5]
    assert ordering.consumer._next[TP0] == 8


async def test_a_changelog_record_is_never_held() -> None:
    ordering = _Ordering(due=None)
    await ordering.feed(7, 3, tp=TP("sb-sessions-changelog", 0))
    assert ordering.delivered == [7, 3]


async def test_a_record_fetched_before_its_partition_was_sought_is_never_handed_over() -> None:
    """A table changelog read by recovery: a record fetched before recovery sought the partition
    (ahead of the seek) would make recovery skip every record between the two."""
    changelog = TP("sb-sessions-changelog", 3)
    ordering = _Ordering(due=None)
    ordering.fetched()
    await ordering.consumer.seek_wait(
        {changelog: 63}
    )  # recovery seeks while a batch is handed over
    await ordering.feed(71, 72, tp=changelog)  # the rest of the batch fetched before the seek
    assert ordering.delivered == []
    ordering.fetched()
    await ordering.feed(63, 64, 65, tp=changelog)
    assert ordering.delivered == [63, 64, 65]


class _ConsumerThread:
    """The consumer's own thread (a loop of its own, as Faust's), running a
    :class:`_SeekingThread`'s calls there over a stand-in of aiokafka's consumer that records
    in which thread it was sought (a test stands in for aiokafka's fetcher where it needs one)."""

    def __init__(self, consumer: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self._runner = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._runner.start()
        self.seeks: list[tuple[TP, int, int]] = []
        aiokafka = SimpleNamespace(
            seek=lambda tp, offset: self.seeks.append((tp, offset, threading.get_ident()))
        )
        thread: Any = _SeekingThread.__new__(_SeekingThread)
        thread.consumer = consumer
        thread._ensure_consumer = lambda: aiokafka
        thread.seek = aiokafka.seek  # Faust's: aiokafka's seek, in whichever thread calls it
        thread.call_thread = self._call
        self.thread: _SeekingThread = thread
        consumer._thread = thread
        consumer._applied, consumer._drained = {}, {}

    async def _call(self, fun: Any, *args: Any) -> Any:
        async def call() -> Any:
            return await maybe_async(fun(*args))

        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(call(), self.loop))

    async def fetch(self) -> None:
        """Faust's fetch: a batch taken from aiokafka's fetcher in the consumer's thread."""
        await self._call(self.thread._fetch_records, None, set())

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._runner.join(5)
        self.loop.close()


async def test_a_seek_is_made_in_the_consumers_thread_never_from_the_workers_loop() -> None:
    """aiokafka's fetcher runs in the consumer's thread; a seek made from the worker's loop
    emptied its buffer while it iterated over it, and the worker crashed (``KeyError`` in
    ``fetched_records``, seen in the soaks)."""
    ordering = _Ordering(due=46)
    consumer = ordering.consumer
    del consumer.seek  # the real seek, not _Ordering's stand-in
    consumer._read_offset = {}
    consumer.log = SimpleNamespace(dev=lambda *a, **k: None)
    own = _ConsumerThread(consumer)
    try:
        await consumer.seek(TP0, 46)  # a seek back (SafeConsumer._jumped)
    finally:
        own.stop()
    [(tp, offset, ident)] = own.seeks
    assert (tp, offset) == (TP0, 46) and ident != threading.get_ident()
    assert consumer._applied[TP0] == consumer._epoch[TP0] == 1


async def test_records_taken_from_the_fetcher_before_their_seek_was_made_are_stale(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The seek is counted at once and made a moment later in the consumer's thread: a batch
    the thread takes from aiokafka's buffer in between was fetched before the seek, and is not
    handed over; one taken after the seek is."""
    changelog = TP("sb-sessions-changelog", 3)
    ordering = _Ordering(due=None)
    consumer = ordering.consumer
    own = _ConsumerThread(consumer)

    async def fetched_records(*args: Any, **kwargs: Any) -> dict[TP, list[Any]]:
        return {}

    async def wait_next_records(self: Any, timeout: float) -> Any:
        await own.fetch()  # Faust's fetch, through the consumer's thread
        return {}, set()

    monkeypatch.setattr(AIOKafkaConsumerThread, "_fetch_records", fetched_records)
    monkeypatch.setattr(FaustConsumer, "_wait_next_records", wait_next_records)
    try:
        consumer._sought_now([changelog])  # recovery asks for a seek to 63 ...
        await consumer._wait_next_records(1.0)  # ... and a batch is taken before it is made
        await ordering.feed(71, 72, tp=changelog)
        assert ordering.delivered == []
        await own.thread.seek_as({changelog: 63}, {changelog: 1}, wait=False)
        await consumer._wait_next_records(1.0)
        await ordering.feed(63, 64, tp=changelog)
    finally:
        own.stop()
    assert ordering.delivered == [63, 64]
    assert [offset for _, offset, _ in own.seeks] == [63]


async def test_records_handed_over_then_cleared_from_the_queues_are_read_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Faust resumes flow (which clears every agent's queue) after records already flowed: the
    records handed over but still in a queue (46) were dropped without being processed, and
    the partition was read on from 47. The consumer reads again from the first offset not known
    to be processed."""
    from faust.transport.drivers.aiokafka import Consumer

    ordering = _Ordering(due=46)
    ordering.consumer._next[TP0] = 46
    await ordering.feed(46)  # into the agent's queue
    assert ordering.delivered == [46]
    sought: list[int] = []

    async def broker_seek(self: Any, tp: TP, offset: int) -> None:
        sought.append(offset)

    monkeypatch.setattr(Consumer, "seek", broker_seek)
    ordering.consumer.log = SimpleNamespace(warning=lambda *a, **k: None, info=lambda *a, **k: None)
    ordering.consumer.queues_cleared()  # flow_control.resume(): the queue is emptied
    await ordering.consumer._reseek
    assert sought == [46]
    await ordering.feed(47)  # fetched before the seek back: stale, not handed over
    ordering.fetched()
    await ordering.feed(46, 47)
    assert ordering.delivered == [46, 46, 47], "46 is handed over again, then 47"


def test_the_apps_flow_control_tells_the_consumer_when_it_clears_the_queues() -> None:
    from streams.commits import _FlowControl

    told: list[str] = []
    consumer: Any = SafeConsumer.__new__(SafeConsumer)
    consumer.queues_cleared = lambda: told.append("cleared")
    flow = _FlowControl(SimpleNamespace(_consumer=consumer))  # type: ignore[arg-type]
    flow.resume()  # Faust's resume clears every agent's queue
    assert told == ["cleared"]


async def test_changelog_records_cleared_from_recoverys_queue_are_read_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Table recovery's queue is cleared with the agents' (Faust's ``clear_on_resume``): the
    changelog records in it were never applied, and recovery takes only records beyond the last
    it took. Each changelog partition is read again after that one, or the local store (kept
    through a clean stop) would miss rows the changelog has."""
    from faust.transport.drivers.aiokafka import Consumer

    standby, active = TP("sb-deliveries-changelog", 2), TP("sb-sessions-changelog", 1)
    ordering = _Ordering(due=None)
    ordering.consumer.app.tables = SimpleNamespace(
        _recovery=SimpleNamespace(
            active_tps={active},
            active_offsets={active: 9},
            standby_tps={standby},
            standby_offsets={standby: 341},
        )
    )
    sought: dict[TP, int] = {}

    async def broker_seek(self: Any, tp: TP, offset: int) -> None:
        sought[tp] = offset

    monkeypatch.setattr(Consumer, "seek", broker_seek)
    ordering.consumer.log = SimpleNamespace(warning=lambda *a, **k: None, info=lambda *a, **k: None)
    ordering.consumer.queues_cleared()
    await ordering.consumer._reseek
    assert sought == {standby: 342, active: 10}
    await ordering.feed(343, tp=standby)  # fetched before the seek back: stale
    assert ordering.delivered == []


async def test_faust_s_flush_waits_for_the_other_producers_and_fails_with_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Faust flushes its producer before every commit of offsets: the flush must also wait
    for the agents' outputs in librdkafka (``streams/bulk.py``), and fail when one of them was
    refused, so that no offset is committed past an output that is not in Kafka."""
    from faust.transport.drivers.aiokafka import Producer

    from streams.commits import DurableProducer, ProducerFailed

    async def faust_flush(self: Any) -> None:
        return None

    monkeypatch.setattr(Producer, "flush", faust_flush)
    producer = DurableProducer.__new__(DurableProducer)
    release = asyncio.Event()
    waited: list[str] = []

    async def drained() -> None:
        await release.wait()
        waited.append("drained")

    producer.flush_also(drained)
    flushing = asyncio.ensure_future(producer.flush())
    await asyncio.sleep(0.01)
    assert not flushing.done()  # still waiting for the other producer's acknowledgements
    release.set()
    await flushing
    assert waited == ["drained"]

    async def refused() -> None:
        raise RuntimeError("the broker refused a record")

    producer.flush_also(refused)
    with pytest.raises(ProducerFailed):
        await producer.flush()
