"""Send-by deadlines (``switchboard/deadline.py``): validation of ``options.expiresAt`` and
``options.ttlSeconds``, the deadline a session's jobs carry, and when a hand-off is too late."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from switchboard import deadline
from switchboard.deadline import MAX_TTL_SECONDS, deadline_of
from switchboard.fanout import plan_chunk
from switchboard.records import DispatchJob, SessionState, decode, encode
from switchboard.wire import Framing, decode_instruction
from tests.unit.test_validation import body, errors, ok
from tests.unit.test_wire import MINIMAL, avro_body

AT = "2026-12-06T10:00:00Z"
AT_EPOCH = datetime(2026, 12, 6, 10, tzinfo=UTC).timestamp()


# -- validation --------------------------------------------------------------------------------


def test_expires_at_with_an_offset_is_kept_in_the_contract() -> None:
    options = ok(body(options={"expiresAt": "2026-12-06T11:00:00+01:00"})).options
    assert options.expires_at is not None and options.expires_at.timestamp() == AT_EPOCH
    assert options.to_contract()["expiresAt"] == "2026-12-06T11:00:00+01:00"
    assert "ttlSeconds" not in options.to_contract()


def test_ttl_seconds_is_kept_in_the_contract() -> None:
    options = ok(body(options={"ttlSeconds": 300, "priority": "high"})).options
    assert options.ttl_seconds == 300 and options.to_contract()["ttlSeconds"] == 300
    assert "expiresAt" not in options.to_contract()


def test_no_deadline_leaves_the_contract_as_before() -> None:
    contract = ok(body()).options.to_contract()
    assert "expiresAt" not in contract and "ttlSeconds" not in contract
    nulls = ok(body(options={"expiresAt": None, "ttlSeconds": None})).options
    assert nulls.expires_at is None and nulls.ttl_seconds is None


def test_both_deadlines_are_refused() -> None:
    assert errors(body(options={"expiresAt": AT, "ttlSeconds": 60})) == [
        ("options.ttlSeconds", "give expiresAt or ttlSeconds, not both")
    ]


@pytest.mark.parametrize("value", [0, -1, MAX_TTL_SECONDS + 1, 1.5, "60", True])
def test_a_ttl_out_of_bounds_or_not_whole_is_refused(value: Any) -> None:
    assert errors(body(options={"ttlSeconds": value})) == [
        ("options.ttlSeconds", "must be a whole number of seconds from 1 to 2592000 (30 days)")
    ]


@pytest.mark.parametrize("value", ["2026-12-06T10:00:00", "tomorrow", 1765015200, ""])
def test_expires_at_needs_rfc3339_with_an_offset(value: Any) -> None:
    assert errors(body(options={"expiresAt": value})) == [
        (
            "options.expiresAt",
            "must be an RFC 3339 timestamp with an offset, e.g. 2026-12-06T10:00:00Z",
        )
    ]


def test_expires_at_must_follow_the_schedule() -> None:
    scheduled = {"trigger": "scheduled", "scheduledTimestamp": AT}
    assert errors(body(options={**scheduled, "expiresAt": AT})) == [
        ("options.expiresAt", "must be after scheduledTimestamp")
    ]
    assert ok(body(options={**scheduled, "expiresAt": "2026-12-06T10:05:00Z"}))


def test_every_deadline_problem_is_reported_with_the_others() -> None:
    found = errors(body(options={"ttlSeconds": 0, "retries": -1}))
    assert {field for field, _ in found} == {"options.ttlSeconds", "options.retries"}


# -- the deadline of a session -----------------------------------------------------------------


def test_deadline_of_each_form() -> None:
    assert deadline_of({}, 100.0) is None
    assert deadline_of(None, 100.0) is None
    assert deadline_of({"expiresAt": AT}, 100.0) == AT_EPOCH
    assert deadline_of({"ttlSeconds": 30}, 100.0) == 130.0, "from the acceptance"
    scheduled = {"scheduledTimestamp": AT, "trigger": "scheduled", "ttlSeconds": 30}
    assert deadline_of(scheduled, 100.0) == AT_EPOCH + 30, "from the schedule"


@given(st.floats(0, 2e9), st.floats(0, 2e9))
def test_a_hand_off_at_or_after_the_deadline_is_too_late(expires_at: float, at: float) -> None:
    assert deadline.passed_before(expires_at, at) is (at >= expires_at)
    assert deadline.passed_before(None, at) is False, "no deadline: never too late"


def test_the_reason_names_the_deadline() -> None:
    assert deadline.reason(AT_EPOCH) == "deadline 2026-12-06T10:00:00Z passed before hand-off"
    assert deadline.reason(AT_EPOCH, "the retry due at x").endswith(
        "passed before the retry due at x"
    )


def _session(options: dict[str, object], created_at: float = 1000.0) -> SessionState:
    return SessionState(
        session_id="s1",
        client_id="acme",
        channels=["sms"],
        recipients=1,
        deliveries=1,
        chunks=1,
        trigger="immediate",
        status="dispatching",
        created_at=created_at,
        source="api",
        transport={"type": "sms", "message": "Your code is 1234"},
        options=options,
    )


def test_fan_out_gives_each_job_the_sessions_deadline() -> None:
    recipients = [{"addresses": {"phone": "+14155550100"}}]
    for options, expected in (
        ({}, None),
        ({"ttlSeconds": 60}, 1060.0),
        ({"expiresAt": AT}, AT_EPOCH),
    ):
        [job] = plan_chunk(_session(options), 0, recipients, now=0.0)
        assert isinstance(job, DispatchJob) and job.expires_at == expected
        assert decode(DispatchJob, encode(job)) == job, "the deadline travels with the job"


def test_a_job_written_before_deadlines_has_none() -> None:
    old = b'{"session_id":"s","client_id":"c","channel":"sms","index":0,"address":"+1","attempt":1,"message":"m"}'
    assert decode(DispatchJob, old).expires_at is None


def test_an_avro_instruction_carries_either_deadline() -> None:
    """The bundled schema has both fields: an outside producer's deadline reaches validation."""
    for options, expected in (({"ttlSeconds": 300}, 300.0), ({"expiresAt": AT}, AT_EPOCH)):
        decoded = decode_instruction(avro_body({**MINIMAL, "options": options}), Framing("avro"))
        assert decoded["options"] == options
        assert deadline_of(ok(decoded).options.to_contract(), 0.0) == expected
