"""The producer flush Faust commits behind (streams/producer.py), and routing's partitioner.

Faust commits an offset right after ``producer.flush()``; its own buffer flush returns after
0.1 s without progress, with table writes still waiting. Switchboard's waits for all of them,
including the one being handed to aiokafka.
"""

from __future__ import annotations

import asyncio
import random
from types import SimpleNamespace
from typing import Any

from aiokafka.partitioner import DefaultPartitioner
from faust.transport.producer import ProducerBuffer

from streams.producer import _DurableBuffer
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


def test_routing_places_a_key_where_kafka_s_default_partitioner_does() -> None:
    partitioner = DefaultPartitioner()
    rng = random.Random(7)
    for _ in range(500):
        key = rng.randbytes(rng.randint(1, 40))
        for partitions in (1, 4, 8, 12):
            assert partition_of(key, partitions) == partitioner(key, list(range(partitions)), [])
