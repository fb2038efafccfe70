"""The report agent processing a report again after a crash (streams/reports.py): exactly once.

A crash while a checkpoint's rows are written leaves a prefix of them in the changelog; a report
writes its session's progress before its delivery. So a report processed again finds nothing of
itself, its progress only, or everything, and each case must count the delivery exactly once
and complete the session exactly once. The agent's handler runs here against dict tables.
"""

from __future__ import annotations

import asyncio
import weakref
from types import SimpleNamespace
from typing import Any

from faust.streams import _current_event

from streams import reports
from streams.checkpoint import Checkpoint, StagedRows, _active
from switchboard import records
from switchboard.backlog import OpenSessions
from switchboard.records import Report, SessionState
from switchboard.settings import Settings

SESSION = "8c1d8f4e-2c43-4b35-a7a5-3f1d6c0b9a10"


def world(deliveries: int = 2) -> Any:
    published: list[Any] = []

    async def publish_status(event: Any) -> None:
        published.append(event)

    async def publish_statuses(events: Any) -> None:
        published.extend(events)

    async def schedule_at(*args: Any) -> None:
        return None

    session = SessionState(
        session_id=SESSION,
        client_id="acme",
        channels=["sms"],
        recipients=deliveries,
        deliveries=deliveries,
        chunks=1,
        trigger="immediate",
        status="dispatching",
        created_at=1.0,
        source="api",
        transport={"type": "sms", "message": "hi"},
        options={},
    )
    tables = SimpleNamespace(sessions={SESSION.encode(): records.encode(session)}, deliveries={})
    return SimpleNamespace(
        tables=tables,
        published=published,
        publish_status=publish_status,
        publish_statuses=publish_statuses,
        schedule_at=schedule_at,
        cancel_timer=schedule_at,
        sessions_topic=lambda lane: lane,
        clients=SimpleNamespace(get=lambda _: None),
        settings=Settings(report_timeout=60.0),
        metrics=SimpleNamespace(missing_state=SimpleNamespace(labels=lambda *_: None)),
        open_sessions=OpenSessions(),
        staged=StagedRows(),
        decoded_sessions={},
        armed_expiry={},
    )


def delivered(index: int) -> Report:
    return Report(
        session_id=SESSION,
        client_id="acme",
        channel="sms",
        index=index,
        address=f"+1415555010{index}",
        status="delivered",
        attempt=1,
        occurred_at=1_800_000_000.0 + index,
        passed=["sent"],
    )


class _Event:
    def __init__(self, offset: int) -> None:
        self.message = SimpleNamespace(partition=0, offset=offset)

    def ack(self) -> bool:
        return True


async def apply(sb: Any, report: Report | list[Report], offset: int) -> Checkpoint:
    """Run the agent's rule on one event (a report, or a batch of them) inside a checkpoint;
    return it uncommitted."""
    checkpoint = Checkpoint(staged=sb.staged)
    event = _Event(offset)
    token, active = _current_event.set(weakref.ref(event)), _active.set(checkpoint)  # type: ignore[arg-type]
    try:
        await reports._apply(sb, report if isinstance(report, list) else [report], offset)
    finally:
        _active.reset(active)
        _current_event.reset(token)
    checkpoint.events.append(event)  # type: ignore[arg-type]
    return checkpoint


def crash(checkpoint: Checkpoint) -> list[Any]:
    """The worker dies before ``checkpoint`` is committed: its staged rows are gone."""
    writes = list(checkpoint.writes)
    checkpoint.abandon()
    return writes


def progress(sb: Any) -> Any:
    raw = sb.tables.deliveries.get(SESSION.encode())
    return records.decode(records.Progress, raw) if raw else None


def completed_events(sb: Any) -> list[str]:
    return [e.event_id for e in sb.published if e.status == "completed"]


async def test_a_report_written_whole_and_processed_again_changes_nothing() -> None:
    sb = world()
    (await apply(sb, delivered(0), 5)).apply()
    assert len(sb.open_sessions) == 1  # the gauge of open sessions: one delivery of two final
    (await apply(sb, delivered(1), 6)).apply()
    assert progress(sb).final == 2 and len(completed_events(sb)) == 1
    assert len(sb.open_sessions) == 0
    (await apply(sb, delivered(1), 6)).apply()
    assert progress(sb).final == 2 and len(completed_events(sb)) == 1
    assert len(sb.open_sessions) == 0


async def test_a_report_whose_progress_was_written_but_not_its_delivery_is_not_counted_twice() -> (
    None
):
    sb = world()
    (await apply(sb, delivered(0), 5)).apply()
    checkpoint = await apply(sb, delivered(1), 6)
    # The crash: the changelog kept the first row written (progress), not the delivery's.
    [first, *_] = crash(checkpoint)
    assert first.key == SESSION.encode()
    sb.tables.deliveries[first.key] = first.value
    assert progress(sb).final == 2 and len(completed_events(sb)) == 1
    replay = await apply(sb, delivered(1), 6)
    replay.apply()
    assert progress(sb).final == 2, "counted once"
    assert len(completed_events(sb)) == 1, "completed once (its event is in Kafka already)"
    assert (
        records.decode(
            records.DeliveryState, sb.tables.deliveries[f"{SESSION}/1/sms".encode()]
        ).status
        == "delivered"
    )


async def test_a_report_whose_rows_were_all_lost_is_applied_again_with_the_same_events() -> None:
    sb = world()
    (await apply(sb, delivered(0), 5)).apply()
    before = len(sb.published)
    crash(await apply(sb, delivered(1), 6))  # processed; the worker died before any row was written
    told = [e.event_id for e in sb.published[before:]]
    (await apply(sb, delivered(1), 6)).apply()
    assert [e.event_id for e in sb.published[before + len(told) :]] == told
    assert progress(sb).final == 2 and len(set(completed_events(sb))) == 1


async def test_a_batch_whose_progress_and_first_delivery_were_written_counts_each_once() -> None:
    sb = world(deliveries=3)
    checkpoint = await apply(sb, [delivered(0), delivered(1), delivered(2)], 7)
    assert checkpoint.writes[0].key == SESSION.encode(), "progress first"
    assert len(checkpoint.writes) == 4, "one progress row for the batch, then its deliveries"
    # The crash: the changelog kept the progress and the first delivery of the batch.
    for write in crash(checkpoint)[:2]:
        sb.tables.deliveries[write.key] = write.value
    assert progress(sb).final == 3 and len(completed_events(sb)) == 1
    (await apply(sb, [delivered(0), delivered(1), delivered(2)], 7)).apply()
    assert progress(sb).final == 3, "counted once"
    assert len(completed_events(sb)) == 1, "completed once"
    for index in range(3):
        row = sb.tables.deliveries[f"{SESSION}/{index}/sms".encode()]
        assert records.decode(records.DeliveryState, row).status == "delivered"


async def test_a_batch_applied_whole_twice_changes_nothing_the_second_time() -> None:
    sb = world(deliveries=2)
    (await apply(sb, [delivered(0), delivered(1)], 3)).apply()
    told = len(sb.published)
    (await apply(sb, [delivered(0), delivered(1)], 3)).apply()
    assert len(sb.published) == told and progress(sb).final == 2


def test_the_module_still_has_the_names_this_test_drives() -> None:
    assert asyncio.iscoroutinefunction(reports._apply)


def test_progress_counts_the_deliveries_deferred_now() -> None:
    """``Progress.deferred`` follows deliveries into and out of ``deferred`` (the console's bar):
    held, held again (no change), then sent; a held one cancelled leaves it too."""
    from switchboard.deliveries import apply_report

    progress = records.Progress()
    states: dict[int, records.DeliveryState | None] = {0: None, 1: None}

    def apply(index: int, status: str, **fields: Any) -> None:
        nonlocal progress
        report = Report(
            session_id="s",
            client_id="c",
            channel="sms",
            index=index,
            address="+14155550100",
            status=status,
            attempt=1,  # type: ignore[arg-type]
            occurred_at=1_800_000_000.0,
            **fields,
        )
        old = states[index]
        state, _ = apply_report(report, old)
        assert state is not None
        if state is not old:
            progress = reports._progress_after(report, old, state, progress)
        states[index] = state

    for index in (0, 1):
        apply(index, "accepted")
        apply(index, "deferred", detail={"release_at": "2027-01-15T08:00:00Z"})
    apply(0, "deferred", detail={"release_at": "2027-01-16T08:00:00Z"})
    assert progress.deferred == 2
    apply(0, "sent")
    assert progress.deferred == 1
    apply(1, "cancelled")
    assert progress.deferred == 0 and progress.counts == {"cancelled": 1}
