"""switchboard.status: deliveries only move forward, and the status event's two shapes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from switchboard.status import (
    FINAL,
    STATUSES,
    Status,
    StatusEvent,
    delivery_change_id,
    event_id,
    is_final,
    supersedes,
)

PROGRESS: list[Status] = ["accepted", "scheduled", "sent", "delivered", "read"]
FAILURES: list[Status] = ["failed", "undelivered", "suppressed", "cancelled", "expired", "rejected"]
NOT_FINAL: list[Status] = ["accepted", "scheduled", "deferred", "sent"]


def apply(current: Status | None, reports: list[Status]) -> Status | None:
    for report in reports:
        if supersedes(report, current):
            current = report
    return current


def test_first_report_always_applies() -> None:
    for status in STATUSES:
        assert supersedes(status, None)


@pytest.mark.parametrize("status", STATUSES)
def test_duplicates_change_nothing(status: Status) -> None:
    assert not supersedes(status, status)


def test_final_statuses() -> None:
    assert set(FINAL) == {"delivered", "read", *FAILURES}
    assert all(is_final(s) for s in FINAL)
    assert not any(is_final(s) for s in (*NOT_FINAL, "completed"))


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("accepted", "scheduled"),
        ("accepted", "deferred"),
        ("accepted", "sent"),
        ("scheduled", "sent"),
        ("deferred", "sent"),
        ("sent", "delivered"),
        ("accepted", "delivered"),
        ("delivered", "read"),
        ("sent", "read"),
    ],
)
def test_progress_moves_forward(old: Status, new: Status) -> None:
    assert supersedes(new, old)
    assert not supersedes(old, new)


@pytest.mark.parametrize(
    ("old", "new"), [("sent", "accepted"), ("delivered", "sent"), ("read", "delivered")]
)
def test_progress_never_moves_back(old: Status, new: Status) -> None:
    assert not supersedes(new, old)


@pytest.mark.parametrize(
    ("old", "new"),
    # cancelled after sent is pinned below: a message with the provider cannot be cancelled
    [(o, n) for o in NOT_FINAL for n in FAILURES if (n, o) != ("cancelled", "sent")],
)
def test_failures_end_non_final_deliveries(old: Status, new: Status) -> None:
    assert supersedes(new, old)


@pytest.mark.parametrize("old", ["sent", "delivered", "read"])
def test_cancelled_never_replaces_a_sent_message(old: Status) -> None:
    assert not supersedes("cancelled", old)


@pytest.mark.parametrize("old", [None, "accepted", "scheduled", "deferred"])
def test_cancelled_ends_what_was_not_sent(old: Status | None) -> None:
    assert supersedes("cancelled", old)


def test_a_later_attempt_of_a_waiting_delivery_always_moves_it() -> None:
    from switchboard.status import advances

    assert advances("accepted", 2, "scheduled", 1)  # attempt 2 after attempt 1 failed
    assert advances("sent", 2, "scheduled", 1)
    assert not advances("sent", 1, "delivered", 1)
    assert not advances("sent", 2, "failed", 1), "a final failure stays final"


@pytest.mark.parametrize("old", FAILURES)
@pytest.mark.parametrize("new", STATUSES)
def test_nothing_replaces_a_final_failure(old: Status, new: Status) -> None:
    assert not supersedes(new, old)


@pytest.mark.parametrize("new", [*FAILURES, "sent", "accepted", "deferred", "completed"])
def test_delivered_is_not_replaced_except_by_read(new: Status) -> None:
    assert not supersedes(new, "delivered")
    assert supersedes("read", "delivered")


@pytest.mark.parametrize("new", STATUSES)
def test_nothing_follows_read(new: Status) -> None:
    assert not supersedes(new, "read")


def test_late_reports_keep_a_delivery_where_it_is() -> None:
    assert apply(None, ["accepted", "sent", "delivered", "sent", "failed", "read"]) == "read"
    assert apply(None, ["accepted", "sent", "undelivered", "delivered", "read"]) == "undelivered"
    assert apply(None, ["delivered", "sent", "accepted"]) == "delivered"


@given(
    st.sampled_from([*FAILURES, "read"]),
    st.lists(st.sampled_from(STATUSES), max_size=20),
    st.lists(st.sampled_from(STATUSES), max_size=20),
)
def test_a_final_status_other_than_delivered_is_never_changed(
    final: Status, before: list[Status], after: list[Status]
) -> None:
    reached = apply(apply(None, before), [final])
    if reached != final:
        return  # `before` already ended the delivery
    assert apply(reached, after) == final


@given(st.lists(st.sampled_from(STATUSES), min_size=1, max_size=30))
def test_progress_rank_never_decreases(reports: list[Status]) -> None:
    rank = {"accepted": 0, "scheduled": 1, "deferred": 1, "sent": 2, "delivered": 3, "read": 4}
    current: Status | None = None
    for report in reports:
        if supersedes(report, current):
            if current in rank and report in rank:
                assert rank[report] >= rank[current]  # scheduled and deferred share a rank
            if current is not None and is_final(current):
                assert (current, report) == ("delivered", "read")
            current = report


# -- the event ---------------------------------------------------------------------------------


def test_to_avro_shape() -> None:
    at = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    event = StatusEvent(
        "s1",
        "acme",
        "failed",
        recipient="+14155550100",
        channel="sms",
        attempt=2,
        provider_message_id="SM1",
        error_code="30003",
        error="unreachable",
        detail={"retry_in": 60},
        occurred_at=at,
        event_id="e1",
    )
    assert event.to_avro() == {
        "event_id": "e1",
        "session_id": "s1",
        "client_id": "acme",
        "recipient": "+14155550100",
        "channel": "sms",
        "status": "failed",
        "attempt": 2,
        "provider_message_id": "SM1",
        "error_code": "30003",
        "error": "unreachable",
        "occurred_at": at,
        "detail": {"retry_in": 60},
    }


def test_to_avro_empty_detail_is_null() -> None:
    assert StatusEvent("s1", "acme", "completed").to_avro()["detail"] is None


def test_to_json_occurred_at_is_iso_utc_with_z() -> None:
    at = datetime(2026, 5, 1, 14, 30, 15, 250000, tzinfo=timezone(timedelta(hours=2)))
    out = StatusEvent("s1", "acme", "sent", occurred_at=at).to_json()
    assert out["occurred_at"] == "2026-05-01T12:30:15.250000Z"
    assert out["detail"] == {}
    assert set(out) == {
        "event_id",
        "session_id",
        "client_id",
        "recipient",
        "channel",
        "status",
        "attempt",
        "provider_message_id",
        "error_code",
        "error",
        "occurred_at",
        "detail",
    }


def test_to_json_detail_and_defaults() -> None:
    event = StatusEvent("s1", "acme", "deferred", detail={"release_at": "2026-05-02T09:00:00Z"})
    out = event.to_json()
    assert out["detail"] == {"release_at": "2026-05-02T09:00:00Z"}
    assert out["attempt"] == 0
    assert out["occurred_at"].endswith("Z")
    assert "+00:00" not in out["occurred_at"]


def test_each_event_has_a_unique_id_and_a_utc_time() -> None:
    a, b = StatusEvent("s", "c", "sent"), StatusEvent("s", "c", "sent")
    assert a.event_id != b.event_id
    assert a.occurred_at.tzinfo is not None
    assert a.occurred_at.utcoffset() == timedelta(0)


def test_a_detail_too_deep_for_the_schema_is_kept_as_json_text_not_refused() -> None:
    from switchboard.status import StatusEvent, plain_detail
    from switchboard.wire import encode_record, read_record

    detail = {
        "counts": {"delivered": 2},
        "errors": ["a.on_message_send: boom", {"nested": [1, 2]}],
        "plugin": {"deep": {"deeper": True}},
        "huge": 2**70,
        "flag": True,
    }
    assert plain_detail(detail) == {
        "counts": {"delivered": 2},
        "errors": ["a.on_message_send: boom", '{"nested": [1, 2]}'],
        "plugin": {"deep": '{"deeper": true}'},
        "huge": str(2**70),
        "flag": True,
    }
    event = StatusEvent("s", "c", "delivered", detail=detail)
    value, _ = encode_record("status_event", event.to_avro())  # would raise before
    assert read_record("status_event", value)["detail"] == plain_detail(detail)
    assert event.to_json()["detail"] == plain_detail(detail), "webhooks carry the same shape"


def test_an_earlier_attempts_news_never_moves_a_later_attempt() -> None:
    from switchboard.status import advances

    assert not advances("failed", 1, "sent", 2), "a late callback of attempt 1"
    assert not advances("expired", 1, "sent", 2), "attempt 1's expiry timer"
    assert advances("failed", 2, "sent", 2)
    assert advances("sent", 2, "scheduled", 1), "the retry moves a waiting delivery"


def test_event_ids_are_the_uuid5_they_always_were() -> None:
    """Ids must never change across versions (readers de-duplicate by them): the fast path
    builds exactly ``uuid.uuid5`` of the joined parts."""
    import random
    import uuid

    from switchboard.status import _EVENT_IDS, event_id

    rng = random.Random(5)
    alphabet = "abc/#:-019é€😀\x1f "
    for _ in range(2000):
        parts = [
            "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30))),
            rng.randint(0, 9),
            None,
        ]
        joined = "\x1f".join("" if p is None else str(p) for p in parts)
        assert event_id(*parts) == str(uuid.uuid5(_EVENT_IDS, joined))


@given(
    st.text(max_size=30),
    st.integers(min_value=0, max_value=10**6),
    st.sampled_from(["accepted", "sent", "deferred"]),
    st.lists(st.none() | st.text(max_size=10) | st.integers(), max_size=2),
)
def test_a_delivery_s_change_id_is_the_general_event_id(
    key: str, attempt: int, status: str, more: list[object]
) -> None:
    """The delivery's shortcut names the change exactly as :func:`event_id` does (an id a
    reader de-duplicates by must never change with the code path that made it)."""
    assert delivery_change_id(key, attempt, status, *more) == event_id(key, attempt, status, *more)
