"""switchboard.deliveries: the report agent's rule for moving a delivery's state."""

from __future__ import annotations

import dataclasses
from typing import Any

from switchboard.deliveries import apply_report, provider_id_conflict
from switchboard.records import DeliveryState, Report


def report(status: Any, attempt: int = 1, **fields: Any) -> Report:
    return Report(
        session_id="s",
        client_id="c",
        channel="voice",
        index=0,
        address="+14155550100",
        status=status,
        attempt=attempt,
        occurred_at=1_800_000_000.0,
        **fields,
    )


def walk(*reports: Report) -> tuple[DeliveryState | None, list[list[str]]]:
    state: DeliveryState | None = None
    told: list[list[str]] = []
    for r in reports:
        state, events = apply_report(r, state)
        told.append([e.status for e in events])
    return state, told


def test_an_immediate_delivery_tells_the_statuses_it_passed() -> None:
    state, told = walk(report("accepted"), report("delivered", passed=["sent"]))
    assert told == [["accepted"], ["sent", "delivered"]]
    assert state is not None and state.status == "delivered"


def test_a_report_that_moves_nothing_answers_the_same_state_and_no_event() -> None:
    state, _ = walk(report("accepted"), report("sent"), report("delivered"))
    for late in (report("sent"), report("delivered"), report("failed")):
        again, events = apply_report(late, state)
        assert again is state and events == []


def test_a_busy_call_already_sent_ends_its_attempt_and_waits_for_the_retry_once() -> None:
    busy = report("failed", error_code="busy", retry_at=1_800_000_060.0)
    state, told = walk(report("accepted"), report("sent"), busy, busy)
    assert told[2:] == [["failed"], []], "told once; the repeat changes nothing"
    assert state is not None and (state.status, state.attempt) == ("scheduled", 1)
    state, told = walk(
        report("accepted"),
        report("sent"),
        busy,
        report("sent", attempt=2),
        report("failed", attempt=1, error_code="busy"),
    )
    assert told[3:] == [["sent"], []], "attempt 1's late news does not touch attempt 2"
    assert state is not None and (state.status, state.attempt) == ("sent", 2)


def test_a_final_failure_without_retry_is_final() -> None:
    state, told = walk(report("accepted"), report("sent"), report("failed", error_code="no-answer"))
    assert told[-1] == ["failed"] and state is not None and state.status == "failed"


def test_a_window_may_hold_a_deferred_delivery_again() -> None:
    _, told = walk(report("accepted"), report("deferred"), report("deferred"))
    assert told == [["accepted"], ["deferred"], ["deferred"]]


def test_a_deferred_delivery_keeps_its_release_time_until_it_moves_on() -> None:
    held = report("deferred", detail={"release_at": "2027-01-15T08:00:00Z"})
    state, _ = walk(report("accepted"), held)
    assert state is not None and state.release_at == "2027-01-15T08:00:00Z"
    sent, _ = apply_report(report("sent"), state)
    assert sent is not None and sent.release_at is None


def test_an_event_id_names_the_change_and_survives_a_replay() -> None:
    """Applying the same report to the same state again (a replay after a crash) tells the same
    events with the same ids; a receiver de-duplicates by them."""
    accepted = report("accepted")
    delivered = report("delivered", passed=["sent"])
    state, first = apply_report(accepted, None)
    _, told = apply_report(delivered, state)
    _, again = apply_report(delivered, state)
    assert [e.event_id for e in told] == [e.event_id for e in again]
    # Each change has its own id: another status, another attempt, another delivery.
    ids = {first[0].event_id, *(e.event_id for e in told)}
    ids.add(apply_report(report("sent", attempt=2), state)[1][0].event_id)
    other = Report(
        session_id="s",
        client_id="c",
        channel="voice",
        index=1,
        address="+14155550100",
        status="accepted",
        attempt=1,
        occurred_at=1_800_000_000.0,
    )
    ids.add(apply_report(other, None)[1][0].event_id)
    assert len(ids) == 5
    # The time of a report is not part of its change: a late copy of it is the same event.
    late = dataclasses.replace(accepted, occurred_at=1_900_000_000.0)
    assert apply_report(late, None)[1][0].event_id == first[0].event_id


def test_a_window_holding_a_delivery_again_is_a_new_change() -> None:
    held = report("deferred", detail={"release_at": "2027-01-01T08:00:00Z"})
    again = report("deferred", detail={"release_at": "2027-01-02T08:00:00Z"})
    state, first = apply_report(held, None)
    _, second = apply_report(again, state)
    assert first[0].event_id != second[0].event_id


# -- a callback about another message (issue 14, part 5) ------------------------------------


def callback(status: Any, sid: str | None, attempt: int = 1) -> Report:
    return report(status, attempt, provider_message_id=sid, from_callback=True)


def test_a_callback_with_another_message_id_changes_nothing() -> None:
    state, _ = walk(report("accepted"), report("sent", provider_message_id="SM1"))
    for other in (
        callback("delivered", "SM2"),
        callback("failed", "SM2"),
        callback("delivered", None),
    ):
        assert provider_id_conflict(other, state) is not None
        again, events = apply_report(other, state)
        assert again is state and events == [], "neither the id nor the status is replaced"
    assert state is not None and (state.status, state.provider_message_id) == ("sent", "SM1")
    assert "SM2" in (provider_id_conflict(callback("delivered", "SM2"), state) or "")


def test_a_callback_with_the_delivery_s_own_id_moves_it_on() -> None:
    state, told = walk(
        report("accepted"), report("sent", provider_message_id="SM1"), callback("delivered", "SM1")
    )
    assert told[-1] == ["delivered"]
    assert state is not None and (state.status, state.provider_message_id) == ("delivered", "SM1")


def test_a_callback_before_the_sent_report_gives_the_delivery_its_id() -> None:
    """The race: Twilio's callback is applied before the dispatcher's ``sent``. Its id is taken,
    and from then on it is the one every callback of the attempt must carry."""
    state, told = walk(report("accepted"), callback("delivered", "SM1"))
    assert told[-1] == ["delivered"]
    assert state is not None and state.provider_message_id == "SM1"
    assert provider_id_conflict(callback("delivered", "SM1"), state) is None
    assert provider_id_conflict(callback("undelivered", "SM9"), state) is not None
    late, events = apply_report(report("sent", provider_message_id="SM1"), state)
    assert late is state and events == [], "the dispatcher's late sent changes nothing"


def test_a_newer_attempt_may_carry_a_new_id_and_reports_of_ours_are_not_checked() -> None:
    busy = report("failed", error_code="busy", retry_at=1_800_000_060.0, provider_message_id="CA1")
    state, _ = walk(report("accepted"), report("sent", provider_message_id="CA1"), busy)
    assert provider_id_conflict(callback("sent", "CA2", attempt=2), state) is None
    assert provider_id_conflict(report("sent", 1, provider_message_id="SM9"), state) is None
    assert provider_id_conflict(callback("sent", "SM9"), None) is None
