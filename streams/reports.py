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
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import UTC, datetime

from faust.types import EventT, StreamT

from streams.app import Switchboard
from streams.guard import guarded, quarantine
from streams.managers import merge_detail
from streams.sessions import load_session
from switchboard import records
from switchboard.records import DeliveryState, Progress, Report
from switchboard.status import Status, StatusEvent, advances, is_final

__all__ = ["load_delivery", "load_progress", "register"]

log = logging.getLogger(__name__)


def register(sb: Switchboard) -> None:
    @sb.app.agent(sb.topics.reports, name="switchboard.reports")
    async def reports(stream: StreamT[bytes]) -> None:
        async for event in stream.events():
            await guarded(sb, event, "reports", lambda e: _handle(sb, e))


def load_delivery(sb: Switchboard, key: str) -> DeliveryState | None:
    raw = sb.tables.deliveries.get(key.encode())
    return records.decode(DeliveryState, raw) if raw is not None else None


def load_progress(sb: Switchboard, session_id: str) -> Progress:
    raw = sb.tables.progress.get(session_id.encode())
    return records.decode(Progress, raw) if raw is not None else Progress()


async def _handle(sb: Switchboard, event: EventT[bytes]) -> None:
    report = records.decode(Report, event.value)
    if load_session(sb, report.session_id) is None:
        # A provider's callback for a message this deployment did not send (or whose session
        # expired): recorded, not applied.
        await quarantine(
            sb, event, "reports", LookupError(f"a report for unknown session {report.session_id}")
        )
        return
    old = load_delivery(sb, report.key)
    if report.reopen and old is not None and is_final(old.status):
        await _uncount_final(sb, report.session_id, old.status)
    state = None if report.reopen else old
    events: list[StatusEvent] = []
    for status in report.statuses:
        # A failure with a retry ahead is reported as `failed` but leaves the delivery waiting
        # (scheduled) for its next attempt, so that attempt's statuses move it on.
        resting: Status = (
            "scheduled" if status == "failed" and report.retry_at is not None else status
        )
        moved = advances(
            resting, report.attempt, state.status if state else None, state.attempt if state else 0
        )
        redeferred = status == "deferred" and state is not None and state.status == "deferred"
        if not (moved or redeferred):
            log.debug("report changes nothing", extra={"delivery": report.key, "status": status})
            continue
        state = DeliveryState(
            status=resting,
            attempt=max(report.attempt, state.attempt if state else 0),
            address=report.address or (state.address if state else ""),
            updated_at=report.occurred_at,
            provider_message_id=report.provider_message_id
            or (state.provider_message_id if state else None),
            error_code=report.error_code,
            error=report.error,
        )
        events.append(StatusEvent(
            session_id=report.session_id,
            client_id=report.client_id,
            status=status,
            recipient=state.address or None,
            channel=report.channel,
            attempt=report.attempt,
            provider_message_id=report.provider_message_id,
            error_code=report.error_code,
            error=report.error,
            detail=report.detail if status == report.status else {},
            occurred_at=datetime.fromtimestamp(report.occurred_at, UTC),
        ))  # fmt: skip
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
    sb.tables.deliveries[report.key.encode()] = records.encode(state)
    if is_final(state.status) and (report.reopen or not (old is not None and is_final(old.status))):
        await _count_final(
            sb, report.session_id, report.client_id, state.status, report.occurred_at
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
