"""The worker's state gauges: consumer lag, deferred deliveries, webhook backlog, sessions open.

Refreshed by one Faust timer every :data:`REFRESH_SECONDS`, never per event: the timer only
reads (the tallies the agents keep, :mod:`switchboard.backlog`, the tables and the brokers'
offsets) and sets gauges; it writes no table. Every gauge is this worker's share: scrape every
worker and ``sum`` them for the deployment.

* ``switchboard_consumer_lag{topic, partition}``: for each partition of an agent's topic this
  worker is assigned (active, not standby), the records after the group's committed offset
  (:func:`~switchboard.backlog.consumer_lag`; dispatch lanes included). Read with the admin
  API in a thread (two requests per refresh for all partitions). Committed offsets trail the
  agents by the commit interval (1 s), so the lag is over-counted by at most that much work.
  A partition this worker no longer owns loses its series at the next refresh.
* ``switchboard_deferred_deliveries`` and ``switchboard_deferred_oldest_age_seconds``:
  deliveries held by a time window in this worker's timers, and seconds since the oldest of
  them was deferred (0 when none); definitions in :mod:`switchboard.backlog`.
* ``switchboard_webhook_backlog{state}``: ``queued``, webhook jobs not yet committed on this
  worker's partitions of the webhooks topic (the consumer lag of that topic); ``retrying``,
  failed webhooks waiting for their next attempt in this worker's timers.
* ``switchboard_replica_position{topic, partition}``: for each partition of the replicated
  topics this worker reads whole (opt-outs, the service managers' state, cancels), the offset
  of the next record it applies (:meth:`~streams.replica.TopicReplica.positions`): a write at
  offset ``n`` is honoured here once the gauge is above ``n``.
* ``switchboard_sessions_open``: sessions of this worker's partitions opened (scheduled and
  manual ones included) and not completed. Kept by the agents in memory
  (:class:`~switchboard.backlog.OpenSessions`) and counted again from the tables whenever the
  worker's partitions change: a scan of the session rows of its partitions, once per
  rebalance, in slices that yield to the event loop. A session opened just before the scan
  whose row was not yet written (rows are written at a checkpoint, after the broker confirmed
  the command's outputs) is missed until the next rebalance: an undercount of a few at most.

During a rebalance or a table recovery the gauges keep their last values (the assignment and
the tables are in motion).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, Final, cast

from streams import offsets
from switchboard.backlog import DEFERRED, WEBHOOK, consumer_lag

if TYPE_CHECKING:
    from streams.app import Switchboard

__all__ = ["REFRESH_SECONDS", "register"]

log = logging.getLogger(__name__)

#: Seconds between two refreshes of the gauges.
REFRESH_SECONDS: Final = 5.0
#: Keys of the sessions table read between two turns given back to the event loop.
SCAN_SLICE: Final = 500

TP = tuple[str, int]


def agent_topics(sb: Switchboard) -> frozenset[str]:
    """The topics the worker's agents consume through the consumer group (not the replicated
    ones, read by every worker without a group, nor the output topics)."""
    t = sb.topics
    consumed = [
        t.instructions,
        t.sessions,
        t.reports,
        t.schedule,
        t.calls,
        t.webhooks,
        *t.dispatch.values(),
        t.priority_sessions,
        t.priority_dispatch,
        t.priority_reports,
    ]
    return frozenset(topic.get_topic_name() for topic in consumed)


def register(sb: Switchboard) -> None:
    app = sb.app
    m = sb.metrics
    topics = agent_topics(sb)
    webhooks = sb.topics.webhooks.get_topic_name()
    sessions_topics = {
        sb.topics.sessions.get_topic_name(),
        sb.topics.priority_sessions.get_topic_name(),
    }
    state: dict[str, Any] = {"lag_series": set(), "sessions_of": None}
    # Label children for these are made with labels() and removed with remove(), never through
    # Metrics.child, whose cache would keep a removed child alive.

    async def refresh() -> None:
        # The replicas are read without the consumer group: a rebalance does not move them.
        for replica in (sb.optouts, sb.manager_state, sb.cancels):
            for partition, position in replica.positions().items():
                m.replica_position.labels(replica.topic, str(partition)).set(position)
        if app.rebalancing or cast(Any, app.tables).recovery.in_recovery:
            return
        actives = [
            (tp.topic, tp.partition) for tp in app.assignor.assigned_actives() if tp.topic in topics
        ]
        owned = frozenset(p for t, p in actives if t in sessions_topics)
        if owned != state["sessions_of"]:
            state["sessions_of"] = owned
            await _recount_open_sessions(sb)
        m.sessions_open.set(len(sb.open_sessions))
        now = time.time()
        m.deferred.set(sb.timer_tally.total(DEFERRED))
        oldest = sb.timer_tally.oldest(DEFERRED)
        m.deferred_oldest.set(max(0.0, now - oldest) if oldest is not None else 0.0)
        m.webhook_backlog.labels("retrying").set(sb.timer_tally.total(WEBHOOK))
        try:
            lag = await asyncio.to_thread(_lag, sb, actives) if actives else {}
        except Exception as exc:  # noqa: BLE001 - a broker hiccup: the gauges wait for the next refresh
            log.warning("consumer lag not read", extra={"error": type(exc).__name__})
            return
        series = {(t, str(p)) for t, p in lag}
        for stale in state["lag_series"] - series:
            m.consumer_lag.remove(*stale)
        for (topic, partition), records in lag.items():
            m.consumer_lag.labels(topic, str(partition)).set(records)
        state["lag_series"] = series
        m.webhook_backlog.labels("queued").set(sum(n for (t, _), n in lag.items() if t == webhooks))

    app.timer(REFRESH_SECONDS, name="switchboard.gauges")(refresh)


def _lag(sb: Switchboard, partitions: list[TP]) -> dict[TP, int]:
    return consumer_lag(offsets.ends(sb, partitions), offsets.committed(sb, partitions))


async def _recount_open_sessions(sb: Switchboard) -> None:
    """Every session row of this worker's active partitions whose progress is not completed. A
    scan of the sessions table's keys (audience chunks and idempotency records have a ``:``
    in theirs, session ids never do), once per change of partitions; it yields to the event
    loop every :data:`SCAN_SLICE` keys, so a table of millions of sessions never holds the
    worker's heartbeats or agents up (what the agents report meanwhile is kept, see
    :class:`~switchboard.backlog.OpenSessions`)."""
    from streams.reports import load_progress

    started = time.monotonic()
    sb.open_sessions.start_recount()
    open_ids = []
    try:
        for n, raw in enumerate(sb.tables.sessions, 1):  # keys only: chunks' values are not read
            if n % SCAN_SLICE == 0:
                await asyncio.sleep(0)
            key = raw.decode() if isinstance(raw, bytes | bytearray) else str(raw)
            if ":" not in key and load_progress(sb, key).completed_at is None:
                open_ids.append(key)
    finally:
        sb.open_sessions.finish_recount(open_ids)
    log.info(
        "open sessions counted",
        extra={"open": len(sb.open_sessions), "seconds": round(time.monotonic() - started, 3)},
    )
