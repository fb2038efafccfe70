"""Channel fallback through the real agents, in memory (``switchboard/fallback.py``): the
fan-out sends a recipient's first channel only; a failure for good has the report agent start
the next one (its ``accepted`` says why) and the session agent dispatch it; the session counts
the recipient once, by its outcome."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from streams import offsets, reports
from switchboard import records
from tests.unit.agents.harness import (
    MemorySwitchboard,
    build,
    dispatch_event,
    fan_out,
    reports_of,
    run_reports,
    settle_sessions,
)

PHONE = "+14155550111"
EMAIL = "ada@example.com"


def send(sandbox: dict[str, Any] | None = None) -> dict[str, Any]:
    transport: dict[str, Any] = {"message": "Your parcel", "subject": "Parcel"}
    if sandbox:
        transport["extras"] = {"sandbox": sandbox}
    return {
        "client_id": "acme",
        "transport": transport,
        "audience": [{"phone": PHONE, "email": EMAIL}, {"email": "grace@example.com"}],
        "options": {"fallback": {"channels": ["sms", "email"], "afterSeconds": 60}},
    }


async def dispatch_all(sb: MemorySwitchboard, channel: str) -> None:
    for record in sb.take(f"dispatch.{channel}"):
        await dispatch_event(sb, record.event())
    await run_reports(sb, [record.event() for record in sb.take("reports")])


async def test_the_fan_out_sends_each_recipient_its_first_channel(tmp_path: Path) -> None:
    sb = build(tmp_path)
    session_id = await fan_out(sb, send())
    accepted = [(e.channel, e.recipient) for e in sb.statuses if e.status == "accepted"]
    assert accepted == [("sms", PHONE), ("email", "grace@example.com")]
    await dispatch_all(sb, "sms")
    await dispatch_all(sb, "email")
    progress = reports.load_progress(sb, session_id)
    assert progress.counts == {"delivered": 2} and progress.completed_at is not None
    assert reports.load_delivery(sb, f"{session_id}/0/email") is None, "never started"


async def test_a_failure_for_good_starts_the_next_channel_and_counts_the_recipient_once(
    tmp_path: Path,
) -> None:
    sb = build(tmp_path)
    session_id = await fan_out(sb, send({"fail": "permanent"}))
    await dispatch_all(sb, "sms")
    step = next(e for e in sb.statuses if e.channel == "email" and e.recipient == EMAIL)
    assert (step.status, step.detail["reason"], step.detail["fallback_from"]) == (
        "accepted",
        "fallback",
        "sms",
    )
    assert step.detail["why"].startswith("sms failed: sandbox: simulated permanent failure")
    assert reports.load_progress(sb, session_id).final == 0, "the recipient is still open"

    await settle_sessions(sb)  # the Retry of attempt 1: the email's job
    await dispatch_all(sb, "email")  # fails too (the same sandbox instruction)
    progress = reports.load_progress(sb, session_id)
    assert (progress.final, progress.counts) == (2, {"failed": 2})
    assert progress.completed_at is not None
    told = [(e.channel, e.status) for e in sb.statuses if e.recipient in (PHONE, EMAIL)]
    assert told == [
        ("sms", "accepted"),
        ("sms", "failed"),
        ("email", "accepted"),
        ("email", "failed"),
    ]
    assert sb.take("sessions") == [], "no third step"


async def test_a_cancel_ends_each_recipients_first_step_and_starts_no_other(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb = build(tmp_path)
    monkeypatch.setattr(offsets, "committed", lambda _, partitions: sb.committed(partitions))
    session_id = await fan_out(sb, send())
    sb.take("dispatch.sms"), sb.take("dispatch.email")  # not sent
    await sb.command(records.Cancel(session_id))
    await settle_sessions(sb)
    produced = sb.take("reports")
    assert sorted((r.index, r.channel, r.status) for r in reports_of(produced)) == [
        (0, "sms", "cancelled"),
        (1, "email", "cancelled"),
    ], "the first step of each; recipient 0's email was never started"
    await run_reports(sb, [record.event() for record in produced])
    progress = reports.load_progress(sb, session_id)
    assert progress.counts == {"cancelled": 2} and progress.completed_at is not None
    assert sb.take("sessions") == [], "no step started after the cancel"
