"""Applying a report to a delivery's state: the report agent's rule, as a pure function.

:func:`apply_report` takes a delivery's state and one report (which may carry the statuses it
passed through on the way, e.g. ``sent`` before an immediate ``delivered``), and answers the
new state and the status events to publish, in order. A report that moves nothing answers the
very same state object and no events: a duplicate, a ``sent`` after ``delivered``, anything
after a final failure, an earlier attempt's late news (:func:`switchboard.status.advances`).

A failure with a retry ahead (``retry_at``) is told as ``failed`` but leaves the delivery
``scheduled``, waiting for its next attempt, so that attempt's statuses move it on. Such a
failure ends its attempt even when the attempt was already ``sent`` (a busy call), and a repeat
of it changes nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime

from switchboard.records import DeliveryState, Report
from switchboard.status import Status, StatusEvent, advances, event_id

__all__ = ["apply_report", "delivery_event_id"]


def apply_report(
    report: Report, state: DeliveryState | None
) -> tuple[DeliveryState | None, list[StatusEvent]]:
    """The delivery's state after ``report``, and the events that tell it (see module docs)."""
    events: list[StatusEvent] = []
    for status in report.statuses:
        resting: Status = (
            "scheduled" if status == "failed" and report.retry_at is not None else status
        )
        if not _moves(report, status, resting, state):
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
            event_id=delivery_event_id(report, status),
        ))  # fmt: skip
    return state, events


def delivery_event_id(report: Report, status: Status) -> str:
    """The id of the event telling that ``report``'s delivery reached ``status``: its key,
    attempt and status name the change; a delivery held again by a window (a new
    ``release_at``) is a new change."""
    again = report.detail.get("release_at") if status == "deferred" else None
    return event_id(report.key, report.attempt, status, again)


def _moves(report: Report, status: Status, resting: Status, state: DeliveryState | None) -> bool:
    old_status, old_attempt = (state.status, state.attempt) if state else (None, 0)
    if status == "deferred" and old_status == "deferred":
        return True  # held again by a window: a new release time
    if resting == "scheduled" and status == "failed":
        return advances("failed", report.attempt, old_status, old_attempt) and not (
            old_status == "scheduled" and old_attempt >= report.attempt
        )
    return advances(resting, report.attempt, old_status, old_attempt)
