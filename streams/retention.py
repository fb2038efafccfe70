"""Bounded state: a completed session's rows are deleted once ``SWITCHBOARD_RETENTION`` has
passed, with tombstones on every changelog, and idempotency records once their window has.

A session's rows live on many partitions, in tables that each have one writing agent, and a
table can only be written by the agent that consumes the partition (a timer cannot write). So
the deletion is a chain of commands, each applied by the agent that owns the rows it deletes,
on the partition that holds them:

1. When the report agent sees a session complete, it sets the session's **purge timer** for
   completion + retention (``keys.purge_timer``; a re-send that completes it again replaces it).
2. The timer produces :class:`~switchboard.records.Purge` on the session's commands topic. The
   session agent checks that the session is still completed and due
   (:func:`switchboard.retention.purge_due`: a re-send may have opened it again), then produces
   the rest of the chain and only then (its checkpoint) writes its rows: the session's
   :class:`~switchboard.records.Purged` marker, and tombstones for its audience chunks and,
   last, the session row:

   * :class:`~switchboard.records.PurgeSends` into **every partition** of the session's dispatch
     topics (as a cancel's fences): each dispatcher finds the session's ``sends`` rows of its
     channel in its own partition by key prefix (one seek; the rows are a batch's, not a
     recipient's) and deletes them;
   * :class:`~switchboard.records.PurgeDeliveries` on its reports topic: the report agent deletes
     the ``deliveries`` rows an audience chunk at a time (one event per 500 recipients, each
     producing the next), then the progress row;
   * a tombstone for the ``cancels`` topic (a cancelled session fenced in every dispatch
     partition; one cancelled while a channel was paused keeps its entry, which withdraws the
     jobs waiting in that channel's topic), and the cancellation of its expiry timer;
   * the marker's own timer (``SWITCHBOARD_GONE_FOR``): :class:`~switchboard.records.Gone`
     deletes the marker, after which the id answers 404. The marker is what ``410 Gone``
     answers from, and what tells a late report (a provider's callback) for a deleted session
     from one for a session never seen.

Crash safety: every step produces its successors before its own rows are written, and its
event is acknowledged only after them (``streams/checkpoint.py``; the dispatchers ack in offset
order once the rows are written, and a commit flushes the changelog first). A crash, a stop or a
rebalance at any point leaves the step's event unacknowledged: it is processed again, by this
worker or the partition's next owner, and finds either its rows (it deletes them) or none
(nothing to do); a successor produced twice repeats an idempotent deletion. The session agent
deletes the session row last, so a step interrupted half way runs whole again.

Exactness: a ``PurgeSends`` is produced long after the session's last job (retention after its
completion, when every delivery is final), so it follows every job of the session in its
partition; the deliveries are enumerated from the session's shape, which the commands carry.
Rows a worker wrote before this existed (sessions completed before the upgrade) have no timer,
and are kept.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from streams.checkpoint import put, put_now
from streams.tablestore import keys_with_prefix
from switchboard import records
from switchboard.idempotency import expires_at
from switchboard.keys import (
    chunk_rows_prefix,
    expire_timer,
    forget_key_timer,
    gone_timer,
    idempotency_row,
    orphan_timer,
    purge_timer,
    purged_row,
    send_row_prefixes,
    session_row,
)
from switchboard.records import (
    ForgetKey,
    ForgetOrphan,
    Gone,
    Progress,
    Purge,
    Purged,
    PurgeDeliveries,
    PurgeSends,
    SessionState,
)
from switchboard.retention import (
    chunks_of,
    delivery_rows,
    is_send_row,
    purge_at,
    purge_due,
    session_rows,
)

if TYPE_CHECKING:
    from faust.types import TopicT

    from streams.app import Switchboard
    from switchboard.idempotency import IdempotencyRecord

__all__ = [
    "forget_key",
    "forget_marker",
    "forget_orphan",
    "purge_deliveries",
    "purge_sends",
    "purge_session",
    "purged",
    "schedule_forget_key",
    "schedule_orphan_check",
    "schedule_purge",
]

log = logging.getLogger(__name__)


# -- timers (set by the agents that see the moment) -----------------------------------------


async def schedule_purge(sb: Switchboard, session: SessionState, completed_at: float) -> None:
    """Set the session's purge timer for its completion + retention (none when retention is 0).
    Called by the report agent when the session completes; completing again replaces it."""
    due = purge_at(completed_at, sb.settings.retention)
    if due is None:
        return
    sid = session.session_id
    await sb.schedule_at(
        purge_timer(sid),
        due,
        sb.sessions_topic(session.priority),
        sid.encode(),
        records.encode(Purge(sid)),
    )


async def schedule_forget_key(
    sb: Switchboard, anchor: str, record: IdempotencyRecord, lane: str
) -> None:
    """Set the deletion of an idempotency key's record at the end of its window. Called by the
    session agent of ``lane`` when it writes the record: the same agent deletes it."""
    due = expires_at(record, sb.settings.idempotency_window)
    await sb.schedule_at(
        forget_key_timer(anchor),
        due,
        sb.sessions_topic(lane),
        anchor.encode(),
        records.encode(ForgetKey(anchor, record.claimed_at)),
    )


async def schedule_orphan_check(sb: Switchboard, session_id: str, lane: TopicT) -> None:
    """Set the deletion of the audience chunks written for ``session_id``, in case it never
    opens. Set by the Send API when a submission failed after writing chunks that a ``Discard``
    cannot take back: with an idempotency key (a retry under the same id reuses them), or once
    the opening was sent (it may be stored). Due two idempotency windows later, when no retry
    can use the id any more; the session agent of ``lane`` (the chunks' partition) deletes
    them then, unless the session opened."""
    due = time.time() + 2 * sb.settings.idempotency_window
    await sb.schedule_at(
        orphan_timer(session_id),
        due,
        lane,
        session_id.encode(),
        records.encode(ForgetOrphan(session_id)),
    )


# -- the session agent -----------------------------------------------------------------------


def purged(sb: Switchboard, session_id: str) -> Purged | None:
    """The marker of a session deleted after its retention, while it is kept."""
    raw = sb.staged.get(sb.tables.sessions, purged_row(session_id))
    return records.decode(Purged, raw) if raw is not None else None


async def purge_session(sb: Switchboard, state: SessionState) -> None:
    """Step 2 of the module docs: start the chain, then delete the session's own rows. A session
    not due (opened again by a re-send, or retention turned off since) is left alone."""
    sid, key = state.session_id, state.session_id.encode()
    raw = sb.staged.get(
        sb.tables.deliveries, key
    )  # its progress: same partition, the report agent's
    progress = records.decode(Progress, raw) if raw is not None else Progress()
    now = time.time()
    if not purge_due(progress.completed_at, sb.settings.retention, now, state.resent_at):
        log.info(
            "purge skipped: the session is not completed past its retention",
            extra={"session_id": sid, "completed_at": progress.completed_at},
        )
        return
    assert progress.completed_at is not None
    # The outputs first: the checkpoint writes the rows only once the broker has them all.
    for topic, channels in _send_topics(sb, state):
        value = records.encode(PurgeSends(sid, channels))
        for partition in range(sb.settings.partitions):
            await sb.produce(topic, key=None, value=value, partition=partition)
    reports = sb.topics.priority_reports if state.priority == "high" else sb.topics.reports
    first = PurgeDeliveries(sid, 0, state.recipients, list(state.channels))
    await sb.produce(reports, key=key, value=records.encode(first))
    await sb.cancel_timer(expire_timer(sid), key)
    if state.status == "cancelled" and _fenced_everywhere(sb, state):
        await sb.produce(sb.topics.cancels, key=key, value=None)
    if sb.settings.gone_for > 0:
        await sb.schedule_at(
            gone_timer(sid),
            now + sb.settings.gone_for,
            sb.sessions_topic(state.priority),
            key,
            records.encode(Gone(sid)),
        )
        marker = Purged(state.client_id, progress.completed_at, now)
        put(sb.tables.sessions, purged_row(sid), records.encode(marker))
    rows = session_rows(sid, state.chunks)  # the session row last: see the module docs
    for row in rows:
        put(sb.tables.sessions, row, None)
    sb.metrics.purged_rows.labels("sessions").inc(len(rows))
    log.info(
        "session purged after its retention",
        extra={"session_id": sid, "completed_at": progress.completed_at, "chunks": state.chunks},
    )


def _send_topics(sb: Switchboard, state: SessionState) -> list[tuple[TopicT, list[str] | None]]:
    """Where the session's ``sends`` rows were written: each channel's dispatch topic (paused
    or not: a paused channel's dispatcher deletes them when it is resumed), and the
    high-priority lane's, whose dispatcher sends every channel."""
    topics: list[tuple[TopicT, list[str] | None]] = [
        (sb.topics.dispatch[channel], [channel]) for channel in state.channels
    ]
    if state.priority == "high":
        topics.append((sb.topics.priority_dispatch, None))
    return topics


def _fenced_everywhere(sb: Switchboard, state: SessionState) -> bool:
    """Whether a cancelled session was fenced in every partition of its dispatch topics, so no
    dispatcher needs its entry on the ``cancels`` topic any more. A channel paused when it was
    cancelled got no fence (``streams/fences.py``): its jobs still wait in that topic, and only
    the entry withdraws them when the channel is resumed, so the entry is kept."""
    topics = (
        [sb.topics.priority_dispatch]
        if state.priority == "high"
        else [sb.topics.dispatch[channel] for channel in state.channels]
    )
    return all(
        f"{topic.get_topic_name()}/{partition}" in state.fences
        for topic in topics
        for partition in range(sb.settings.partitions)
    )


def forget_marker(sb: Switchboard, cmd: Gone) -> None:
    """The end of a deleted session's 410: its marker goes."""
    if purged(sb, cmd.session_id) is not None:
        put(sb.tables.sessions, purged_row(cmd.session_id), None)


def forget_key(sb: Switchboard, cmd: ForgetKey, record: IdempotencyRecord | None) -> None:
    """Delete the idempotency ``record`` of the key (its stored one) once its window has
    passed, if it is still the one the timer was set for (a later claim of the key wrote
    another one, with a timer of its own)."""
    if record is None or record.claimed_at != cmd.claimed_at:
        return
    if time.time() < expires_at(record, sb.settings.idempotency_window):
        return  # the window was made longer since the timer was set: its next claim resets it
    put(sb.tables.sessions, idempotency_row(cmd.session_id), None)
    sb.metrics.purged_rows.labels("sessions").inc()


def forget_orphan(sb: Switchboard, partition: int, cmd: ForgetOrphan) -> int:
    """Delete the audience chunks of a session that never opened (nothing, once it did: its
    retention deletes them with it); returns how many. In the event's context, on the
    partition the chunks were written to."""
    if _opened(sb, cmd.session_id):
        return 0
    table = sb.tables.sessions
    deleted = 0
    for key in keys_with_prefix(table, partition, chunk_rows_prefix(cmd.session_id)):
        put(table, key, None)
        deleted += 1
    sb.metrics.purged_rows.labels("sessions").inc(deleted)
    if deleted:
        log.info(
            "audience chunks of a session that never opened deleted",
            extra={"session_id": cmd.session_id, "chunks": deleted},
        )
    return deleted


def _opened(sb: Switchboard, session_id: str) -> bool:
    opened = sb.staged.get(sb.tables.sessions, session_row(session_id)) is not None
    return opened or purged(sb, session_id) is not None


# -- the report agent ------------------------------------------------------------------------


async def purge_deliveries(sb: Switchboard, cmd: PurgeDeliveries, lane: TopicT) -> None:
    """Delete one audience chunk's delivery rows; the next chunk is produced first, and the
    progress row goes with the last chunk."""
    rows = delivery_rows(cmd.session_id, cmd.chunk, cmd.recipients, cmd.channels)
    if cmd.chunk + 1 < chunks_of(cmd.recipients):
        more = PurgeDeliveries(cmd.session_id, cmd.chunk + 1, cmd.recipients, cmd.channels)
        await sb.produce(lane, key=cmd.session_id.encode(), value=records.encode(more))
    else:
        rows.append(cmd.session_id.encode())  # the progress row
    existing = [row for row in rows if sb.staged.get(sb.tables.deliveries, row) is not None]
    for row in existing:  # a delivery never reported has no row
        put(sb.tables.deliveries, row, None)
    sb.metrics.purged_rows.labels("deliveries").inc(len(existing))


# -- the dispatchers -------------------------------------------------------------------------


async def purge_sends(sb: Switchboard, partition: int, cmd: PurgeSends) -> int:
    """Delete the session's ``sends`` rows in ``partition`` (the event's) that this topic's
    dispatcher wrote; returns how many. Called in the event's context, so each tombstone goes to
    the partition's changelog."""
    table = sb.tables.sends
    deleted = 0
    for prefix in send_row_prefixes(cmd.session_id):
        for key in keys_with_prefix(table, partition, prefix):
            if is_send_row(key, cmd.session_id, cmd.channels):
                await put_now(sb.bulk_rows, table, key, None)
                deleted += 1
    sb.metrics.purged_rows.labels("sends").inc(deleted)
    return deleted
