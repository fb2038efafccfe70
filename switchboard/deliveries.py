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

A provider's callback names the message it is about (Twilio's ``MessageSid``, or ``CallSid`` for
a voice broadcast); :func:`provider_id_conflict` decides whether that is this delivery's message.
Its URL names the delivery and attempt and is signed, but a signed callback of *another* message
of the same account can still be posted to it (a status callback URL reused, or replayed), and
it must not take the delivery over. The rule, for callbacks only (``Report.from_callback``):

- A delivery whose attempt has no provider id yet accepts the callback's id. This is a race,
  not a rare case: Twilio may call back before the dispatcher's ``sent`` report (which carries
  the id Twilio answered) is applied, and refusing would lose a real ``delivered``. The first id
  recorded for an attempt is then the one every later callback of that attempt must carry.
- A delivery that has an id for the callback's attempt accepts only callbacks with that same id
  (a callback without any id is refused too: it cannot show it is about this message).
- A callback of a newer attempt than the delivery's may carry a new id (a retry is a new
  message); one of an older attempt is late news that :func:`apply_report` ignores anyway.
- A send repeated after a crash (``in_doubt``) is the same attempt with a second message: the
  callbacks of the copy whose id was recorded first apply; the other copy's are refused.

A refused callback changes nothing (:func:`apply_report` answers the same state and no events);
the report agent puts it on the rejected topic with the reason. The dispatchers' own reports are
not checked: their id is the one the provider answered to our request.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from switchboard import reasons
from switchboard.records import DeliveryState, Report
from switchboard.status import Status, StatusEvent, advances, delivery_change_id

__all__ = ["apply_report", "delivery_event_id", "provider_id_conflict"]


def apply_report(
    report: Report, state: DeliveryState | None
) -> tuple[DeliveryState | None, list[StatusEvent]]:
    """The delivery's state after ``report``, and the events that tell it (see module docs).

    A callback that :func:`provider_id_conflict` refuses answers ``state`` itself and no events.
    A report that moves nothing answers ``state`` itself too (the same object)."""
    events: list[StatusEvent] = []
    if provider_id_conflict(report, state) is not None:
        return state, events
    # What every status of the report leaves the same (the address, the attempt, the provider's
    # id): worked out once, and one state built at the end, for the last status that moved it
    # (a provider that sends and delivers in one answer passes two: about three per delivery).
    if state is None:
        status_now: Status | None = None
        attempt_now = 0
        address = report.address
        provider_message_id = report.provider_message_id
    else:
        status_now, attempt_now = state.status, state.attempt
        address = report.address or state.address
        provider_message_id = report.provider_message_id or state.provider_message_id
    attempt = max(report.attempt, attempt_now)
    key = report.key
    occurred_at: datetime | None = None
    moved: tuple[Status, str | None, str | None] | None = None  # (resting, code, error)
    for status in report.statuses:
        resting: Status = (
            "scheduled" if status == "failed" and report.retry_at is not None else status
        )
        if not _moves(report, status, resting, status_now, attempt_now):
            continue
        code, error = report.error_code, report.error
        detail: Mapping[str, Any] = report.detail if status == report.status else {}
        if status in reasons.REASONED:
            # Held or not sent: the event says why (switchboard/reasons.py), and the state
            # keeps the code for the session's document.
            code, error, detail = reasons.annotate(
                status, code, error, detail, provider=report.from_callback
            )
        status_now, attempt_now, moved = resting, attempt, (resting, code, error)
        if occurred_at is None:
            occurred_at = datetime.fromtimestamp(report.occurred_at, UTC)
        events.append(
            StatusEvent(
                session_id=report.session_id,
                client_id=report.client_id,
                status=status,
                recipient=address or None,
                channel=report.channel,
                attempt=report.attempt,
                provider_message_id=report.provider_message_id,
                error_code=code,
                error=error,
                detail=detail,
                occurred_at=occurred_at,
                event_id=_change_id(report, key, status),
            )
        )
    if moved is None:
        return state, events
    resting, code, error = moved
    return (
        DeliveryState(
            status=resting,
            attempt=attempt,
            address=address,
            updated_at=report.occurred_at,
            provider_message_id=provider_message_id,
            error_code=code,
            error=error,
            release_at=_release_at(report) if resting == "deferred" else None,
        ),
        events,
    )


def _release_at(report: Report) -> str | None:
    at = report.detail.get("release_at")
    return at if isinstance(at, str) else None


def provider_id_conflict(report: Report, state: DeliveryState | None) -> str | None:
    """Why ``report``, a provider's callback, is not about ``state``'s message; None when it may
    be applied (always None for a report that is not a callback). See the module docs."""
    if not report.from_callback or state is None or state.provider_message_id is None:
        return None
    if report.attempt != state.attempt:
        return None  # a newer attempt is a new message; an older one moves nothing
    if report.provider_message_id == state.provider_message_id:
        return None
    # The ids are provider identifiers, not secrets: naming both tells the operator what happened.
    return (
        f"a status callback for message {report.provider_message_id or '(none)'} on the callback "
        f"URL of delivery {report.key} attempt {report.attempt}, whose message is "
        f"{state.provider_message_id}: nothing changed"
    )


def delivery_event_id(report: Report, status: Status) -> str:
    """The id of the event telling that ``report``'s delivery reached ``status``: its key,
    attempt and status name the change; a delivery held again by a window (a new
    ``release_at``) is a new change."""
    return _change_id(report, report.key, status)


def _change_id(report: Report, key: str, status: Status) -> str:
    """:func:`delivery_event_id`, the delivery's key given."""
    again = report.detail.get("release_at") if status == "deferred" else None
    return delivery_change_id(key, report.attempt, status, again)


def _moves(
    report: Report, status: Status, resting: Status, old_status: Status | None, old_attempt: int
) -> bool:
    if status == "deferred" and old_status == "deferred":
        return True  # held again by a window: a new release time
    if resting == "scheduled" and status == "failed":
        return advances("failed", report.attempt, old_status, old_attempt) and not (
            old_status == "scheduled" and old_attempt >= report.attempt
        )
    return advances(resting, report.attempt, old_status, old_attempt)
