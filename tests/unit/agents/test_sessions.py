"""The session agent's rules (``streams/sessions.py``) through its real handler, in memory:
opening, the fan-out of a chunk, a delivery held by its window, a cancel."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from streams import offsets, sessions
from switchboard import records
from switchboard.fanout import CHUNK_SIZE
from switchboard.timers import unb64
from tests.unit.agents.harness import (
    CLIENT,
    WEEKDAYS,
    MemoryBacklog,
    MemorySwitchboard,
    build,
    command_event,
    instruction,
    jobs_of,
    reports_of,
    run_intake,
    run_sessions,
    settle_sessions,
)

AUDIENCE = ["+14155550111", "+14155550112", "+14155550113"]
SEND: dict[str, Any] = {
    "client_id": "acme",
    "transport": {"type": "sms", "message": "Hi"},
    "audience": AUDIENCE,
}


async def opened(sb: MemorySwitchboard, body: dict[str, Any] = SEND) -> str:
    """Intake takes ``body``; returns its session id (the session agent has not run yet)."""
    await run_intake(sb, [instruction(sb, body)])
    [first, *_] = sb.topic("sessions").records
    return first.command().session_id


def kinds(commands: list[records.SessionCommand]) -> list[str]:
    return [command.KIND for command in commands]


async def test_an_opened_session_fans_out_accepted_events_then_its_jobs(tmp_path: Path) -> None:
    sb = build(tmp_path)
    session_id = await opened(sb)
    # The opening fans out the first chunk itself: no FanOut command on the sessions topic.
    assert kinds(await settle_sessions(sb)) == ["audience", "open"]
    accepted = [e for e in sb.statuses if e.status == "accepted"]
    assert sorted(e.recipient or "" for e in accepted) == AUDIENCE
    jobs = jobs_of(sb.take("dispatch.sms"))
    assert sorted(j.index for j in jobs) == [0, 1, 2]
    assert {j.session_id for j in jobs} == {session_id}
    assert {j.message for j in jobs} == {"Hi"}
    state = sessions.load_session(sb, session_id)
    assert state is not None
    assert (state.status, state.fanned_out_chunks, state.deliveries) == ("dispatching", 1, 3)
    assert sb.take("rejected") == []


async def test_a_trigger_fans_out_a_manual_sessions_first_chunk_in_its_own_event(
    tmp_path: Path,
) -> None:
    sb = build(tmp_path)
    session_id = await opened(sb, {**SEND, "options": {"trigger": "manual"}})
    assert kinds(await settle_sessions(sb)) == ["audience", "open"]
    assert jobs_of(sb.take("dispatch.sms")) == [], "a manual session waits for its trigger"
    waiting = sessions.load_session(sb, session_id)
    assert waiting is not None and waiting.status == "waiting"

    await run_sessions(sb, [command_event(sb, records.Trigger(session_id))])
    # The trigger fans out the first chunk itself: no FanOut command on the sessions topic.
    assert kinds(await settle_sessions(sb)) == []
    assert sorted(j.index for j in jobs_of(sb.take("dispatch.sms"))) == [0, 1, 2]
    accepted = [e for e in sb.statuses if e.status == "accepted" and e.recipient is not None]
    assert sorted(e.recipient or "" for e in accepted) == AUDIENCE
    state = sessions.load_session(sb, session_id)
    assert state is not None
    assert (state.status, state.fanned_out_chunks) == ("dispatching", 1)

    # A second trigger (a client's retry) sends nothing again.
    await run_sessions(sb, [command_event(sb, records.Trigger(session_id), offset=1)])
    assert kinds(await settle_sessions(sb)) == []
    assert jobs_of(sb.take("dispatch.sms")) == []


async def test_a_session_opened_twice_fans_out_once(tmp_path: Path) -> None:
    sb = build(tmp_path)
    await opened(sb)
    *chunks, open_command = sb.take("sessions")  # the audience's chunks, then the opening
    assert open_command.command().KIND == "open"
    await run_sessions(sb, [c.event() for c in chunks] + [open_command.event()] * 2)
    assert kinds(await settle_sessions(sb)) == []
    assert len(jobs_of(sb.take("dispatch.sms"))) == 3


async def test_a_command_for_an_unknown_session_is_rejected(tmp_path: Path) -> None:
    sb = build(tmp_path)
    await run_sessions(sb, [command_event(sb, records.FanOut("no-such-session", 0))])
    [rejection] = sb.take("rejected")
    assert "internal error in sessions: MissingState" in (rejection.value or b"").decode(
        errors="replace"
    )


async def test_deliveries_outside_their_window_are_deferred_and_held_by_one_timer(
    tmp_path: Path,
) -> None:
    # A window open only on a day two days from now: closed whenever the test runs.
    day = WEEKDAYS[(datetime.now(UTC) + timedelta(days=2)).weekday()]
    window = {"days": [day], "start": "09:00", "end": "10:00", "timezone": "UTC"}
    sb = build(tmp_path, clients={"acme": {**CLIENT, "time_windows": {"sms": window}}})
    session_id = await opened(sb)
    await settle_sessions(sb)
    assert jobs_of(sb.take("dispatch.sms")) == [], "nothing sent outside the window"
    deferred = reports_of(sb.take("reports"))
    assert sorted(r.index for r in deferred) == [0, 1, 2]
    assert {(r.status, r.error_code) for r in deferred} == {("deferred", "window-closed")}
    [timer] = [json.loads(r.value or b"{}") for r in sb.take("schedule")]
    assert timer["kind"] == "set" and timer["due"] > datetime.now(UTC).timestamp()
    assert timer["topic"] == sb.topic("sessions").name
    release = records.decode_command(unb64(timer["value"]))
    assert isinstance(release, records.Release)
    assert (release.session_id, sorted(release.indexes)) == (session_id, [0, 1, 2])


async def test_a_cancel_fences_the_dispatch_partitions_then_reports_the_unsent_cancelled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb = build(tmp_path)
    # The dispatchers have passed every fence (the group committed each partition's end).
    monkeypatch.setattr(offsets, "committed", lambda _, partitions: sb.committed(partitions))
    session_id = await opened(sb)
    await settle_sessions(sb)
    sb.take("dispatch.sms")
    await sb.command(records.Cancel(session_id))
    assert kinds(await settle_sessions(sb)) == ["cancel", "cancel_check", "cancel_chunk"]
    assert [e.status for e in sb.statuses if e.recipient is None][-1] == "cancelled"
    assert sb.cancels.get(session_id.encode()) is not None, "every dispatcher sees the cancel"
    fences = sb.take("dispatch.sms")
    assert sorted(f.partition for f in fences) == list(range(sb.settings.partitions))
    assert {f.json()["kind"] for f in fences} == {records.Fence.KIND}
    cancelled = reports_of(sb.take("reports"))
    assert sorted(r.index for r in cancelled) == [0, 1, 2]
    assert {r.status for r in cancelled} == {"cancelled"}
    state = sessions.load_session(sb, session_id)
    assert state is not None and (state.status, state.fenced) == ("cancelled", True)


async def test_a_repeated_idempotency_key_opens_one_session(tmp_path: Path) -> None:
    sb = build(tmp_path)
    body = {**SEND, "idempotency_key": "order-42"}
    await run_intake(sb, [instruction(sb, body, offset=1), instruction(sb, body, offset=2)])
    handled = await settle_sessions(sb)
    assert kinds(handled).count("claim") == 2
    assert len(jobs_of(sb.take("dispatch.sms"))) == 3, "one session fanned out"
    repeats = [e for e in sb.statuses if (e.detail or {}).get("repeat")]
    assert [(e.status, (e.detail or {})["repeat"]) for e in repeats] == [("accepted", "duplicate")]
    changed = {**body, "transport": {"type": "sms", "message": "Changed"}}
    await run_intake(sb, [instruction(sb, changed, offset=3)])
    await settle_sessions(sb)
    assert jobs_of(sb.take("dispatch.sms")) == [], "the key's session is not opened again"
    assert (sb.statuses[-1].status, sb.statuses[-1].error_code) == (
        "rejected",
        "idempotency-conflict",
    ), "a producer is told its key was reused with another instruction"


async def test_a_later_chunk_waits_while_the_dispatch_backlog_is_over_its_limit(
    tmp_path: Path,
) -> None:
    sb = build(tmp_path, dispatch_backlog=200)
    assert isinstance(sb.flow, MemoryBacklog)
    sb.flow.waiting = 10  # records of jobs: over 200 // DISPATCH_SPREAD
    audience = [f"+1415555{n:04d}" for n in range(CHUNK_SIZE + 1)]  # two chunks
    session_id = await opened(sb, {**SEND, "audience": audience})
    assert kinds(await settle_sessions(sb))[-2:] == ["open", "fanout"]
    assert len(jobs_of(sb.take("dispatch.sms"))) == CHUNK_SIZE, "the first chunk never waits"
    [timer] = [json.loads(r.value or b"{}") for r in sb.take("schedule")]
    assert unb64(timer["value"]) == records.encode(records.FanOut(session_id, 1))
    state = sessions.load_session(sb, session_id)
    assert state is not None and state.fanned_out_chunks == 1
