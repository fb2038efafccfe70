"""Job batches in the dispatcher (streams/dispatch.py): one claim per batch, outcomes recorded
and reported in parts, and a batch claimed by a worker that died is finished by the next owner
without sending again what was recorded. The provider call is replaced here; everything else is
the dispatcher's own code over dict tables."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace
from typing import Any

import pytest

from streams import dispatch
from switchboard import records
from switchboard.keys import batch_part_row, batch_row
from switchboard.records import DispatchJob, JobBatch, Report
from switchboard.settings import Settings

SESSION = "3b0f6d2e-8f7c-4a55-9c43-0e6a3c9d1b21"


def job(index: int) -> DispatchJob:
    return DispatchJob(
        session_id=SESSION,
        client_id="acme",
        channel="sms",
        index=index,
        address=f"+1415555010{index}",
        attempt=1,
        message="hi",
    )


class Counter:
    def labels(self, *_: Any) -> Counter:
        return self

    def inc(self, *_: Any) -> None:
        return None


def worker(sends: dict[bytes, bytes] | None = None) -> Any:
    produced: list[list[Report]] = []

    async def report_batch(reports: list[Report], items: bytes | None = None) -> None:
        produced.append(list(reports))

    metrics = SimpleNamespace(
        withdrawn=Counter(), duplicate_jobs=Counter(), sends_in_doubt=Counter()
    )
    return SimpleNamespace(
        tables=SimpleNamespace(sends=dict(sends or {})),
        bulk_rows=None,  # the dict tables are written at once
        claims=set(),
        produced=produced,
        cancels=SimpleNamespace(get=lambda _: None),
        metrics=metrics,
        report_batch=report_batch,
        settings=Settings(max_in_flight=2),
    )


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, bool]]:
    """The provider: every send is delivered; (index, in doubt) of each is recorded."""
    calls: list[tuple[int, bool]] = []

    async def outcome(sb: Any, job: DispatchJob, in_doubt: bool, watch: Any) -> tuple[Report, None]:
        calls.append((job.index, in_doubt))
        return job.report("delivered", time.time(), passed=["sent"]), None

    async def window_allows(sb: Any, job: DispatchJob) -> bool:
        return True

    monkeypatch.setattr(dispatch, "_outcome", outcome)
    monkeypatch.setattr(dispatch, "_window_allows", window_allows)
    return calls


def row(sb: Any, key: bytes) -> Any:
    return json.loads(sb.tables.sends[key])


async def test_a_batch_is_claimed_once_and_its_outcomes_recorded_and_reported_together(
    sent: list[tuple[int, bool]],
) -> None:
    sb = worker()
    batch = JobBatch([job(0), job(1), job(2)])
    await dispatch._dispatch_batch(sb, batch)
    assert sorted(sent) == [(0, False), (1, False), (2, False)]
    assert [[r.index for r in reports] for reports in sb.produced] == [[0, 1, 2]]
    assert row(sb, batch_row(batch.key))["parts"] == 1
    assert len(row(sb, batch_part_row(batch.key, 0))["items"]) == 3
    assert len(sb.tables.sends) == 2, "two rows for the batch, not two per delivery"


async def test_the_next_owner_reports_what_was_recorded_and_sends_only_the_rest(
    sent: list[tuple[int, bool]],
) -> None:
    batch = JobBatch([job(0), job(1), job(2)])
    recorded = job(0).report("delivered", time.time(), passed=["sent"])
    sb = worker(
        {
            batch_row(
                batch.key
            ): b'{"claimed_at": 1.0}',  # claimed, never finished: the worker died
            batch_part_row(batch.key, 0): json.dumps(
                {"items": records.as_items([recorded]), "retries": []}
            ).encode(),
        }
    )
    await dispatch._dispatch_batch(sb, batch)
    assert sorted(sent) == [(1, True), (2, True)], "job 0 is not sent again; the rest in doubt"
    assert [r.index for r in sb.produced[0]] == [0], "the recorded outcome is reported again"
    assert sorted(r.index for reports in sb.produced[1:] for r in reports) == [1, 2]
    assert row(sb, batch_row(batch.key))["parts"] == 2


async def test_a_finished_batch_is_only_reported_again(sent: list[tuple[int, bool]]) -> None:
    sb = worker()
    batch = JobBatch([job(0), job(1)])
    await dispatch._dispatch_batch(sb, batch)
    sent.clear()
    sb.produced.clear()
    await dispatch._dispatch_batch(sb, batch)  # the same record again (a replay)
    assert sent == []
    assert [[r.index for r in reports] for reports in sb.produced] == [[0, 1]]


async def send_seven(monkeypatch: pytest.MonkeyPatch, outcome: Any) -> None:
    """A batch of seven jobs dispatched with ``outcome`` in place of the provider's (and every
    window open), by a worker of ``max_in_flight`` 2: each job is reported once."""

    async def window_allows(sb: Any, job: DispatchJob) -> bool:
        return True

    monkeypatch.setattr(dispatch, "_outcome", outcome)
    monkeypatch.setattr(dispatch, "_window_allows", window_allows)
    sb = worker()
    await dispatch._dispatch_batch(sb, JobBatch([job(i) for i in range(7)]))
    assert sorted(r.index for reports in sb.produced for r in reports) == list(range(7))


async def test_a_batch_sends_at_most_max_in_flight_at_a_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import asyncio

    running = peak = 0

    async def outcome(sb: Any, job: DispatchJob, in_doubt: bool, watch: Any) -> tuple[Report, None]:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.001)
        running -= 1
        return job.report("delivered", time.time()), None

    await send_seven(monkeypatch, outcome)
    assert peak == 2


@pytest.mark.parametrize(("waits", "runners"), [(False, 1), (True, 2)])
async def test_sends_that_do_not_wait_are_made_by_one_task_and_waiting_ones_by_many(
    monkeypatch: pytest.MonkeyPatch, waits: bool, runners: int
) -> None:
    """A task per send costs more than a sandbox's send: sends that finish at once are made
    one after the other by one task; once one waits, up to max_in_flight tasks send."""
    import asyncio

    tasks: set[asyncio.Task[Any] | None] = set()

    async def outcome(sb: Any, job: DispatchJob, in_doubt: bool, watch: Any) -> tuple[Report, None]:
        tasks.add(asyncio.current_task())
        if waits:
            await asyncio.sleep(0.001)
        return job.report("delivered", time.time()), None

    await send_seven(monkeypatch, outcome)
    assert len(tasks) == runners


# -- the batch's send deadline ---------------------------------------------------------------------


async def test_a_send_past_its_deadline_is_cancelled_and_told_apart() -> None:
    import asyncio

    watch = dispatch._Deadlines(-1.0)  # every running send is overdue at once
    told: list[bool] = []

    async def send() -> None:
        watch.start(7)
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            told.append(watch.expired(7))
            if not told[-1]:
                raise
        finally:
            watch.stop(7)

    task = asyncio.ensure_future(send())
    await asyncio.sleep(0)
    watch.cancel_overdue()
    await asyncio.wait_for(task, 1)
    assert told == [True] and not task.cancelled(), "taken back: the send reports it failed"
    assert isinstance(task, asyncio.Task) and task.cancelling() == 0


async def test_a_batch_cancelled_is_not_mistaken_for_a_deadline() -> None:
    import asyncio

    watch = dispatch._Deadlines(3600.0)
    told: list[bool] = []

    async def send() -> None:
        watch.start(7)
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            told.append(watch.expired(7))
            raise
        finally:
            watch.stop(7)

    task = asyncio.ensure_future(send())
    await asyncio.sleep(0)
    watch.cancel_overdue()  # nothing is overdue
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert told == [False]
