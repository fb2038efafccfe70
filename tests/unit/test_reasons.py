"""switchboard.reasons: why a delivery was held or not sent, as a closed set of codes."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from switchboard import reasons
from switchboard.clients import parse_client
from switchboard.deliveries import apply_report
from switchboard.records import Report
from switchboard.status import STATUSES, StatusEvent
from switchboard.windows import deferred, delivery_hold, delivery_release
from switchboard.wire import encode_record, read_record

README = Path(__file__).resolve().parents[2] / "README.md"


def report(status: Any, **fields: Any) -> Report:
    return Report(
        session_id="s",
        client_id="c",
        channel="sms",
        index=0,
        address="+14155550100",
        status=status,
        attempt=1,
        occurred_at=1_800_000_000.0,
        **fields,
    )


def sms_window(start: str, end: str, days: list[str] | None = None) -> Any:
    window: dict[str, Any] = {"start": start, "end": end}
    if days is not None:
        window["days"] = days
    return parse_client(
        "acme", {"channels": {"sms": {"provider": "sandbox"}}, "time_windows": {"sms": window}}
    )


def test_every_status_that_ends_or_holds_a_delivery_unsent_has_reasons() -> None:
    assert {"deferred", "suppressed", "cancelled", "expired", "rejected"} == reasons.REASONED
    assert set(STATUSES) >= reasons.REASONED
    for status, fallback in reasons.FALLBACK.items():
        assert fallback in reasons.REASONS[status]


@pytest.mark.parametrize(
    ("status", "code", "provider", "reason"),
    [
        ("suppressed", "opted-out", False, "opted-out"),
        ("suppressed", "scrubbed", False, "scrubbed"),
        ("suppressed", "21610", False, "provider-suppressed"),  # Twilio's unsubscribed recipient
        ("suppressed", "Unregistered", False, "provider-suppressed"),  # APNs
        ("cancelled", None, False, "cancelled"),
        ("cancelled", "blocked", False, "blocked"),
        ("cancelled", None, True, "provider-cancelled"),  # Twilio's `canceled` callback
        ("expired", "no-report", False, "no-report"),
        ("expired", "deadline", False, "deadline"),
        ("rejected", "no-common-window", False, "no-common-window"),
        ("rejected", "template", False, "template"),
        ("rejected", "something-new", False, "invalid"),
        ("deferred", None, False, "window-closed"),
        ("delivered", None, False, None),
        ("failed", "30005", False, None),
    ],
)
def test_reason_for(status: str, code: str | None, provider: bool, reason: str | None) -> None:
    assert reasons.reason_for(status, code, provider=provider) == reason


def test_annotate_leaves_other_statuses_as_they_are() -> None:
    detail = {"sandbox": True}
    assert reasons.annotate("delivered", None, None, detail) == (None, None, detail)
    assert reasons.annotate("failed", "30005", "x", detail)[2] is detail


def test_a_reason_fills_only_what_is_missing() -> None:
    code, error, detail = reasons.annotate("suppressed", "21610", "Twilio HTTP 400", {"a": 1})
    assert (code, error, detail) == (
        "21610",
        "Twilio HTTP 400",
        {"a": 1, "reason": "provider-suppressed"},
    )
    code, error, detail = reasons.annotate("cancelled", None, None, {})
    assert (code, detail) == ("cancelled", {"reason": "cancelled"}) and error


def test_the_report_agent_tells_the_reason_and_keeps_the_code() -> None:
    """Every place that decides a delivery's fate reports through apply_report: the reason is
    added there, so none can forget it."""
    state, events = apply_report(
        report("suppressed", error_code="21610", error="Twilio 21610"), None
    )
    assert events[0].detail["reason"] == "provider-suppressed" and events[0].error_code == "21610"
    state, events = apply_report(report("cancelled", from_callback=True), None)
    assert events[0].detail == {"reason": "provider-cancelled"}
    assert state is not None and state.error_code == "provider-cancelled" and state.error
    _, events = apply_report(report("delivered", passed=["sent"], detail={"sandbox": True}), None)
    assert [e.detail for e in events] == [{}, {"sandbox": True}]
    assert all(e.error_code is None and e.error is None for e in events)


def test_a_deferral_names_the_window_the_zone_and_the_release() -> None:
    client = sms_window("08:00", "21:00", ["mon", "tue", "wed", "thu", "fri"])
    at = datetime(2026, 12, 7, 4, tzinfo=UTC)  # a Monday; 07:00 in Moscow
    release = delivery_release(client, "sms", at, recipient_tz="Europe/Moscow", address=None)
    assert release == datetime(2026, 12, 7, 5, tzinfo=UTC)
    hold = delivery_hold(client, "sms", at, recipient_tz="Europe/Moscow", address=None)
    assert hold is not None and hold.release == release
    error, detail = deferred("sms", hold)
    assert detail == {
        "reason": "window-closed",
        "release_at": "2026-12-07T05:00:00Z",
        "zone": "Europe/Moscow",
        "window": {
            "days": "mon,tue,wed,thu,fri",
            "start": "08:00",
            "end": "21:00",
            "timezone": "recipient",
        },
    }
    assert error == (
        "outside the sms window 08:00-21:00 (mon,tue,wed,thu,fri) in Europe/Moscow; "
        "released at 2026-12-07T05:00:00Z"
    )


def test_a_number_in_many_zones_is_held_by_the_last_to_open() -> None:
    """A Russian mobile at 04:00 UTC: open in Anadyr (16:00), closed in the west until 06:00 UTC
    (08:00 at UTC+2): the zone named is one whose 08:00 is the release."""
    client = sms_window("08:00", "21:00")
    at = datetime(2026, 12, 5, 4, tzinfo=UTC)
    release = delivery_release(client, "sms", at, recipient_tz=None, address="+79161234567")
    hold = delivery_hold(client, "sms", at, recipient_tz=None, address="+79161234567")
    assert release is not None and hold is not None and len(hold.zones) > 10
    assert hold.release == release
    assert release.astimezone(__import__("zoneinfo").ZoneInfo(hold.zone)).hour == 8
    _, detail = deferred("sms", hold)
    assert detail["zones"] == list(hold.zones) and detail["zone"] in detail["zones"]


def test_the_deferral_detail_fits_the_status_topics_schema() -> None:
    client = sms_window("08:00", "21:00")
    at = datetime(2026, 12, 5, 4, tzinfo=UTC)
    hold = delivery_hold(client, "sms", at, recipient_tz=None, address="+79161234567")
    assert hold is not None
    error, detail = deferred("sms", hold)
    event = StatusEvent(
        "s",
        "acme",
        "deferred",
        recipient="+79161234567",
        channel="sms",
        error_code="window-closed",
        error=error,
        detail=detail,
    )
    value, _ = encode_record("status_event", event.to_avro())
    assert read_record("status_event", value)["detail"] == detail


def test_no_hold_when_the_window_is_open_or_absent() -> None:
    client = sms_window("00:00", "24:00")
    at = datetime(2026, 12, 5, 4, tzinfo=UTC)
    assert delivery_hold(client, "sms", at, recipient_tz=None, address="+79161234567") is None
    assert delivery_hold(client, "email", at, recipient_tz=None, address="a@example.com") is None


def _readme_tables() -> dict[str, set[str]]:
    """status -> the codes of its table in the README's "Why" section."""
    text = README.read_text()
    section = text.split("<!-- reasons:start -->", 1)[1].split("<!-- reasons:end -->", 1)[0]
    tables: dict[str, set[str]] = {}
    status = ""
    for line in section.splitlines():
        heading = re.match(r"^\*\*`(\w+)`\*\*", line)
        if heading:
            status = heading[1]
            tables[status] = set()
        row = re.match(r"^\| `([a-z-]+)` \|", line)
        if row and status:
            tables[status].add(row[1])
    return tables


def test_the_readme_documents_every_reason_and_no_other() -> None:
    assert _readme_tables() == {s: set(codes) for s, codes in reasons.REASONS.items()}
