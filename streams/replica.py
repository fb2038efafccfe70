"""Replicated tables: a compacted topic mirrored on every worker.

Some state must be read by whichever worker needs it, whatever partition it is working on:
client configurations, opt-outs (checked before every send), service managers' memory (the
number a recipient was last reached from). Faust's GlobalTable is the tool for this in
principle, but over an external topic it hangs Faust 0.15.3's assignor. So this module reads such
a topic itself: a consumer without a group, assigned every partition, replays it from the
beginning and then follows it, applying each record (a tombstone deletes).

* :class:`TopicReplica` applies records through a callback (the client registry keeps parsed
  configurations in memory).
* :class:`KeyValueReplica` keeps them in a local RocksDB (rocksdict) under the worker's data
  directory, so a table of millions of entries costs disk, not memory. It is a cache of the
  topic, rebuilt from it at every start.

Guarantees and failure modes:
    * ``ready`` is set once the topic has been read up to the end offsets seen at start:
      readers wait for it, so nothing is decided on a table that is still loading.
    * Writes are produced to the topic (:meth:`KeyValueReplica.put`); they show on every worker
      within about a second. :meth:`TopicReplica.applied` waits until this worker has applied a
      given write, for callers that must not answer before (an opt-out is "recorded" only once
      the worker that recorded it will honour it).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rocksdict import Options, Rdict

from switchboard.errors import ConfigError
from switchboard.settings import Settings

__all__ = ["KeyValueReplica", "TopicReplica"]

log = logging.getLogger(__name__)


class TopicReplica:
    def __init__(
        self, settings: Settings, topic: str, apply: Callable[[bytes | None, bytes | None], None]
    ) -> None:
        self.settings = settings
        self.topic = topic
        self._apply = apply
        self.ready = asyncio.Event()
        self._positions: dict[int, int] = {}  # partition -> next offset to apply
        self._moved = asyncio.Condition()

    async def run(self) -> None:
        """Read the topic from the beginning and follow it until cancelled."""
        from aiokafka import AIOKafkaConsumer, TopicPartition

        from streams.kafka_security import aiokafka_connection

        consumer = AIOKafkaConsumer(
            **aiokafka_connection(self.settings),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=64 * 1024 * 1024,
        )
        await consumer.start()
        try:
            partitions = await _partitions(consumer, self.topic)
            tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            end = await consumer.end_offsets(tps)
            pending = {tp for tp in tps if end[tp] > 0}
            if not pending:
                self._set_ready()
            while True:
                batches = await consumer.getmany(timeout_ms=500)
                for tp, batch in batches.items():
                    for record in batch:
                        self._apply(record.key, record.value)
                    if batch:
                        self._positions[tp.partition] = batch[-1].offset + 1
                if batches:
                    async with self._moved:
                        self._moved.notify_all()
                if pending:
                    for tp in list(pending):
                        if await consumer.position(tp) >= end[tp]:
                            pending.discard(tp)
                    if not pending:
                        self._set_ready()
        finally:
            await consumer.stop()

    def positions(self) -> dict[int, int]:
        """Per partition, the offset of the next record to apply: every record before it is
        applied here (``switchboard_replica_position``)."""
        return dict(self._positions)

    async def applied(self, partition: int, offset: int, seconds: float) -> bool:
        """Wait until the record at ``partition``/``offset`` has been applied here."""

        def done() -> bool:
            return self._positions.get(partition, 0) > offset

        try:
            async with asyncio.timeout(seconds), self._moved:
                await self._moved.wait_for(done)
        except TimeoutError:
            return done()
        return True

    def _set_ready(self) -> None:
        log.info("replica loaded", extra={"topic": self.topic})
        self.ready.set()


class KeyValueReplica(TopicReplica):
    """A replicated table of bytes keys and values, in a local RocksDB."""

    def __init__(self, settings: Settings, topic: str, path: Path, producer_topic: Any) -> None:
        super().__init__(settings, topic, self._store)
        if path.exists():  # a cache of the topic: rebuilt from it at every start
            shutil.rmtree(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = Rdict(str(path), Options(raw_mode=True))
        self._producer_topic = producer_topic

    def _store(self, key: bytes | None, value: bytes | None) -> None:
        if key is None:
            return
        if value is None:
            del self._db[key]
        else:
            self._db[key] = value

    def get(self, key: bytes) -> bytes | None:
        value = self._db.get(key)
        return value if isinstance(value, bytes) else None

    async def put(
        self, key: bytes, value: bytes | None, *, wait_applied: float | None = None
    ) -> bool:
        """Write ``key`` (``None``: delete it) through the topic. With ``wait_applied``, also
        wait up to that many seconds until this worker applied it; returns whether it did (a
        write is durable once this returns, applied or not)."""
        future = await self._producer_topic.send(key=key, value=value)
        metadata = await future
        if wait_applied is None:
            return True
        return await self.applied(metadata.partition, metadata.offset, wait_applied)

    def close(self) -> None:
        self._db.close()


async def _partitions(consumer: Any, topic: str) -> set[int]:
    for _ in range(50):
        partitions = consumer.partitions_for_topic(topic)
        if partitions:
            return set(partitions)
        await consumer._client.force_metadata_update()  # aiokafka has no public way to ask
        await asyncio.sleep(0.2)
    raise ConfigError(f"topic {topic} does not exist; start the worker once to create it")
