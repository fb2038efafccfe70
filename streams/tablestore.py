"""The RocksDB store of Switchboard's tables: Faust's, keeping a partition's database open
when the partition is revoked.

At the start of every rebalance Faust drops the local databases of the revoked partitions
(``faust.stores.rocksdb.Store.revoke_partitions``), and only *then* waits for the events its
agents are still processing (``stream_wait_empty``). Those events read their rows as missing:
Faust's store looks a key up in the databases it still holds, finds none, and answers ``None``.
A fan-out then finds no audience, a report no session, a dispatcher no claim, exactly while
the partitions move. With Faust's eager rebalancing every partition is revoked at every
rebalance, even one that stays on the same worker, so this happens whenever a worker joins,
stops or dies.

:class:`Store` keeps the databases open instead. An event finishing after the revocation reads
and writes its partition's rows as before, and Faust's own assignment reuses the open database
when the partition stays. The cost is a few file handles per partition that moved away, until
the worker stops; the rows there are a cache like any standby's, never read by an agent (no
event of that partition reaches this worker any more) nor by a view (views answer only for
partitions this worker owns, ``streams/web/routing.py``).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import rocksdict
from faust import current_event
from faust.stores import STORES
from faust.stores.rocksdb import RocksDBOptions
from faust.stores.rocksdb import Store as RocksDBStore
from faust.types import TP, AppT, CollectionT, TableT

__all__ = ["STORE_URL", "Store", "TableMemory", "declare_table", "keys_with_prefix", "read_row"]

log = logging.getLogger(__name__)

#: The store URL Switchboard's tables are declared with.
STORE_URL = "switchboard-rocksdb://"

STORES.aliases.setdefault("switchboard-rocksdb", f"{__name__}:Store")


@dataclass(frozen=True)
class TableMemory:
    """The RocksDB memory of one worker, shared by every table and partition (module docs).
    Passed to each table as ``options={"memory": ...}``."""

    write_buffers: rocksdict.WriteBufferManager
    cache: rocksdict.Cache
    #: One memtable's size: a database flushes it to disk when full, whatever the budget.
    memtable_bytes: int

    @classmethod
    def of(cls, megabytes: int) -> TableMemory:
        budget = max(megabytes, 8) * 2**20
        return cls(
            # No stall: a write past the budget makes the largest memtable flush, never waits.
            write_buffers=rocksdict.WriteBufferManager(budget // 2, False),
            cache=rocksdict.Cache(budget // 2),
            memtable_bytes=min(16 * 2**20, budget // 8),
        )


class _BudgetedOptions(RocksDBOptions):
    """Faust's options of one database, with the worker's shared memory budget."""

    def __init__(self, memory: TableMemory, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.memory = memory

    def as_options(self) -> rocksdict.Options:
        options: rocksdict.Options = super().as_options()
        options.set_write_buffer_size(self.memory.memtable_bytes)
        options.set_max_write_buffer_number(2)  # one filling, one being flushed
        options.set_write_buffer_manager(self.memory.write_buffers)
        table = rocksdict.BlockBasedOptions()
        table.set_bloom_filter(self.bloom_filter_size, block_based=True)
        table.set_block_cache(self.memory.cache)
        table.set_index_type(rocksdict.BlockBasedIndexType.binary_search())
        options.set_block_based_table_factory(table)
        return options


class Store(RocksDBStore):
    """Faust's RocksDB store whose partitions stay open when revoked, in the worker's memory
    budget (see the module docs)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Changelog offsets acknowledged and not yet written to their database (see
        #: :meth:`set_persisted_offset`).
        self._unsaved_offsets: dict[TP, int] = {}
        extra = dict(self.rocksdb_options.extra_options)
        memory = extra.pop("memory", None)
        if isinstance(memory, TableMemory) and self.use_rocksdict:
            self.rocksdb_options = _BudgetedOptions(
                memory, use_rocksdict=True, ttl=self.rocksdb_options.ttl, **extra
            )

    def set_persisted_offset(self, tp: TP, offset: int) -> None:
        """Faust writes the offset of every changelog record acknowledged into the partition's
        database, one RocksDB write per table write. Written here once per turn of the event
        loop instead (the highest per partition). A crash before it is written leaves an older
        offset: recovery then reads a few records again, and applies them in order to the
        same rows, which changes nothing."""
        unsaved = self._unsaved_offsets
        if not unsaved:
            try:
                asyncio.get_running_loop().call_soon(self._save_offsets)
            except RuntimeError:  # no loop (a tool, a test): at once
                unsaved[tp] = offset
                self._save_offsets()
                return
        if offset > unsaved.get(tp, -1):
            unsaved[tp] = offset

    def persisted_offset(self, tp: TP) -> int | None:
        unsaved = self._unsaved_offsets.get(tp)
        return unsaved if unsaved is not None else super().persisted_offset(tp)

    def _save_offsets(self) -> None:
        unsaved, self._unsaved_offsets = self._unsaved_offsets, {}
        for tp, offset in unsaved.items():
            super().set_persisted_offset(tp, offset)

    async def stop(self) -> None:
        self._save_offsets()
        await super().stop()

    def revoke_partitions(self, table: CollectionT, tps: set[TP]) -> None:
        kept = sorted(tp.partition for tp in tps if tp.topic in table.changelog_topic.topics)
        if kept:
            log.debug(
                "revoked partitions keep their table open",
                extra={"table": table.name, "partitions": kept},
            )


def declare_table(
    app: AppT, name: str, *, partitions: int, memory: TableMemory, help_text: str
) -> TableT[bytes, bytes]:
    """A changelogged table of raw bytes in this store, within the worker's memory budget."""
    return app.Table(
        name,
        key_type=bytes,
        value_type=bytes,
        partitions=partitions,
        help=help_text,
        options={"memory": memory},
    )


def read_row(table: TableT[bytes, bytes], key: bytes) -> bytes | None:
    """``table.get(key)`` in an agent: the row of ``key`` in the partition of the event being
    handled, in one RocksDB read. Faust's ``get`` makes two (a membership test of every open
    partition's database, then the read) and a ``KeyError`` for every missing row, which the hot
    path mostly asks for (a delivery's first report). Outside an event, or on another store (a
    test's), it is Faust's ``get``."""
    store = getattr(table, "data", None)
    event = current_event()
    if event is not None and type(store) is Store:
        value: bytes | None = store._db_for_partition(event.message.partition).get(key)
        return value
    found = table.get(key)
    return found if found is None or isinstance(found, bytes) else bytes(found)


def keys_with_prefix(table: Any, partition: int, prefix: bytes) -> list[bytes]:
    """The keys of ``table``'s rows in ``partition`` (this worker's local database) that start
    with ``prefix``, in key order: one seek and a walk over the matches, never a scan of the
    partition. Faust's table API has no prefix query; RocksDB sorts keys, so this is cheap.
    Reads the database as written: an agent's staged rows (``streams/checkpoint.py``) are not
    in it yet."""
    store = table.data
    if not isinstance(store, RocksDBStore):  # a test's in-memory table
        return [k for k in store if isinstance(k, bytes) and k.startswith(prefix)]
    db = store._db_for_partition(partition)  # Faust has no public accessor
    found: list[bytes] = []
    it = db.iter()
    it.seek(prefix)
    while it.valid():
        key = it.key()
        if not key.startswith(prefix):
            break
        found.append(key)
        it.next()
    return found
