"""Cancel fences: when a cancel is done on every worker.

A session's jobs are keyed by session and audience chunk, so a campaign's jobs wait in every
partition of its dispatch topics and are sent by every worker. A cancel must reach them all, and
its ``202`` must mean that nothing more of the session will be sent, on any worker:

1. the session agent marks the session cancelled and writes it to the ``cancels`` topic, which
   every worker replicates: a dispatcher withdraws the session's jobs as soon as its replica has
   it (the fast path, within about a second);
2. then it produces a :class:`~switchboard.records.Fence` into every partition of the session's
   dispatch topics and records their offsets in the session's row. A dispatcher that reaches a
   fence writes the cancel into its partition's ``sends`` rows (:func:`switchboard.keys.fence_row`): every later
   job of the session on that partition is withdrawn, also by the partition's next owner after
   a rebalance, whose table is rebuilt with that row;
3. a dispatcher acknowledges jobs in offset order, after their send and report, and the
   consumer commits only what was acknowledged (``streams/commits.py``). Once the group's
   committed offset of every fenced partition is past its fence (:func:`fences_passed`), no
   send of the session is in flight and none can start: the session is *fenced*. Only then are
   its unsent deliveries reported ``cancelled`` (a ``sent`` can no longer follow them), and only
   then does ``POST /v1/sessions/{id}/cancel`` answer ``202``.

A paused channel's topic gets no fence (no dispatcher reads it, so it would never be passed);
its jobs are withdrawn through the replica when the channel is resumed, since a worker starts
its dispatchers only once its replica has read the whole ``cancels`` topic.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from streams import offsets
from switchboard import records
from switchboard.records import Fence, SessionState

if TYPE_CHECKING:
    from faust.types import TopicT

    from streams.app import Switchboard

__all__ = ["fences_passed", "place_fences"]


def _dispatch_topics(sb: Switchboard, state: SessionState) -> list[TopicT]:
    if state.priority == "high":
        return [sb.topics.priority_dispatch]
    return [sb.topics.dispatch[c] for c in state.channels if c not in sb.settings.paused]


async def place_fences(sb: Switchboard, state: SessionState) -> dict[str, int]:
    """Produce the session's fences and wait until the broker has them; their offsets by
    ``"<topic>/<partition>"``."""
    value = records.encode(Fence(state.session_id))
    futures = [
        await sb.produce_located(topic, key=None, value=value, partition=partition)
        for topic in _dispatch_topics(sb, state)
        for partition in range(sb.settings.partitions)
    ]
    placed = await asyncio.gather(*futures)
    return {f"{meta.topic}/{meta.partition}": meta.offset for meta in placed}


async def fences_passed(sb: Switchboard, fences: dict[str, int]) -> bool:
    """Whether the group's committed offset of every fenced partition is past its fence."""
    if not fences:
        return True
    partitions = {tp: (tp.rpartition("/")[0], int(tp.rpartition("/")[2])) for tp in fences}
    done = await asyncio.to_thread(offsets.committed, sb, partitions.values())
    return all(done.get(partitions[tp], -1) > offset for tp, offset in fences.items())
