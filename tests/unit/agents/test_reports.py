"""The report agent's rules (``streams/reports.py``) through its real handler, in memory: the
dispatchers' reports move their deliveries on, count them in the session's progress and complete
the session once; a report seen again changes nothing."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import pytest

from streams import reports
from switchboard import records
from tests.unit.agents.harness import (
    MemoryEvent,
    MemorySwitchboard,
    build,
    dispatch_event,
    fan_out,
    instruction,
    run_intake,
    run_reports,
    run_sessions,
)

AUDIENCE = ["+14155550111", "+14155550112"]
SEND: dict[str, Any] = {
    "client_id": "acme",
    "transport": {"type": "sms", "message": "Hi"},
    "audience": AUDIENCE,
    "options": {"webhookUrl": "https://hooks.acme.example/switchboard"},
}


async def delivered(sb: MemorySwitchboard) -> tuple[str, list[MemoryEvent]]:
    """A session fanned out and dispatched: the report agent's events, not yet processed."""
    session_id = await fan_out(sb, SEND)
    for record in sb.take("dispatch.sms"):
        await dispatch_event(sb, record.event())
    return session_id, [record.event() for record in sb.take("reports")]


def completed(sb: MemorySwitchboard) -> list[str]:
    return [e.event_id for e in sb.statuses if e.status == "completed"]


async def test_delivered_reports_move_deliveries_count_progress_and_complete_once(
    tmp_path: Path,
) -> None:
    sb = build(tmp_path)
    session_id, events = await delivered(sb)
    before = len(sb.statuses)
    await run_reports(sb, events)
    progress = reports.load_progress(sb, session_id)
    assert progress.final == 2 and progress.completed_at is not None
    assert progress.counts == {"delivered": 2}
    for index in range(2):
        state = reports.load_delivery(sb, f"{session_id}/{index}/sms")
        assert state is not None and state.status == "delivered"
    told = [(e.status, e.recipient) for e in sb.statuses[before:]]
    # A delivered report passed by sent: each delivery is told both, in order.
    assert sorted(t for t in told if t[1] is not None) == sorted(
        (status, a) for a in AUDIENCE for status in ("sent", "delivered")
    )
    assert len(completed(sb)) == 1
    assert all(event.acked for event in events)
    assert len(sb.open_sessions) == 0


async def test_status_events_go_to_the_status_topic_and_the_sessions_webhook(
    tmp_path: Path,
) -> None:
    sb = build(tmp_path)
    session_id, events = await delivered(sb)
    sb.take("status")
    sb.take("webhooks")
    await run_reports(sb, events)
    published = sb.take("status")
    assert {r.key for r in published} == {session_id.encode()}
    jobs = [records.decode(records.WebhookJob, r.value or b"") for r in sb.take("webhooks")]
    assert len(jobs) == len(published), "each event also goes to the session's webhook"
    assert {j.url for j in jobs} == {"https://hooks.acme.example/switchboard"}


async def test_a_report_processed_again_changes_nothing(tmp_path: Path) -> None:
    sb = build(tmp_path)
    _, events = await delivered(sb)
    await run_reports(sb, events)
    told, rows = len(sb.statuses), dict(sb.table("deliveries"))
    await run_reports(sb, events)  # the same events again (a replay after a crash)
    assert len(sb.statuses) == told
    assert sb.table("deliveries") == rows


async def test_a_provider_repeating_a_report_later_changes_nothing(tmp_path: Path) -> None:
    sb = build(tmp_path)
    session_id, events = await delivered(sb)
    await run_reports(sb, events)
    told = len(sb.statuses)
    progress = reports.load_progress(sb, session_id)
    # The same reports, at later offsets: a callback the provider sent twice.
    later = [
        MemoryEvent(e.message.topic, e.message.partition, e.message.offset + 100, e.key, e.value)
        for e in events
    ]
    await run_reports(sb, later)
    assert len(sb.statuses) == told, "no event for a report that moves nothing"
    after = reports.load_progress(sb, session_id)
    assert dataclasses.replace(after, applied=progress.applied) == progress
    assert len(completed(sb)) == 1


async def test_a_report_for_a_session_this_worker_does_not_have_is_rejected(
    tmp_path: Path,
) -> None:
    sb = build(tmp_path)
    report = records.Report(
        session_id="no-such-session",
        client_id="acme",
        channel="sms",
        index=0,
        address=AUDIENCE[0],
        status="delivered",
        attempt=1,
        occurred_at=1_800_000_000.0,
    )
    topic = sb.topic("reports")
    await run_reports(
        sb, [MemoryEvent(topic.name, 0, 0, b"no-such-session", records.encode(report))]
    )
    assert len(sb.take("rejected")) == 1
    assert sb.table("deliveries") == {}


async def test_a_report_overtaking_its_sessions_replayed_opening_waits_for_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker fans a session out and dies before its checkpoint writes the session's rows:
    the jobs are in Kafka, dispatched and reported, but the row comes back only when the
    restarted session agent handles the opening again, and the report agent may read the
    session's reports first (another topic). The report waits for it; it is not rejected."""
    sb = build(tmp_path)
    await run_intake(sb, [instruction(sb, dict(SEND))])
    commands = []
    while batch := sb.take("sessions"):
        commands += batch
        await run_sessions(sb, [record.event() for record in batch])
    session_id = commands[0].command().session_id
    for record in sb.take("dispatch.sms"):
        await dispatch_event(sb, record.event())
    events = [record.event() for record in sb.take("reports")]
    # The crash: the session's rows never reached the table; the restarted worker has handled
    # nothing yet, and the group committed nothing of the session commands.
    sb.table("sessions").clear()
    sb.staged.forget_handled()
    monkeypatch.setattr(sb, "committed", lambda partitions: dict.fromkeys(partitions, 0))

    async def replayed() -> None:
        await asyncio.sleep(0.3)  # the report agent is first
        await run_sessions(sb, [record.event() for record in commands])

    await asyncio.gather(run_reports(sb, events), replayed())
    assert sb.take("rejected") == []
    progress = reports.load_progress(sb, session_id)
    assert progress.counts == {"delivered": 2} and progress.completed_at is not None
    assert len(completed(sb)) == 1


async def test_a_report_for_a_session_still_missing_is_rejected_after_the_wait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The session agent never gets through its partition's commands (here: none is ever
    handled, and nothing committed): the report is rejected after ``OPENING_WAIT``, saying so."""
    sb = build(tmp_path)
    _, events = await delivered(sb)
    sb.table("sessions").clear()
    sb.staged.forget_handled()
    monkeypatch.setattr(sb, "committed", lambda partitions: dict.fromkeys(partitions, 0))
    monkeypatch.setattr(reports, "OPENING_WAIT", 0.3)
    await run_reports(sb, events[:1])
    [record] = sb.take("rejected")
    assert record.value is not None  # Avro: the error's text is in it as UTF-8
    assert b"unknown session" in record.value and b"not all handled within" in record.value
    assert events[0].acked
