"""Offsets of the worker's consumer group and of topics, read with the admin API (blocking: call
from a thread). Used where a worker must know what every dispatcher has processed: the cancel
fences (``streams/fences.py``) and the fan-out's flow control (``streams/flow.py``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final, Protocol, cast

if TYPE_CHECKING:
    from faust.types import AppT

__all__ = ["Cluster", "committed", "ends"]

#: Seconds for the broker to answer one request.
TIMEOUT: Final = 10.0

TP = tuple[str, int]


class Cluster(Protocol):
    """What the offsets are read through (``streams.app.Switchboard`` is one): this module
    depends on these two members only, never on the shared object's module."""

    def admin(self) -> Any:
        """The worker's confluent-kafka admin client."""
        ...

    @property
    def app(self) -> AppT:
        """The Faust app, whose id is the consumer group."""
        ...


def committed(sb: Cluster, partitions: Iterable[TP]) -> dict[TP, int]:
    """The group's committed offset of each partition (negative: nothing committed yet)."""
    from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition

    group = str(sb.app.conf.id)  # Faust's consumer group
    request = ConsumerGroupTopicPartitions(group, [TopicPartition(t, p) for t, p in partitions])
    result: Any = sb.admin().list_consumer_group_offsets([request])[group].result(TIMEOUT)
    return {(tp.topic, tp.partition): tp.offset for tp in result.topic_partitions}


def ends(sb: Cluster, partitions: Iterable[TP]) -> dict[TP, int]:
    """The end offset (the next offset to be written) of each partition."""
    from confluent_kafka import TopicPartition
    from confluent_kafka import admin as kafka_admin

    latest = cast(Any, kafka_admin).OffsetSpec.latest()  # not in confluent-kafka's type stubs
    wanted = {TopicPartition(t, p): latest for t, p in partitions}
    answers = sb.admin().list_offsets(wanted, request_timeout=TIMEOUT)
    return {(tp.topic, tp.partition): f.result(TIMEOUT).offset for tp, f in answers.items()}
