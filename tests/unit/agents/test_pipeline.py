"""An instruction through every agent in memory: intake, sessions, dispatch, reports (and the
scheduler for a delivery held by its window), each by its real handler."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from streams import reports
from streams.scheduler import TimerIndex
from switchboard.timers import fire_command
from tests.unit.agents.harness import (
    CLIENT,
    WEEKDAYS,
    MemoryEvent,
    build,
    dispatch_event,
    fan_out,
    jobs_of,
    run_reports,
    run_scheduler,
    settle_sessions,
)

SEND: dict[str, Any] = {
    "client_id": "acme",
    "transport": {"type": "sms", "message": "Hi"},
    "audience": ["+14155550111", "+14155550112"],
}


async def test_an_instruction_is_sent_reported_and_its_session_completed(tmp_path: Path) -> None:
    sb = build(tmp_path)
    session_id = await fan_out(sb, SEND)
    for record in sb.take("dispatch.sms"):
        await dispatch_event(sb, record.event())
    await run_reports(sb, [record.event() for record in sb.take("reports")])
    assert reports.load_progress(sb, session_id).counts == {"delivered": 2}
    for address in SEND["audience"]:
        told = [e.status for e in sb.statuses if e.recipient == address]
        assert told == ["accepted", "sent", "delivered"], address
    assert [e.status for e in sb.statuses if e.recipient is None] == ["completed"]
    # The report batch's events are published together, and before the session's completion.
    assert sb.statuses[-1].status == "completed", [e.status for e in sb.statuses]
    assert sb.take("rejected") == []


async def test_a_delivery_held_by_its_window_is_released_by_its_timer(tmp_path: Path) -> None:
    # Open only on the day after tomorrow: closed whenever the test runs.
    day = WEEKDAYS[(datetime.now(UTC) + timedelta(days=2)).weekday()]
    window = {"days": [day], "start": "09:00", "end": "10:00", "timezone": "UTC"}
    sb = build(tmp_path, clients={"acme": {**CLIENT, "time_windows": {"sms": window}}})
    index = TimerIndex(tmp_path / "scheduler" / "index")
    try:
        await fan_out(sb, SEND)
        assert sb.take("dispatch.sms") == []
        await run_scheduler(sb, index, [r.event() for r in sb.take("schedule")])
        [timer_id] = [key.decode() for key in sb.table("timers")]
        # The window opens: the clock cannot move, so the timer is made due and the window is
        # taken out of the client's configuration.
        row = json.loads(sb.table("timers")[timer_id.encode()])
        sb.table("timers")[timer_id.encode()] = json.dumps({**row, "due": time.time()}).encode()
        sb.clients.apply(b"acme", json.dumps(CLIENT).encode())
        fire = MemoryEvent(
            sb.topic("schedule").name, 0, 50, timer_id.encode(), fire_command(timer_id)
        )
        await run_scheduler(sb, index, [fire])
        assert [c.KIND for c in await settle_sessions(sb)] == ["release"]
        assert sorted(j.index for j in jobs_of(sb.take("dispatch.sms"))) == [0, 1]
    finally:
        index.close()


async def test_a_retryable_failure_is_sent_again_by_its_timer_and_then_delivered(
    tmp_path: Path,
) -> None:
    sb = build(tmp_path)
    index = TimerIndex(tmp_path / "scheduler" / "index")
    flaky = {
        "type": "sms",
        "message": "Hi",
        "extras": {"sandbox": {"fail": "retryable", "fail_attempts": 1}},
    }
    try:
        body = {
            **SEND,
            "audience": SEND["audience"][:1],
            "transport": flaky,
            "options": {"retries": 1},
        }
        session_id = await fan_out(sb, body)
        for record in sb.take("dispatch.sms"):
            await dispatch_event(sb, record.event())
        await run_reports(sb, [record.event() for record in sb.take("reports")])
        assert [e.status for e in sb.statuses if e.recipient][-1] == "failed"
        assert reports.load_progress(sb, session_id).completed_at is None, "a retry is due"
        # The retry's timer (set by the dispatcher, for the job's next attempt): made due, fired.
        await run_scheduler(sb, index, [r.event() for r in sb.take("schedule")])
        [timer_id] = list(sb.table("timers"))
        row = json.loads(sb.table("timers")[timer_id])
        sb.table("timers")[timer_id] = json.dumps({**row, "due": time.time()}).encode()
        fire = MemoryEvent(
            sb.topic("schedule").name, 0, 60, timer_id, fire_command(timer_id.decode())
        )
        await run_scheduler(sb, index, [fire])
        jobs = sb.take("dispatch.sms")
        assert [j.attempt for j in jobs_of(jobs)] == [2]
        for record in jobs:
            await dispatch_event(sb, record.event())
        await run_reports(sb, [record.event() for record in sb.take("reports")])
        assert [e.status for e in sb.statuses if e.recipient][-1] == "delivered"
        assert reports.load_progress(sb, session_id).completed_at is not None
    finally:
        index.close()
