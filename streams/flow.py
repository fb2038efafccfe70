"""Flow control of the fan-out: one campaign does not bury the others' jobs.

A session's audience is fanned out a chunk (500 recipients) per command, and its jobs join the
end of the dispatch topics, which every session shares in arrival order. Fanned out at once, a
1,000,000-recipient campaign would put a million jobs ahead of every later session of every
client. So before it fans out its next chunk, a session looks at the backlog of its channels'
dispatch topics (jobs produced and not yet committed by the dispatchers, over every partition):
above ``SWITCHBOARD_DISPATCH_BACKLOG`` the chunk waits (a durable timer looks again in a
moment). A session's first chunk never waits, so a new session's jobs queue behind at most that
backlog, and the chunks of concurrent campaigns interleave as the backlog drains.

The backlog is read with the admin API (end offsets minus the group's committed offsets) in a
thread, and kept for :data:`FRESH` seconds, so many sessions checking cost one request; a
fan-out forgets it for the topics it just wrote to. Committed offsets trail the dispatchers by
the commit interval, so the backlog is over-counted by at most that much work, never under.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final, cast

if TYPE_CHECKING:
    from streams.app import Switchboard

__all__ = ["FRESH", "DispatchBacklog"]

#: Seconds a measured backlog is used before it is measured again.
FRESH: Final = 0.5
_TIMEOUT: Final = 10.0


class DispatchBacklog:
    """Jobs waiting in dispatch topics, per topic, measured at most every :data:`FRESH` s."""

    def __init__(self, sb: Switchboard) -> None:
        self._sb = sb
        self._measured: dict[str, tuple[float, int]] = {}

    async def of(self, topics: Sequence[str]) -> int:
        """The jobs waiting in ``topics`` (produced, not yet committed by their dispatchers)."""
        now = time.monotonic()
        stale = [t for t in topics if now - self._measured.get(t, (-FRESH, 0))[0] >= FRESH]
        if stale:
            waiting = await asyncio.to_thread(_measure, self._sb, stale)
            for topic in stale:
                self._measured[topic] = (now, waiting.get(topic, 0))
        return sum(self._measured[t][1] for t in topics)

    def forget(self, topics: Sequence[str]) -> None:
        """Jobs were just produced to ``topics``: the next look measures them again (a chunk's
        jobs are in Kafka by the time the session's next chunk is considered)."""
        for topic in topics:
            self._measured.pop(topic, None)


def _measure(sb: Switchboard, topics: list[str]) -> dict[str, int]:
    from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
    from confluent_kafka import admin as kafka_admin

    admin: Any = sb.admin()
    latest = cast(Any, kafka_admin).OffsetSpec.latest()  # not in confluent-kafka's type stubs
    partitions = [TopicPartition(t, p) for t in topics for p in range(sb.settings.partitions)]
    ends = admin.list_offsets({tp: latest for tp in partitions}, request_timeout=_TIMEOUT)
    group = str(sb.app.conf.id)
    request = ConsumerGroupTopicPartitions(group, partitions)
    committed = {
        (tp.topic, tp.partition): tp.offset
        for tp in admin.list_consumer_group_offsets([request])[group]
        .result(_TIMEOUT)
        .topic_partitions
    }
    waiting: dict[str, int] = {}
    for tp, future in ends.items():
        end = future.result(_TIMEOUT).offset
        done = max(0, committed.get((tp.topic, tp.partition), 0))  # no commit yet: from the start
        waiting[tp.topic] = waiting.get(tp.topic, 0) + max(0, end - done)
    return waiting
