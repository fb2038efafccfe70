"""Bulk rows (streams/changelog.py): a checkpoint's writes of a bulk table go to the partition's
database and, in order, to the changelog partition of the event that wrote them; the offsets the
broker acknowledged become the databases' persisted offsets. The broker is replaced here by a
producer that records; the real path is exercised by every integration test (every table is
bulk) and the crash tests."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import weakref
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest
from faust.types import TP
from rocksdict import Options, Rdict, WriteBatch

from streams.changelog import BulkRows
from streams.checkpoint import Checkpoint, put_now

TOPIC = "sb-deliveries-changelog"


class Db:
    """A partition's RocksDB database (a real one, in a temporary directory: the bulk writer
    writes it in write batches); equal to the dict of its rows."""

    def __init__(self) -> None:
        path = tempfile.mkdtemp(prefix="sb-changelog-test-")
        self.rdict = Rdict(path, Options(raw_mode=True))
        weakref.finalize(self, _remove, self.rdict, path)

    def put(self, key: bytes, value: bytes) -> None:
        self.rdict.put(key, value)

    def delete(self, key: bytes) -> None:
        self.rdict.delete(key)

    def write(self, batch: WriteBatch) -> None:
        self.rdict.write(batch)

    def __eq__(self, other: object) -> bool:
        return dict(self.rdict.items()) == other

    __hash__ = None  # type: ignore[assignment]


def _remove(rdict: Rdict, path: str) -> None:
    rdict.close()
    shutil.rmtree(path, ignore_errors=True)


class Store:
    def __init__(self) -> None:
        self.dbs: dict[int, Db] = {}
        self.persisted: dict[TP, int] = {}

    def _db_for_partition(self, partition: int) -> Db:
        return self.dbs.setdefault(partition, Db())

    def set_persisted_offset(self, tp: TP, offset: int) -> None:
        self.persisted[tp] = offset


class Table(dict[bytes, bytes]):
    """A Faust table as far as the checkpoint and the bulk writer use it."""

    def __init__(self, topic: str) -> None:
        super().__init__()
        self.data = Store()
        self.changelog_topic = SimpleNamespace(get_topic_name=lambda: topic)


class Producer:
    """librdkafka as far as the bulk writer uses it: records kept in order, offsets per partition."""

    def __init__(self, refuse: bool = False, full: int = 0) -> None:
        self.records: list[tuple[str, int, bytes, bytes | None]] = []
        self.refuse = refuse
        #: How many records find librdkafka's queue full (``produce_row_nowait`` answers None).
        self.full = full
        self.waited = 0

    def produce_row_nowait(
        self, topic: str, partition: int, key: bytes, value: bytes | None
    ) -> asyncio.Future[dict[tuple[str, int], int]] | None:
        if self.full:
            self.full -= 1
            return None
        self.records.append((topic, partition, key, value))
        future: asyncio.Future[dict[tuple[str, int], int]] = (
            asyncio.get_running_loop().create_future()
        )
        if self.refuse:
            future.set_exception(RuntimeError("the broker refused a record"))
        else:
            offsets: dict[tuple[str, int], int] = {}
            for n, (t, p, _, _) in enumerate(self.records):
                offsets[(t, p)] = n
            future.set_result(offsets)
        return future

    async def produce_row(
        self, topic: str, partition: int, key: bytes, value: bytes | None
    ) -> asyncio.Future[dict[tuple[str, int], int]]:
        self.waited += 1
        self.full = 0  # the real one waits until the broker's acknowledgements make room
        future = self.produce_row_nowait(topic, partition, key, value)
        assert future is not None
        return future


@dataclass
class Event:
    partition: int

    @property
    def message(self) -> Any:
        return SimpleNamespace(partition=self.partition, topic="sb-reports", offset=0)

    def ack(self) -> None:
        self.acked = True


def staged(
    checkpoint: Checkpoint, table: Table, event: Event, key: bytes, value: bytes | None
) -> None:
    from streams.checkpoint import _Write

    checkpoint.writes.append(_Write(table, key, value, event))  # type: ignore[arg-type]
    checkpoint.events.append(event)  # type: ignore[arg-type]


async def test_rows_go_to_their_partition_and_changelog_in_order_and_offsets_persist() -> None:
    bulk_table, other = Table(TOPIC), Table("sb-sessions-changelog")
    producer = Producer()
    checkpoint = Checkpoint(bulk=BulkRows(lambda: producer, [bulk_table]))  # type: ignore[arg-type, list-item]
    first, second = Event(partition=3), Event(partition=5)
    staged(checkpoint, bulk_table, first, b"d1", b"accepted")
    staged(checkpoint, other, first, b"s1", b"open")
    staged(checkpoint, bulk_table, first, b"d1", b"delivered")
    staged(checkpoint, bulk_table, second, b"d2", b"sent")
    staged(checkpoint, bulk_table, second, b"gone", None)
    bulk_table.data._db_for_partition(5).put(b"gone", b"old")

    await checkpoint.commit()

    assert producer.records == [
        (TOPIC, 3, b"d1", b"accepted"),
        (TOPIC, 3, b"d1", b"delivered"),
        (TOPIC, 5, b"d2", b"sent"),
        (TOPIC, 5, b"gone", None),  # a tombstone
    ]
    assert bulk_table.data.dbs[3] == {b"d1": b"delivered"}
    assert bulk_table.data.dbs[5] == {b"d2": b"sent"}
    assert bulk_table.data.persisted == {TP(TOPIC, 3): 1, TP(TOPIC, 5): 3}
    assert dict(other) == {b"s1": b"open"}, "a table not bulk is written through Faust"
    assert all(getattr(e, "acked", False) for e in (first, second))


async def test_rows_that_find_the_queue_full_wait_for_room_and_stay_in_order() -> None:
    bulk_table = Table(TOPIC)
    producer = Producer(full=1)
    checkpoint = Checkpoint(bulk=BulkRows(lambda: producer, [bulk_table]))  # type: ignore[arg-type, list-item]
    event = Event(partition=1)
    for n in range(4):
        staged(checkpoint, bulk_table, event, f"d{n}".encode(), b"sent")

    await checkpoint.commit()

    assert producer.waited == 1, "the row that found the queue full was produced by waiting"
    assert [key for _, _, key, _ in producer.records] == [b"d0", b"d1", b"d2", b"d3"]
    assert bulk_table.data.dbs[1] == {f"d{n}".encode(): b"sent" for n in range(4)}
    assert bulk_table.data.persisted == {TP(TOPIC, 1): 3}
    assert getattr(event, "acked", False)


async def test_a_refused_row_acknowledges_nothing() -> None:
    bulk_table = Table(TOPIC)
    checkpoint = Checkpoint(bulk=BulkRows(lambda: Producer(refuse=True), [bulk_table]))  # type: ignore[arg-type, list-item]
    event = Event(partition=0)
    staged(checkpoint, bulk_table, event, b"d1", b"delivered")
    with pytest.raises(RuntimeError, match="refused"):
        await checkpoint.commit()
    assert not getattr(event, "acked", False)
    assert bulk_table.data.persisted == {}


async def test_a_dispatchers_row_goes_to_its_events_partition_and_persists_once_acknowledged() -> (
    None
):
    """Outside a checkpoint (a dispatcher's task): the row is in the database at once, its
    changelog record in the producer, and the persisted offset follows the acknowledgement."""
    from faust.streams import _current_event

    sends, other = Table("sb-sends-changelog"), Table("sb-other-changelog")
    producer = Producer()
    bulk = BulkRows(lambda: producer, [sends])  # type: ignore[arg-type, list-item]
    event = Event(partition=2)
    token = _current_event.set(weakref.ref(event))  # type: ignore[arg-type]
    try:
        await put_now(bulk, sends, b"claim", b"{}")  # type: ignore[arg-type]
        await put_now(bulk, sends, b"fence", None)  # type: ignore[arg-type]
        await put_now(bulk, other, b"k", b"v")  # type: ignore[arg-type]
    finally:
        _current_event.reset(token)
    assert producer.records == [
        ("sb-sends-changelog", 2, b"claim", b"{}"),
        ("sb-sends-changelog", 2, b"fence", None),
    ], "only the bulk table's rows, in order, to the event's partition"
    assert sends.data.dbs[2] == {b"claim": b"{}"}
    assert dict(other) == {b"k": b"v"}, "a table not bulk is written through Faust"
    await asyncio.sleep(0)  # the acknowledgement's callbacks
    assert sends.data.persisted == {TP("sb-sends-changelog", 2): 1}


async def test_a_dispatchers_row_outside_an_event_is_refused() -> None:
    sends = Table("sb-sends-changelog")
    bulk = BulkRows(lambda: Producer(), [sends])  # type: ignore[arg-type, list-item]
    with pytest.raises(RuntimeError, match="outside of an event"):
        await put_now(bulk, sends, b"claim", b"{}")  # type: ignore[arg-type]
