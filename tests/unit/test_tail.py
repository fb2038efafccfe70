"""``switchboard tail``'s pure half: reading every framing of the status topic, the filter and
the one-line rendering (the Kafka loop is covered end to end in tests/integration)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import fastavro
import pytest

import schemas
from cli.tail import Filter, decode_status, render
from switchboard.errors import DecodeFailed
from switchboard.status import StatusEvent
from switchboard.wire import encode_record

AT = datetime(2026, 11, 21, 13, 45, 6, 789000, tzinfo=UTC)


def event(**changes: object) -> StatusEvent:
    fields: dict[str, object] = {
        "session_id": "s-1",
        "client_id": "acme",
        "status": "failed",
        "recipient": "+14155550100",
        "channel": "sms",
        "attempt": 2,
        "error_code": "30003",
        "error": "Unreachable",
        "occurred_at": AT,
        "event_id": "e-1",
    }
    fields.update(changes)
    return StatusEvent(**fields)  # type: ignore[arg-type]


def test_reads_schemaless_avro_with_the_content_type_header() -> None:
    value, headers = encode_record("status_event", event().to_avro())
    decoded = decode_status(value, headers)
    assert decoded["status"] == "failed" and decoded["error_code"] == "30003"
    assert decoded["occurred_at"] == AT


def test_reads_the_confluent_wire_format_with_or_without_the_registry() -> None:
    value, headers = encode_record("status_event", event().to_avro(), schema_id=7)
    assert headers == []
    assert decode_status(value, headers)["recipient"] == "+14155550100"
    asked: list[int] = []

    def registry(schema_id: int) -> object:
        asked.append(schema_id)
        return fastavro.parse_schema(json.loads(schemas.source("status_event")))

    assert decode_status(value, headers, registry)["attempt"] == 2
    assert asked == [7]


def test_reads_json() -> None:
    value = json.dumps(event().to_json()).encode()
    decoded = decode_status(value, [("content-type", b"application/json")])
    assert decoded["occurred_at"] == "2026-11-21T13:45:06.789000Z"


@pytest.mark.parametrize(
    ("value", "headers", "says"),
    [
        (b"", [], "no value"),
        (b"\x07garbage", [], "unrecognised encoding"),
        (b"{not json", [], "not valid JSON"),
        (b"[1, 2]", [("content-type", b"application/json")], "JSON object"),
        (b"\x02\x03", [("content-type", schemas.content_type("status_event").encode())], "Avro"),
    ],
)
def test_an_unreadable_value_is_refused_with_the_reason(
    value: bytes, headers: list[tuple[str, bytes]], says: str
) -> None:
    with pytest.raises(DecodeFailed, match=says):
        decode_status(value, headers)


def test_the_filter_needs_every_condition_given() -> None:
    e = event().to_json()
    assert Filter()(e)
    assert Filter(client_id="acme", session_id="s-1", statuses=frozenset({"failed"}))(e)
    assert not Filter(client_id="other")(e)
    assert not Filter(session_id="s-2")(e)
    assert not Filter(statuses=frozenset({"delivered", "sent"}))(e)


def test_a_line_for_a_person() -> None:
    line = render(event().to_avro())
    assert line == (
        "13:45:06.789  s-1  failed       sms       +14155550100  attempt 2  error 30003 Unreachable"
    )


def test_a_held_or_unsent_delivery_shows_why_not_an_error() -> None:
    held = event(
        status="deferred",
        attempt=1,
        error_code="window-closed",
        error="outside the sms window 08:00-21:00 (mon) in UTC; released at 2026-12-07T08:00:00Z",
        detail={"reason": "window-closed"},
    )
    assert render(held.to_avro()).endswith(
        "attempt 1  why window-closed outside the sms window "
        "08:00-21:00 (mon) in UTC; released at 2026-12-07T08:00:00Z"
    )


def test_a_completed_session_shows_its_counts() -> None:
    done = event(
        status="completed",
        recipient=None,
        channel=None,
        attempt=0,
        error_code=None,
        error=None,
        detail={"counts": {"delivered": 3, "failed": 1}},
    )
    assert render(done.to_avro()).endswith("-         -  delivered=3 failed=1")
    assert render(done.to_json()).startswith("13:45:06.789  s-1  completed")


def test_a_line_for_jq_is_the_json_form() -> None:
    line = render(event().to_avro(), as_json=True)
    assert json.loads(line) == {**event().to_json(), "detail": None}
