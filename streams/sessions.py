"""The session agent: owns sessions, stores their audiences, and fans them out.

Consumes ``<prefix>.sessions`` (keyed by session id) and is the only writer of the ``sessions``
table: the sessions (key: session id), their audiences in chunks (``<session id>:<chunk>``) and
the idempotency records (``idem:<anchor>``). One table, so that the rows one command writes reach
the changelog in the order written. The agent runs under checkpoints (``streams/checkpoint.py``):
a row is written only once the broker has every record the command produced, so a command found
done on a replay has nothing left to do.

* ``OpenSession``: a session id seen before is ignored (intake's redelivery, the API's retried
  write), so a session is opened once. The session and its audience (in chunks) are stored;
  then an immediate one (or one scheduled in the past) fans out its first chunk in the same
  event (as ``FanOut(0)`` would: one hop less on a one-time password's way, whose lane is
  otherwise a hop behind a busy event loop per command), a scheduled one gets a durable timer
  that starts it (``streams/scheduler.py``), and a manual one waits.
* ``FanOut(chunk)``: each delivery of the chunk gets ``accepted`` and then either a dispatch job
  (in a :class:`~switchboard.records.JobBatch` with the others of its dispatch key and channel)
  or, outside its channel's time window, ``deferred``; the deferred deliveries of the chunk are
  held by one timer per channel and window opening (``Release``), which dispatches them when the
  window opens, so a campaign held by its window costs a timer per chunk, not per recipient. A
  delivery that cannot be made gets ``rejected`` with the reason. Then the next
  chunk is queued: one chunk per event keeps memory bounded and the partition responsive. A
  chunk processed twice re-emits its jobs; the dispatchers' ``sends`` table makes the second
  copy of a job a no-op.
* ``Trigger``: starts a manual session (or a scheduled one before its time), fanning out its
  first chunk in the same event, as an opening does; with ``include_failed``, sends its failed
  deliveries again, chunk by chunk (``Resend``), as a new attempt.
* ``Cancel``: marks the session cancelled (every dispatcher checks this before each send), then
  ``CancelChunk`` by chunk reports ``cancelled`` for whatever was not sent. It first waits for the
  sends of the session already in flight on this worker, so a ``cancelled`` report never
  overtakes the ``sent`` of a message that did go out.

* ``Purge``, ``Gone``, ``ForgetKey``: a completed session deleted after its retention, its
  marker forgotten, an idempotency record deleted after its window (``streams/retention.py``).
  A command for a deleted session (its marker is kept) is ignored.

Missing state is an error, never "nothing to do": a command for a session that is not in the
table, or an audience chunk that is not there, puts the command on the rejected topic
(:class:`~switchboard.errors.MissingState`), and the deliveries of a lost chunk are reported
``failed`` (code ``state-lost``) so that the session still completes and says what happened.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

from faust import current_event
from faust.types import EventT, StreamT

from streams import retention
from streams.app import Switchboard
from streams.checkpoint import put, run_checkpointed
from streams.fences import fences_passed, place_fences
from streams.guard import quarantine
from streams.managers import SessionStartPlan
from switchboard import deadline, fallback, jsonbytes, reasons, records
from switchboard.errors import MissingState
from switchboard.fanout import (
    CHUNK_SIZE,
    DISPATCH_SPREAD,
    chunk_count,
    dispatch_key,
    first_steps,
    plan_chunk,
)
from switchboard.idempotency import IdempotencyRecord, decide, next_generation, shown
from switchboard.keys import (
    cancel_check_timer,
    chunk_row,
    fanout_timer,
    idempotency_row,
    job_timer,
    release_timer,
    window_timer,
)
from switchboard.records import (
    AudienceChunk,
    Cancel,
    CancelCheck,
    CancelChunk,
    Claim,
    Discard,
    DispatchJob,
    FanOut,
    ForgetKey,
    ForgetOrphan,
    Gone,
    OpenSession,
    Purge,
    Release,
    Report,
    Resend,
    Retry,
    SessionState,
    Trigger,
)
from switchboard.status import FINAL, Status, StatusEvent, delivery_change_id, event_id
from switchboard.windows import Hold, NoCommonOpening, deferred, delivery_hold

__all__ = [
    "dispatch_or_defer",
    "load_chunk",
    "load_idempotency",
    "load_session",
    "register",
]

log = logging.getLogger(__name__)

#: Seconds between two looks at whether a cancelled session's fences are passed.
CANCEL_CHECK_EVERY = 0.5
#: Seconds before a session held by the dispatch backlog looks again.
FLOW_RECHECK = 0.5
#: Recipients of a chunk's fan-out between two turns given back to the event loop.
YIELD_EVERY = 100

#: Final statuses a re-send (``include_failed``) sends again.
RESENDABLE = frozenset({"failed", "undelivered", "expired"})


def register(sb: Switchboard) -> None:
    # Two lanes, one handler: every command of a session travels in its lane
    # (``options.priority``), so each session's rows have one writer, and a one-time password
    # is opened without waiting for a campaign's fan-out on the same partition.
    @sb.app.agent(sb.topics.sessions, name="switchboard.sessions")
    async def sessions(stream: StreamT[bytes]) -> None:
        await run_checkpointed(sb, stream, "sessions", lambda e: _handle(sb, e))

    @sb.app.agent(sb.topics.priority_sessions, name="switchboard.sessions.priority")
    async def priority_sessions(stream: StreamT[bytes]) -> None:
        await run_checkpointed(sb, stream, "sessions.priority", lambda e: _handle(sb, e))


def load_session(sb: Switchboard, session_id: str) -> SessionState | None:
    """The session, read from this worker's table. Every job, report and status event reads its
    session, so the decoded state is kept while the stored bytes stay the same (comparing bytes
    costs far less than decoding the JSON again)."""
    raw = sb.staged.get(sb.tables.sessions, session_id.encode())
    if raw is None:
        return None
    decoded = sb.decoded_sessions  # this worker's memo (bounded): never shared by two apps
    cached = decoded.get(session_id)
    if cached is not None and cached[0] == raw:
        return cached[1]
    state = records.decode(SessionState, raw)
    if len(decoded) >= 10_000:
        decoded.clear()
    decoded[session_id] = (raw, state)
    return state


def _save(sb: Switchboard, state: SessionState) -> None:
    put(sb.tables.sessions, state.session_id.encode(), records.encode(state))


def load_chunk(sb: Switchboard, session_id: str, chunk: int) -> list[dict[str, Any]] | None:
    """The recipients of one audience chunk, or None when the table does not have it."""
    raw = sb.staged.get(sb.tables.sessions, chunk_row(session_id, chunk))
    return jsonbytes.loads(raw) if raw is not None else None


async def _handle(sb: Switchboard, event: EventT[bytes]) -> None:
    command = records.decode_command(event.value)
    if await _without_session(sb, command):
        return
    state = load_session(sb, command.session_id)
    if state is None and retention.purged(sb, command.session_id) is not None:
        # Deleted after its retention (streams/retention.py): a late command, or a purge
        # processed again, has nothing left to act on.
        sb.metrics.after_purge.labels("sessions").inc()
        log.info(
            "command for a purged session ignored",
            extra={"session_id": command.session_id, "kind": command.KIND},
        )
        return
    if state is None:
        # Every command of a session follows its opening on this partition: the session's row
        # is missing, which is an error to surface (the rejected topic), not "nothing to do".
        sb.metrics.missing_state.labels("session").inc()
        raise MissingState(
            f"{command.KIND} for session {command.session_id}, which this worker's "
            "sessions table does not have"
        )
    if isinstance(command, Purge):
        await retention.purge_session(sb, state)
    elif isinstance(command, FanOut):
        await _fan_out(sb, state, command)
    elif isinstance(command, Trigger):
        await _trigger(sb, state, command)
    elif isinstance(command, Cancel):
        await _cancel(sb, state)
    elif isinstance(command, CancelChunk):
        await _cancel_chunk(sb, state, command.chunk, command.blocked)
    elif isinstance(command, CancelCheck):
        await _cancel_check(sb, state, command)
    elif isinstance(command, Retry):
        await _retry(sb, state, command)
    elif isinstance(command, Release):
        await _release(sb, state, command)
    else:
        assert isinstance(command, Resend), command.KIND  # the session-less ones are handled
        await _resend(sb, state, command.chunk)


async def _without_session(sb: Switchboard, command: records.SessionCommand) -> bool:
    """Handle ``command`` if it is one that needs no open session (an opening, an audience
    chunk, an idempotency key's record, a deleted session's marker); whether it was."""
    if isinstance(command, OpenSession):
        await _open(sb, command)
    elif isinstance(command, Claim):
        await _claim(sb, command)
    elif isinstance(command, AudienceChunk | Discard):
        _audience(sb, command)
    elif isinstance(command, ForgetOrphan):
        event = current_event()
        assert event is not None  # a command is always handled in its event
        retention.forget_orphan(sb, event.message.partition, command)
    elif isinstance(command, ForgetKey):
        retention.forget_key(sb, command, load_idempotency(sb, command.session_id))
    elif isinstance(command, Gone):
        retention.forget_marker(sb, command)
    else:
        return False
    return True


def load_idempotency(sb: Switchboard, anchor: str) -> IdempotencyRecord | None:
    """The record of an idempotency key, by its anchor (stored in the sessions table)."""
    raw = sb.staged.get(sb.tables.sessions, idempotency_row(anchor))
    return records.decode(IdempotencyRecord, raw) if raw is not None else None


async def _claim(sb: Switchboard, cmd: Claim) -> None:
    """Open the instruction's session unless its key's fresh record names one already."""
    now = time.time()
    window = sb.settings.idempotency_window
    decision = decide(
        load_idempotency(sb, cmd.session_id), cmd.client_id, cmd.key, cmd.fingerprint, now, window
    )
    if decision.kind == "new":
        session_id = cmd.candidate or decision.session_id
        # The candidate's generation was decided by the Send API, before ``received_at`` on
        # its clock: the record's is at least that, so no later claim reopens the candidate.
        generation = max(decision.generation, next_generation(None, cmd.received_at, window))
        record = IdempotencyRecord(cmd.client_id, session_id, cmd.fingerprint, now, generation)
        await sb.command(
            OpenSession(session_id, cmd.instruction, cmd.received_at, cmd.source, cmd.origin),
            priority=records.priority_of(cmd.instruction.get("options")),
        )
        put(sb.tables.sessions, idempotency_row(cmd.session_id), records.encode(record))
        await retention.schedule_forget_key(
            sb, cmd.session_id, record, records.priority_of(cmd.instruction.get("options"))
        )
        return
    if cmd.candidate and decision.session_id == cmd.candidate:
        return  # this very claim, processed again: its session's opening is in Kafka already
    log.info(
        "idempotency key repeated; no new session",
        extra={
            "client_id": cmd.client_id,
            "session_id": decision.session_id,
            "outcome": decision.kind,
        },
    )
    sb.metrics.idempotent_repeats.labels(cmd.source, decision.kind).inc()
    if cmd.candidate and cmd.candidate != decision.session_id and cmd.instruction.get("chunks"):
        await sb.command(
            Discard(cmd.candidate, int(cmd.instruction["chunks"])),
            priority=records.priority_of(cmd.instruction.get("options")),
        )
    if cmd.source == "kafka":
        # A producer has no answer but the status topic: say which session its repeat
        # belongs to (or that it conflicts with it).
        duplicate = decision.kind == "duplicate"
        status: Status = "accepted" if duplicate else "rejected"
        code, error, detail = reasons.annotate(
            status,
            None if duplicate else "idempotency-conflict",
            None if duplicate else "idempotency key reused with a different instruction",
            {"idempotency_key": shown(cmd.key), "repeat": decision.kind, "origin": cmd.origin},
        )
        await sb.publish_status(
            StatusEvent(
                decision.session_id,
                cmd.client_id,
                status,
                error_code=code,
                error=error,
                detail=detail,
                event_id=event_id(decision.session_id, status, "repeat", cmd.origin),
            )
        )


def _audience(sb: Switchboard, cmd: AudienceChunk | Discard) -> None:
    """Store (or forget) audience chunks written ahead of their session's opening. A session
    already open keeps its audience: these are then a replay, or another request's chunks."""
    if load_session(sb, cmd.session_id) is not None:
        return
    if isinstance(cmd, AudienceChunk):
        value = jsonbytes.dumps(cmd.recipients)
        put(sb.tables.sessions, chunk_row(cmd.session_id, cmd.chunk), value)
        return
    for chunk in range(cmd.chunks):
        put(sb.tables.sessions, chunk_row(cmd.session_id, chunk), None)


async def _open(sb: Switchboard, cmd: OpenSession) -> None:
    if load_session(sb, cmd.session_id) is not None:
        log.info("session already open; duplicate ignored", extra={"session_id": cmd.session_id})
        return
    if retention.purged(sb, cmd.session_id) is not None:
        # Its id was used and deleted after its retention: opening it again would give its
        # events the ids they had the first time (a receiver would drop them as duplicates).
        log.warning("opening of a purged session ignored", extra={"session_id": cmd.session_id})
        return
    ins = cmd.instruction
    if "audience" in ins:  # a small instruction carrying its audience: store it in chunks here
        audience = ins["audience"]
        recipients, chunks = len(audience), chunk_count(len(audience))
        for chunk in range(chunks):
            part = audience[chunk * CHUNK_SIZE : (chunk + 1) * CHUNK_SIZE]
            value = jsonbytes.dumps(part)
            put(sb.tables.sessions, chunk_row(cmd.session_id, chunk), value)
    else:  # its chunks came before it (streams/submit.py)
        recipients, chunks = int(ins["recipients"]), int(ins["chunks"])
    options = ins["options"]
    trigger = options.get("trigger", "immediate")
    scheduled = options.get("scheduledTimestamp")
    due = datetime.fromisoformat(scheduled).timestamp() if scheduled else None
    due_now = trigger == "immediate" or (
        trigger == "scheduled" and due is not None and due <= time.time()
    )
    state = SessionState(
        session_id=cmd.session_id,
        client_id=ins["client_id"],
        channels=ins["channels"],
        recipients=recipients,
        # With a fallback, a recipient counts once: its outcome over the channels it is tried on.
        deliveries=recipients
        if fallback.plan_of(ins["options"])
        else recipients * len(ins["channels"]),
        chunks=chunks,
        trigger=trigger,
        status="dispatching" if due_now else ("scheduled" if trigger == "scheduled" else "waiting"),
        created_at=cmd.received_at,
        source=cmd.source,
        transport=ins["transport"],
        options=options,
        idempotency_key=ins.get("idempotency_key"),
    )
    _save(sb, state)
    sb.metrics.sessions.inc()
    sb.open_sessions.opened(state.session_id)
    log.info(
        "session opened",
        extra={
            "session_id": state.session_id,
            "client_id": state.client_id,
            "deliveries": state.deliveries,
            "trigger": trigger,
        },
    )
    key = state.session_id.encode()
    if due_now:
        # Its first chunk now, not through a FanOut command on the sessions topic: the same
        # work in the same partition, a round trip through Kafka and a Faust event sooner. The
        # checkpoint writes the session's rows once the broker has the chunk's jobs and events,
        # so a replay finds the opening either undone (all of it is done again) or done.
        await _fan_out(sb, state, FanOut(state.session_id, 0))
    elif state.status == "scheduled":
        assert due is not None
        await sb.schedule_at(
            release_timer(state.session_id),
            due,
            sb.sessions_topic(state.priority),
            key,
            records.encode(FanOut(state.session_id, 0)),
        )
        await sb.publish_status(
            StatusEvent(
                state.session_id,
                state.client_id,
                "scheduled",
                detail={"scheduled_for": scheduled},
                event_id=event_id(state.session_id, "scheduled"),
            )
        )
    else:
        await sb.publish_status(
            StatusEvent(
                state.session_id,
                state.client_id,
                "accepted",
                detail={"trigger": "manual", "waiting_for": "POST /v1/sessions/{id}/trigger"},
                event_id=event_id(state.session_id, "accepted", "manual"),
            )
        )


async def _fan_out(sb: Switchboard, state: SessionState, cmd: FanOut) -> None:
    if state.status in ("cancelled", "waiting") or cmd.chunk < state.fanned_out_chunks:
        return  # a manual session is released only by a Trigger, which sets dispatching first
    if state.status == "scheduled":  # its timer fired
        state = dataclasses.replace(state, status="dispatching")
    if cmd.chunk > 0 and await _backlogged(sb, state):
        # Later: the dispatch topics hold enough of everyone's jobs (streams/flow.py).
        await sb.schedule_at(
            fanout_timer(state.session_id, cmd.chunk),
            time.time() + FLOW_RECHECK,
            sb.sessions_topic(state.priority),
            state.session_id.encode(),
            records.encode(cmd),
        )
        return
    recipients = load_chunk(sb, state.session_id, cmd.chunk)
    if recipients is None:
        await _lost_chunk(sb, state, cmd.chunk, "fan-out")
        recipients = []
    now = time.time()
    items = list(plan_chunk(state, cmd.chunk, recipients, now=now))
    if fallback.plan_of(state.options) is not None:  # the first step; the report agent the rest
        items = list(first_steps(iter(items)))
    plan = await _session_start(sb, state, items)
    if plan.block is not None:
        await _block(sb, state, plan)
        return
    held, batches = await _route(sb, plan, items, now)
    for jobs in batches.values():  # after their ``accepted`` events (the same producer)
        await sb.dispatch_batch(jobs)
    await _hold(sb, state, cmd.chunk, held)
    _save(sb, dataclasses.replace(state, fanned_out_chunks=cmd.chunk + 1))
    if cmd.chunk + 1 < state.chunks:
        await sb.command(FanOut(state.session_id, cmd.chunk + 1), priority=state.priority)
    if state.chunks > 1:
        log.info(
            "fan-out progress",
            extra={
                "session_id": state.session_id,
                "chunk": cmd.chunk + 1,
                "chunks": state.chunks,
                "seconds": round(time.time() - now, 3),
            },
        )


async def _route(
    sb: Switchboard, plan: SessionStartPlan, items: list[DispatchJob | Report], now: float
) -> tuple[dict[tuple[str, float], list[int]], dict[tuple[str, bytes], list[DispatchJob]]]:
    """Each delivery of a chunk told ``accepted`` and routed: reported (refused, scrubbed, or
    ``rejected`` when its window is never open in all its zones at once), batched for dispatch by
    channel and dispatch key, or held by its window (by channel and window opening)."""
    accepted_at = datetime.fromtimestamp(now, UTC)
    held: dict[tuple[str, float], list[int]] = {}  # (channel, window opening) -> indexes
    batches: dict[tuple[str, bytes], list[DispatchJob]] = {}  # (channel, dispatch key) -> jobs
    # ``accepted`` events, published together (``Switchboard.publish_statuses``) before the
    # loop lets anything else run and before any report: each precedes every later event of
    # its delivery, which the report agent publishes on this worker's same status producer.
    accepted: list[StatusEvent] = []
    for n, item in enumerate(items, 1):
        if n % YIELD_EVERY == 0:
            # A chunk is hundreds of recipients of synchronous work: let the event loop run the
            # other lanes' events in between (a one-time password's hops wait for it otherwise).
            await _publish_accepted(sb, accepted)
            await asyncio.sleep(0)
        if not isinstance(item, DispatchJob):
            await _publish_accepted(sb, accepted)
            await sb.report(item)
        elif (scrub := plan.scrubbed.get((item.channel, item.address))) is not None:
            await _publish_accepted(sb, accepted)
            await sb.report(
                item.report(
                    "suppressed",
                    now,
                    attempt=0,
                    error=scrub.reason,
                    error_code="scrubbed",
                    detail={"service_manager": scrub.manager},
                )
            )
        else:
            try:
                hold = _window_hold(sb, item, now)
            except NoCommonOpening as exc:
                await _publish_accepted(sb, accepted)
                await _report_no_window(sb, item, exc, now)
                continue
            accepted.append(
                StatusEvent(
                    session_id=item.session_id,
                    client_id=item.client_id,
                    status="accepted",
                    recipient=item.address,
                    channel=item.channel,
                    occurred_at=accepted_at,
                    detail=plan.detail.get(item.channel) or {},
                    event_id=delivery_change_id(item.key, item.attempt, "accepted"),
                )
            )
            if hold is None:
                key = (item.channel, dispatch_key(item.session_id, item.index))
                batches.setdefault(key, []).append(item)
                continue
            await _publish_accepted(sb, accepted)
            if deadline.passed_before(item.expires_at, hold.release.timestamp()):
                await _report_window_too_late(sb, item, hold.release, now)
            else:
                await _report_deferred(sb, item, hold, now)
                held.setdefault((item.channel, hold.release.timestamp()), []).append(item.index)
    await _publish_accepted(sb, accepted)
    return held, batches


async def _publish_accepted(sb: Switchboard, accepted: list[StatusEvent]) -> None:
    """Publish the ``accepted`` events gathered so far, and forget them."""
    if accepted:
        await sb.publish_statuses(accepted)
        accepted.clear()


async def _hold(
    sb: Switchboard, state: SessionState, chunk: int, held: dict[tuple[str, float], list[int]]
) -> None:
    """The chunk's deliveries held by their window: one timer per channel and window opening,
    whatever the number of recipients."""
    for (channel, due), indexes in held.items():
        await sb.schedule_at(
            window_timer(state.session_id, chunk, channel, due),
            due,
            sb.sessions_topic(state.priority),
            state.session_id.encode(),
            records.encode(Release(state.session_id, chunk, channel, due, indexes)),
        )


async def _lost_chunk(sb: Switchboard, state: SessionState, chunk: int, doing: str) -> None:
    """An audience chunk the session needs is not in the table: said on the rejected topic, and
    each of its deliveries not final yet is reported ``failed`` (code ``state-lost``), so that
    the session completes and its counts say what happened."""

    sb.metrics.missing_state.labels("audience-chunk").inc()
    error = MissingState(
        f"{doing}: audience chunk {chunk} of session {state.session_id} is not "
        "in the sessions table"
    )
    event = current_event()
    if event is not None:
        await quarantine(sb, event, "sessions", error)
    now = time.time()
    first, last = chunk * CHUNK_SIZE, min(state.recipients, (chunk + 1) * CHUNK_SIZE)
    for index in range(first, last):
        for channel in state.channels:
            delivery = _delivery(sb, records.delivery_key(state.session_id, index, channel))
            if delivery is not None and delivery["status"] in FINAL:
                continue
            await sb.report(
                Report(
                    session_id=state.session_id,
                    client_id=state.client_id,
                    channel=channel,
                    index=index,
                    address="",
                    status="failed",
                    attempt=delivery["attempt"] if delivery else 0,
                    occurred_at=now,
                    error=f"the recipient's record was lost ({doing})",
                    error_code="state-lost",
                    priority=state.priority,
                )
            )


async def _session_start(
    sb: Switchboard, state: SessionState, items: list[DispatchJob | Report]
) -> SessionStartPlan:
    """The service managers' ``on_session_start`` on this chunk's deliveries."""
    client = sb.clients.get(state.client_id)
    if client is None:
        return SessionStartPlan()
    jobs = [item for item in items if isinstance(item, DispatchJob)]
    return await sb.managers.session_start(client, state.session_id, jobs)


async def _block(sb: Switchboard, state: SessionState, plan: SessionStartPlan) -> None:
    """A service manager blocked the session: it is cancelled, and every delivery not yet sent
    (those of earlier chunks may have gone) is reported ``cancelled`` with the reason."""
    log.warning(
        "session blocked by a service manager",
        extra={"session_id": state.session_id, "reason": plan.block},
    )
    facts: dict[str, Any] = {}
    for channel_detail in plan.detail.values():
        facts.update(channel_detail)
    code, error, detail = reasons.annotate("cancelled", "blocked", plan.block, facts)
    cancelled = StatusEvent(
        state.session_id,
        state.client_id,
        "cancelled",
        error=error,
        error_code=code,
        detail=detail,
        event_id=event_id(state.session_id, "cancelled"),
    )
    await _withdraw(sb, state, cancelled, plan.block)


async def _backlogged(sb: Switchboard, state: SessionState) -> bool:
    """Whether the session's next chunk must wait for its channels' dispatch backlog to drain."""
    limit = sb.settings.dispatch_backlog
    if not limit or state.priority == "high":
        return False
    topics = [sb.topics.dispatch[c].get_topic_name() for c in state.channels]
    return await sb.flow.over(topics, max(1, limit // DISPATCH_SPREAD))  # records of jobs


def _window_hold(sb: Switchboard, job: DispatchJob, now: float) -> Hold | None:
    """What holds ``job`` outside its channel's window, and until it opens in every zone of its
    recipient (None: send now). Raises :class:`NoCommonOpening` when it never is open in all at
    once."""
    client = sb.clients.get(job.client_id)
    if client is None:
        return None
    return delivery_hold(
        client,
        job.channel,
        datetime.fromtimestamp(now, UTC),
        recipient_tz=job.timezone,
        address=job.address,
    )


async def _report_deferred(sb: Switchboard, job: DispatchJob, hold: Hold, now: float) -> None:
    """``deferred``, saying which window and zone hold it, and until when (windows.deferred)."""
    error, detail = deferred(job.channel, hold)
    await sb.report(
        job.report("deferred", now, error_code=reasons.WINDOW_CLOSED, error=error, detail=detail)
    )


async def _report_window_too_late(
    sb: Switchboard, job: DispatchJob, release: datetime, now: float
) -> None:
    """The delivery's window opens only at or after its send-by deadline: ``expired`` now
    (code ``deadline``), rather than held for a send that could only be late."""
    assert job.expires_at is not None
    why = deadline.reason(
        job.expires_at, "its window opens at " + deadline.iso(release.timestamp())
    )
    await sb.report(
        job.report(
            "expired",
            now,
            error=why,
            error_code="deadline",
            detail={"expires_at": deadline.iso(job.expires_at)},
        )
    )


async def _report_no_window(
    sb: Switchboard, job: DispatchJob, exc: NoCommonOpening, now: float
) -> None:
    """The delivery can never be sent inside its window in every zone its number may be in:
    ``rejected`` (code ``no-common-window``), rather than sent outside it or held forever."""
    await sb.report(job.report("rejected", now, error=str(exc), error_code="no-common-window"))


async def dispatch_or_defer(sb: Switchboard, job: DispatchJob, now: float) -> bool:
    """Dispatch ``job`` now, or, outside its channel's time window, report it ``deferred`` and
    set a timer that dispatches it when the window opens. Returns whether it was dispatched.
    For one delivery (a retry, a resend, a job the dispatcher found outside its window); a
    fan-out holds a whole chunk with one timer (:class:`~switchboard.records.Release`). A job
    whose window is never open in all its recipient's zones at once is reported ``rejected``."""
    try:
        hold = _window_hold(sb, job, now)
    except NoCommonOpening as exc:
        await _report_no_window(sb, job, exc, now)
        return False
    if hold is None:
        await sb.dispatch(job)
        return True
    if deadline.passed_before(job.expires_at, hold.release.timestamp()):
        await _report_window_too_late(sb, job, hold.release, now)
        return False
    await sb.schedule_at(
        job_timer(job.key, job.attempt),
        hold.release.timestamp(),
        sb.dispatch_topic(job),
        dispatch_key(job.session_id, job.index),
        records.encode(job),
    )
    await _report_deferred(sb, job, hold, now)
    return False


async def _release(sb: Switchboard, state: SessionState, cmd: Release) -> None:
    """A chunk's window opened: its held deliveries on the channel are dispatched (each checked
    against the window again: one still closed, the configuration having changed, is held on
    its own). A cancelled session's are reported by the cancel instead."""
    if state.status == "cancelled":
        return
    recipients = load_chunk(sb, state.session_id, cmd.chunk)
    if recipients is None:
        await _lost_chunk(sb, state, cmd.chunk, "release")
        return
    wanted = set(cmd.indexes)
    now = time.time()
    for item in plan_chunk(state, cmd.chunk, recipients, now=now):
        if isinstance(item, DispatchJob) and item.channel == cmd.channel and item.index in wanted:
            await dispatch_or_defer(sb, item, now)


async def _trigger(sb: Switchboard, state: SessionState, cmd: Trigger) -> None:
    if state.status == "cancelled":
        return
    if state.status in ("waiting", "scheduled"):
        await sb.cancel_timer(release_timer(state.session_id), state.session_id.encode())
        released = dataclasses.replace(state, status="dispatching")
        _save(sb, released)
        # Its first chunk in this event, as an immediate session's opening fans out its own.
        await _fan_out(sb, released, FanOut(state.session_id, 0))
    elif cmd.include_failed:
        await sb.command(Resend(state.session_id, 0), priority=state.priority)
        # The re-send opens the session again only once the report agent applies it: until
        # then its progress still reads completed, and a purge due meanwhile must not run.
        _save(sb, dataclasses.replace(state, resent_at=time.time()))


async def _resend(sb: Switchboard, state: SessionState, chunk: int) -> None:
    """Send again the deliveries of ``chunk`` whose final status is a failure (not for a session
    with a fallback, whose failed recipients were tried on every channel: the API refuses it)."""
    if state.status == "cancelled" or fallback.plan_of(state.options) is not None:
        return
    recipients = load_chunk(sb, state.session_id, chunk)
    if recipients is None:
        await _lost_chunk(sb, state, chunk, "re-send")
        recipients = []
    now = time.time()
    for job in plan_chunk(state, chunk, recipients, now=now):
        if not isinstance(job, DispatchJob):
            continue
        previous = _delivery(sb, job.key)
        if previous is None or previous["status"] not in RESENDABLE:
            continue
        job = dataclasses.replace(job, attempt=int(previous["attempt"]) + 1)
        await sb.report(
            job.report(
                "accepted", now, reopen=True, detail={"resend_of_attempt": previous["attempt"]}
            )
        )
        await dispatch_or_defer(sb, job, now)
    if chunk + 1 < state.chunks:
        await sb.command(Resend(state.session_id, chunk + 1), priority=state.priority)


async def _retry(sb: Switchboard, state: SessionState, cmd: Retry) -> None:
    """Dispatch attempt ``cmd.attempt`` of one delivery: its job is rebuilt from the stored
    audience, as the fan-out built it (a callback's retry has no job at hand). Attempt 1 is a
    fallback step the report agent started (``switchboard/fallback.py``)."""
    if state.status == "cancelled":
        return
    chunk = cmd.index // CHUNK_SIZE
    recipients = load_chunk(sb, state.session_id, chunk)
    if recipients is None:
        await _lost_chunk(sb, state, chunk, "retry")
        return
    now = time.time()
    for item in plan_chunk(state, chunk, recipients, now=now):
        if (
            isinstance(item, DispatchJob)
            and item.index == cmd.index
            and item.channel == cmd.channel
        ):
            await dispatch_or_defer(sb, dataclasses.replace(item, attempt=cmd.attempt), now)
            return
    sb.metrics.missing_state.labels("delivery").inc()
    raise MissingState(
        f"retry of delivery {cmd.index}/{cmd.channel}, which session "
        f"{state.session_id} does not have"
    )


async def _cancel(sb: Switchboard, state: SessionState) -> None:
    if state.status == "cancelled":
        return
    code, error, detail = reasons.annotate("cancelled", "cancelled", None, {})
    cancelled = StatusEvent(
        state.session_id,
        state.client_id,
        "cancelled",
        error_code=code,
        error=error,
        detail=detail,
        event_id=event_id(state.session_id, "cancelled"),
    )
    await _withdraw(sb, state, cancelled)


async def _withdraw(
    sb: Switchboard, state: SessionState, event: StatusEvent, blocked: str | None = None
) -> None:
    """Cancel the session on every worker (``streams/fences.py``): it is written to the
    replicated ``cancels`` topic, then fenced in every partition of its dispatch topics; its
    unsent deliveries are reported ``cancelled`` once every dispatcher has passed the fences."""
    key = state.session_id.encode()
    await sb.cancel_timer(release_timer(state.session_id), key)
    await sb.publish_status(event)
    cancel = json.dumps({"at": time.time(), "blocked": blocked}).encode()
    await (await sb.produce(sb.topics.cancels, key=key, value=cancel))  # before the fences
    fences = await place_fences(sb, state)
    _save(
        sb, dataclasses.replace(state, status="cancelled", cancelled_at=time.time(), fences=fences)
    )
    await sb.command(CancelCheck(state.session_id, blocked), priority=state.priority)


async def _cancel_check(sb: Switchboard, state: SessionState, cmd: CancelCheck) -> None:
    """Once every dispatcher has passed the session's fences, report its unsent deliveries
    ``cancelled``; until then, look again in a moment (a durable timer)."""
    if state.status != "cancelled" or state.fenced:
        return
    if not await fences_passed(sb, state.fences):
        await sb.schedule_at(
            cancel_check_timer(state.session_id),
            time.time() + CANCEL_CHECK_EVERY,
            sb.sessions_topic(state.priority),
            state.session_id.encode(),
            records.encode(cmd),
        )
        return
    _save(sb, dataclasses.replace(state, fenced=True))
    await sb.command(CancelChunk(state.session_id, 0, cmd.blocked), priority=state.priority)


async def _cancel_chunk(
    sb: Switchboard, state: SessionState, chunk: int, blocked: str | None = None
) -> None:
    # Only once the session is fenced: no send of it is in flight on any worker, and every
    # send's report is in Kafka before ours, so a cancelled report never overtakes a sent.
    recipients = load_chunk(sb, state.session_id, chunk)
    if recipients is None:
        await _lost_chunk(sb, state, chunk, "cancel")
        recipients = []
    why = f"the session was blocked: {blocked}" if blocked else "the session was cancelled"
    now = time.time()
    steps = fallback.plan_of(state.options) is not None
    previous = -1
    for item in plan_chunk(state, chunk, recipients, now=now):
        first, previous = item.index != previous, item.index
        delivery = _delivery(sb, item.key)
        if delivery is not None and delivery["status"] in FINAL:
            continue
        if steps and delivery is None and not first:
            continue  # a fallback step not started: the report agent ends it, should it start
        await sb.report(
            Report(
                session_id=state.session_id,
                client_id=state.client_id,
                channel=item.channel,
                index=item.index,
                address=item.address,
                status="cancelled",
                attempt=delivery["attempt"] if delivery else 0,
                occurred_at=now,
                error=why,
                error_code="blocked" if blocked else None,
                priority=state.priority,
            )
        )
    if chunk + 1 < state.chunks:
        await sb.command(CancelChunk(state.session_id, chunk + 1, blocked), priority=state.priority)


def _delivery(sb: Switchboard, key: str) -> dict[str, Any] | None:
    raw = sb.staged.get(sb.tables.deliveries, key.encode())
    return json.loads(raw) if raw is not None else None
