"""Bounded state (issue 13): what is due for deletion and which rows are a session's
(switchboard/retention.py), idempotency generations that never repeat once a record is deleted
(switchboard/idempotency.py), the prefix walk over one partition (streams/tablestore.py), and
the session agent's purge step against dict tables (streams/retention.py)."""

from __future__ import annotations

import weakref
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import faust
import pytest
from faust.streams import _current_event

from streams import retention as purge
from streams.checkpoint import Checkpoint, StagedRows, _active
from streams.tablestore import STORE_URL, keys_with_prefix
from switchboard import records
from switchboard.idempotency import (
    IdempotencyRecord,
    decide,
    expires_at,
    next_generation,
    session_for,
)
from switchboard.keys import (
    batch_part_row,
    batch_row,
    chunk_row,
    fence_row,
    purged_row,
    send_row,
    send_row_prefixes,
    session_row,
)
from switchboard.records import Progress, PurgeDeliveries, PurgeSends, SessionState
from switchboard.retention import (
    chunks_of,
    delivery_rows,
    is_send_row,
    purge_at,
    purge_due,
    session_rows,
)
from switchboard.settings import Settings

SID = "0d6f1a9e-4b8c-4e57-9a53-2f5c7e1b3d20"
OTHER = "0d6f1a9e-4b8c-4e57-9a53-2f5c7e1b3d21"
DAY = 86_400.0

# -- the rule --------------------------------------------------------------------------------


def test_a_session_is_due_once_completed_and_past_its_retention() -> None:
    assert purge_at(1_000.0, 30.0) == 1_030.0
    assert purge_at(1_000.0, 0.0) is None, "0 keeps it forever"
    assert not purge_due(None, 30.0, 10_000.0), "never completed (or opened again): kept"
    assert not purge_due(1_000.0, 30.0, 1_020.0)
    assert purge_due(1_000.0, 30.0, 1_030.0)
    assert purge_due(1_000.0, 30.0, 1_029.5), "within a scheduler tick of its time"
    assert not purge_due(1_000.0, 0.0, 1e12), "retention turned off after the timer was set"
    assert not purge_due(1_000.0, 30.0, 2_000.0, resent_at=1_500.0), "a re-send on its way"
    assert purge_due(1_600.0, 30.0, 2_000.0, resent_at=1_500.0), "completed again since"


def test_a_session_s_rows_in_the_sessions_table() -> None:
    assert session_rows(SID, 3) == [
        chunk_row(SID, 0),
        chunk_row(SID, 1),
        chunk_row(SID, 2),
        session_row(SID),
    ]
    assert session_rows(SID, 0)[-1] == session_row(SID), "the session row last"


def test_deliveries_are_deleted_a_chunk_of_recipients_at_a_time() -> None:
    assert chunks_of(0) == 1 and chunks_of(500) == 1 and chunks_of(501) == 2
    first = delivery_rows(SID, 0, 1_001, ["sms", "email"])
    assert len(first) == 1_000
    assert first[:2] == [f"{SID}/0/sms".encode(), f"{SID}/0/email".encode()]
    last = delivery_rows(SID, 2, 1_001, ["sms"])
    assert last == [f"{SID}/1000/sms".encode()]
    every = [
        row
        for chunk in range(chunks_of(1_001))
        for row in delivery_rows(SID, chunk, 1_001, ["sms"])
    ]
    assert len(set(every)) == 1_001


def test_which_sends_rows_are_the_session_s_and_whose() -> None:
    sms, email = f"{SID}/7/sms", f"{SID}/7/email"
    rows = {
        send_row(sms, 2): "sms",
        send_row(email, 0): "email",
        batch_row(sms): "sms",
        batch_part_row(sms, 3): "sms",
        batch_row(email): "email",
    }
    for key, channel in rows.items():
        assert key.startswith(send_row_prefixes(SID)), key
        assert is_send_row(key, SID, None)
        assert is_send_row(key, SID, [channel])
        assert not is_send_row(key, SID, ["push"])
    assert is_send_row(fence_row(SID), SID, ["push"]), "every dispatcher of the session deletes it"
    for foreign in (send_row(f"{OTHER}/7/sms", 0), batch_row(f"{OTHER}/7/sms"), fence_row(OTHER)):
        assert not is_send_row(foreign, SID, None)


# -- idempotency generations -----------------------------------------------------------------


def test_a_key_whose_record_was_deleted_never_opens_an_id_it_opened_before() -> None:
    window = 30.0
    t0 = 1_700_000_012.0
    first = decide(None, "acme", "k", "f1", t0, window)
    record = IdempotencyRecord("acme", first.session_id, "f1", t0, first.generation)
    deleted_at = expires_at(record, window)
    assert deleted_at >= t0 + window, "kept for its whole window"
    # After the deletion there is no record: the next claim must open another session.
    again = decide(None, "acme", "k", "f1", deleted_at, window)
    assert again.kind == "new" and again.generation > first.generation
    assert again.session_id != first.session_id


def test_generations_count_from_a_record_written_before_they_were_numbered() -> None:
    legacy = IdempotencyRecord("acme", session_for("acme", "k", 0), "f", 1_000.0, 0)
    now = 1_700_000_000.0
    assert next_generation(legacy, now, DAY) == int(now // DAY)
    assert next_generation(None, now, DAY) == int(now // DAY)
    ahead = IdempotencyRecord("acme", "s", "f", 1_000.0, 10**9)
    assert next_generation(ahead, now, DAY) == 10**9 + 1, "never below the record's next"
    assert expires_at(legacy, DAY) == 1_000.0 + DAY


def test_racing_claims_in_one_window_compute_the_same_session() -> None:
    a = decide(None, "acme", "k", "f", 1_700_000_100.0, DAY)
    b = decide(None, "acme", "k", "f", 1_700_000_100.4, DAY)
    assert a == b


# -- the prefix walk over one partition ------------------------------------------------------


class _Event:
    def __init__(self, partition: int, offset: int = 0) -> None:
        self.message = SimpleNamespace(partition=partition, offset=offset, topic="t")

    def ack(self) -> bool:
        return True


def test_keys_with_prefix_walks_only_the_partition_s_matches(tmp_path: Path) -> None:
    app = faust.App(
        "t",
        store=STORE_URL,
        datadir=str(tmp_path),
        autodiscover=False,
        key_serializer="raw",
        value_serializer="raw",
    )
    table = app.Table("sends", key_type=bytes, value_type=bytes, partitions=4)
    store: Any = table.data
    rows = {
        1: [
            send_row(f"{SID}/0/sms", 0),
            send_row(f"{SID}/100/sms", 1),
            send_row(f"{OTHER}/0/sms", 0),
        ],
        2: [send_row(f"{SID}/200/sms", 0)],
    }
    for partition, keys in rows.items():
        event = _Event(partition)  # held: the context keeps only a weak reference
        token = _current_event.set(weakref.ref(event))  # type: ignore[arg-type]
        try:
            for key in keys:
                store._set(key, b"1")
        finally:
            _current_event.reset(token)
    prefix = send_row_prefixes(SID)[0]
    assert keys_with_prefix(table, 1, prefix) == sorted(rows[1][:2])
    assert keys_with_prefix(table, 2, prefix) == rows[2]
    assert keys_with_prefix(table, 3, prefix) == []


# -- the session agent's step, against dict tables ------------------------------------------


def _world(
    completed_at: float | None,
    *,
    status: str = "dispatching",
    fenced: tuple[str, ...] = (),
    **settings: Any,
) -> Any:
    produced: list[tuple[Any, bytes | None, bytes | None, int | None]] = []
    timers: list[tuple[str, float]] = []

    async def produce(
        topic: Any,
        *,
        key: bytes | None,
        value: bytes | None,
        partition: int | None = None,
        headers: Any = None,
    ) -> Any:
        produced.append((topic, key, value, partition))
        return None

    async def schedule_at(timer_id: str, due: float, *args: Any) -> None:
        timers.append((timer_id, due))

    async def cancel_timer(timer_id: str, key: bytes) -> None:
        timers.append((timer_id, -1.0))

    state = SessionState(
        session_id=SID,
        client_id="acme",
        channels=["sms", "email"],
        recipients=1_200,
        deliveries=2_400,
        chunks=3,
        trigger="immediate",
        status=status,  # type: ignore[arg-type]
        created_at=1.0,
        source="api",
        transport={"type": "sms", "message": "hi"},
        options={},
        fences={f"{topic}/{p}": 1 for topic in fenced for p in range(4)},
    )
    sessions = {session_row(SID): records.encode(state)}
    sessions.update({chunk_row(SID, c): b"[]" for c in range(3)})
    deliveries = {SID.encode(): records.encode(Progress(final=2_400, completed_at=completed_at))}
    counter = SimpleNamespace(labels=lambda *_: SimpleNamespace(inc=lambda *_: None))
    return SimpleNamespace(
        state=state,
        produced=produced,
        timers=timers,
        produce=produce,
        schedule_at=schedule_at,
        cancel_timer=cancel_timer,
        sessions_topic=lambda lane: f"sessions.{lane}",
        settings=Settings(partitions=4, **settings),
        tables=SimpleNamespace(sessions=sessions, deliveries=deliveries, sends={}),
        topics=SimpleNamespace(
            dispatch={"sms": _Topic("dispatch.sms"), "email": _Topic("dispatch.email")},
            priority_dispatch=_Topic("dispatch.priority"),
            reports="reports",
            priority_reports="reports.priority",
            cancels="cancels",
        ),
        metrics=SimpleNamespace(purged_rows=counter),
        staged=StagedRows(),
        decoded_sessions={},
    )


class _Topic(str):
    """A topic standing in for Faust's: compares as its name."""

    def get_topic_name(self) -> str:
        return str(self)


async def _staged(coro: Any) -> Checkpoint:
    checkpoint = Checkpoint()
    event = _Event(0)  # held: the context keeps only a weak reference
    token = _current_event.set(weakref.ref(event))  # type: ignore[arg-type]
    active = _active.set(checkpoint)
    try:
        await coro
    finally:
        _active.reset(active)
        _current_event.reset(token)
    checkpoint.events.append(event)  # type: ignore[arg-type]
    return checkpoint


async def test_a_session_past_its_retention_starts_the_chain_then_deletes_its_rows() -> None:
    sb = _world(
        completed_at=1_000.0,
        status="cancelled",
        retention=60.0,
        gone_for=120.0,
        fenced=("dispatch.sms", "dispatch.email"),
    )
    checkpoint = await _staged(purge.purge_session(sb, sb.state))
    sends = [
        (topic, partition, records.decode(PurgeSends, value))
        for topic, _, value, partition in sb.produced
        if topic.startswith("dispatch.")
    ]
    assert {(t, p) for t, p, _ in sends} == {
        (t, p) for t in ("dispatch.sms", "dispatch.email") for p in range(4)
    }, "every partition of every channel's dispatch topic"
    assert {t: c.channels for t, _, c in sends} == {
        "dispatch.sms": ["sms"],
        "dispatch.email": ["email"],
    }
    [first] = [records.decode(PurgeDeliveries, v) for t, _, v, _ in sb.produced if t == "reports"]
    assert (first.chunk, first.recipients, first.channels) == (0, 1_200, ["sms", "email"])
    assert ("cancels", SID.encode(), None, None) in sb.produced, "a cancelled session's cancel"
    assert [t for t, _ in sb.timers] == [f"expire:{SID}", f"gone:{SID}"]
    # The rows, staged behind the outputs: the marker first, the session row last.
    written = [(w.key, w.value) for w in checkpoint.writes]
    assert written[0][0] == purged_row(SID) and written[0][1] is not None
    assert written[1:] == [(row, None) for row in session_rows(SID, 3)]
    marker = records.decode(records.Purged, written[0][1])
    assert marker.client_id == "acme" and marker.completed_at == 1_000.0


async def test_a_session_cancelled_while_a_channel_was_paused_keeps_its_cancel() -> None:
    """Its jobs still wait in the paused channel's topic (no fence there): only the replicated
    cancel withdraws them when the channel is resumed."""
    sb = _world(completed_at=1_000.0, status="cancelled", retention=60.0, fenced=("dispatch.sms",))
    await _staged(purge.purge_session(sb, sb.state))
    assert not [p for p in sb.produced if p[0] == "cancels"]
    assert len([p for p in sb.produced if p[0] == "dispatch.email"]) == 4, "its rows still go"


@pytest.mark.parametrize("completed_at", [None, 1e12])
async def test_a_session_not_due_is_left_alone(completed_at: float | None) -> None:
    sb = _world(completed_at=completed_at, retention=60.0)
    checkpoint = await _staged(purge.purge_session(sb, sb.state))
    assert sb.produced == [] and checkpoint.writes == []


async def test_the_deliveries_go_a_chunk_per_event_and_the_progress_last() -> None:
    sb = _world(completed_at=1_000.0)
    sb.tables.deliveries.update({row: b"{}" for row in delivery_rows(SID, 0, 1_200, ["sms"])})
    sb.tables.deliveries.update({row: b"{}" for row in delivery_rows(SID, 2, 1_200, ["sms"])})
    step = PurgeDeliveries(SID, 0, 1_200, ["sms"])
    deleted: list[bytes] = []
    while True:
        sb.produced.clear()
        checkpoint = await _staged(purge.purge_deliveries(sb, step, "reports"))
        deleted += [w.key for w in checkpoint.writes]
        checkpoint.apply()
        if not sb.produced:
            break
        [(_, _, value, _)] = sb.produced
        step = records.decode(PurgeDeliveries, value)
    assert step.chunk == 2, "three chunks of 500"
    assert deleted[-1] == SID.encode(), "the progress row with the last chunk"
    assert sb.tables.deliveries == {}, "every row of the session is gone"
