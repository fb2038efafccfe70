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

import logging
from typing import Any

from faust.stores import STORES
from faust.stores.rocksdb import Store as RocksDBStore
from faust.types import TP, CollectionT

__all__ = ["STORE_URL", "Store", "keys_with_prefix"]

log = logging.getLogger(__name__)

#: The store URL Switchboard's tables are declared with.
STORE_URL = "switchboard-rocksdb://"

STORES.aliases.setdefault("switchboard-rocksdb", f"{__name__}:Store")


class Store(RocksDBStore):
    """Faust's RocksDB store whose partitions stay open when revoked (see the module docs)."""

    def revoke_partitions(self, table: CollectionT, tps: set[TP]) -> None:
        kept = sorted(tp.partition for tp in tps if tp.topic in table.changelog_topic.topics)
        if kept:
            log.debug("revoked partitions keep their table open", extra={"table": table.name,
                                                                         "partitions": kept})  # fmt: skip


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
