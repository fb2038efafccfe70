"""The worker's librdkafka producer against a real broker (``streams/bulk.py``).

Every record an agent produces goes through it (``Switchboard.produce``), so three things must
hold where Kafka decides them, not in a fake:

* a keyed record lands in the partition Faust's own producer (aiokafka, Java's murmur2) would
  put it in: a session's commands from the Send API and from its agents meet its table rows;
* :meth:`BulkProducer.drained` returns only once the broker has every record produced so far
  (Faust's commit of offsets waits for it);
* :meth:`BulkProducer.produce_located` tells where the broker put the record.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from aiokafka.partitioner import DefaultPartitioner
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from cli.kafka.local import LocalBroker
from streams.bulk import BulkProducer

pytestmark = pytest.mark.kafka

PARTITIONS = 4


def _topic(kafka: LocalBroker) -> str:
    name = f"bulk-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap_servers})
    for future in admin.create_topics([NewTopic(name, PARTITIONS, 1)]).values():
        future.result(30)
    return name


def _read_all(kafka: LocalBroker, topic: str, expected: int) -> list[Any]:
    consumer = Consumer(
        {
            "bootstrap.servers": kafka.bootstrap_servers,
            "group.id": f"t-{uuid.uuid4().hex[:6]}",
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    found: list[Any] = []
    try:
        for _ in range(200):
            found.extend(m for m in consumer.consume(500, 0.2) if m.error() is None)
            if len(found) >= expected:
                break
    finally:
        consumer.close()
    return found


def _producer(kafka: LocalBroker, failures: list[BaseException]) -> BulkProducer:
    return BulkProducer({"bootstrap.servers": kafka.bootstrap_servers}, failures.append)


async def test_a_keyed_record_lands_where_faust_s_producer_would_put_it(
    kafka: LocalBroker,
) -> None:
    topic = _topic(kafka)
    failures: list[BaseException] = []
    producer = _producer(kafka, failures)
    keys = [f"session-{n}".encode() for n in range(200)]
    try:
        for key in keys:
            await producer.produce(topic, key, b"x")
        await producer.drained()
    finally:
        assert producer.close(10) == 0
    partitioner = DefaultPartitioner()
    every = list(range(PARTITIONS))
    expected = {key: partitioner(key, every, every) for key in keys}
    records = _read_all(kafka, topic, len(keys))
    assert {m.key(): m.partition() for m in records} == expected
    assert len(set(expected.values())) == PARTITIONS  # the keys do spread
    assert failures == []


async def test_drained_returns_once_the_broker_has_every_record(kafka: LocalBroker) -> None:
    topic = _topic(kafka)
    failures: list[BaseException] = []
    producer = _producer(kafka, failures)
    futures = []
    try:
        for n in range(2_000):
            futures.append(await producer.produce(topic, str(n).encode(), b"v"))
            if n % 500 == 0:
                await asyncio.sleep(0)  # several batches (turns of the loop)
        await producer.drained()
        assert all(future.done() and future.exception() is None for future in futures)
    finally:
        producer.close(10)
    assert len(_read_all(kafka, topic, 2_000)) == 2_000
    assert failures == []


async def test_produce_located_tells_where_the_broker_put_the_record(kafka: LocalBroker) -> None:
    topic = _topic(kafka)
    producer = _producer(kafka, [])
    try:
        first = await (await producer.produce_located(topic, None, b"fence-0", partition=2))
        second = await (await producer.produce_located(topic, None, b"fence-1", partition=2))
    finally:
        producer.close(10)
    assert (first.topic, first.partition, second.partition) == (topic, 2, 2)
    assert second.offset == first.offset + 1
    by_offset = {m.offset(): m.value() for m in _read_all(kafka, topic, 2)}
    assert by_offset[first.offset] == b"fence-0"
    assert by_offset[second.offset] == b"fence-1"
