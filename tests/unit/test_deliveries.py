"""switchboard.deliveries: the report agent's rule for moving a delivery's state."""

from __future__ import annotations

from typing import Any

from switchboard.deliveries import apply_report
from switchboard.records import DeliveryState, Report


def report(status: Any, attempt: int = 1, **fields: Any) -> Report:
    return Report(session_id="s", client_id="c", channel="voice", index=0, address="+14155550100",
                  status=status, attempt=attempt, occurred_at=1_800_000_000.0, **fields)  # fmt: skip


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
    state, told = walk(report("accepted"), report("sent"), busy, report("sent", attempt=2),
                       report("failed", attempt=1, error_code="busy"))  # fmt: skip
    assert told[3:] == [["sent"], []], "attempt 1's late news does not touch attempt 2"
    assert state is not None and (state.status, state.attempt) == ("sent", 2)


def test_a_final_failure_without_retry_is_final() -> None:
    state, told = walk(report("accepted"), report("sent"), report("failed", error_code="no-answer"))
    assert told[-1] == ["failed"] and state is not None and state.status == "failed"


def test_a_window_may_hold_a_deferred_delivery_again() -> None:
    _, told = walk(report("accepted"), report("deferred"), report("deferred"))
    assert told == [["accepted"], ["deferred"], ["deferred"]]
