"""switchboard.wire: how public-topic values are recognised, decoded and encoded.

Avro bodies are written here the way an outside producer writes them: plain fastavro and the
bundled ``schemas/instruction.avsc`` file, not the module's own helpers.
"""

from __future__ import annotations

import copy
import io
import json
import struct
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fastavro
import pytest

import schemas
from switchboard.clients import parse_client
from switchboard.errors import DecodeFailed
from switchboard.status import StatusEvent
from switchboard.validation import audience_chunks, validate_envelope
from switchboard.wire import (
    CONTENT_TYPE,
    JSON_CONTENT_TYPE,
    Framing,
    decode_instruction,
    encode_record,
    header_list,
    header_map,
    read_record,
    sniff,
)

ROOT = Path(__file__).resolve().parents[2]
INSTRUCTION_AVSC = json.loads((ROOT / "schemas" / "instruction.avsc").read_text())
AVRO_CT = b"application/vnd.switchboard.instruction.v1+avro"

FULL: dict[str, Any] = {
    "client_id": "acme",
    "idempotency_key": "order-1234-shipped",
    "transport": {
        "type": "sms",
        "subject": "Your order",
        "message": "Hello {{name}}, your order shipped.",
        "fileUrl": "https://example.com/voice.mp3",
        "extras": {"template_vars": {"name": "Ana", "n": 3}, "tags": ["a", "b"], "flag": True},
    },
    "audience": [
        "+9779812345678",
        {"phone": "+14155550100", "email": "a@b.co", "timezone": "America/Los_Angeles"},
    ],
    "options": {
        "trigger": "scheduled",
        "scheduledTimestamp": "2026-12-31T23:59:59Z",
        "retries": 3,
        "retryIntervalMinutes": "60,180,600",
        "webhookUrl": "https://client.example.com/hooks/comms",
    },
}

MINIMAL: dict[str, Any] = {
    "client_id": "acme",
    "transport": {"message": "hi"},
    "audience": ["+14155550100", {"phone": "+14155550101"}],
}


def avro_body(record: dict[str, Any], schema: Any = None) -> bytes:
    """Schemaless Avro, as an outside producer writes it."""
    parsed = fastavro.parse_schema(copy.deepcopy(schema or INSTRUCTION_AVSC))
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, parsed, record)
    return buf.getvalue()


def confluent(schema_id: int, body: bytes) -> bytes:
    return b"\x00" + struct.pack(">I", schema_id) + body


def decode_failed(fn: Any, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(DecodeFailed) as info:
        fn(*args, **kwargs)
    assert len(info.value.errors) == 1
    assert info.value.errors[0].field == ""
    return info.value.errors[0].error


# -- sniff -------------------------------------------------------------------------------------


def test_sniff_confluent_reads_the_schema_id() -> None:
    assert sniff(confluent(42, b"\x02x"), {}) == Framing("confluent", 42)
    assert sniff(confluent(2**32 - 1, b""), {}) == Framing("confluent", 2**32 - 1)


def test_sniff_confluent_needs_five_bytes() -> None:
    error = decode_failed(sniff, b"\x00\x00\x01", {})
    assert "first byte 0x00" in error


def test_sniff_refuses_the_guid_framing() -> None:
    error = decode_failed(sniff, b"\x01" + bytes(16) + b"body", {})
    assert "magic byte 1" in error
    assert "not supported" in error


@pytest.mark.parametrize(
    "content_type",
    [AVRO_CT, AVRO_CT.upper(), AVRO_CT + b"; v=1", b"  " + AVRO_CT + b" "],
)
def test_sniff_avro_content_type(content_type: bytes) -> None:
    assert sniff(b"\x08acme", {CONTENT_TYPE: content_type}) == Framing("avro")


@pytest.mark.parametrize(
    "content_type",
    [b"application/json", b"application/json; charset=utf-8", b"Application/JSON;charset=UTF-8"],
)
def test_sniff_json_content_type(content_type: bytes) -> None:
    assert sniff(b'{"a": 1}', {CONTENT_TYPE: content_type}) == Framing("json")


def test_sniff_content_type_wins_over_the_first_byte() -> None:
    # A JSON content type with a body that happens to start with 0: read as JSON (and fail
    # there), never as Confluent.
    assert sniff(confluent(1, b"{}"), {CONTENT_TYPE: b"application/json"}) == Framing("json")
    assert sniff(confluent(1, b""), {CONTENT_TYPE: AVRO_CT}) == Framing("avro")


@pytest.mark.parametrize("value", [b'{"client_id": "acme"}', b'  \n{"a": 1}', b"{"])
def test_sniff_bare_json_without_header(value: bytes) -> None:
    assert sniff(value, {}) == Framing("json")


@pytest.mark.parametrize("value", [b"", None])
def test_sniff_empty_value(value: bytes | None) -> None:
    assert decode_failed(sniff, value, {}) == "the message has no value"


def test_sniff_unknown_bytes_say_what_was_seen() -> None:
    error = decode_failed(sniff, b"\x05hello", {})
    assert "no content-type header" in error
    assert "first byte 0x05" in error
    assert "application/vnd.switchboard.instruction.v1+avro" in error
    assert JSON_CONTENT_TYPE in error


def test_sniff_unknown_content_type_says_what_was_seen() -> None:
    error = decode_failed(sniff, b'{"a": 1}', {CONTENT_TYPE: b"text/plain; charset=utf-8"})
    assert "content-type 'text/plain'" in error
    assert "first byte 0x7b" in error


def test_sniff_another_schemas_content_type_is_refused() -> None:
    ct = schemas.content_type("status_event").encode()
    error = decode_failed(sniff, b"\x02x", {CONTENT_TYPE: ct})
    assert "status_event" in error


def test_sniff_for_another_schema() -> None:
    ct = schemas.content_type("status_event").encode()
    assert sniff(b"\x02x", {CONTENT_TYPE: ct}, "status_event") == Framing("avro")


# -- JSON --------------------------------------------------------------------------------------


def test_decode_json_object() -> None:
    raw = json.dumps(FULL).encode()
    assert decode_instruction(raw, sniff(raw, {})) == FULL


def test_decode_invalid_json() -> None:
    error = decode_failed(decode_instruction, b'{"client_id": ', Framing("json"))
    assert error.startswith("not valid JSON:")


def test_decode_invalid_utf8() -> None:
    error = decode_failed(decode_instruction, b'{"a": "\xff\xfe"}', Framing("json"))
    assert error.startswith("not valid JSON:")


@pytest.mark.parametrize("raw", [b"[1, 2]", b'"text"', b"3", b"null"])
def test_decode_json_non_object(raw: bytes) -> None:
    assert decode_failed(decode_instruction, raw, Framing("json")) == (
        "the instruction must be a JSON object"
    )


def test_decode_deeply_nested_json_is_refused_not_a_crash() -> None:
    # Pins a fixed bug. Before the fix: json.loads raises RecursionError, which decode_instruction does not catch.
    raw = b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    decode_failed(decode_instruction, raw, Framing("json"))


# -- schemaless Avro ---------------------------------------------------------------------------


def test_outside_producer_avro_round_trip() -> None:
    body = avro_body(FULL)
    framing = sniff(body, header_map([(CONTENT_TYPE, AVRO_CT)]))
    assert framing == Framing("avro")
    assert decode_instruction(body, framing) == FULL


def test_avro_absent_optionals_are_dropped_to_the_contract_shape() -> None:
    body = avro_body(MINIMAL)
    decoded = decode_instruction(body, Framing("avro"))
    assert decoded == MINIMAL
    # Nothing Avro filled in with None survives: not at the top, not in transport, not in
    # options, not in the profiles.
    assert "idempotency_key" not in decoded and "options" not in decoded
    assert decoded["transport"] == {"message": "hi"}
    assert decoded["audience"][1] == {"phone": "+14155550101"}


def test_avro_options_with_none_fields() -> None:
    record = {**MINIMAL, "options": {"trigger": "manual"}}
    assert decode_instruction(avro_body(record), Framing("avro"))["options"] == {
        "trigger": "manual"
    }


def test_avro_decoded_instruction_validates() -> None:
    client = parse_client(
        "acme",
        {"channels": {"sms": {"provider": "sandbox"}}, "default_channels": ["sms"]},
    )
    decoded = decode_instruction(avro_body(MINIMAL), Framing("avro"))
    envelope = validate_envelope(decoded, client=client)
    assert envelope.channels == ("sms",)
    chunks = list(audience_chunks(envelope, decoded["audience"], size=500))
    assert [len(chunk) for chunk in chunks] == [2]


def test_avro_written_with_another_schema_is_refused() -> None:
    event = StatusEvent("s1", "acme", "sent", recipient="+14155550100", channel="sms")
    body, _ = encode_record("status_event", event.to_avro())
    error = decode_failed(decode_instruction, body, Framing("avro"))
    assert error.startswith("not a valid Avro Instruction body")


def test_avro_with_leftover_bytes_is_refused() -> None:
    error = decode_failed(decode_instruction, avro_body(MINIMAL) + b"\x00\x02", Framing("avro"))
    assert "2 bytes left over" in error
    assert "another schema" in error


def test_avro_truncated_is_refused() -> None:
    body = avro_body(FULL)
    error = decode_failed(decode_instruction, body[: len(body) // 2], Framing("avro"))
    assert error.startswith("not a valid Avro Instruction body")


# -- Confluent framing and schema resolution --------------------------------------------------


def _older_schema() -> dict[str, Any]:
    """Version 0: no idempotency_key, no options; Transport without fileUrl and extras."""
    schema = copy.deepcopy(INSTRUCTION_AVSC)
    schema["fields"] = [
        f for f in schema["fields"] if f["name"] not in ("idempotency_key", "options")
    ]
    transport = next(f for f in schema["fields"] if f["name"] == "transport")["type"]
    transport["fields"] = [f for f in transport["fields"] if f["name"] not in ("fileUrl", "extras")]
    return schema


def _newer_schema() -> dict[str, Any]:
    """Version 2: a new top-level field and a new Transport field, both with defaults."""
    schema = copy.deepcopy(INSTRUCTION_AVSC)
    schema["fields"].append({"name": "priority", "type": "int", "default": 0})
    transport = next(f for f in schema["fields"] if f["name"] == "transport")["type"]
    transport["fields"].insert(
        0, {"name": "sender_hint", "type": ["null", "string"], "default": None}
    )
    return schema


def test_confluent_with_the_bundled_schema() -> None:
    value = confluent(7, avro_body(FULL))
    framing = sniff(value, {})
    assert framing == Framing("confluent", 7)
    writer = fastavro.parse_schema(copy.deepcopy(INSTRUCTION_AVSC))
    assert decode_instruction(value, framing, writer) == FULL


def test_confluent_older_writer_schema_is_resolved() -> None:
    old = _older_schema()
    record = {
        "client_id": "acme",
        "transport": {"type": "sms", "subject": None, "message": "hi"},
        "audience": ["+14155550100"],
    }
    value = confluent(3, avro_body(record, old))
    decoded = decode_instruction(value, sniff(value, {}), fastavro.parse_schema(old))
    assert decoded == {
        "client_id": "acme",
        "transport": {"type": "sms", "message": "hi"},
        "audience": ["+14155550100"],
    }


def test_confluent_newer_writer_schema_is_resolved() -> None:
    new = _newer_schema()
    record = copy.deepcopy(FULL)
    record["priority"] = 5
    record["transport"]["sender_hint"] = "+14155550100"
    value = confluent(9, avro_body(record, new))
    decoded = decode_instruction(value, sniff(value, {}), fastavro.parse_schema(new))
    assert decoded == FULL


def test_confluent_unknown_writer_schema() -> None:
    value = confluent(12345, avro_body(FULL))
    error = decode_failed(decode_instruction, value, sniff(value, {}), None)
    assert error == "schema id 12345 is unknown to the schema registry"


def test_confluent_incompatible_writer_schema_is_refused() -> None:
    other = {
        "type": "record",
        "name": "Instruction",
        "namespace": "io.switchboard.v1",
        "fields": [{"name": "client_id", "type": "long"}],
    }
    value = confluent(4, avro_body({"client_id": 1}, other))
    error = decode_failed(decode_instruction, value, sniff(value, {}), fastavro.parse_schema(other))
    assert error.startswith("not a valid Avro Instruction body")


# -- outgoing records --------------------------------------------------------------------------


def _event() -> StatusEvent:
    return StatusEvent(
        session_id="s1",
        client_id="acme",
        status="failed",
        recipient="+14155550100",
        channel="sms",
        attempt=2,
        provider_message_id="SM123",
        error_code="30003",
        error="Unreachable destination handset",
        detail={"retry_in": 60, "sandbox": True, "tags": ["a"], "m": {"k": "v"}, "x": 1.5},
        occurred_at=datetime(2026, 5, 1, 12, 0, 0, 123456, tzinfo=UTC),
        event_id="9b2f3c1e-0000-4000-8000-000000000001",
    )


def _expected_event() -> dict[str, Any]:
    expected = _event().to_avro()
    expected["occurred_at"] = datetime(2026, 5, 1, 12, 0, 0, 123000, tzinfo=UTC)  # millis
    return expected


def test_status_event_schemaless_round_trip() -> None:
    value, headers = encode_record("status_event", _event().to_avro())
    assert headers == [(CONTENT_TYPE, b"application/vnd.switchboard.status_event.v1+avro")]
    assert sniff(value, header_map(headers), "status_event") == Framing("avro")
    assert read_record("status_event", value) == _expected_event()


def test_status_event_confluent_round_trip() -> None:
    value, headers = encode_record("status_event", _event().to_avro(), schema_id=77)
    assert headers == []
    assert value[:5] == b"\x00\x00\x00\x00\x4d"
    assert sniff(value, {}, "status_event") == Framing("confluent", 77)
    writer = schemas.parsed("status_event")
    assert read_record("status_event", value, writer) == _expected_event()


def test_session_status_event_without_detail() -> None:
    event = StatusEvent("s1", "acme", "completed", occurred_at=datetime(2026, 1, 1, tzinfo=UTC))
    value, _ = encode_record("status_event", event.to_avro())
    back = read_record("status_event", value)
    assert back["recipient"] is None and back["channel"] is None and back["detail"] is None
    assert back["status"] == "completed"


def _rejection() -> dict[str, Any]:
    return {
        "rejection_id": "r-1",
        "client_id": None,
        "topic": "comms.instructions",
        "partition": 3,
        "offset": 2**40,
        "key": b"acme",
        "headers": [
            {"key": "content-type", "value": b"application/json"},
            {"key": "empty", "value": None},
        ],
        "value": b"\x05\xff not json",
        "errors": [{"field": "", "error": "unrecognised encoding"}],
        "rejected_at": datetime(2026, 5, 1, 12, 0, 0, 5000, tzinfo=UTC),
    }


def test_rejection_schemaless_round_trip() -> None:
    value, headers = encode_record("rejection", _rejection())
    assert headers == [(CONTENT_TYPE, b"application/vnd.switchboard.rejection.v1+avro")]
    assert read_record("rejection", value) == _rejection()


def test_rejection_confluent_round_trip() -> None:
    value, headers = encode_record("rejection", _rejection(), schema_id=1)
    assert headers == []
    assert value[:5] == b"\x00\x00\x00\x00\x01"
    assert read_record("rejection", value, schemas.parsed("rejection")) == _rejection()


def test_encode_record_refuses_a_record_that_does_not_match() -> None:
    with pytest.raises(ValueError, match="session_id"):
        encode_record("status_event", {"event_id": "e", "status": "sent"})


def test_read_record_refuses_garbage() -> None:
    decode_failed(read_record, "status_event", b"\x02")


# -- headers -----------------------------------------------------------------------------------


def test_header_list_forms() -> None:
    assert header_list(None) == []
    assert header_list([("Content-Type", b"a"), ("x", None), ("y", b"")]) == [
        ("Content-Type", b"a"),
        ("y", b""),
    ]
    assert header_list({"A": b"1", "B": None}) == [("A", b"1")]
    assert header_list([("s", "text")]) == [("s", b"text")]  # type: ignore[list-item]


def test_header_map_forms() -> None:
    assert header_map(None) == {}
    assert header_map([("Content-Type", b"a"), ("X-Dup", b"1"), ("x-dup", b"2"), ("n", None)]) == {
        "content-type": b"a",
        "x-dup": b"2",
    }
    assert header_map({"Content-Type": b"application/json", "Gone": None}) == {
        "content-type": b"application/json"
    }


def test_header_map_feeds_sniff() -> None:
    headers = header_map([("Content-Type", b"application/json; charset=utf-8")])
    assert sniff(b"[]", headers) == Framing("json")


# -- json_object: never an exception other than DecodeFailed (issue 13, part 4) ---------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (b'{"retries": ' + b"9" * 5000 + b"}", "not usable JSON: a number has 5,000 digits"),
        (b'{"retries": -' + b"9" * 101 + b"}", "not usable JSON: a number has 101 digits"),
        (b'{"x": NaN}', "not usable JSON: NaN is not a JSON value"),
        (b'{"x": -Infinity}', "not usable JSON: -Infinity is not a JSON value"),
        (b'{"x": 1e999}', "not usable JSON: the number 1e999 is out of range"),
        (b"  ", "empty: send the instruction as a JSON object"),
        (b"\xff{}", "not valid JSON"),
        (b"[" * 100_000, "not usable JSON: nested too deeply"),
        (b"[1]", "the instruction must be a JSON object"),
    ],
)
def test_json_object_refuses_unusable_json_with_one_clear_error(text: bytes, expected: str) -> None:
    from switchboard.errors import DecodeFailed
    from switchboard.wire import json_object

    with pytest.raises(DecodeFailed) as info:
        json_object(text)
    [error] = info.value.errors
    assert error.field == "" and error.error.startswith(expected), error.error


def test_json_object_reads_ordinary_numbers() -> None:
    from switchboard.wire import MAX_JSON_DIGITS, json_object

    big = "9" * MAX_JSON_DIGITS
    assert json_object(f'{{"a": {big}, "b": -1.5e3, "c": 0}}') == {
        "a": int(big),
        "b": -1500.0,
        "c": 0,
    }
