"""Committing only what is durably done: Faust's producer and consumer, with their promises kept.

Faust commits an offset after ``producer.flush()``, so that whatever the processed events wrote
is in Kafka first, and only past events its streams acknowledged. These break that promise
in faust-streaming 0.15.3.

The producer (:class:`DurableProducer`):

* Table writes go through a buffer (:class:`faust.transport.producer.ProducerBuffer`) that a
  background task hands to aiokafka one record at a time. Its ``flush`` gives up as soon as
  one record takes more than 0.1 s to be handed over (aiokafka's accumulator is full, the
  broker is slow), and returns with records still waiting; and a record being handed over is
  neither in the buffer nor in aiokafka. The commit then goes ahead without them.
* A record the broker refuses (after aiokafka's retries) only sets its future's exception,
  which nobody awaits: the offsets of the events that wrote it are committed all the same.

:class:`DurableProducer` fixes both: its flush waits until the buffer is empty *and* nothing is
being handed over, then flushes aiokafka; and the first refused record makes every later flush
raise (so no offset is committed again) and stops the worker. The partition's next owner
processes the events again from the last offset committed before the failure.

The consumer (:class:`SafeConsumer`):

* Faust skips offsets it believes missing: a record whose offset is beyond the last one read
  opens a *gap*, and the commit moves past the gap as if its records were done. After the
  seeks of a rebalance, a record fetched before the seek can arrive after it, and the records it
  jumped over are committed without ever reaching an agent (seen with two workers under load:
  whole sessions never opened).
* Faust drops a record whose offset is below the last one read, as a duplicate; after such a
  seek, the very records that were jumped over are dropped when they come again.
* Faust forgets its committed offsets at the start of a revocation, and then commits the first
  run of acknowledged offsets, wherever it starts.
* A rebalance clears the agents' queues, but records fetched before it keep arriving after it:
  an agent then processes a record before one that precedes it (a session's fan-out before its
  audience; a report after a later one of the same delivery).
* Faust's seek of one partition (``Consumer.seek``, used below to read an agent's partition
  again from the record due, and every changelog partition after the agents' queues were
  cleared) calls aiokafka's ``seek`` from the worker's event loop, while aiokafka's fetcher runs
  in the consumer's own thread: the seek empties the fetcher's buffer of the partition while the
  thread iterates over it, and the fetcher crashes the worker (``KeyError`` in
  ``fetched_records``; seen in the kill and restart soaks).

:class:`SafeConsumer` fixes both sides. Every seek runs in the consumer's thread (its
:class:`_SeekingThread`), as aiokafka's other calls do, and that thread notes which seeks of each
partition were made when it hands a batch of fetched records over. A record fetched before the
latest seek of its partition is stale and never handed over (agents' topics and table
changelogs alike: a stale changelog record read ahead of its position makes table recovery skip
every record between). It hands an agent the records of a partition strictly in offset order
from where processing resumes after each seek (the group's committed offset, or the log's start
when retention removed it): a record already handed over since is a repeat and
dropped; a record beyond the next one due is held back (dropped, and the partition sought back
to the one due); while a partition is being revoked and until its next seek, nothing is handed
over. And it keeps its own account of commits: for each partition the next offset that must be
processed, and the offsets acknowledged since; it commits exactly the contiguous run from there,
so an offset is never committed before its event was processed. What a seek back hands over
again is processed again, which every agent allows (their effects are idempotent, see
``streams/checkpoint.py``).
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import Any

import faust
from faust.transport.drivers.aiokafka import Consumer, Producer, Transport
from faust.transport.producer import ProducerBuffer
from faust.types import TP, Message, ProducerT, TransportT
from faust.types.tuples import ack_lock
from mode.utils.futures import notify
from mode.utils.objects import cached_property
from mode.utils.queues import FlowControlEvent

from streams.fetching import ConsumerThread

__all__ = ["DurableProducer", "ProducerFailed", "SafeConsumer", "SwitchboardApp"]

log = logging.getLogger(__name__)


class ProducerFailed(RuntimeError):
    """The broker refused a record: nothing may be committed any more."""


class _DurableBuffer(ProducerBuffer):
    """The table-write buffer, counting the record being handed to aiokafka."""

    handing_over: int = 0

    async def _send_pending(self, fut: Any) -> None:
        self.handing_over += 1
        try:
            await super()._send_pending(fut)
        finally:
            self.handing_over -= 1

    async def flush(self) -> None:
        """Wait until every buffered record is with aiokafka (however long that takes)."""
        while self.size or self.handing_over:
            if self.state != "running":
                raise ProducerFailed(
                    f"the producer stopped with {self.size + self.handing_over} table writes "
                    "not yet sent"
                )
            await self._next_sent(1.0)

    async def wait_until_ebb(self) -> None:
        """Faust's: when more than ``max_messages`` table writes wait (a checkpoint writes
        hundreds of rows at once), hold the conductor for up to that many records handed over,
        or until none is for 0.1 s. Faust's own waits with an ``asyncio.wait_for`` (a task) per
        record, and logs a warning each time."""
        if self.size <= self.max_messages:
            return
        for _ in range(self.max_messages):
            if not self.size or self.state != "running" or not await self._next_sent(0.1):
                return

    async def _next_sent(self, within: float) -> bool:
        """Wait for the next record handed over; False if none was within ``within`` seconds."""
        self.message_sent.clear()
        try:
            async with asyncio.timeout(within):
                await self.message_sent.wait()
        except TimeoutError:
            return False
        return True


class DurableProducer(Producer):
    """The aiokafka producer of Faust, whose flush means every record is acknowledged: its own,
    and those of the other producers the worker registered with :meth:`flush_also` (the
    librdkafka producer of the agents' outputs, ``streams/bulk.py``). Faust flushes it before
    every commit of offsets."""

    failure: BaseException | None = None
    _crashing: asyncio.Future[None] | None = None
    _others: tuple[Callable[[], Awaitable[None]], ...] = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        buffer = _DurableBuffer(loop=self.loop, beacon=self.beacon)
        buffer.app = self.app
        self.buffer = buffer

    async def send(self, *args: Any, **kwargs: Any) -> Any:
        future: asyncio.Future[Any] = await super().send(*args, **kwargs)  # type: ignore[assignment]
        future.add_done_callback(self._sent)
        return future

    def _sent(self, future: asyncio.Future[Any]) -> None:
        error = None if future.cancelled() else future.exception()
        if error is None or self.failure is not None:
            return
        self.failure = error
        log.critical(
            "the broker refused a record; stopping the worker without committing", exc_info=error
        )
        self._crashing = asyncio.ensure_future(self.app.crash(error))

    def flush_also(self, drained: Callable[[], Awaitable[None]]) -> None:
        """Make every flush wait for ``drained()`` too (another producer's acknowledgements)."""
        self._others = (*self._others, drained)

    async def flush(self) -> None:
        await super().flush()
        for drained in self._others:
            try:
                await drained()
            except Exception as exc:  # a record refused: the worker is stopping
                raise ProducerFailed("a record was refused by the broker") from exc
        if self.failure is not None:
            raise ProducerFailed("a record was refused by the broker") from self.failure


class _NoReadOffsets(dict[TP, "int | None"]):
    """Faust's last-read offsets, read as unknown: its fetch loop then neither opens gaps nor
    drops repeats (see :class:`SafeConsumer`). Written as before, by Faust's seeks."""

    def __getitem__(self, tp: TP) -> None:
        return None


class _SeekingThread(ConsumerThread):
    """The consumer's thread, where aiokafka's consumer and fetcher live: seeks are made here
    (never from the worker's loop, module docs), and each batch of fetched records handed over
    carries the seeks made before it was taken from the fetcher's buffer."""

    consumer: SafeConsumer

    async def seek_as(
        self, partitions: Mapping[TP, int], epochs: Mapping[TP, int], *, wait: bool
    ) -> None:
        """Seek ``partitions`` (to the offsets given) in this thread, as the seeks numbered
        ``epochs`` (:attr:`SafeConsumer._epoch`); with ``wait``, until aiokafka knows each new
        position (Faust's ``seek_wait``)."""
        await self.call_thread(self._seek_as, partitions, epochs, wait)

    async def _seek_as(
        self, partitions: Mapping[TP, int], epochs: Mapping[TP, int], wait: bool
    ) -> None:
        # In this thread: no batch is taken from the fetcher's buffer between the seeks and
        # their note (both run before the first await), so a batch taken after the note follows
        # the seeks, and one taken before does not carry them.
        applied = self.consumer._applied
        for tp in partitions:
            applied[tp] = max(applied.get(tp, 0), epochs[tp])
        consumer = self._ensure_consumer()
        if wait:
            await self._seek_wait(consumer, partitions)  # seeks before its first await
        else:
            for tp, offset in partitions.items():
                consumer.seek(tp, offset)

    async def _fetch_records(
        self,
        consumer: Any,
        active_partitions: set[TP],
        timeout: float | None = None,  # noqa: ASYNC109 - Faust's signature
        max_records: int | None = None,
    ) -> Any:
        records = await super()._fetch_records(
            consumer, active_partitions, timeout=timeout, max_records=max_records
        )
        # Taken from the buffer just now, in this thread, with no seek in between.
        self.consumer._drained = dict(self.consumer._applied)
        return records


class SafeConsumer(Consumer):
    """Faust's aiokafka consumer, committing only contiguous processed offsets (module docs),
    whose fetches wait at most 100 ms for idle partitions (``streams/fetching.py``)."""

    _thread: _SeekingThread

    def _new_consumer_thread(self) -> ConsumerThread:
        return _SeekingThread(self, loop=self.loop, beacon=self.beacon)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_offset = _NoReadOffsets()
        #: Per partition: the next offset that must be processed before any commit beyond it.
        self._next: dict[TP, int] = {}
        #: Per partition: offsets at or past ``_next`` acknowledged (processed) so far.
        self._done: defaultdict[TP, set[int]] = defaultdict(set)
        #: Per partition of an agent's topic: the offset to hand over next (unknown: none).
        self._due: dict[TP, int] = {}
        #: How many times each partition was sought, now and when the records being handed over
        #: were fetched: a record fetched before its partition's latest seek is stale.
        self._epoch: defaultdict[TP, int] = defaultdict(int)
        self._fetched: dict[TP, int] = {}
        #: Per partition, the latest of its seeks made (written in the consumer's thread), and
        #: that as it was when the last batch of fetched records was taken (ditto).
        self._applied: dict[TP, int] = {}
        self._drained: dict[TP, int] = {}
        #: Partitions sought back to their due offset, and to which offset; and whose log start
        #: was checked since, for which due offset.
        self._sought: dict[TP, int] = {}
        self._checked: dict[TP, int] = {}
        self._deliver = self.callback
        self.callback = self._in_order
        self._reseek: asyncio.Future[None] | None = None

    async def _wait_next_records(self, timeout: float) -> Any:  # noqa: ASYNC109 - Faust's signature
        self._drained = {}  # no batch taken: nothing is current
        records = await super()._wait_next_records(timeout)
        self._fetched = self._drained  # the seeks the records just fetched follow
        return records

    def _sought_now(self, tps: Iterable[TP]) -> None:
        for tp in tps:
            self._epoch[tp] += 1

    async def seek(self, partition: TP, offset: int) -> None:
        self._sought_now([partition])
        await super().seek(partition, offset)

    async def seek_wait(self, partitions: Mapping[TP, int]) -> None:
        self._sought_now(partitions)
        epochs = {tp: self._epoch[tp] for tp in partitions}
        await self._thread.seek_as(partitions, epochs, wait=True)

    async def _seek(self, partition: TP, offset: int) -> None:
        """Faust's ``Consumer.seek`` (after :meth:`seek` or :meth:`queues_cleared` counted the
        seek): made in the consumer's thread, not here (module docs)."""
        await self._thread.seek_as(
            {partition: offset}, {partition: self._epoch[partition]}, wait=False
        )

    async def _in_order(self, message: Message) -> None:
        """Hand ``message`` over if it is not stale, and, on an agent's topic, the next record
        due on its partition."""
        tp, offset = message.tp, message.offset
        if self._fetched.get(tp, 0) != self._epoch[tp]:
            return  # fetched before the partition's latest seek: it comes again if it is due
        if not self.app.topics.acks_enabled_for(tp.topic):
            await self._deliver(message)  # a changelog, read by table recovery
            return
        due = self._due.get(tp)
        if due is None or offset < due:
            return  # being revoked, not sought yet, or a repeat of what was handed over
        if offset > due and not await self._jumped(tp, offset, due):
            return
        self._due[tp] = offset + 1
        await self._deliver(message)

    async def _jumped(self, tp: TP, offset: int, due: int) -> bool:
        """A record beyond the one due: whether processing may go on from it. Records were
        jumped over (fetched before a seek, arriving after it): read again from the one due,
        once; if that comes back beyond it too, retention has removed the records in between
        since the seek, and processing resumes at the log's start."""
        if self._sought.get(tp) != due:
            self._sought[tp] = due
            self.log.warning(
                "records out of order on %s (%d while %d is due): reading again from %d",
                tp,
                offset,
                due,
                due,
            )
            await self.seek(tp, due)
            return False
        if self._checked.get(tp) == due:
            return False  # the log's start was checked for this offset already
        self._checked[tp] = due
        earliest = (await self.earliest_offsets(tp)).get(tp) or 0
        if earliest <= due:
            return False  # still the jumped records' way back: wait for them
        self.log.warning(
            "records %d..%d of %s were removed by retention before processing",
            due,
            earliest - 1,
            tp,
        )
        self._next[tp] = max(self._next.get(tp, 0), earliest)
        self._due[tp] = earliest
        return offset == earliest

    def queues_cleared(self) -> None:
        """The agents' queues were emptied (:class:`_FlowControl`): the records handed over and
        not yet processed are gone, so every agent's partition is read again from the first
        offset not known to be processed, and every changelog partition from the record after
        the last one table recovery took. What was processed since comes again, which every
        agent and table recovery allows."""
        starts = {tp: self._next.get(tp, due) for tp, due in self._due.items()}
        self._due.update(starts)
        # Table recovery's queue (standby and active changelogs) is cleared too: read each
        # changelog partition again after the last record recovery took, or its local store
        # has a gap that a clean stop would make permanent.
        starts.update(self._changelog_restarts())
        if not starts:
            return
        self._sought_now(starts)  # now: what was fetched before is stale
        self._reseek = asyncio.ensure_future(self._seek_quietly(starts))

    def _changelog_restarts(self) -> dict[TP, int]:
        """For each changelog partition table recovery reads: the offset after the last record
        it took from its queue (it ignores a record it took already)."""
        tables = getattr(self.app, "tables", None)
        recovery = getattr(tables, "_recovery", None) if tables is not None else None
        if recovery is None:
            return {}
        restarts: dict[TP, int] = {}
        for tps, offsets in (
            (recovery.active_tps, recovery.active_offsets),
            (recovery.standby_tps, recovery.standby_offsets),
        ):
            for tp in tps:
                seen = offsets.get(tp)
                if seen is not None:
                    restarts[tp] = seen + 1
        return restarts

    async def _seek_quietly(self, starts: Mapping[TP, int]) -> None:
        for tp, offset in starts.items():
            try:
                await super().seek(tp, offset)  # the epoch moved already (queues_cleared)
            except Exception as exc:  # noqa: BLE001 - a partition revoked meanwhile is sought at its next assignment
                self.log.info("no seek back of %s after the queues were cleared: %r", tp, exc)

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        for tp in revoked:
            self._due.pop(tp, None)  # the agents' queues are cleared: wait for the next seek
        await super().on_partitions_revoked(revoked)

    async def perform_seek(self) -> None:
        """Faust's seek to the committed offsets (every assignment, and while flow is stopped);
        the committed offset of each partition is where processing must resume."""
        # Only the agents' partitions: they are all sought below. A table changelog partition
        # that Faust does not seek here must not lose the records fetched for it.
        tps = {tp for tp in self.assignment() if self.app.topics.acks_enabled_for(tp.topic)}
        self._sought_now(tps)
        await super().perform_seek()
        if not tps:
            return
        earliest = await self.earliest_offsets(*tps)
        starts: dict[TP, int] = {}
        for tp in tps:
            committed = self._committed_offset.get(tp)
            start = starts[tp] = max(committed or 0, earliest.get(tp) or 0)
            self._next[tp] = self._due[tp] = start
            self._sought.pop(tp, None)
            self._checked.pop(tp, None)
            done = self._done[tp]
            done.difference_update([o for o in done if o < start])
        # Faust seeks only the partitions with a committed offset, and resumes fetching before it
        # seeks: records of the others may have been fetched (and not handed over) already.
        await self.seek_wait(starts)

    def ack(self, message: Message) -> bool:
        with ack_lock:
            if message.acked:
                return False
            message.acked = True
            self._unacked_messages.discard(message)
            tp, offset = message.tp, message.offset
            start = self._next.get(tp)
            if start is None or offset >= start:
                self._done[tp].add(offset)
            self._n_acked += 1
            notify(self._waiting_for_ack)
            return True

    def _filter_tps_with_pending_acks(self, topics: Iterable[Any] | None = None) -> Iterator[TP]:
        wanted = set(topics) if topics is not None else None
        for tp, done in self._done.items():
            if done and (wanted is None or tp in wanted or tp.topic in wanted):
                yield tp

    def _filter_committable_offsets(self, tps: Iterable[TP]) -> dict[TP, int]:
        offsets: dict[TP, int] = {}
        for tp in tps:
            start = self._next.get(tp)
            if start is None:
                continue  # not seeked yet since it was assigned: nothing is known to be done
            done = self._done[tp]
            end = start
            while end in done:
                done.discard(end)
                end += 1
            if end > start:
                self._next[tp] = end
                offsets[tp] = end
        return offsets

    async def _add_gap(self, tp: TP, offset_from: int, offset_to: int) -> None:
        return None  # never reached (no read offsets); and never a reason to skip a record

    def _new_offset(self, tp: TP) -> int | None:
        raise AssertionError("SafeConsumer computes its commits in _filter_committable_offsets")


class _Transport(Transport):
    Consumer = SafeConsumer


class SwitchboardApp(faust.App):
    """Faust's app with the :class:`DurableProducer` and the :class:`SafeConsumer`."""

    def _new_transport(self) -> TransportT:
        return _Transport(self.conf.broker_consumer, self)

    def _new_producer(self) -> ProducerT:
        return DurableProducer(self.transport, loop=self.loop, beacon=self.beacon)

    @cached_property
    def flow_control(self) -> FlowControlEvent:
        return _FlowControl(self, loop=self.loop)


class _FlowControl(FlowControlEvent):
    """Faust's flow control, telling the consumer when the agents' queues were cleared.

    ``resume()`` clears every agent's queue, and Faust resumes flow after it has sought the
    partitions and let records flow already (table recovery resumes flow, then the streams'
    resume seeks, then resumes again): the records handed over in between are dropped from the
    queues without ever being processed. The consumer then reads them again."""

    def __init__(self, app: faust.App, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._app = app

    def clear(self) -> None:
        super().clear()
        consumer = self._app._consumer  # not made here if it does not exist yet
        if isinstance(consumer, SafeConsumer):
            consumer.queues_cleared()
