"""The hand-written status event encoder (switchboard/status_avro.py) writes fastavro's bytes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from switchboard import status_avro
from switchboard.status import StatusEvent
from switchboard.status_avro import encode_status_event
from switchboard.wire import encode_record, read_record

_text = st.text(max_size=40)
_optional = st.none() | _text
_scalar = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False)
    | _text
)
_nested = st.lists(_scalar, max_size=3) | st.dictionaries(_text, _scalar, max_size=3)
_moments = st.datetimes(
    min_value=datetime(1971, 1, 1),
    max_value=datetime(2200, 1, 1),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=45))]),
)


@st.composite
def _records(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "event_id": draw(_text),
        "session_id": draw(_text),
        "client_id": draw(_text),
        "recipient": draw(_optional),
        "channel": draw(_optional),
        "status": draw(st.sampled_from(["accepted", "sent", "delivered", "completed"])),
        "attempt": draw(st.integers(min_value=-(2**31), max_value=2**31 - 1)),
        "provider_message_id": draw(_optional),
        "error_code": draw(_optional),
        "error": draw(_optional),
        "occurred_at": draw(_moments),
        "detail": draw(st.none() | st.dictionaries(_text, _scalar | _nested, max_size=4)),
    }


@settings(max_examples=400, deadline=None)
@given(_records(), st.none() | st.integers(min_value=1, max_value=2**31 - 1))
def test_the_bytes_are_fastavro_s(record: dict[str, Any], schema_id: int | None) -> None:
    assert encode_status_event(record, schema_id) == encode_record(
        "status_event", record, schema_id
    )


@settings(max_examples=400, deadline=None)
@given(_records(), st.none() | st.integers(min_value=1, max_value=2**31 - 1))
def test_an_event_written_from_itself_has_the_same_bytes(
    record: dict[str, Any], schema_id: int | None
) -> None:
    """``encode_event`` (no record built, repeated strings remembered) writes what fastavro
    writes for the event's record, twice in a row (the second from what it remembered)."""
    event = StatusEvent(
        **{k: v for k, v in record.items() if k != "detail"}, detail=record["detail"] or {}
    )
    expected = encode_record("status_event", event.to_avro(), schema_id)
    assert status_avro.encode_event(event, schema_id) == expected
    assert status_avro.encode_event(event, schema_id) == expected


def test_a_delivery_event_round_trips(monkeypatch: pytest.MonkeyPatch) -> None:
    event = StatusEvent(
        session_id="s-1",
        client_id="acme",
        status="delivered",
        recipient="+15551234567",
        channel="sms",
        attempt=1,
        provider_message_id="SM1",
        detail={"sandbox": True, "n": 3},
        occurred_at=datetime(2026, 12, 5, 22, 15, 0, 123456, tzinfo=UTC),
        event_id="e-1",
    )
    expected = encode_record("status_event", event.to_avro())
    monkeypatch.setattr(status_avro, "encode_record", _slow_path_taken)  # the fast path writes it
    value, headers = encode_status_event(event.to_avro())
    assert (value, headers) == expected
    read = read_record("status_event", value)
    assert read["detail"] == {"sandbox": True, "n": 3}
    assert read["occurred_at"] == datetime(2026, 12, 5, 22, 15, 0, 123000, tzinfo=UTC)
    assert (read["recipient"], read["status"], read["attempt"]) == ("+15551234567", "delivered", 1)


def _slow_path_taken(*args: object) -> None:
    raise AssertionError("a delivery's event fell back to fastavro")
