"""A snapshot of a Kafka topic: every record from the beginning up to its end as it is now.

For the benchmarks and the end-to-end tests, which count what a worker wrote (status events,
changelog rows) once it is done, without depending on how long a background reader ran.
Plain confluent-kafka with no security settings: for the local broker (``make run``, the
tests), not for a managed cluster.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

__all__ = ["raw_record", "read_topic"]


def read_topic(
    bootstrap: str, topic: str, decode: Callable[[Any], Any] | None = None, timeout: float = 60.0
) -> list[Any]:
    """Every record of ``topic`` from the beginning up to its end *as it is now* (its high
    watermarks when called), decoded by ``decode`` (default :func:`raw_record`): a snapshot, for
    assertions that must not depend on how long a background reader was given."""
    decode = decode or raw_record
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-{uuid.uuid4()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if metadata is None or metadata.error is not None:
            return []
        ends: dict[int, int] = {}
        for partition in metadata.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
            if high > low:
                ends[partition] = high
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        out: list[Any] = []
        deadline = time.monotonic() + timeout
        while ends:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{topic}: not read to its end within {timeout}s ({ends} left)"
                )
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            partition, offset = msg.partition(), msg.offset()
            end = ends.get(partition) if partition is not None else None
            if partition is None or end is None or offset is None or offset >= end:
                continue
            out.append(decode(msg))
            if offset >= end - 1:
                del ends[partition]
        return out
    finally:
        consumer.close()


def raw_record(msg: Any) -> dict[str, Any]:
    """A consumed record as it is: key, value and headers (bytes), partition, offset."""
    return {
        "key": msg.key(),
        "value": msg.value(),
        "headers": list(msg.headers() or []),
        "partition": msg.partition(),
        "offset": msg.offset(),
    }
