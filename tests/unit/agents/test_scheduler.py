"""The scheduler agent's rules (``streams/scheduler.py``) through its real handler, in memory: a
timer set with ``schedule_at`` produces its record when fired due, once; a cancelled, replaced
or not-yet-due timer does not."""

from __future__ import annotations

import json
import time
from pathlib import Path

from streams.scheduler import REFIRE_AFTER, Fires, TimerIndex
from switchboard.timers import fire_command
from tests.unit.agents.harness import MemoryEvent, MemorySwitchboard, build, run_scheduler

KEY = b"3b0f6d2e-session"


async def set_timer(
    sb: MemorySwitchboard, index: TimerIndex, timer_id: str, due: float, value: bytes
) -> None:
    """``schedule_at`` (the real one), then the scheduler agent takes the command."""
    await sb.schedule_at(timer_id, due, sb.topics.sessions, KEY, value)
    await run_scheduler(sb, index, [r.event() for r in sb.take("schedule")])


async def fire(sb: MemorySwitchboard, index: TimerIndex, timer_id: str) -> None:
    """The tick's ``fire`` command (produced to the timer's partition) reaching the agent."""
    await run_scheduler(
        sb,
        index,
        [MemoryEvent(sb.topic("schedule").name, 0, 99, timer_id.encode(), fire_command(timer_id))],
    )


def index_of(tmp_path: Path) -> TimerIndex:
    return TimerIndex(tmp_path / "scheduler" / "index")


async def test_a_due_timer_produces_its_record_once(tmp_path: Path) -> None:
    sb, index = build(tmp_path), index_of(tmp_path)
    await set_timer(sb, index, "t1", time.time() - 1, b"the record")
    assert list(sb.table("timers")) == [b"t1"]
    assert [timer_id for _, _, timer_id in index.due(time.time())] == ["t1"]
    await fire(sb, index, "t1")
    [record] = sb.take("sessions")
    assert (record.key, record.value) == (KEY, b"the record")
    assert sb.table("timers") == {} and list(index.due(time.time())) == []
    await fire(sb, index, "t1")  # a duplicate fire (the tick's refire)
    assert sb.take("sessions") == [], "produced once"
    index.close()


async def test_a_fire_before_the_due_time_is_stale(tmp_path: Path) -> None:
    sb, index = build(tmp_path), index_of(tmp_path)
    await set_timer(sb, index, "t1", time.time() + 3600, b"later")
    await fire(sb, index, "t1")
    assert sb.take("sessions") == []
    assert json.loads(sb.table("timers")[b"t1"])["due"] > time.time()
    index.close()


async def test_a_cancelled_timer_never_produces(tmp_path: Path) -> None:
    sb, index = build(tmp_path), index_of(tmp_path)
    await set_timer(sb, index, "t1", time.time() - 1, b"never")
    await sb.cancel_timer("t1", KEY)
    await run_scheduler(sb, index, [r.event() for r in sb.take("schedule")])
    await fire(sb, index, "t1")
    assert sb.take("sessions") == []
    assert sb.table("timers") == {} and list(index.due(time.time())) == []
    index.close()


async def test_a_timer_set_again_produces_only_its_new_record(tmp_path: Path) -> None:
    sb, index = build(tmp_path), index_of(tmp_path)
    await set_timer(sb, index, "t1", time.time() + 3600, b"old")
    await set_timer(sb, index, "t1", time.time() - 1, b"new")
    assert len(list(index.due(time.time() + 7200))) == 1, "one index entry for the timer"
    await fire(sb, index, "t1")
    assert [r.value for r in sb.take("sessions")] == [b"new"]
    index.close()


def test_a_fire_on_its_way_is_not_produced_again_until_it_had_time_to_land() -> None:
    fires = Fires()
    assert fires.fire("t", 100.0, now=100.1)
    assert not fires.fire("t", 100.0, now=100.35), "the next tick: its fire is on its way"
    assert not fires.fire("t", 100.0, now=100.1 + REFIRE_AFTER - 0.01)
    assert fires.fire("t", 100.0, now=100.1 + REFIRE_AFTER), "lost with a worker: again"


def test_a_timer_set_again_for_later_fires_as_soon_as_it_is_due() -> None:
    """A check that looks again in half a second under the same id (a cancel waiting for its
    fences, a fan-out held by the dispatch backlog) is another firing: it used to wait out the
    refire delay of the previous one, so a cancel took 10 s instead of 1."""
    fires = Fires()
    assert fires.fire("cancel-check:s1", 100.0, now=100.1)
    assert fires.fire("cancel-check:s1", 100.5, now=100.6)
    assert fires.fire("cancel-check:s1", 101.0, now=101.1)
    assert not fires.fire("cancel-check:s1", 101.0, now=101.35)
