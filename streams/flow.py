"""Flow control of the fan-out: one campaign does not bury the others' jobs.

A session's audience is fanned out a chunk (500 recipients) per command, and its jobs join the
end of the dispatch topics, which every session shares in arrival order. Fanned out at once, a
1,000,000-recipient campaign would put a million jobs ahead of every later session of every
client. So before it fans out its next chunk, a session looks at the backlog of its channels'
dispatch topics (jobs produced and not yet committed by the dispatchers, over every partition):
above ``SWITCHBOARD_DISPATCH_BACKLOG`` jobs the chunk waits (a durable timer looks again in a
moment). A session's first chunk never waits, so a new session's jobs queue behind at most that
backlog, and the chunks of concurrent campaigns interleave as the backlog drains.

Jobs travel in batches (``records.JobBatch``, up to ``DISPATCH_SPREAD`` per record) and the
broker counts records, so the backlog is measured in records and the limit in jobs is divided by
``DISPATCH_SPREAD``: a record holding fewer jobs (a retry) counts as a full one, so the limit is
an upper bound. The backlog is read with the admin API (end offsets minus the group's committed offsets) in a
thread, and between two reads this worker adds what it produces (:class:`DispatchBacklog`), so
a fan-out pays a read only when the backlog may be over the limit. Committed offsets trail the
dispatchers by the commit interval, so the backlog is over-counted by at most that much work.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final, Protocol

from streams import offsets

if TYPE_CHECKING:
    from switchboard.settings import Settings

__all__ = ["FRESH", "REFRESH", "DispatchBacklog", "Partitioned"]

#: Seconds a measurement is trusted to say the backlog is over the limit (it only shrinks as the
#: dispatchers work, so a measurement under the limit plus what this worker added since stays an
#: upper bound for this worker's own jobs).
FRESH: Final = 0.5
#: Seconds after which the backlog is measured again whatever this worker added (the other
#: workers' sessions fill the same topics).
REFRESH: Final = 5.0


class Partitioned(offsets.Cluster, Protocol):
    """What the backlog is measured through (``streams.app.Switchboard`` is one): the cluster's
    offsets, and the settings that give every topic's partition count."""

    @property
    def settings(self) -> Settings: ...


class DispatchBacklog:
    """Records waiting in dispatch topics, per topic: measured, plus what this worker has produced
    since. Measured only when that estimate is over the limit (and the measurement is older than
    :data:`FRESH`), or older than :data:`REFRESH`, so a fan-out does not pay an admin round trip
    per chunk."""

    def __init__(self, sb: Partitioned) -> None:
        self._sb = sb
        self._estimate: dict[str, tuple[float, int]] = {}  # topic -> (measured at, records)

    async def over(self, topics: Sequence[str], limit: int) -> bool:
        """Whether more than ``limit`` records wait in ``topics`` (produced, not yet committed)."""
        now = time.monotonic()

        def age(topic: str) -> float:
            return now - self._estimate.get(topic, (-REFRESH, 0))[0]

        if sum(self._estimate.get(t, (0.0, 0))[1] for t in topics) > limit:
            stale = [t for t in topics if age(t) >= FRESH]
        else:
            stale = [t for t in topics if age(t) >= REFRESH]
        if stale:
            waiting = await asyncio.to_thread(_measure, self._sb, stale)
            for topic in stale:
                self._estimate[topic] = (now, waiting.get(topic, 0))
        return sum(self._estimate[t][1] for t in topics) > limit

    def added(self, topic: str, count: int) -> None:
        """This worker produced ``count`` more records to ``topic``."""
        at, waiting = self._estimate.get(topic, (-REFRESH, 0))
        self._estimate[topic] = (at, waiting + count)


def _measure(sb: Partitioned, topics: list[str]) -> dict[str, int]:
    partitions = [(t, p) for t in topics for p in range(sb.settings.partitions)]
    end, done = offsets.ends(sb, partitions), offsets.committed(sb, partitions)
    waiting: dict[str, int] = {}
    for tp in partitions:
        # No commit yet: everything from the start waits.
        waiting[tp[0]] = waiting.get(tp[0], 0) + max(0, end.get(tp, 0) - max(0, done.get(tp, 0)))
    return waiting
