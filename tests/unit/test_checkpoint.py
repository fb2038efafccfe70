"""Checkpoints (streams/checkpoint.py): outputs durable, then rows, then acks; never otherwise.

The agents' crash safety rests on this order, so it is pinned here without a broker: tables are
dicts that record which event was current when each row was written (Faust's rocksdb store
routes a row to its event's partition that way), outputs are futures the test resolves.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
from faust import current_event

from streams import checkpoint
from streams.checkpoint import Checkpoint, StagedRows, run_checkpointed
from streams.metrics import Metrics
from switchboard.settings import Settings


class Table(dict[bytes, bytes]):
    """A table that remembers, for every write, the event current when it was made."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[tuple[str, bytes, Any]] = []

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self.log.append(("set", key, current_event()))
        super().__setitem__(key, value)

    def __delitem__(self, key: bytes) -> None:
        self.log.append(("del", key, current_event()))
        super().__delitem__(key)


@dataclass(eq=False)
class Event:
    offset: int
    value: bytes = b"{}"
    acked: int = 0
    message: Any = field(init=False)

    def __post_init__(self) -> None:
        self.message = SimpleNamespace(
            topic="t",
            partition=self.offset % 2,
            offset=self.offset,
            key=None,
            value=self.value,
            headers=[],
        )

    def ack(self) -> bool:
        self.acked += 1
        return True


def staged(cp: Checkpoint, event: Event, table: Table, key: bytes, value: bytes | None) -> None:
    """Stage a write as a handler does: inside the checkpoint, with ``event`` current."""
    import weakref

    from faust.streams import _current_event

    token = _current_event.set(weakref.ref(event))  # type: ignore[arg-type]
    active = checkpoint._active.set(cp)
    try:
        checkpoint.put(table, key, value)  # type: ignore[arg-type]
    finally:
        checkpoint._active.reset(active)
        _current_event.reset(token)


async def test_rows_wait_for_every_output_and_acks_wait_for_the_rows() -> None:
    table, cp = Table(), Checkpoint()
    first, second = Event(10), Event(11)
    output = asyncio.get_running_loop().create_future()
    cp.outputs.append(output)
    staged(cp, first, table, b"a", b"1")
    staged(cp, second, table, b"b", b"2")
    staged(cp, second, table, b"a", None)
    cp.events += [first, second]
    commit = asyncio.ensure_future(cp.commit())
    await asyncio.sleep(0.01)
    assert table == {} and not first.acked, "nothing may be written before the outputs are in"
    output.set_result(None)
    await commit
    assert table == {b"b": b"2"}
    # In the order staged, each in its own event's context (its changelog partition).
    assert [(op, key, event) for op, key, event in table.log] == [
        ("set", b"a", first),
        ("set", b"b", second),
        ("del", b"a", second),
    ]
    assert first.acked == second.acked == 1


async def test_a_refused_output_writes_no_row_and_acks_nothing() -> None:
    table, cp = Table(), Checkpoint()
    event = Event(1)
    failed = asyncio.get_running_loop().create_future()
    failed.set_exception(RuntimeError("broker refused"))
    cp.outputs.append(failed)
    staged(cp, event, table, b"k", b"v")
    cp.events.append(event)
    with pytest.raises(RuntimeError):
        await cp.commit()
    assert table == {} and event.acked == 0


def test_staged_rows_are_seen_by_every_reader_until_abandoned() -> None:
    """A dispatcher reading the session of a job, or the report agent the session of a report,
    must see the rows those outputs depend on, even before the writer's checkpoint writes them."""
    table, rows = Table(), StagedRows()
    cp = Checkpoint(staged=rows)
    table[b"k"] = b"old"
    staged(cp, Event(1), table, b"k", b"new")
    staged(cp, Event(1), table, b"gone", None)
    table[b"gone"] = b"still in the table"
    assert rows.get(table, b"k") == b"new"  # type: ignore[arg-type]  # another agent
    assert rows.get(table, b"gone") is None  # type: ignore[arg-type]
    assert rows.get(table, b"other") is None  # type: ignore[arg-type]
    cp.abandon()  # the writer stopped before its checkpoint: these rows will never be written
    assert rows.get(table, b"k") == b"old"  # type: ignore[arg-type]
    assert rows.get(table, b"gone") == b"still in the table"  # type: ignore[arg-type]


def test_a_checkpoint_that_stages_again_after_it_was_withdrawn_is_seen_again() -> None:
    """A checkpoint is listed among a table's writers once, at its first row of the table, not
    once a row; once withdrawn, its next row lists it again."""
    table, other, rows = Table(), Table(), StagedRows()
    cp = Checkpoint(staged=rows)
    staged(cp, Event(1), table, b"a", b"1")
    staged(cp, Event(1), table, b"b", b"2")
    staged(cp, Event(1), other, b"c", b"3")
    assert rows.writers(table) == [cp] and rows.writers(other) == [cp]  # type: ignore[arg-type]
    rows.withdraw(cp)
    assert rows.writers(table) == []  # type: ignore[arg-type]
    staged(cp, Event(2), table, b"d", b"4")
    assert rows.writers(table) == [cp]  # type: ignore[arg-type]
    assert rows.get(table, b"d") == b"4"  # type: ignore[arg-type]


def test_the_staged_rows_of_two_writers_of_one_table_are_all_seen() -> None:
    """The report agents of the two lanes write one table (each its own sessions' keys): every
    reader sees what either has staged, and one abandoning leaves the other's rows visible."""
    table, rows = Table(), StagedRows()
    normal, high = Checkpoint(staged=rows), Checkpoint(staged=rows)
    staged(normal, Event(1), table, b"campaign", b"c")
    staged(high, Event(2), table, b"otp", b"o")
    assert rows.get(table, b"campaign") == b"c"  # type: ignore[arg-type]
    assert rows.get(table, b"otp") == b"o"  # type: ignore[arg-type]
    high.abandon()
    assert rows.get(table, b"otp") is None  # type: ignore[arg-type]
    assert rows.get(table, b"campaign") == b"c"  # type: ignore[arg-type]
    normal.apply()
    assert table == {b"campaign": b"c"}
    normal.abandon()
    assert normal not in rows.writers(table)


def test_two_workers_in_one_process_never_read_each_others_staged_rows() -> None:
    """Each worker's staged rows live in its own registry (``Switchboard.staged``): a second app
    in the same process (tests, the benchmark) reads only its own writers' rows, even of a
    table object both were given."""
    table, mine, theirs = Table(), StagedRows(), StagedRows()
    table[b"k"] = b"in the table"
    staged(Checkpoint(staged=theirs), Event(1), table, b"k", b"theirs")
    assert mine.get(table, b"k") == b"in the table"  # type: ignore[arg-type]
    assert theirs.get(table, b"k") == b"theirs"  # type: ignore[arg-type]


def test_rollback_forgets_what_a_failed_handler_staged() -> None:
    table, cp = Table(), Checkpoint()
    staged(cp, Event(1), table, b"kept", b"1")
    savepoint = cp.savepoint()
    staged(cp, Event(2), table, b"kept", b"2")
    staged(cp, Event(2), table, b"dropped", b"x")
    cp.rollback(savepoint)
    assert cp.lookup(table, b"kept") == b"1"  # type: ignore[arg-type]
    assert cp.lookup(table, b"dropped") is checkpoint._ABSENT  # type: ignore[arg-type]
    cp.apply()
    assert table == {b"kept": b"1"}


def test_outside_a_checkpoint_a_write_is_immediate() -> None:
    import weakref

    from faust.streams import _current_event

    table, event = Table(), Event(3)
    token = _current_event.set(weakref.ref(event))  # type: ignore[arg-type]
    try:
        checkpoint.put(table, b"k", b"v")  # type: ignore[arg-type]
        checkpoint.put(table, b"missing", None)  # type: ignore[arg-type]
    finally:
        _current_event.reset(token)
    assert table == {b"k": b"v"} and table.log == [("set", b"k", event)]


# -- the runner ----------------------------------------------------------------------------------


class Stream:
    """What run_checkpointed needs of a Faust stream: noack().events() and a queue size."""

    def __init__(self, events: list[Event], hold: asyncio.Event | None = None) -> None:
        self._events = events
        self._hold = hold
        self.queue = SimpleNamespace(qsize=lambda: self.waiting)
        self.channel = SimpleNamespace(queue=self.queue)
        self.waiting = 0

    def noack(self) -> Stream:
        return self

    async def events(self) -> AsyncIterator[Event]:
        import weakref

        from faust.streams import _current_event

        for i, event in enumerate(self._events):
            self.waiting = len(self._events) - i - 1
            _current_event.set(weakref.ref(event))  # type: ignore[arg-type]
            yield event
        if self._hold is not None:
            await self._hold.wait()


def fake_sb() -> Any:
    rejected: list[Any] = []

    async def reject(**fields: Any) -> Any:
        rejected.append(fields)
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    async def crash(exc: BaseException) -> None:
        raise AssertionError(f"crashed: {exc!r}")

    return SimpleNamespace(
        metrics=Metrics(),
        settings=Settings(drain_timeout=5.0),
        reject=reject,
        rejected=rejected,
        app=SimpleNamespace(crash=crash),
        bulk_rows=None,
        staged=StagedRows(),
    )


async def test_the_runner_batches_what_is_waiting_and_acks_only_after_the_rows() -> None:
    sb, table = fake_sb(), Table()
    events = [Event(i) for i in range(5)]
    commits: list[list[int]] = []

    async def handler(event: Any) -> None:
        checkpoint.put(table, str(event.offset).encode(), b"x")  # type: ignore[arg-type]
        # Nothing of this batch is acked or written while it is being processed.
        assert all(e.acked == 0 for e in events[: event.offset + 1])
        assert str(event.offset).encode() not in table

    original = Checkpoint.commit

    async def commit(self: Checkpoint) -> None:
        commits.append([e.message.offset for e in self.events])
        await original(self)

    Checkpoint.commit = commit  # type: ignore[method-assign]
    try:
        await run_checkpointed(sb, Stream(events), "test", handler)  # type: ignore[arg-type]
    finally:
        Checkpoint.commit = original  # type: ignore[method-assign]
    assert commits == [[0, 1, 2, 3, 4]], "one checkpoint for the events that were waiting"
    assert all(e.acked == 1 for e in events) and len(table) == 5


async def test_a_failing_handler_is_rejected_and_its_rows_dropped() -> None:
    sb, table = fake_sb(), Table()
    events = [Event(0), Event(1), Event(2)]

    async def handler(event: Any) -> None:
        checkpoint.put(table, str(event.offset).encode(), b"x")  # type: ignore[arg-type]
        if event.offset == 1:
            raise ValueError("poison")

    await run_checkpointed(sb, Stream(events), "test", handler)  # type: ignore[arg-type]
    assert sorted(table) == [b"0", b"2"]
    assert [r["offset"] for r in sb.rejected] == [1]
    assert all(e.acked == 1 for e in events), "a rejected event is acknowledged (it is recorded)"


async def test_a_stop_during_a_commit_finishes_it_then_stops() -> None:
    """SIGTERM cancels the agent: the checkpoint being committed still completes (its outputs
    are on their way), so its events are acknowledged before Faust's last commit."""
    sb, table = fake_sb(), Table()
    output = asyncio.get_running_loop().create_future()
    events = [Event(0)]

    async def handler(event: Any) -> None:
        checkpoint.output(output)
        checkpoint.put(table, b"k", b"v")  # type: ignore[arg-type]

    runner = asyncio.ensure_future(
        run_checkpointed(sb, Stream(events, hold=asyncio.Event()), "test", handler)  # type: ignore[arg-type]
    )
    await asyncio.sleep(0.01)
    runner.cancel()
    await asyncio.sleep(0.01)
    assert not runner.done() and table == {}
    output.set_result(None)
    with pytest.raises(asyncio.CancelledError):
        await runner
    assert table == {b"k": b"v"} and events[0].acked == 1


async def test_a_stop_while_processing_acknowledges_nothing() -> None:
    """Cancelled in the middle of a handler (before its checkpoint): the event is not acked, and
    nothing it staged is written; the partition's next owner processes it again."""
    sb, table = fake_sb(), Table()
    events = [Event(0)]
    blocked = asyncio.Event()

    async def handler(event: Any) -> None:
        checkpoint.put(table, b"k", b"v")  # type: ignore[arg-type]
        await blocked.wait()

    runner = asyncio.ensure_future(run_checkpointed(sb, Stream(events), "test", handler))  # type: ignore[arg-type]
    await asyncio.sleep(0.01)
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner
    assert table == {} and events[0].acked == 0


class ClearedStream(Stream):
    """A stream whose queue said more events were waiting, then was cleared (a rebalance)."""

    async def events(self) -> AsyncIterator[Event]:
        async for event in super().events():
            self.waiting = 3  # "more are queued": the runner keeps the checkpoint open
            yield event


async def test_a_checkpoint_left_open_when_the_queue_is_cleared_is_committed_anyway() -> None:
    sb, table, hold = fake_sb(), Table(), asyncio.Event()
    events = [Event(0), Event(1)]

    async def handler(event: Any) -> None:
        checkpoint.put(table, str(event.offset).encode(), b"x")  # type: ignore[arg-type]

    runner = asyncio.ensure_future(
        run_checkpointed(sb, ClearedStream(events, hold), "test", handler)  # type: ignore[arg-type]
    )
    try:
        # No next event comes: without the idle commit these would wait forever, and so would a
        # rebalance waiting for their acknowledgement.
        for _ in range(200):
            if all(e.acked for e in events):
                break
            await asyncio.sleep(0.01)
        assert [e.acked for e in events] == [1, 1] and len(table) == 2
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner


async def test_an_idle_agent_sets_no_timer(monkeypatch: pytest.MonkeyPatch) -> None:
    """The idle commit wakes only while a checkpoint is left open: a worker with nothing to do
    does not poll (before: every agent woke 20 times a second)."""
    sb, table, hold = fake_sb(), Table(), asyncio.Event()
    naps: list[float] = []
    sleep = asyncio.sleep

    async def counted(delay: float, *args: Any) -> Any:
        if delay == checkpoint.IDLE_COMMIT:
            naps.append(delay)
        return await sleep(delay, *args)

    async def handler(event: Any) -> None:
        checkpoint.put(table, b"k", b"v")  # type: ignore[arg-type]

    monkeypatch.setattr(checkpoint.asyncio, "sleep", counted)
    runner = asyncio.ensure_future(
        run_checkpointed(sb, Stream([Event(0)], hold), "test", handler)  # type: ignore[arg-type]
    )
    try:
        await sleep(10 * checkpoint.IDLE_COMMIT)  # the event was committed at once: then idle
        assert table == {b"k": b"v"} and naps == []
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner


# -- the pipeline: the next events run while a checkpoint is being committed --------------------


class OneByOne(Stream):
    """A stream whose queue is empty after every event: each event is a checkpoint of its own."""

    async def events(self) -> AsyncIterator[Event]:
        async for event in super().events():
            self.waiting = 0
            yield event


async def test_the_next_checkpoint_fills_while_one_is_committed_and_commits_after_it() -> None:
    """The handler goes on while the broker acknowledges the last batch's outputs, reading its
    rows as staged; at most one checkpoint is committed behind it, and rows and acks keep the
    batches' order."""
    sb, table = fake_sb(), Table()
    events = [Event(0), Event(1), Event(2)]
    first_output = asyncio.get_running_loop().create_future()
    handled: list[int] = []
    seen: list[bytes | None] = []

    async def handler(event: Any) -> None:
        handled.append(event.offset)
        seen.append(sb.staged.get(table, b"k"))
        if event.offset == 0:
            checkpoint.output(first_output)
        checkpoint.put(table, b"k", b"v%d" % event.offset)  # type: ignore[arg-type]

    runner = asyncio.ensure_future(run_checkpointed(sb, OneByOne(events), "test", handler))  # type: ignore[arg-type]
    for _ in range(20):
        await asyncio.sleep(0)
    # Event 1 ran while event 0's checkpoint waits for the broker, and saw its row; event 2
    # waits: event 1's checkpoint is sealed only once event 0's is committed.
    assert handled == [0, 1] and seen == [None, b"v0"]
    assert table == {} and [e.acked for e in events] == [0, 0, 0]
    assert sb.staged.get(table, b"k") == b"v1", "a reader sees the newest staged row"
    first_output.set_result(None)
    await runner
    assert handled == [0, 1, 2] and seen == [None, b"v0", b"v1"]
    assert [(op, key, e.offset) for op, key, e in table.log] == [
        ("set", b"k", 0),
        ("set", b"k", 1),
        ("set", b"k", 2),
    ]
    assert table == {b"k": b"v2"} and [e.acked for e in events] == [1, 1, 1]
    assert sb.staged.writers(table) == [], "a committed checkpoint is no longer read"


async def test_a_refused_output_stops_the_agent_and_no_later_checkpoint_is_committed() -> None:
    sb, table = fake_sb(), Table()
    crashes: list[BaseException] = []

    async def crash(exc: BaseException) -> None:
        crashes.append(exc)

    sb.app.crash = crash
    events = [Event(0), Event(1), Event(2)]
    refused = asyncio.get_running_loop().create_future()

    async def handler(event: Any) -> None:
        if event.offset == 0:
            checkpoint.output(refused)
        checkpoint.put(table, str(event.offset).encode(), b"x")  # type: ignore[arg-type]

    runner = asyncio.ensure_future(run_checkpointed(sb, OneByOne(events), "test", handler))  # type: ignore[arg-type]
    for _ in range(20):
        await asyncio.sleep(0)
    refused.set_exception(RuntimeError("the broker refused a record"))
    with pytest.raises(RuntimeError, match="refused"):
        await runner
    assert len(crashes) == 1
    assert table == {} and [e.acked for e in events] == [0, 0, 0]
    assert sb.staged.get(table, b"1") is None, "rows that will never be written are not read"


async def test_a_refused_output_seen_by_the_idle_commit_still_lets_the_agent_stop_cleanly() -> None:
    """The batch after a failed commit is left open and sealed by the idle commit, which meets
    the failure: the agent's stop still drops what is staged and ends as a stop."""
    sb, table = fake_sb(), Table()
    crashes: list[BaseException] = []

    async def crash(exc: BaseException) -> None:
        crashes.append(exc)

    sb.app.crash = crash
    refused = asyncio.get_running_loop().create_future()
    events = [Event(0), Event(1)]

    class FirstAlone(Stream):
        async def events(self) -> AsyncIterator[Event]:
            async for event in super().events():
                self.waiting = 0 if event.offset == 0 else 3  # event 1 is left open
                yield event

    async def handler(event: Any) -> None:
        if event.offset == 0:
            checkpoint.output(refused)
        checkpoint.put(table, str(event.offset).encode(), b"x")  # type: ignore[arg-type]

    runner = asyncio.ensure_future(
        run_checkpointed(sb, FirstAlone(events, hold=asyncio.Event()), "test", handler)  # type: ignore[arg-type]
    )
    for _ in range(20):
        await asyncio.sleep(0)
    refused.set_exception(RuntimeError("the broker refused a record"))
    await asyncio.sleep(3 * checkpoint.IDLE_COMMIT)  # the idle commit meets the failure
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner
    assert len(crashes) == 1 and table == {} and [e.acked for e in events] == [0, 0]
    assert sb.staged.get(table, b"1") is None
