"""switchboard.records: the internal topics' JSON records."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from switchboard.records import (
    DeliveryState,
    DispatchJob,
    FanOut,
    OpenSession,
    Progress,
    Report,
    SessionState,
    decode,
    decode_command,
    delivery_key,
    encode,
    encode_items,
)

JOB = DispatchJob(
    session_id="s1",
    client_id="acme",
    channel="email",
    index=501,
    address="a@b.co",
    attempt=2,
    message="Hi Ana ✓",
    subject="S",
    file_url="https://example.com/f.pdf",
    extras={"html": "<p>Hi</p>", "headers": {"X-A": "1"}},
    locale="es",
)
REPORT = Report(
    session_id="s1",
    client_id="acme",
    channel="sms",
    index=3,
    address="+14155550100",
    status="failed",
    attempt=1,
    provider_message_id="SM1",
    error_code="30003",
    error="unreachable",
    retryable=True,
    detail={"retry_after": 30},
    occurred_at=1.5,
)
STATE = SessionState(
    session_id="s1",
    client_id="acme",
    channels=["sms", "email"],
    recipients=2,
    deliveries=4,
    chunks=1,
    trigger="manual",
    status="waiting",
    created_at=1.0,
    source="kafka",
    transport={"message": "m"},
    options={"retries": 0},
    idempotency_key="k",
    fanned_out_chunks=1,
)
RECORDS = [
    JOB,
    REPORT,
    STATE,
    DeliveryState("sent", 1, "+14155550100", 2.0, "SM1"),
    Progress(final=3, counts={"delivered": 2, "failed": 1}, completed_at=9.0),
    Progress(),
    OpenSession("s1", {"client_id": "acme"}, 1.0, "api", "comms.instructions/0/5"),
    FanOut("s1", 2),
]


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: type(r).__name__)
def test_encode_decode_round_trip(record: object) -> None:
    data = encode(record)
    assert isinstance(data, bytes)
    assert decode(type(record), data) == record
    assert decode(type(record), json.loads(data)) == record


def test_encode_is_compact_utf8_json() -> None:
    data = encode(JOB)
    assert b", " not in data and b": " not in data
    assert "✓".encode() in data


def test_commands_carry_their_kind() -> None:
    assert json.loads(encode(FanOut("s1", 2)))["kind"] == "fanout"
    assert json.loads(encode(RECORDS[6]))["kind"] == "open"
    assert "kind" not in json.loads(encode(JOB))


def test_unknown_fields_are_ignored() -> None:
    body = json.loads(encode(REPORT))
    body["added_in_a_later_version"] = {"x": 1}
    assert decode(Report, json.dumps(body).encode()) == REPORT
    assert decode(Report, body) == REPORT


def test_a_body_in_another_order_reads_the_same() -> None:
    """A body of exactly the record's fields in the order written is read positionally; the
    same fields in any other order (another writer's) must read the same record."""
    body = json.loads(encode(REPORT))
    assert list(body) == [f.name for f in dataclasses.fields(Report)]
    assert decode(Report, dict(reversed(body.items()))) == REPORT
    swapped = dict(body)
    swapped["session_id"], swapped["client_id"] = body["client_id"], body["session_id"]
    moved = {"client_id": swapped.pop("client_id"), **swapped}
    read = decode(Report, moved)
    assert (read.session_id, read.client_id) == ("acme", "s1"), "each value by its name"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class _KeywordsOnly:
    a: int
    b: str = "x"


def test_a_record_of_keyword_only_fields_is_read_by_keywords() -> None:
    assert decode(_KeywordsOnly, {"a": 1, "b": "y"}) == _KeywordsOnly(a=1, b="y")
    assert decode(_KeywordsOnly, b'{"a":2}') == _KeywordsOnly(a=2)


def test_defaults_fill_fields_an_older_writer_did_not_send() -> None:
    body = {
        "session_id": "s1",
        "client_id": "acme",
        "channel": "sms",
        "index": 0,
        "address": "+14155550100",
        "status": "sent",
    }
    report = decode(Report, body)
    assert (report.attempt, report.retryable, report.detail, report.occurred_at) == (
        0,
        False,
        {},
        0.0,
    )


@pytest.mark.parametrize("command", [RECORDS[6], FanOut("s9", 0)], ids=["open", "fanout"])
def test_decode_command_by_kind(command: object) -> None:
    assert decode_command(encode(command)) == command


def test_decode_command_ignores_unknown_fields() -> None:
    assert decode_command(b'{"kind":"fanout","session_id":"s","chunk":1,"new":true}') == FanOut(
        "s", 1
    )


@pytest.mark.parametrize(
    "data", [b'{"kind":"close","session_id":"s"}', b'{"session_id":"s"}', b'{"kind":["open"]}']
)
def test_decode_command_unknown_kind(data: bytes) -> None:
    with pytest.raises(ValueError, match="unknown session command kind"):
        decode_command(data)


@pytest.mark.parametrize("data", [b"[]", b"null"])
def test_decode_command_non_object_is_a_value_error(data: bytes) -> None:
    # Pins a fixed bug. Before the fix: `body["kind"]` raises TypeError (caught), then the error message's `body.get(...)`
    # raises AttributeError on a list/str/int/None body instead of the documented ValueError.
    with pytest.raises(ValueError, match="unknown session command kind"):
        decode_command(data)


def test_delivery_key() -> None:
    assert delivery_key("s1", 7, "sms") == "s1/7/sms"
    assert JOB.key == "s1/501/email"
    assert REPORT.key == delivery_key("s1", 3, "sms")


def test_idempotency_keys_are_scoped_to_their_lane() -> None:
    from switchboard.idempotency import anchor, scoped, session_for, shown

    assert scoped("k1", "normal") == "k1"  # the keys recorded before the lanes still match
    high = scoped("k1", "high")
    assert high != "k1" and shown(high) == "k1" and shown("k1") == "k1"
    assert anchor("acme", high) != anchor("acme", "k1")
    assert session_for("acme", high, 1) != session_for("acme", "k1", 1)


def test_a_batch_encoded_with_its_items_once_reads_back_the_same() -> None:
    from switchboard.records import ReportBatch, encode_batch, encode_items

    batch = ReportBatch([REPORT, REPORT])
    items = encode_items(batch.reports)
    assert encode_batch(batch, items) == encode_batch(batch)
    body = json.loads(encode_batch(batch))
    assert body["kind"] == "reports" and ReportBatch.decode(body).reports == [REPORT, REPORT]


def test_a_job_reports_on_its_own_delivery() -> None:
    """``DispatchJob.report``: the job's session, client, channel, recipient, attempt and lane,
    with what happened; every other field as a Report's default."""
    job = JOB
    high = dataclasses.replace(job, priority="high")
    report = high.report("deferred", 1_700_000_000.5, error="closed", detail={"zone": "UTC"})
    assert report == Report(
        session_id="s1",
        client_id="acme",
        channel="email",
        index=501,
        address="a@b.co",
        status="deferred",
        attempt=2,
        error="closed",
        detail={"zone": "UTC"},
        occurred_at=1_700_000_000.5,
        priority="high",
    )
    assert report.key == job.key
    bare = job.report("delivered", 5.0, passed=["sent"], provider_message_id="SM1")
    assert (bare.detail, bare.passed, bare.retry_at, bare.reopen) == ({}, ["sent"], None, False)
    assert bare.statuses == ["sent", "delivered"] and bare.priority == "normal"
    assert job.report("suppressed", 5.0, attempt=0).attempt == 0, "unless told otherwise"
    assert job.report("failed", 5.0).detail is not job.report("failed", 5.0).detail


@pytest.mark.parametrize("record", [JOB, REPORT], ids=["job", "report"])
def test_a_record_written_from_itself_holds_its_fields(record: DispatchJob | Report) -> None:
    """orjson writes a record from the dataclass itself (no dict built): the same fields and
    values as the record's dict, alone and in a batch's items."""
    fields = {f.name: getattr(record, f.name) for f in dataclasses.fields(record)}
    assert json.loads(encode(record)) == fields
    assert json.loads(encode_items([record, record])) == [fields, fields]


def test_a_record_orjson_cannot_write_is_written_by_the_standard_library() -> None:
    wide = dataclasses.replace(REPORT, detail={"n": 2**70})  # wider than 64 bits
    assert decode(Report, encode(wide)) == wide
    assert json.loads(encode_items([wide]))[0]["detail"] == {"n": 2**70}


def test_a_counted_progress_keeps_every_other_field() -> None:
    """``Progress.counted`` builds the record field by field (not with ``dataclasses.replace``):
    a field added to ``Progress`` and not carried over there would silently reset. Every field
    but ``final`` and ``counts`` is given a value that is not its default, and must survive."""
    samples: dict[str, Any] = {
        "final": 3,
        "counts": {"delivered": 2, "failed": 1},
        "completed_at": 1_700_000_000.5,
        "expiry_due": 1_700_000_100.25,
        "completions": 2,
        "applied": 41,
        "deferred": 7,
    }
    names = {f.name for f in dataclasses.fields(Progress)}
    assert names == set(samples), "a new Progress field: give it a sample here"
    before = Progress(**samples)
    after = before.counted("delivered")
    assert after.final == 4
    assert after.counts == {"delivered": 3, "failed": 1}
    assert before.counts == {"delivered": 2, "failed": 1}  # the old progress is untouched
    for name in names - {"final", "counts"}:
        assert getattr(after, name) == getattr(before, name), name
    assert before.counted("expired").counts == {"delivered": 2, "failed": 1, "expired": 1}
