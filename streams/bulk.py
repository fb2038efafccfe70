"""The worker's producer of what its agents produce: librdkafka (confluent-kafka), batching in C.

Status events are most of what a delivery produces (``accepted``, ``sent``, ``delivered`` ...:
one per state change per recipient), then the agents' other outputs (jobs, reports, commands,
timers: :meth:`streams.app.Switchboard.produce`) and the deliveries table's rows
(``streams/changelog.py``). Handing each to aiokafka costs a Python future, a batch append and
often a request of its own; librdkafka batches and retries in its own threads, and the event
loop only enqueues. (Faust's own records, the changelogs of its tables and its replicas', stay
on its aiokafka producer.)

Keyed records go to the partition Faust's producer (and Java's) would choose: librdkafka is
told to use the same murmur2 partitioner, since a session's records must meet its table rows.

One future per *batch*, not per record: every record produced in one turn of the event loop
shares a future, resolved (from librdkafka's delivery callbacks) once the broker acknowledged
all of them. A checkpoint awaits it like any output (:func:`streams.checkpoint.output`), so a
row is still never written before the status events of its event are in Kafka.

The callbacks are served on the event loop itself, every millisecond while records await
theirs (:meth:`BulkProducer._pump`): a polling thread would take the GIL from the loop for every
report, and wake the loop across threads for every batch. Measured, serving them here cut the
worker's CPU per delivery by an eighth (README, "Benchmarks").

Guarantees and failure modes:
    * Order: one producer per worker with idempotence on, so the events a worker produces for one
      session (one partition) stay in the order produced, retries included.
    * A record the broker refuses fails its batch's future (the checkpoint then stops the worker
      without acknowledging) and calls ``on_failure`` (which stops the worker too).
    * librdkafka's queue full (the broker slower than the agents): :meth:`produce` waits for room.
    * :meth:`drained` waits until every record produced so far is acknowledged: Faust's commit
      awaits it (``streams/commits.py``), so no offset is committed before the outputs of the
      events it covers are in Kafka.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any, Final, NamedTuple

from confluent_kafka import KafkaError, Producer

__all__ = ["BulkProducer", "Keyed", "Located", "Offsets"]

#: The highest offset acknowledged per (topic, partition).
Offsets = dict[tuple[str, int], int]

#: One record to produce: its key, value and headers (None: none).
Keyed = tuple[bytes | None, bytes | None, Sequence[tuple[str, bytes]] | None]

log = logging.getLogger(__name__)


class Located(NamedTuple):
    """Where the broker put one record (what aiokafka's ``RecordMetadata`` tells)."""

    topic: str
    partition: int
    offset: int


#: Milliseconds librdkafka waits to fill a batch: a status event is not a latency-critical hop
#: (a client reads it), and a few milliseconds buy batches of hundreds under load.
LINGER_MS: Final = 5

#: Seconds between two servings of delivery reports while records await theirs.
PUMP_S: Final = 0.001

#: Seconds to wait for room when librdkafka's queue is full (the broker slower than the agents).
FULL_WAIT_S: Final = 0.005


class _Batch:
    """The records produced in one turn of the event loop, and their shared future."""

    __slots__ = ("error", "future", "loop", "offsets", "pending", "sealed")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.future: asyncio.Future[Offsets] = loop.create_future()
        self.pending = 0
        self.sealed = False
        self.error: KafkaError | None = None
        #: The highest offset acknowledged per (topic, partition), of the records that asked
        #: for it (:meth:`BulkProducer.produce_row`).
        self.offsets: Offsets = {}

    def delivered(self, error: KafkaError | None, _message: Any) -> None:
        """librdkafka's delivery callback (served on the event loop: :meth:`BulkProducer._pump`)."""
        self.pending -= 1
        if error is not None and self.error is None:
            self.error = error
        if self.sealed and self.pending == 0:
            self._resolve()

    def delivered_row(self, error: KafkaError | None, message: Any) -> None:
        """:meth:`delivered`, remembering the record's offset (on the event loop)."""
        if error is None:
            where = (message.topic(), message.partition())
            offset = message.offset()
            if offset > self.offsets.get(where, -1):
                self.offsets[where] = offset
        self.delivered(error, message)

    def seal(self) -> None:
        """No more records join this batch (on the loop)."""
        self.sealed = True
        if self.pending == 0:
            self._resolve()

    def _resolve(self) -> None:
        if self.future.done() or self.loop.is_closed():  # closed: a flush after the loop
            return
        if self.error is None:
            self.future.set_result(self.offsets)
        else:
            self.future.set_exception(RuntimeError(f"the broker refused a record: {self.error}"))


class BulkProducer:
    """Produce records through librdkafka; one awaitable per turn of the loop (module docs)."""

    def __init__(
        self,
        config: dict[str, Any],
        on_failure: Callable[[BaseException], None],
        name: str = "status-producer",
    ) -> None:
        self._producer = Producer(
            {
                **config,
                "enable.idempotence": True,
                "linger.ms": LINGER_MS,
                "message.max.bytes": 64 * 1024 * 1024,
                # Java's (and aiokafka's) partitioner: a keyed record lands where Faust's
                # producer, the Send API's, would put it (librdkafka's default is CRC32).
                "partitioner": "murmur2_random",
            }
        )
        self._on_failure = on_failure
        self._name = name
        self._batch: _Batch | None = None
        #: The batches not resolved yet (:meth:`drained` waits for them).
        self._open: set[asyncio.Future[Any]] = set()
        #: The pending call of :meth:`_pump`: scheduled while records await their reports.
        self._pumping: asyncio.TimerHandle | None = None
        #: The event loop, once known (the producer is made in it): asking asyncio for the
        #: running loop costs a getpid() system call each time (Python 3.11's fork check).
        self._loop: asyncio.AbstractEventLoop | None = None

    async def produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes]] | None = None,
        partition: int | None = None,
    ) -> asyncio.Future[Offsets]:
        """Enqueue one record (to ``partition``, else the key's); the returned future resolves
        when the broker has it (and every record produced in the same turn of the loop)."""
        listed: list[tuple[str, str | bytes | None]] | None = list(headers) if headers else None
        return await self._enqueue(topic, value, key, partition, listed, row=False)

    def produce_many_nowait(
        self, topic: str, records: Sequence[Keyed], start: int = 0
    ) -> tuple[asyncio.Future[Offsets] | None, int]:
        """Enqueue ``records[start:]`` (key, value, headers) in order, each as :meth:`produce`
        would but without a coroutine (for a batch's status events: one call, one batch
        lookup, one pump check for all of them), until librdkafka's queue is full. Answers
        their batch's future (None when none was enqueued) and how many were: :meth:`produce`
        the next one then, which waits for room, and call again for the rest."""
        batch = self._current()
        report = batch.delivered
        produce = self._producer.produce
        handed = 0
        try:
            for index in range(start, len(records)):
                key, value, headers = records[index]
                produce(
                    topic,
                    value,
                    key,
                    partition=-1,  # the partitioner's
                    headers=headers,  # type: ignore[arg-type]  # a list, or None
                    on_delivery=report,
                )
                handed += 1
        except BufferError:
            pass  # full: the caller waits for room (the pump serves the broker's acknowledgements)
        finally:
            # Counted after the loop: a record's delivery callback runs only when the pump polls,
            # on this loop, never during it. Also when produce() raised: what was handed counts.
            batch.pending += handed
            if handed:
                self._pump_soon()
        return (batch.future if handed else None), handed

    async def produce_located(
        self, topic: str, key: bytes | None, value: bytes | None, partition: int | None = None
    ) -> asyncio.Future[Located]:
        """Enqueue one record; the returned future resolves with where the broker put it (a
        future of its own: for the few records whose offset is needed, such as fences)."""
        loop = asyncio.get_running_loop()
        located: asyncio.Future[Located] = loop.create_future()
        self._open.add(located)  # drained() waits for it too
        located.add_done_callback(self._check)  # a refused record stops the worker, as a batch's

        def settle(error: KafkaError | None, message: Any) -> None:  # on the loop: _pump
            if loop.is_closed():
                return
            if error is None:
                where = Located(message.topic(), message.partition(), message.offset())
                _settle(located, where, None)
            else:
                _settle(located, None, RuntimeError(f"the broker refused a record: {error}"))

        while True:
            if self._handed(topic, value, key, partition, None, settle):
                return located
            await asyncio.sleep(FULL_WAIT_S)

    async def drained(self) -> None:
        """Wait until every record produced before the call is acknowledged; raises when one
        was refused (the worker is stopping then: :class:`_Batch` calls ``on_failure``).

        Only those: records produced meanwhile belong to later events, and waiting for them
        too would, under steady load, hold Faust's commit of offsets until the agents pause
        (the fan-out's flow control reads the committed offsets, ``streams/flow.py``)."""
        batch = self._batch
        if batch is not None and not batch.sealed:
            batch.seal()
        if self._open:
            await asyncio.gather(*list(self._open))

    async def produce_row(
        self, topic: str, partition: int, key: bytes, value: bytes | None
    ) -> asyncio.Future[Offsets]:
        """Enqueue one changelog record (``None``: a tombstone) to ``partition``; the future's
        result has the highest offset acknowledged per partition among such records of its
        batch (``streams/changelog.py``)."""
        return await self._enqueue(topic, value, key, partition, None, row=True)

    def produce_row_nowait(
        self, topic: str, partition: int, key: bytes, value: bytes | None
    ) -> asyncio.Future[Offsets] | None:
        """:meth:`produce_row` without a coroutine of its own (for a checkpoint's many rows);
        None, with nothing enqueued, when librdkafka's queue is full: :meth:`produce_row` that
        record then, which waits for room."""
        return self._try(topic, value, key, partition, None, row=True)

    async def _enqueue(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        partition: int | None,
        headers: list[tuple[str, str | bytes | None]] | None,
        *,
        row: bool,
    ) -> asyncio.Future[Offsets]:
        while True:  # a full queue empties as the pump serves the broker's acknowledgements
            future = self._try(topic, value, key, partition, headers, row=row)
            if future is not None:
                return future
            await asyncio.sleep(FULL_WAIT_S)

    def _try(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        partition: int | None,
        headers: Sequence[tuple[str, str | bytes | None]] | None,
        *,
        row: bool,
    ) -> asyncio.Future[Offsets] | None:
        """Enqueue one record in the current batch (again after a wait: the one before may be
        sealed); its batch's future, or None when librdkafka's queue is full."""
        batch = self._current()
        batch.pending += 1
        report = batch.delivered_row if row else batch.delivered
        if self._handed(topic, value, key, partition, headers, report):
            return batch.future
        batch.pending -= 1
        return None

    def _handed(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        partition: int | None,
        headers: Sequence[tuple[str, str | bytes | None]] | None,
        report: Callable[[KafkaError | None, Any], None],
    ) -> bool:
        """Hand one record to librdkafka, with ``report`` as its delivery callback, and make
        sure reports are served; False when librdkafka's queue is full (wait for the broker,
        whose acknowledgements the pump serves, and try again)."""
        try:
            self._producer.produce(
                topic,
                value,
                key,
                partition=-1 if partition is None else partition,  # -1: the partitioner's
                headers=headers,  # type: ignore[arg-type]  # a list, or None
                on_delivery=report,
            )
            return True
        except BufferError:
            return False
        finally:
            self._pump_soon()

    def _current(self) -> _Batch:
        batch = self._batch
        if batch is None or batch.sealed:
            loop = self._running_loop()
            batch = self._batch = _Batch(loop)
            self._open.add(batch.future)
            batch.future.add_done_callback(self._check)
            loop.call_soon(batch.seal)
        return batch

    def _check(self, future: asyncio.Future[Any]) -> None:
        self._open.discard(future)
        if future.cancelled():  # nothing was refused: an awaiting gather gave up on it
            return
        error = future.exception()
        if error is not None:
            log.critical("%s: %s; stopping the worker", self._name, error)
            self._on_failure(error)

    def _pump_soon(self) -> None:
        if self._pumping is None:
            self._pumping = self._running_loop().call_later(PUMP_S, self._pump)

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is None or loop.is_closed():  # closed: a test's next loop
            loop = self._loop = asyncio.get_running_loop()
        return loop

    def _pump(self) -> None:
        """Serve librdkafka's delivery reports here, on the event loop, every ``PUMP_S`` while
        records await theirs: no polling thread taking the GIL for each report, and no
        cross-thread wake-up of the loop per batch."""
        self._pumping = None
        self._producer.poll(0)
        if len(self._producer):  # records queued, in flight, or reports not served yet
            self._pump_soon()

    def close(self, timeout: float) -> int:
        """Deliver what is queued (at most ``timeout`` seconds). Returns how many records were
        left undelivered."""
        if self._pumping is not None:
            self._pumping.cancel()
            self._pumping = None
        return int(self._producer.flush(timeout))


def _settle(
    future: asyncio.Future[Located], where: Located | None, failure: BaseException | None
) -> None:
    if future.done():
        return
    if failure is not None:
        future.set_exception(failure)
    else:
        assert where is not None
        future.set_result(where)
