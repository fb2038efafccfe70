"""Channel fallback (``options.fallback``, ``switchboard/fallback.py``): validation, the
contract's forms (JSON, Avro), the fan-out's first steps, and the rules that decide when a
recipient's next channel is tried and how it counts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from switchboard import fallback
from switchboard.fallback import Move, Plan
from switchboard.fanout import first_steps, plan_chunk
from switchboard.records import DispatchJob, Report, SessionState
from switchboard.status import FINAL, STATUSES, Status
from switchboard.wire import Framing, decode_instruction
from tests.unit.test_validation import APNS, PHONE, body, errors, make_client, ok
from tests.unit.test_wire import MINIMAL, avro_body

SMS_EMAIL = {"channels": ["sms", "email"], "afterSeconds": 120}
BOTH = {"phone": PHONE, "email": "ada@example.com"}


def fallback_body(plan: Any = None, **overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "transport": {"message": "Your parcel is here", "subject": "Parcel"},
        "audience": [BOTH],
        "options": {"fallback": SMS_EMAIL if plan is None else plan},
    }
    return body(**{**fields, **overrides})


# -- validation --------------------------------------------------------------------------------


def test_a_fallback_names_the_channels_in_order_and_counts_recipients() -> None:
    instruction = ok(fallback_body())
    assert instruction.channels == ("sms", "email")
    assert instruction.options.fallback is not None
    assert instruction.options.to_contract()["fallback"] == SMS_EMAIL
    assert instruction.deliveries == 1, "one recipient, however many channels it is tried on"


def test_without_after_seconds_only_a_failure_moves_on() -> None:
    plan = ok(fallback_body({"channels": ["push", "sms"]})).options.fallback
    assert plan is not None and plan.after_seconds is None
    assert plan.to_contract() == {"channels": ["push", "sms"]}


def test_transport_type_may_name_the_first_channel() -> None:
    data = fallback_body()
    data["transport"]["type"] = "sms"
    assert ok(data).channels == ("sms", "email")
    data["transport"]["type"] = "email"
    assert errors(data) == [
        (
            "transport.type",
            "must be 'sms', the first of options.fallback.channels, or left out",
        )
    ]


def test_a_single_channel_is_unchanged() -> None:
    instruction = ok(body())
    assert instruction.channels == ("sms",) and instruction.options.fallback is None
    assert "fallback" not in instruction.options.to_contract()


def test_every_problem_of_a_fallback_is_named() -> None:
    client = make_client(channels=("sms", "email", "push"))
    found = errors(
        fallback_body({"channels": ["sms", "sms", "voice", "fax"], "afterSeconds": 0, "x": 1}),
        client,
    )
    assert found == [
        ("options.fallback.x", "unknown field"),
        (
            "options.fallback.channels[1]",
            "'sms' is named twice: each channel is tried at most once",
        ),
        (
            "options.fallback.channels[2]",
            "channel 'voice' is not configured for client 'acme' (configured: sms, email, push)",
        ),
        (
            "options.fallback.channels[3]",
            "unknown channel 'fax'; expected one of sms, email, push, voice, whatsapp, slack",
        ),
        (
            "options.fallback.afterSeconds",
            "must be a whole number of seconds from 1 to 86400 (a day)",
        ),
    ]


@pytest.mark.parametrize("channels", [None, [], ["sms"], "sms,email", ["sms"] * 7])
def test_a_fallback_needs_two_to_six_channels(channels: Any) -> None:
    plan = {} if channels is None else {"channels": channels}
    assert errors(fallback_body(plan)) == [
        (
            "options.fallback.channels",
            "required: a list of 2 to 6 channels, tried in this order",
        )
    ]


@pytest.mark.parametrize("after", [0, -5, 86_401, 1.5, "120", True])
def test_after_seconds_out_of_range_is_refused(after: Any) -> None:
    assert errors(fallback_body({"channels": ["sms", "email"], "afterSeconds": after})) == [
        (
            "options.fallback.afterSeconds",
            "must be a whole number of seconds from 1 to 86400 (a day)",
        )
    ]


def test_a_fallback_that_is_not_an_object_is_refused() -> None:
    [(field, error)] = errors(fallback_body(["sms", "email"]))
    assert field == "options.fallback" and error.startswith("must be an object")


def test_a_recipient_with_no_address_for_any_channel_is_refused() -> None:
    data = fallback_body(audience=[BOTH, {"push_token": APNS}])
    assert errors(data) == [("audience[1]", "no address for sms, email: give email or phone")]


def test_every_channel_needs_its_content() -> None:
    data = fallback_body()
    del data["transport"]["subject"]
    assert errors(data) == [("transport.subject", "required for email")]


def test_avro_carries_the_fallback() -> None:
    record = {**MINIMAL, "options": {"fallback": {"channels": ["sms", "email"]}}}
    decoded = decode_instruction(avro_body(record), Framing("avro"))
    assert decoded["options"] == {"fallback": {"channels": ["sms", "email"]}}
    record["options"] = {"fallback": SMS_EMAIL}
    assert decode_instruction(avro_body(record), Framing("avro"))["options"] == {
        "fallback": SMS_EMAIL
    }


# -- fan-out -----------------------------------------------------------------------------------


def session(channels: list[str], options: dict[str, Any]) -> SessionState:
    return SessionState(
        session_id="s",
        client_id="acme",
        channels=channels,
        recipients=3,
        deliveries=3,
        chunks=1,
        trigger="immediate",
        status="dispatching",
        created_at=1_800_000_000.0,
        source="http",
        transport={"message": "Parcel", "subject": "Parcel"},
        options=options,
    )


def test_a_recipient_has_a_job_per_step_and_the_fan_out_sends_the_first() -> None:
    state = session(["sms", "email"], {"fallback": SMS_EMAIL})
    recipients = [
        {"addresses": {"phone": PHONE, "email": "a@example.com"}},
        {"addresses": {"email": "b@example.com"}},  # no phone: its first step is email
        {"addresses": {"phone": PHONE}},
    ]
    items = list(plan_chunk(state, 0, recipients, now=0.0))
    assert [(i.index, i.channel) for i in items] == [
        (0, "sms"),
        (0, "email"),
        (1, "email"),
        (2, "sms"),
    ]
    assert all(isinstance(i, DispatchJob) for i in items), "no address is not a rejection"
    first = list(first_steps(iter(items)))
    assert [(i.index, i.channel) for i in first] == [(0, "sms"), (1, "email"), (2, "sms")]


# -- the rules ---------------------------------------------------------------------------------


@dataclass
class Row:
    status: Status
    updated_at: float = 100.0
    error_code: str | None = None
    error: str | None = None


PLAN = Plan(("sms", "email", "push"), 120)
ORDER = ("sms", "email", "push")


def test_plan_of_reads_the_stored_options() -> None:
    assert fallback.plan_of({}) is None and fallback.plan_of(None) is None
    assert fallback.plan_of({"fallback": SMS_EMAIL}) == Plan(("sms", "email"), 120)
    assert fallback.plan_of({"fallback": {"channels": ["push", "sms"]}}) == Plan(("push", "sms"))


def test_steps_pass_over_channels_without_an_address() -> None:
    assert fallback.steps(ORDER, {"email": "a@example.com"}) == ("email",)
    assert fallback.steps(ORDER, {"phone": PHONE, "push_token": APNS}) == ("sms", "push")


def test_a_failure_for_good_moves_on_at_once_and_says_why() -> None:
    rows = {"sms": Row("undelivered", error_code="30005", error="Unknown destination")}
    move = fallback.after_failure(ORDER, rows, "sms")
    assert move == Move("email", "sms", "sms undelivered: Unknown destination", 2)
    assert move.detail() == {
        "reason": "fallback",
        "fallback_from": "sms",
        "why": "sms undelivered: Unknown destination",
        "step": 2,
    }


@pytest.mark.parametrize(
    ("status", "code"),
    [
        ("sent", None),
        ("scheduled", None),  # a retryable failure with a retry ahead waits for it
        ("delivered", None),
        ("cancelled", None),
        ("expired", "deadline"),  # every later step would be too late as well
        ("failed", "state-lost"),
    ],
)
def test_what_does_not_move_on(status: Status, code: str | None) -> None:
    assert fallback.after_failure(ORDER, {"sms": Row(status, error_code=code)}, "sms") is None


def test_only_the_latest_step_moves_on_and_never_after_a_delivery() -> None:
    # The sms timed out and email was started: the sms's later failure starts nothing.
    rows: dict[str, Any] = {"sms": Row("expired", error_code="no-report"), "email": Row("sent")}
    assert fallback.after_failure(ORDER, rows, "sms") is None
    # A late sms delivered: the email's failure does not go on to push.
    rows = {"sms": Row("delivered"), "email": Row("failed")}
    assert fallback.after_failure(ORDER, rows, "email") is None
    # The last step has nothing after it.
    assert fallback.after_failure(ORDER, {"push": Row("failed")}, "push") is None


def test_a_step_times_out_after_its_hand_off() -> None:
    rows = {"sms": Row("sent", updated_at=1000.0)}
    assert fallback.timeout_due(PLAN, rows) == 1120.0
    assert fallback.after_timeout(PLAN, ORDER, rows, 1119.9) is None
    assert fallback.after_timeout(PLAN, ORDER, rows, 1120.0) == Move(
        "email", "sms", "sms not delivered within 120 s", 2
    )
    # Not handed off yet (a window, a backlog, a retry ahead): no timeout runs.
    for status in ("accepted", "deferred", "scheduled"):
        assert fallback.timeout_due(PLAN, {"sms": Row(status)}) is None
    # Without afterSeconds, only failures move on.
    assert fallback.timeout_due(Plan(ORDER), rows) is None
    # The last channel of the plan has nothing to time out to.
    assert fallback.timeout_due(PLAN, {"sms": Row("failed"), "push": Row("sent")}) is None


def test_the_timeout_follows_the_recipients_steps() -> None:
    rows = {"sms": Row("sent", updated_at=0.0)}
    move = fallback.after_timeout(PLAN, ("sms", "push"), rows, 500.0)
    assert move == Move("push", "sms", "sms not delivered within 120 s", 2)
    assert fallback.after_timeout(PLAN, ("sms",), rows, 500.0) is None


def test_the_outcome_counts_a_recipient_once() -> None:
    assert fallback.outcome(ORDER, {}) is None
    assert fallback.outcome(ORDER, {"sms": Row("sent")}) is None
    assert fallback.outcome(ORDER, {"sms": Row("sent"), "email": Row("delivered")}) == "delivered"
    # The email failed but the sms may still be delivered late: open.
    assert fallback.outcome(ORDER, {"sms": Row("sent"), "email": Row("failed")}) is None
    rows = {"sms": Row("expired"), "email": Row("failed")}
    assert fallback.outcome(ORDER, rows) == "failed", "the latest step's status"


def test_a_delivered_recipient_stays_counted_so() -> None:
    assert fallback.recount(None, "delivered") == (None, "delivered")
    assert fallback.recount("failed", "delivered") == ("failed", "delivered")  # late delivered
    assert fallback.recount("delivered", "read") == (None, None)
    assert fallback.recount("delivered", "delivered") == (None, None)


rows_strategy = st.dictionaries(
    st.sampled_from(ORDER),
    st.builds(
        Row,
        st.sampled_from(STATUSES[:-1]),
        st.floats(0, 1000),
        st.sampled_from([None, "deadline", "30005"]),
    ),
)


@given(rows_strategy, st.floats(0, 2000))
def test_nothing_is_started_after_a_delivery_and_never_a_channel_twice(
    rows: dict[str, Row], now: float
) -> None:
    for move in (
        *(fallback.after_failure(ORDER, rows, c) for c in ORDER),
        fallback.after_timeout(PLAN, ORDER, rows, now),
    ):
        if move is None:
            continue
        assert not fallback.delivered(rows)
        assert move.channel not in rows, "a channel started twice"
        assert ORDER.index(move.channel) > max(ORDER.index(c) for c in rows)


@given(rows_strategy)
def test_an_outcome_is_final_or_open(rows: dict[str, Row]) -> None:
    result = fallback.outcome(ORDER, rows)
    assert result is None or result in FINAL
    if fallback.delivered(rows):
        assert result in ("delivered", "read")


def test_a_step_report_is_a_report() -> None:
    """The step's row and event come from an ``accepted`` report with the move's detail."""
    move = Move("email", "sms", "sms not delivered within 120 s", 2)
    report = Report(
        "s", "acme", "email", 0, "a@example.com", "accepted", 1, 0.0, detail=move.detail()
    )
    assert report.detail["reason"] == fallback.REASON


# -- the command line --------------------------------------------------------------------------


def test_switchboard_send_sets_the_fallback() -> None:
    import argparse

    from cli import send_options

    p = argparse.ArgumentParser()
    send_options.add_arguments(p)
    args = p.parse_args(["--fallback", "push, sms", "--fallback-after", "60"])
    assert send_options.options_from(args) == {
        "fallback": {"channels": ["push", "sms"], "afterSeconds": 60}
    }
    assert send_options.options_from(p.parse_args(["--fallback", "sms,email"])) == {
        "fallback": {"channels": ["sms", "email"]}
    }
