"""Bulk rows: a checkpoint's writes to a hot table, through librdkafka instead of Faust.

Faust writes a table row as a Python record handed to aiokafka one at a time (a future, a
buffer, a task turn and a produce request's share each): at one row per delivery that was the
largest single cost of the hot path. A table declared *bulk* here is written by
:meth:`BulkRows.write` instead: each row goes into its partition's RocksDB database and its
changelog record into the worker's librdkafka producer (``streams/bulk.py``), which batches in
C; the checkpoint waits for the broker to have them all, records the highest changelog offset
per partition as the database's persisted offset (what recovery starts from), and only then
acknowledges its events.

Guarantees and failure modes:
    * The changelog records are the ones Faust would write (raw key and value, ``None`` for a
      delete, to the partition of the event that wrote the row), so recovery, standbys and a
      worker of an older version read them alike.
    * One producer writes a bulk table's changelog: every write of such a table goes through a
      checkpoint (:func:`streams.checkpoint.put` refuses one outside), so the records of a
      partition are in the order written, retries included (librdkafka's idempotence).
    * An event is acknowledged only once its rows are in the changelog (stronger than Faust's
      path, where the commit's flush makes them durable): a worker that dies before leaves the
      event to be processed again, as for any crash during a checkpoint's writes.
    * A record the broker refuses fails the checkpoint, which stops the worker unacknowledged.
    * A dispatcher, which has no checkpoint, writes a bulk table's row with
      :meth:`BulkRows.write_now`: into the database at once and its changelog record into the
      same producer, as Faust's ``table[key] = value`` would through its own. Faust's commit of
      the dispatcher's offsets waits for the producer (``streams/compose.py``), as it waits for
      its own changelog records, so the guarantee is Faust's: durable before the event's offset
      is committed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from faust import current_event
from faust.types import TP
from rocksdict import WriteBatch

from streams.bulk import BulkProducer, Offsets

if TYPE_CHECKING:
    from faust.types import TableT

__all__ = ["BulkRows", "RowWrite"]


class RowWrite(Protocol):
    """One staged row (:class:`streams.checkpoint._Write`)."""

    @property
    def table(self) -> TableT[bytes, bytes]: ...
    @property
    def key(self) -> bytes: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def event(self) -> Any: ...


class BulkRows:
    """The bulk tables of a worker, and how their rows are written (module docs)."""

    def __init__(
        self, producer: Callable[[], BulkProducer], tables: Iterable[TableT[bytes, bytes]]
    ) -> None:
        self._producer = producer
        self._tables = {id(table): table for table in tables}
        self._persisting: asyncio.Future[Offsets] | None = None

    def owns(self, table: TableT[bytes, bytes]) -> bool:
        return id(table) in self._tables

    async def write(self, writes: Sequence[RowWrite]) -> None:
        """Write ``writes`` (in order) to their databases and changelogs; return once the broker
        has every changelog record and the persisted offsets are recorded.

        Raises:
            RuntimeError: the broker refused a record (nothing may be acknowledged).
        """
        if not writes:
            return
        producer = self._producer()
        futures: list[asyncio.Future[Offsets]] = []
        # One RocksDB write per database (a write batch, in order), not one per row: each
        # write appends to the database's log with a system call of its own. A table's
        # partition has one database and one changelog partition: looked up once a call.
        batches: dict[tuple[int, int], tuple[Any, WriteBatch, str]] = {}
        for write in writes:
            table = write.table
            partition = write.event.message.partition
            found = batches.get((id(table), partition))
            if found is None:
                db = table.data._db_for_partition(partition)  # type: ignore[attr-defined]  # Faust's
                topic = table.changelog_topic.get_topic_name()
                found = batches[id(table), partition] = (db, WriteBatch(raw_mode=True), topic)
            db, batch, topic = found
            key, value = write.key, write.value
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
            future = producer.produce_row_nowait(topic, partition, key, value)
            if future is None:  # librdkafka's queue is full: wait for room
                future = await producer.produce_row(topic, partition, key, value)
            if not futures or futures[-1] is not future:
                futures.append(future)
        for db, batch, _ in batches.values():
            db.write(batch)
        stores = self._stores()
        for offsets in await asyncio.gather(*futures):
            _persist(stores, offsets)

    async def write_now(self, table: TableT[bytes, bytes], key: bytes, value: bytes | None) -> None:
        """Write one row outside a checkpoint (a dispatcher's task, whose context carries its
        event): into the event's partition's database at once, its changelog record into the
        producer; the partition's persisted offset follows the broker's acknowledgement.

        Raises:
            RuntimeError: outside an event (the row would have no partition).
        """
        event = current_event()
        if event is None:
            raise RuntimeError(
                f"a row of {table.changelog_topic.get_topic_name()} outside of an event"
            )
        partition = event.message.partition
        db = table.data._db_for_partition(partition)  # type: ignore[attr-defined]  # Faust's
        if value is None:
            db.delete(key)
        else:
            db.put(key, value)
        topic = table.changelog_topic.get_topic_name()
        future = await self._producer().produce_row(topic, partition, key, value)
        if future is not self._persisting:  # one callback per batch of rows
            self._persisting = future
            future.add_done_callback(self._persist_batch)

    def _persist_batch(self, future: asyncio.Future[Offsets]) -> None:
        if not future.cancelled() and future.exception() is None:  # else the worker stops
            _persist(self._stores(), future.result())

    def _stores(self) -> dict[str, Any]:
        return {
            table.changelog_topic.get_topic_name(): table.data for table in self._tables.values()
        }


def _persist(stores: dict[str, Any], offsets: Offsets) -> None:
    """Record the highest changelog offset acknowledged per partition as its database's
    persisted offset (where recovery starts reading). One that arrives late, lower than one
    recorded, only makes a recovery read a few records again."""
    for (topic, partition), offset in offsets.items():
        store = stores.get(topic)
        if store is not None:
            store.set_persisted_offset(TP(topic, partition), offset)
