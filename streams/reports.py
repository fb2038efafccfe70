"""The report agent: the one owner of every delivery's state, and of the status topic's order.

Consumes ``<prefix>.reports`` (keyed by session id): the session agent's ``accepted`` and
``rejected``, the dispatchers' ``sent``, ``delivered`` and ``failed``, and later providers'
callbacks. It is the only writer of the ``deliveries`` and ``progress`` tables and the only
producer of per-delivery status events, so a recipient's events are in order on the status
topic.

* A report that does not move its delivery forward (a duplicate, a ``sent`` after
  ``delivered``, anything after a final failure) changes nothing and emits nothing
  (:func:`switchboard.status.supersedes`).
* When a delivery becomes final, the session's progress counts it; when every delivery of the
  session is final, one ``completed`` event with the counts per status is emitted.
* Expiry: a delivery ``sent`` that gets no final report within ``SWITCHBOARD_REPORT_TIMEOUT``
  becomes ``expired``. One durable timer per session (not one per message: a timer costs a
  table write and an index entry) fires an :class:`~switchboard.records.ExpireSweep`, which
  walks the session's deliveries a chunk per event, expires those due, and arms the timer again
  for the earliest one not yet due while the session is open. A delivery expires within the
  duration of a sweep of its due time.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from faust.types import EventT, StreamT

from streams.app import Switchboard
from streams.guard import guarded, quarantine
from streams.managers import merge_detail
from streams.sessions import load_session
from switchboard import records
from switchboard.deliveries import apply_report
from switchboard.fanout import CHUNK_SIZE
from switchboard.records import DeliveryState, ExpireSweep, Progress, Report, Retry
from switchboard.retry import next_attempt_of_session
from switchboard.status import StatusEvent, is_final

__all__ = ["load_delivery", "load_progress", "register"]

log = logging.getLogger(__name__)


def register(sb: Switchboard) -> None:
    @sb.app.agent(sb.topics.reports, name="switchboard.reports")
    async def reports(stream: StreamT[bytes]) -> None:
        async for event in stream.events():
            await guarded(sb, event, "reports", lambda e: _handle(sb, e))

    async def forget_armed(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        # A session's partition may come back after another worker cancelled its timer: the
        # hint must not outlive this worker's ownership.
        _armed.clear()

    sb.app.on_partitions_revoked.connect(forget_armed)


def load_delivery(sb: Switchboard, key: str) -> DeliveryState | None:
    raw = sb.tables.deliveries.get(key.encode())
    return records.decode(DeliveryState, raw) if raw is not None else None


def load_progress(sb: Switchboard, session_id: str) -> Progress:
    raw = sb.tables.progress.get(session_id.encode())
    return records.decode(Progress, raw) if raw is not None else Progress()


async def _handle(sb: Switchboard, event: EventT[bytes]) -> None:
    body = json.loads(event.value)
    if isinstance(body, dict) and body.get("kind") == ExpireSweep.KIND:
        await _sweep(sb, records.decode(ExpireSweep, body))
        return
    await _apply(sb, records.decode(Report, body), event)


async def _apply(sb: Switchboard, report: Report, event: EventT[bytes] | None = None) -> None:
    """Apply one report to its delivery: the state, the events, the counts (module docs)."""
    session = load_session(sb, report.session_id)
    if session is None:
        if event is None:
            log.error("report for an unknown session", extra={"session_id": report.session_id})
            return
        # A provider's callback for a message this deployment did not send (or whose session
        # expired): recorded, not applied.
        await quarantine(
            sb, event, "reports", LookupError(f"a report for unknown session {report.session_id}")
        )
        return
    if report.retry_if_allowed and report.retry_at is None:
        report = _with_retry(report, session.options)
    old = load_delivery(sb, report.key)
    if report.reopen and old is not None and is_final(old.status):
        await _uncount_final(sb, report.session_id, old.status)
    state, events = apply_report(report, None if report.reopen else old)
    if state is None or state is old:
        return
    client = sb.clients.get(report.client_id)
    if client is not None:
        # Once per report that moves its delivery on (never for a duplicate); a failing hook's
        # error is told on the report's own event.
        errors = await sb.managers.after_report(report, client)
        if errors and events[-1].status == report.status:
            events[-1] = dataclasses.replace(
                events[-1], detail=merge_detail(events[-1].detail, errors)
            )
    for status_event in events:
        await sb.publish_status(status_event)
    if state.status == "sent":
        await _arm_expiry(sb, report.session_id, report.occurred_at + sb.settings.report_timeout)
    if report.retry_if_allowed and report.retry_at is not None:
        # Only for a report that moved its delivery on: a repeated callback schedules nothing.
        retry = Retry(report.session_id, report.index, report.channel, report.attempt + 1)
        await sb.schedule_at(f"job:{report.key}#{retry.attempt}", report.retry_at, sb.topics.sessions,
                             report.session_id.encode(), records.encode(retry))  # fmt: skip
    sb.tables.deliveries[report.key.encode()] = records.encode(state)
    if is_final(state.status) and (report.reopen or not (old is not None and is_final(old.status))):
        await _count_final(
            sb, report.session_id, report.client_id, state.status, report.occurred_at
        )


# -- expiry --------------------------------------------------------------------------------

#: Sessions whose expiry timer this worker saw armed, and when (monotonic). A hint trusted for a
#: minute and forgotten at every revocation of partitions (``Progress`` is the truth).
_armed: dict[str, float] = {}
_ARMED_TRUST = 60.0


async def _arm_expiry(sb: Switchboard, session_id: str, due: float) -> None:
    """Make sure the session's expiry sweep is due by ``due``, at one table read per session
    and worker, and one timer per session."""
    seen = _armed.get(session_id)
    if seen is not None and time.monotonic() - seen < _ARMED_TRUST:
        return
    progress = load_progress(sb, session_id)
    if progress.expiry_due is None or progress.expiry_due > due:
        await _set_expiry(sb, session_id, progress, due)
    if len(_armed) >= 100_000:
        _armed.clear()
    _armed[session_id] = time.monotonic()


async def _set_expiry(
    sb: Switchboard, session_id: str, progress: Progress, due: float | None
) -> None:
    key = session_id.encode()
    if due is None:
        await sb.cancel_timer(f"expire:{session_id}", key)
    else:
        await sb.schedule_at(f"expire:{session_id}", due, sb.topics.reports, key,
                             records.encode(ExpireSweep(session_id)))  # fmt: skip
    sb.tables.progress[key] = records.encode(dataclasses.replace(progress, expiry_due=due))


async def _sweep(sb: Switchboard, cmd: ExpireSweep) -> None:
    """One chunk of a session's expiry sweep (see the module docs)."""
    session = load_session(sb, cmd.session_id)
    if session is None:
        return
    now = time.time()
    started = cmd.started_at or now
    timeout = sb.settings.report_timeout
    next_due = cmd.next_due
    first, last = cmd.chunk * CHUNK_SIZE, min(session.recipients, (cmd.chunk + 1) * CHUNK_SIZE)
    for index in range(first, last):
        for channel in session.channels:
            key = records.delivery_key(cmd.session_id, index, channel)
            state = load_delivery(sb, key)
            if state is None or state.status != "sent":
                continue
            due = state.updated_at + timeout
            if due > started:
                next_due = due if next_due is None else min(next_due, due)
                continue
            await _apply(sb, Report(
                session_id=cmd.session_id, client_id=session.client_id, channel=channel, index=index,
                address=state.address, status="expired", attempt=state.attempt, occurred_at=now,
                provider_message_id=state.provider_message_id, error_code="no-report",
                error=f"no final report within {timeout:g}s",
            ))  # fmt: skip
    if cmd.chunk + 1 < session.chunks:
        more = ExpireSweep(cmd.session_id, cmd.chunk + 1, started, next_due)
        await sb.topics.reports.send(key=cmd.session_id.encode(), value=records.encode(more))
        return
    # The whole session is swept. While it is open, sweep again for the earliest delivery not
    # yet due; a delivery sent during this sweep is due by started + timeout at the latest.
    progress = load_progress(sb, cmd.session_id)
    _armed.pop(cmd.session_id, None)
    if progress.completed_at is not None:
        await _set_expiry(sb, cmd.session_id, progress, None)
        return
    again = started + timeout if next_due is None else min(next_due, started + timeout)
    await _set_expiry(sb, cmd.session_id, progress, again)


def _with_retry(report: Report, options: Mapping[str, Any]) -> Report:
    """``report`` with the time of the next attempt, when the session's retries allow one."""
    at = next_attempt_of_session(
        options, max(report.attempt, 1), datetime.fromtimestamp(report.occurred_at, UTC)
    )
    if at is None:
        return report
    when = datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z")
    return dataclasses.replace(
        report, retry_at=at, retryable=True, detail={**report.detail, "retry_at": when}
    )


async def _uncount_final(sb: Switchboard, session_id: str, status: str) -> None:
    """A final delivery opens again (a re-send): it leaves the counts; the session is open."""
    progress = load_progress(sb, session_id)
    counts = dict(progress.counts)
    counts[status] = max(0, counts.get(status, 0) - 1)
    if not counts[status]:
        del counts[status]
    progress = dataclasses.replace(
        progress, final=max(0, progress.final - 1), counts=counts, completed_at=None
    )
    sb.tables.progress[session_id.encode()] = records.encode(progress)


async def _count_final(
    sb: Switchboard, session_id: str, client_id: str, status: str, at: float
) -> None:
    progress = load_progress(sb, session_id)
    counts = dict(progress.counts)
    counts[status] = counts.get(status, 0) + 1
    progress = dataclasses.replace(progress, final=progress.final + 1, counts=counts)
    session = load_session(sb, session_id)
    if (
        session is not None
        and progress.completed_at is None
        and progress.final >= session.deliveries
    ):
        progress = dataclasses.replace(progress, completed_at=at)
        client = sb.clients.get(client_id)
        errors = (
            await sb.managers.session_complete(client, session_id, session.channels, counts, session.deliveries)
            if client is not None else {}
        )  # fmt: skip
        await sb.publish_status(StatusEvent(
            session_id=session_id,
            client_id=client_id,
            status="completed",
            detail={"deliveries": session.deliveries, "counts": counts, **errors},
        ))  # fmt: skip
        log.info("session completed", extra={"session_id": session_id, "counts": counts})
    sb.tables.progress[session_id.encode()] = records.encode(progress)
