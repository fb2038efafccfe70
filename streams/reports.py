"""The report agent: the one owner of every delivery's state, and of the status topic's order.

Consumes ``<prefix>.reports`` (keyed by session id): the session agent's ``accepted`` and
``rejected``, the dispatchers' ``sent``, ``delivered`` and ``failed`` (in
:class:`~switchboard.records.ReportBatch` records of many deliveries: one event, one progress
write), and later providers' callbacks. It is the only writer of the ``deliveries`` table (every delivery's state, and each
session's :class:`~switchboard.records.Progress` under the session id) and the only producer of
per-delivery status events, so a recipient's events are in order on the status topic.

* A report that does not move its delivery forward (a duplicate, a ``sent`` after
  ``delivered``, anything after a final failure) changes nothing and emits nothing
  (:func:`switchboard.status.supersedes`).
* A provider's callback about another message than the delivery's (another ``MessageSid``:
  :func:`switchboard.deliveries.provider_id_conflict`) changes nothing and goes to the rejected
  topic with the reason.
* When a delivery becomes final, the session's progress counts it; when every delivery of the
  session is final, one ``completed`` event with the counts per status is emitted.
* Expiry: a delivery ``sent`` that gets no final report within ``SWITCHBOARD_REPORT_TIMEOUT``
  becomes ``expired``. One durable timer per session (not one per message: a timer costs a
  table write and an index entry) fires an :class:`~switchboard.records.ExpireSweep`, which
  walks the session's deliveries a chunk per event, reports ``expired`` for those due (each
  applied like any report), and arms the timer again for the earliest one not yet due while the
  session is open. A delivery expires within the duration of a sweep of its due time.

* Channel fallback (``options.fallback``, ``switchboard/fallback.py``): this agent decides when
  a recipient's next channel is tried, as the one owner of its deliveries' states. A step that
  ends without being delivered starts the next at once (its row is written ``accepted``, with
  ``detail.reason`` ``fallback`` and why, and a :class:`~switchboard.records.Retry` of attempt
  1 asks the session agent to dispatch it); a step handed off and not delivered within
  ``afterSeconds`` starts it from the session's sweep (below), whose timer is then due by the
  earliest such time. A session with a fallback counts recipients, each by its outcome.

* Retention: :class:`~switchboard.records.PurgeDeliveries` deletes a deleted session's
  delivery rows a chunk per event, then its progress (``streams/retention.py``); a report for a
  session already deleted (a late callback) is ignored.

Exactly once, through crashes: the agent runs under checkpoints (``streams/checkpoint.py``), so
its rows are written only after its outputs are in Kafka, and a report writes its session's
progress before its deliveries, with the event's offset (``Progress.applied``). A crash while a
checkpoint's rows are written leaves a prefix of them in the changelog, so an event processed
again finds either nothing of itself (it applies normally), its progress and some of its
deliveries (``applied`` is at or past its offset: it writes the deliveries not written yet and
counts nothing again), or everything (its deliveries have moved: nothing to do). A delivery is therefore counted once, and a session
completes once. A report can come before its session's row, when the worker that fanned the
session out died before writing it: the report waits until this worker's session agent has
handled what Kafka holds of the partition's session commands (``_opened_meanwhile``), and only
a session still missing then is an error.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from faust import current_event
from faust.types import EventT, StreamT, TopicT

from streams import retention
from streams.app import Switchboard
from streams.checkpoint import put, run_checkpointed
from streams.managers import merge_detail
from streams.sessions import load_chunk, load_session
from switchboard import deadline, fallback, jsonbytes, records
from switchboard.clients import ClientConfig
from switchboard.deliveries import apply_report, provider_id_conflict
from switchboard.errors import FieldError, MissingState
from switchboard.fanout import CHUNK_SIZE
from switchboard.keys import expire_timer, job_timer
from switchboard.records import (
    DeliveryState,
    ExpireSweep,
    Progress,
    PurgeDeliveries,
    Report,
    ReportBatch,
    Retry,
    SessionState,
)
from switchboard.retry import next_attempt_of_session
from switchboard.status import Status, StatusEvent, event_id, is_final

__all__ = ["load_delivery", "load_progress", "register"]

log = logging.getLogger(__name__)


def register(sb: Switchboard) -> None:
    # Two lanes, one handler: a session's reports all travel in its lane (``options.priority``),
    # so each delivery and each session's progress has one writer, and a one-time password's
    # reports never queue behind a campaign's.
    @sb.app.agent(sb.topics.reports, name="switchboard.reports")
    async def reports(stream: StreamT[bytes]) -> None:
        await run_checkpointed(sb, stream, "reports", lambda e: _handle(sb, e))

    @sb.app.agent(sb.topics.priority_reports, name="switchboard.reports.priority")
    async def priority_reports(stream: StreamT[bytes]) -> None:
        await run_checkpointed(sb, stream, "reports.priority", lambda e: _handle(sb, e))

    async def forget_armed(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        # A session's partition may come back after another worker cancelled its timer: the
        # hint must not outlive this worker's ownership.
        sb.armed_expiry.clear()

    sb.app.on_partitions_revoked.connect(forget_armed)


def _lane(sb: Switchboard) -> TopicT:
    """The reports topic of the event being handled: a session's sweeps stay in its lane."""
    event = current_event()
    high = sb.topics.priority_reports
    if event is not None and event.message.topic == high.get_topic_name():
        return high
    return sb.topics.reports


def load_delivery(sb: Switchboard, key: str) -> DeliveryState | None:
    raw = sb.staged.get(sb.tables.deliveries, key.encode())
    return records.decode(DeliveryState, raw) if raw is not None else None


def load_progress(sb: Switchboard, session_id: str) -> Progress:
    raw = sb.staged.get(sb.tables.deliveries, session_id.encode())
    return records.decode(Progress, raw) if raw is not None else Progress()


def _save_progress(sb: Switchboard, session_id: str, progress: Progress, offset: int) -> None:
    # The gauge of open sessions (streams/gauges.py): a set operation per progress written. A
    # progress found written already (a replay after a crash) is counted by the gauges' rebuild.
    sb.open_sessions.progressed(session_id, completed=progress.completed_at is not None)
    put(
        sb.tables.deliveries,
        session_id.encode(),
        records.encode(dataclasses.replace(progress, applied=max(progress.applied, offset))),
    )


async def _handle(sb: Switchboard, event: EventT[bytes]) -> None:
    body = jsonbytes.loads(event.value)
    offset = event.message.offset
    kind = body.get("kind") if isinstance(body, dict) else None
    if kind == ExpireSweep.KIND:
        await _sweep(sb, records.decode(ExpireSweep, body), offset)
    elif kind == PurgeDeliveries.KIND:
        await retention.purge_deliveries(sb, records.decode(PurgeDeliveries, body), _lane(sb))
    elif kind == ReportBatch.KIND:
        await _apply(sb, ReportBatch.decode(body).reports, offset)
    else:
        await _apply(sb, [records.decode(Report, body)], offset)


async def _apply(sb: Switchboard, reports: list[Report], offset: int) -> None:
    """Apply the reports of one event (at ``offset`` of its partition; all of one session) to
    their deliveries: the states, the events, the counts (module docs). The session's progress
    is written once for the event, before its deliveries."""
    if not reports:
        return
    session_id = reports[0].session_id
    # The session's row is on this worker with its reports (one partition): a report for a
    # session it does not have is an error to see (the rejected topic), such as a provider's
    # callback for a message this deployment did not send.
    session = await _session_of(sb, session_id, "a report")
    if session is None:
        return
    progress = before = load_progress(sb, session_id)
    # Processed again after a crash that kept this event's progress row but not all of its
    # delivery rows: it was counted (and its outputs are in Kafka); only deliveries are left.
    counted = progress.applied >= offset
    states: dict[str, DeliveryState] = {}  # the deliveries this event moves, in order
    expiry_due: float | None = None
    plan = fallback.plan_of(session.options)
    horizon = _horizon(sb, plan)
    audience: dict[int, list[dict[str, Any]]] = {}  # chunks read for fallback steps
    # The event's status events, published together (``Switchboard.publish_statuses``) before
    # anything else this event publishes, and at its end: in the order of its reports.
    pending: list[StatusEvent] = []
    for report in reports:
        report = _with_retry(report, session.options)
        key = report.key
        old = states.get(key) or load_delivery(sb, key)
        base = None if report.reopen else old
        conflict = provider_id_conflict(report, base)
        if conflict is not None:  # a callback about another message: nothing changes
            await _reject_report(sb, report, conflict, offset)
            continue
        state, events = apply_report(report, base)
        if state is None or state is old:
            continue
        updated, step, events = _progressed(
            sb, session, plan, report, (old, state), progress, events, (states, audience)
        )
        progress, completes = _completing(session, report, progress, updated)
        client = sb.clients.get(report.client_id)
        if client is not None and sb.managers.wants_reports(client):
            events = await _told(sb, report, client, events)
        pending += events
        if step is not None:
            states[step.key] = step.state
            await _flush(sb, pending)
            await _start(sb, session, step)
        expiry_due = _expiry_after(report, state, horizon, expiry_due)
        if report.retry_if_allowed and report.retry_at is not None:
            await _schedule_retry(sb, report, report.retry_at)
        if completes and not counted:
            await _flush(sb, pending)
            await _completed(sb, session, report.client_id, progress)
        states[key] = state
    await _flush(sb, pending)
    if expiry_due is not None:
        progress = await _arm_expiry(sb, session_id, progress, expiry_due)
    if progress is not before and not counted:
        _save_progress(sb, session_id, progress, offset)  # before the deliveries: see above
    for key, state in states.items():
        put(sb.tables.deliveries, key.encode(), records.encode(state))


def _progressed(
    sb: Switchboard,
    session: SessionState,
    plan: fallback.Plan | None,
    report: Report,
    change: tuple[DeliveryState | None, DeliveryState],
    progress: Progress,
    events: list[StatusEvent],
    seen: tuple[dict[str, DeliveryState], dict[int, list[dict[str, Any]]]],
) -> tuple[Progress, _Step | None, list[StatusEvent]]:
    """The progress once ``report`` moved its delivery (``change``), the fallback step it
    starts (with a fallback: the recipient is counted by its outcome) and its events. ``seen``:
    the deliveries this event moved so far and the audience chunks it read."""
    if plan is None:
        return _progress_after(report, *change, progress), None, events
    states, audience = seen
    rows = _rows(sb, session, report.index, states)
    return _fallback_after(sb, session, report, change, rows, progress, events, audience)


def _completing(
    session: SessionState, report: Report, progress: Progress, updated: Progress
) -> tuple[Progress, bool]:
    """``updated`` (the progress after ``report``), completed if it makes every delivery of the
    session final; and whether it does."""
    completes = updated.completed_at is None and updated.final >= session.deliveries
    if not completes or updated is progress:
        return updated, False
    done = dataclasses.replace(
        updated, completed_at=report.occurred_at, completions=updated.completions + 1
    )
    return done, True


async def _schedule_retry(sb: Switchboard, report: Report, at: float) -> None:
    """The next attempt of ``report``'s delivery, at ``at``. Only for a report that moved its
    delivery on: a repeated callback schedules nothing."""
    retry = Retry(report.session_id, report.index, report.channel, report.attempt + 1)
    await sb.schedule_at(
        job_timer(report.key, retry.attempt),
        at,
        sb.sessions_topic(report.priority),
        report.session_id.encode(),
        records.encode(retry),
    )


async def _session_of(sb: Switchboard, session_id: str, what: str) -> SessionState | None:
    """The session ``what`` is for; None when it was deleted after its retention
    (``streams/retention.py``): what comes for it now (a provider's late callback, an expiry
    sweep already queued) is ignored, not an error. A session not in the table yet may be
    opened meanwhile (:func:`_opened_meanwhile`): this waits for that.

    Raises:
        MissingState: the session is not in this worker's table, which holds its partition,
            once this worker's session agent has handled every command of that partition that
            was in Kafka when the report came (or within :data:`OPENING_WAIT`).
    """
    session = load_session(sb, session_id)
    if session is not None:
        return session
    if retention.purged(sb, session_id) is not None:
        sb.metrics.after_purge.labels("reports").inc()
        log.info("report for a purged session ignored", extra={"session_id": session_id})
        return None
    session, caught_up = await _opened_meanwhile(sb, session_id)
    if session is not None:
        return session
    sb.metrics.missing_state.labels("session").inc()
    raise MissingState(
        f"{what} for unknown session {session_id} (not in this worker's sessions table, which "
        "holds its partition, "
        + (
            "once its session commands were all handled)"
            if caught_up
            else f"and its session commands not all handled within {OPENING_WAIT:g} s)"
        )
    )


#: Seconds a report for a session not in the table waits for the session agent to catch up.
OPENING_WAIT: Final = 30.0
#: Seconds between two looks at how far the session agent is.
_OPENING_POLL: Final = 0.1


async def _opened_meanwhile(sb: Switchboard, session_id: str) -> tuple[SessionState | None, bool]:
    """The session, once this worker's session agent of the event's lane has handled every
    command of its partition that Kafka holds now, or has opened it before; and whether it got
    that far (False: not within :data:`OPENING_WAIT`).

    Why a report can come before its session's row: the session agent writes the row at its
    checkpoint, after the session's jobs are in Kafka (``streams/checkpoint.py``). A worker that
    dies in between loses the row, not the jobs: they are dispatched and reported, and the row
    comes back only when the restarted session agent handles ``OpenSession`` again. Nothing
    orders that replay before this agent reads the reports, which are on another topic; but the
    opening was in Kafka before any report of the session was, so once the session agent has
    handled (or the group has committed) everything up to the partition's end offset as read
    now, a session still missing is missing for good."""
    event = current_event()
    if event is None:
        return None, True
    message = event.message
    high = message.topic == sb.topics.priority_reports.get_topic_name()
    tp = (
        (sb.topics.priority_sessions if high else sb.topics.sessions).get_topic_name(),
        message.partition,
    )
    end = (await asyncio.to_thread(sb.ends, [tp]))[tp]
    waited = time.monotonic() + OPENING_WAIT
    told = False
    while True:
        if sb.staged.handled(*tp) >= end:
            return load_session(sb, session_id), True
        if (await asyncio.to_thread(sb.committed, [tp])).get(tp, -1) >= end:
            return load_session(sb, session_id), True
        if time.monotonic() >= waited:
            return None, False
        if not told:
            told = True
            log.info(
                "a report waits for its session's commands to be handled",
                extra={"session_id": session_id, "topic": tp[0], "partition": tp[1]},
            )
        await asyncio.sleep(_OPENING_POLL)
        session = load_session(sb, session_id)
        if session is not None:
            return session, True


async def _reject_report(sb: Switchboard, report: Report, why: str, offset: int) -> None:
    """Put a report that must change nothing on the rejected topic, keyed by its delivery. Its
    id derives from the event's offset, so the same report processed again after a crash is the
    same rejection. Produced through ``sb.produce``: the checkpoint waits for it like any output."""
    event = current_event()
    topic, partition = (
        (event.message.topic, event.message.partition) if event is not None else ("reports", -1)
    )
    sb.metrics.rejections.labels("provider-id").inc()
    await sb.reject(
        errors=[FieldError("provider_message_id", why)],
        topic=topic,
        partition=partition,
        offset=offset if event is not None else -1,
        key=report.key.encode(),
        value=records.encode(report),
        headers=[],
        client_id=report.client_id,
    )


async def _told(
    sb: Switchboard, report: Report, client: ClientConfig, events: list[StatusEvent]
) -> list[StatusEvent]:
    """The status events of a report that moved its delivery on, after the service managers'
    ``after_report`` (once per such report, never for a duplicate; a failing hook's error is
    told on the report's own event). Called only for a client whose managers have that hook
    (``ManagerDesk.wants_reports``); the caller publishes the events (:func:`_flush`)."""
    errors = await sb.managers.after_report(report, client)
    if errors and events[-1].status == report.status:
        events[-1] = dataclasses.replace(events[-1], detail=merge_detail(events[-1].detail, errors))
    return events


async def _flush(sb: Switchboard, pending: list[StatusEvent]) -> None:
    """Publish the status events gathered so far, and forget them."""
    if pending:
        await sb.publish_statuses(pending)
        pending.clear()


# -- expiry --------------------------------------------------------------------------------

#: Seconds this worker trusts that it saw a session's expiry timer armed
#: (``Switchboard.armed_expiry``, forgotten at every revocation of partitions).
_ARMED_TRUST = 60.0


async def _arm_expiry(sb: Switchboard, session_id: str, progress: Progress, due: float) -> Progress:
    """Make sure the session's expiry sweep is due by ``due``, at one table read per session
    and worker, and one timer per session. Returns the progress to write."""
    armed = sb.armed_expiry
    seen = armed.get(session_id)
    if seen is not None and time.monotonic() - seen < _ARMED_TRUST:
        return progress
    if progress.expiry_due is None or progress.expiry_due > due:
        progress = await _set_expiry(sb, session_id, progress, due)
    if len(armed) >= 100_000:
        armed.clear()
    armed[session_id] = time.monotonic()
    return progress


async def _set_expiry(
    sb: Switchboard, session_id: str, progress: Progress, due: float | None
) -> Progress:
    key = session_id.encode()
    if due is None:
        await sb.cancel_timer(expire_timer(session_id), key)
    else:
        await sb.schedule_at(
            expire_timer(session_id), due, _lane(sb), key, records.encode(ExpireSweep(session_id))
        )
    return dataclasses.replace(progress, expiry_due=due)


async def _sweep(sb: Switchboard, cmd: ExpireSweep, offset: int) -> None:
    """One chunk of a session's expiry sweep (see the module docs); with a fallback, it also
    starts the steps whose previous one was not delivered within ``afterSeconds``."""
    session = await _session_of(sb, cmd.session_id, "an expiry sweep")
    if session is None:
        return
    now = time.time()
    started = cmd.started_at or now
    timeout = sb.settings.report_timeout
    next_due = cmd.next_due
    plan = fallback.plan_of(session.options)
    audience: dict[int, list[dict[str, Any]]] = {}
    first, last = cmd.chunk * CHUNK_SIZE, min(session.recipients, (cmd.chunk + 1) * CHUNK_SIZE)
    for index in range(first, last):
        rows: dict[str, DeliveryState | None] = {}
        for channel in session.channels:
            key = records.delivery_key(cmd.session_id, index, channel)
            state = rows[channel] = load_delivery(sb, key)
            if state is None or state.status != "sent":
                continue
            due = state.updated_at + timeout
            if due > started:
                next_due = due if next_due is None else min(next_due, due)
                continue
            # Applied as it comes back on the reports topic, like any report: a final report
            # that overtakes it wins.
            await sb.report(
                Report(
                    session_id=cmd.session_id,
                    client_id=session.client_id,
                    channel=channel,
                    index=index,
                    address=state.address,
                    status="expired",
                    attempt=state.attempt,
                    occurred_at=now,
                    provider_message_id=state.provider_message_id,
                    error_code="no-report",
                    error=f"no final report within {timeout:g}s",
                    priority=session.priority,
                )
            )
        if plan is not None:
            next_due = await _timed_out(sb, session, plan, index, rows, started, audience, next_due)
    if cmd.chunk + 1 < session.chunks:
        more = ExpireSweep(cmd.session_id, cmd.chunk + 1, started, next_due)
        await sb.produce(_lane(sb), key=cmd.session_id.encode(), value=records.encode(more))
        return
    # The whole session is swept. While it is open, sweep again for the earliest delivery not
    # yet due; a delivery sent during this sweep is due by started + timeout at the latest. A
    # session with a fallback may complete with a channel still in flight (another one was
    # delivered): it is swept until that one is final too.
    progress = load_progress(sb, cmd.session_id)
    sb.armed_expiry.pop(cmd.session_id, None)
    if progress.completed_at is not None and (plan is None or next_due is None):
        _save_progress(
            sb, cmd.session_id, await _set_expiry(sb, cmd.session_id, progress, None), offset
        )
        return
    horizon = started + _horizon(sb, plan)
    again = horizon if next_due is None else min(next_due, horizon)
    _save_progress(
        sb, cmd.session_id, await _set_expiry(sb, cmd.session_id, progress, again), offset
    )


# -- channel fallback ------------------------------------------------------------------------


def _horizon(sb: Switchboard, plan: fallback.Plan | None) -> float:
    """Seconds after a hand-off by which the session's sweep must look at the delivery: the
    report timeout, or a fallback's ``afterSeconds`` when shorter. The same for every delivery
    of a session, so the sweep's timer, once armed, is never due later than a new one needs."""
    timeout = sb.settings.report_timeout
    if plan is None or plan.after_seconds is None:
        return timeout
    return min(timeout, float(plan.after_seconds))


@dataclass(frozen=True, slots=True)
class _Step:
    """A fallback step started: its delivery's row, the events that tell it, and the command
    that has the session agent dispatch it (None: it ended at once, cancelled or expired)."""

    key: str
    state: DeliveryState
    events: list[StatusEvent]
    dispatch: Retry | None


def _rows(
    sb: Switchboard, session: SessionState, index: int, states: Mapping[str, DeliveryState]
) -> dict[str, DeliveryState | None]:
    """The recipient's deliveries by channel, as this event has them so far."""
    rows: dict[str, DeliveryState | None] = {}
    for channel in session.channels:
        key = records.delivery_key(session.session_id, index, channel)
        rows[channel] = states.get(key) or load_delivery(sb, key)
    return rows


def _steps_of(
    sb: Switchboard, session: SessionState, index: int, audience: dict[int, list[dict[str, Any]]]
) -> tuple[tuple[str, ...], Mapping[str, str]]:
    """The recipient's fallback steps and addresses, from its audience chunk (read once per
    event and chunk; a lost chunk has none, so nothing is started)."""
    chunk, at = divmod(index, CHUNK_SIZE)
    if chunk not in audience:
        audience[chunk] = load_chunk(sb, session.session_id, chunk) or []
    recipients = audience[chunk]
    addresses: Mapping[str, str] = (
        recipients[at].get("addresses") or {} if at < len(recipients) else {}
    )
    return fallback.steps(session.channels, addresses), addresses


def _fallback_after(
    sb: Switchboard,
    session: SessionState,
    report: Report,
    change: tuple[DeliveryState | None, DeliveryState],
    rows: dict[str, DeliveryState | None],
    progress: Progress,
    events: list[StatusEvent],
    audience: dict[int, list[dict[str, Any]]],
) -> tuple[Progress, _Step | None, list[StatusEvent]]:
    """A fallback session's delivery moved from ``change[0]`` to ``change[1]``: the next step it
    starts, if any, the progress with the recipient counted by its outcome, and the report's
    events (a ``delivered`` after a later step was started says so: ``after_fallback_to``)."""
    old, state = change
    rows[report.channel] = old
    before = fallback.outcome(session.channels, rows)
    rows[report.channel] = state
    step = None
    if fallback.after_failure(session.channels, rows, report.channel) is not None:
        order, addresses = _steps_of(sb, session, report.index, audience)
        move = fallback.after_failure(order, rows, report.channel)
        if move is not None:
            step = _step(session, report.index, move, addresses, time.time())
            rows[move.channel] = step.state
    progress = _recounted(progress, before, fallback.outcome(session.channels, rows))
    progress = _held(progress, old, state)
    later = [c for c in session.channels[session.channels.index(report.channel) + 1 :] if rows[c]]
    if later and state.status in ("delivered", "read"):
        events = [
            dataclasses.replace(e, detail={**e.detail, "after_fallback_to": later[-1]})
            if e.status in ("delivered", "read")
            else e
            for e in events
        ]
    return progress, step, events


def _step(
    session: SessionState, index: int, move: fallback.Move, addresses: Mapping[str, str], now: float
) -> _Step:
    """Fallback step ``move`` of recipient ``index``: ``accepted`` with the reason, then
    dispatched by the session agent; or ended at once when the session was cancelled meanwhile
    (``cancelled``) or its send-by deadline has passed (``expired``, reason ``deadline``)."""
    accepted = Report(
        session_id=session.session_id,
        client_id=session.client_id,
        channel=move.channel,
        index=index,
        address=fallback.address(move.channel, addresses),
        status="accepted",
        attempt=1,
        occurred_at=now,
        detail=move.detail(),
        priority=session.priority,
    )
    state, events = apply_report(accepted, None)
    assert state is not None
    expires = deadline.deadline_of(session.options, session.created_at)
    end: Report | None = None
    if session.status == "cancelled":
        why = f"the session was cancelled before the fallback to {move.channel}"
        end = dataclasses.replace(accepted, status="cancelled", error=why, detail={})
    elif deadline.passed_before(expires, now):
        assert expires is not None
        end = dataclasses.replace(
            accepted,
            status="expired",
            error_code="deadline",
            error=deadline.reason(expires, f"the fallback to {move.channel}"),
            detail={"expires_at": deadline.iso(expires)},
        )
    if end is not None:
        state, more = apply_report(end, state)
        assert state is not None
        events = [*events, *more]
        return _Step(accepted.key, state, events, None)
    return _Step(accepted.key, state, events, Retry(session.session_id, index, move.channel, 1))


async def _start(sb: Switchboard, session: SessionState, step: _Step) -> None:
    """Tell a started step, and have the session agent dispatch it."""
    for event in step.events:
        await sb.publish_status(event)
    if step.dispatch is not None:
        await sb.command(step.dispatch, priority=session.priority)


async def _timed_out(
    sb: Switchboard,
    session: SessionState,
    plan: fallback.Plan,
    index: int,
    rows: dict[str, DeliveryState | None],
    started: float,
    audience: dict[int, list[dict[str, Any]]],
    next_due: float | None,
) -> float | None:
    """A sweep's look at a recipient's fallback timeout: its next step is started when due
    (its row written here), else its due time is kept. Answers the sweep's ``next_due``."""
    due = fallback.timeout_due(plan, rows)
    if due is None:
        return next_due
    if due > started:
        return due if next_due is None else min(next_due, due)
    order, addresses = _steps_of(sb, session, index, audience)
    move = fallback.after_timeout(plan, order, rows, started)
    if move is not None:
        step = _step(session, index, move, addresses, time.time())
        put(sb.tables.deliveries, step.key.encode(), records.encode(step.state))
        await _start(sb, session, step)
    return next_due


def _recounted(progress: Progress, before: Status | None, after: Status | None) -> Progress:
    """The progress once a recipient's outcome went from ``before`` to ``after``. A count
    moved after the session completed (a late ``delivered``) does not open it again."""
    uncount, count = fallback.recount(before, after)
    if uncount is None and count is None:
        return progress
    counts, final = dict(progress.counts), progress.final
    if uncount is not None:
        counts[uncount] = counts.get(uncount, 0) - 1
        if counts[uncount] <= 0:
            del counts[uncount]
        final -= 1
    if count is not None:
        counts[count] = counts.get(count, 0) + 1
        final += 1
    return dataclasses.replace(progress, final=max(0, final), counts=counts)


def _expiry_after(
    report: Report, state: DeliveryState, horizon: float, due: float | None
) -> float | None:
    """When the event's deliveries ``sent`` so far expire at the earliest (``due``), once
    ``report`` moved its delivery to ``state``: a delivery ``sent`` expires ``horizon`` after."""
    if state.status != "sent":
        return due
    expires = report.occurred_at + horizon
    return expires if due is None else min(due, expires)


def _with_retry(report: Report, options: Mapping[str, Any]) -> Report:
    """``report`` with the time of the next attempt, when it is a retryable failure whose
    time is not set yet (a provider's callback) and the session's retries allow one."""
    if not report.retry_if_allowed or report.retry_at is not None:
        return report
    at = next_attempt_of_session(
        options, max(report.attempt, 1), datetime.fromtimestamp(report.occurred_at, UTC)
    )
    if at is None:
        return report
    when = datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z")
    return dataclasses.replace(
        report, retry_at=at, retryable=True, detail={**report.detail, "retry_at": when}
    )


def _progress_after(
    report: Report, old: DeliveryState | None, state: DeliveryState, progress: Progress
) -> Progress:
    """The session's progress once ``report`` moved its delivery from ``old`` to ``state``:
    a delivery that becomes final is counted; a final one opened again (a re-send) is not.
    ``deferred`` follows the deliveries moving into and out of ``deferred``."""
    was_final = old is not None and is_final(old.status)
    if report.reopen and old is not None and was_final:
        progress = _uncount(progress, old.status)
    if is_final(state.status) and (report.reopen or not was_final):
        progress = _count(progress, state.status)
    return _held(progress, old, state)


def _held(progress: Progress, old: DeliveryState | None, state: DeliveryState) -> Progress:
    """``deferred`` follows the deliveries moving into and out of ``deferred``."""
    held = (state.status == "deferred") - (old is not None and old.status == "deferred")
    if held:
        progress = dataclasses.replace(progress, deferred=max(0, progress.deferred + held))
    return progress


def _uncount(progress: Progress, status: str) -> Progress:
    """A final delivery opens again (a re-send): it leaves the counts; the session is open."""
    counts = dict(progress.counts)
    counts[status] = max(0, counts.get(status, 0) - 1)
    if not counts[status]:
        del counts[status]
    return dataclasses.replace(
        progress, final=max(0, progress.final - 1), counts=counts, completed_at=None
    )


def _count(progress: Progress, status: str) -> Progress:
    return progress.counted(status)


async def _completed(
    sb: Switchboard, session: SessionState, client_id: str, progress: Progress
) -> None:
    """Every delivery of the session is final: one ``completed`` event (per round: a re-send
    opens the session again) with the counts."""
    session_id = session.session_id
    client = sb.clients.get(client_id)
    errors: dict[str, Any] = {}
    if client is not None:
        errors = await sb.managers.session_complete(
            client, session_id, session.channels, progress.counts, session.deliveries
        )
    await sb.publish_status(
        StatusEvent(
            session_id=session_id,
            client_id=client_id,
            status="completed",
            detail={"deliveries": session.deliveries, "counts": progress.counts, **errors},
            event_id=event_id(session_id, "completed", progress.completions),
        )
    )
    log.info("session completed", extra={"session_id": session_id, "counts": progress.counts})
    assert progress.completed_at is not None
    await retention.schedule_purge(sb, session, progress.completed_at)
