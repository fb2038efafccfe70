"""The table store (streams/tablestore.py): a row stays readable while its partition is revoked.

Faust drops a revoked partition's database at the start of a rebalance, then waits for the
events still being processed; those would read their rows as missing. Shown here against
Faust's own store, and that Switchboard's keeps answering.
"""

from __future__ import annotations

import asyncio
import weakref
from pathlib import Path
from types import SimpleNamespace

import faust
import pytest
from faust.stores.rocksdb import Store as RocksDBStore
from faust.streams import _current_event
from faust.types import TP

from streams.tablestore import STORE_URL, TableMemory, declare_table


class _Event:
    def __init__(self, partition: int) -> None:
        self.message = SimpleNamespace(partition=partition)


def _row_after_revocation(url: str, datadir: Path) -> tuple[bytes | None, bytes | None]:
    app = faust.App(
        "t",
        store=url,
        datadir=str(datadir),
        autodiscover=False,
        key_serializer="raw",
        value_serializer="raw",
    )
    table = app.Table("sessions", key_type=bytes, value_type=bytes, partitions=4)
    store = table.data
    event = _Event(2)
    token = _current_event.set(weakref.ref(event))  # type: ignore[arg-type]
    try:
        store._set(b"session:0", b"recipients")  # type: ignore[attr-defined]
    finally:
        _current_event.reset(token)
    before = store._get(b"session:0")  # type: ignore[attr-defined]
    store.revoke_partitions(table, {TP(table.changelog_topic.get_topic_name(), 2)})
    return before, store._get(b"session:0")  # type: ignore[attr-defined]


def test_faust_s_store_loses_sight_of_a_revoked_partition_s_rows(tmp_path: Path) -> None:
    """The premise, against Faust 0.15.3's own store."""
    assert _row_after_revocation("rocksdb://", tmp_path) == (b"recipients", None)


@pytest.mark.parametrize("url", [STORE_URL])
def test_switchboard_s_store_keeps_them_readable(url: str, tmp_path: Path) -> None:
    assert _row_after_revocation(url, tmp_path) == (b"recipients", b"recipients")


def _options_file(datadir: Path, memory: TableMemory | None) -> str:
    """The OPTIONS file RocksDB wrote for a table partition opened by Switchboard's store."""
    app = faust.App(
        "t",
        store=STORE_URL,
        datadir=str(datadir),
        autodiscover=False,
        key_serializer="raw",
        value_serializer="raw",
    )
    table = (
        declare_table(app, "deliveries", partitions=2, memory=memory, help_text="")
        if memory is not None
        else app.Table("deliveries", key_type=bytes, value_type=bytes, partitions=2)
    )
    event = _Event(1)
    token = _current_event.set(weakref.ref(event))  # type: ignore[arg-type]
    try:
        table.data._set(b"k", b"v")  # type: ignore[attr-defined]
    finally:
        _current_event.reset(token)
    written = sorted(datadir.rglob("OPTIONS-*"))
    assert written, "the partition's database was opened"
    return written[-1].read_text()


def test_tables_share_the_worker_s_memory_budget(tmp_path: Path) -> None:
    """Faust's default is a 64 MiB memtable (three of them) and a 2 GiB block cache per
    database; Switchboard's tables use the budget of SWITCHBOARD_TABLE_MEMORY_MB instead."""
    assert "write_buffer_size=67108864" in _options_file(tmp_path / "faust", None)
    options = _options_file(tmp_path / "budget", TableMemory.of(64))
    assert "write_buffer_size=8388608" in options
    assert "max_write_buffer_number=2" in options
    assert "write_buffer_size=67108864" not in options


async def test_changelog_offsets_are_written_once_per_loop_turn(tmp_path: Path) -> None:
    """Faust writes a partition's persisted changelog offset for every record acknowledged;
    Switchboard's store keeps the highest and writes it once per turn of the loop, answering
    it meanwhile, and never loses it at a stop."""
    app = faust.App(
        "t",
        store=STORE_URL,
        datadir=str(tmp_path),
        autodiscover=False,
        key_serializer="raw",
        value_serializer="raw",
    )
    table = declare_table(app, "deliveries", partitions=2, memory=TableMemory.of(64), help_text="")
    store = table.data
    tp = TP(table.changelog_topic.get_topic_name(), 1)
    written: list[int] = []
    put = RocksDBStore.set_persisted_offset

    def counted(self: RocksDBStore, tp: TP, offset: int) -> None:
        written.append(offset)
        put(self, tp, offset)

    RocksDBStore.set_persisted_offset = counted  # type: ignore[method-assign]
    try:
        for offset in (3, 4, 5):
            store.set_persisted_offset(tp, offset)  # type: ignore[attr-defined]
        assert store.persisted_offset(tp) == 5 and written == []  # type: ignore[attr-defined]
        await asyncio.sleep(0)
        assert written == [5]
        store.set_persisted_offset(tp, 9)  # type: ignore[attr-defined]
        await store.stop()  # type: ignore[attr-defined]
        assert written == [5, 9]
    finally:
        RocksDBStore.set_persisted_offset = put  # type: ignore[method-assign]


def test_read_row_answers_as_faust_s_get_in_the_event_s_partition(tmp_path: Path) -> None:
    from streams.tablestore import read_row

    app = faust.App(
        "t",
        store=STORE_URL,
        datadir=str(tmp_path),
        autodiscover=False,
        key_serializer="raw",
        value_serializer="raw",
    )
    table = app.Table("deliveries", key_type=bytes, value_type=bytes, partitions=4)
    events = [_Event(partition) for partition in range(4)]  # held: the context keeps a weakref
    for partition, value in ((1, b"one"), (3, b"three")):
        token = _current_event.set(weakref.ref(events[partition]))  # type: ignore[arg-type]
        try:
            table.data._set(b"row", value)  # type: ignore[attr-defined]
        finally:
            _current_event.reset(token)
    seen = []
    for event in events:
        token = _current_event.set(weakref.ref(event))  # type: ignore[arg-type]
        try:
            assert read_row(table, b"row") == table.get(b"row")
            assert read_row(table, b"missing") is None and table.get(b"missing") is None
            seen.append(read_row(table, b"row"))
        finally:
            _current_event.reset(token)
    assert seen == [None, b"one", None, b"three"], "only the event's partition"
