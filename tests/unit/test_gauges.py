"""The gauges' refresh (streams/gauges.py) on a fake app: what it sets, and that a partition this
worker no longer owns loses its lag series."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import pytest

from streams import gauges
from streams.checkpoint import StagedRows
from streams.metrics import Metrics
from switchboard import records
from switchboard.backlog import OpenSessions, TimerTally
from switchboard.keys import webhook_timer, window_timer
from switchboard.timers import b64

TOPICS = [
    "instructions",
    "sessions",
    "reports",
    "schedule",
    "calls",
    "webhooks",
    "sessions.priority",
    "dispatch.priority",
    "reports.priority",
]


def _topic(name: str) -> Any:
    return SimpleNamespace(get_topic_name=lambda: f"t.{name}")


def world(assigned: list[tuple[str, int]]) -> tuple[Any, Callable[[], Awaitable[None]]]:
    timers: list[Callable[[], Awaitable[None]]] = []
    app = SimpleNamespace(
        rebalancing=False,
        tables=SimpleNamespace(recovery=SimpleNamespace(in_recovery=False)),
        assignor=SimpleNamespace(
            assigned_actives=lambda: [
                SimpleNamespace(topic=f"t.{t}", partition=p) for t, p in assigned
            ]
        ),
        timer=lambda interval, name: lambda fn: timers.append(fn) or fn,
    )
    topics = SimpleNamespace(**{n.replace(".", "_"): _topic(n) for n in TOPICS})
    topics.priority_sessions, topics.priority_dispatch = (
        _topic("sessions.priority"),
        _topic("dispatch.priority"),
    )
    topics.priority_reports, topics.dispatch = (
        _topic("reports.priority"),
        {"sms": _topic("dispatch.sms")},
    )
    progress = records.encode(records.Progress(final=1, completed_at=5.0))

    def replica(name: str, positions: dict[int, int]) -> Any:
        return SimpleNamespace(topic=f"t.{name}", positions=lambda: dict(positions))

    sb = SimpleNamespace(
        app=app,
        metrics=Metrics(),
        topics=topics,
        optouts=replica("optouts", {}),
        manager_state=replica("manager-state", {0: 3, 1: 0}),
        cancels=replica("cancels", {0: 1}),
        timer_tally=TimerTally(frozenset({"t.dispatch.sms"})),
        open_sessions=OpenSessions(),
        tables=SimpleNamespace(
            sessions={b"s-open": b"{}", b"s-done": b"{}", b"s-open:0": b"[]"},
            deliveries={b"s-done": progress},
        ),
        staged=StagedRows(),
    )
    gauges.register(sb)  # type: ignore[arg-type]
    return sb, timers[0]


def value(sb: Any, name: str, **labels: str) -> float | None:
    return sb.metrics.registry.get_sample_value(name, labels)  # type: ignore[no-any-return]


async def test_refresh_sets_every_gauge_and_drops_partitions_moved_away(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lag = {
        ("t.dispatch.sms", 0): 7,
        ("t.dispatch.sms", 1): 0,
        ("t.webhooks", 1): 2,
        ("t.sessions", 1): 1,
    }
    monkeypatch.setattr(gauges, "_lag", lambda sb, partitions: {tp: lag[tp] for tp in partitions})
    monkeypatch.setattr(gauges, "SCAN_SLICE", 1)  # the recount yields after every key
    assigned = [
        ("dispatch.sms", 0),
        ("dispatch.sms", 1),
        ("webhooks", 1),
        ("sessions", 1),
        ("status", 1),
    ]
    sb, refresh = world(assigned)
    release = records.encode(records.Release("s-open", 0, "sms", 9e9, [1, 2, 3]))
    sb.timer_tally.set(
        window_timer("s-open", 0, "sms", 9e9), {"value": b64(release), "set_at": 100.0}
    )
    sb.timer_tally.set(webhook_timer("e", 2), {"topic": "t.webhooks", "set_at": 50.0})

    await refresh()
    assert value(sb, "switchboard_consumer_lag", topic="t.dispatch.sms", partition="0") == 7
    assert value(sb, "switchboard_consumer_lag", topic="t.dispatch.sms", partition="1") == 0
    assert (
        value(sb, "switchboard_consumer_lag", topic="t.status", partition="1") is None
    )  # no agent reads it
    assert value(sb, "switchboard_webhook_backlog", state="queued") == 2
    assert value(sb, "switchboard_webhook_backlog", state="retrying") == 1
    assert value(sb, "switchboard_deferred_deliveries") == 3
    assert (value(sb, "switchboard_deferred_oldest_age_seconds") or 0) > 1e9  # set at t=100 s
    assert value(sb, "switchboard_sessions_open") == 1  # s-open; s-done completed, s-open:0 a chunk
    assert value(sb, "switchboard_replica_position", topic="t.manager-state", partition="0") == 3
    assert value(sb, "switchboard_replica_position", topic="t.cancels", partition="0") == 1

    # Partition 0 of the dispatch topic moved to another worker: its series goes.
    assigned[:] = [("dispatch.sms", 1), ("webhooks", 1), ("sessions", 1)]
    await refresh()
    assert value(sb, "switchboard_consumer_lag", topic="t.dispatch.sms", partition="0") is None
    assert value(sb, "switchboard_consumer_lag", topic="t.dispatch.sms", partition="1") == 0


async def test_a_failed_read_keeps_the_last_lag_and_a_rebalance_skips_the_refresh(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(gauges, "_lag", lambda sb, partitions: dict.fromkeys(partitions, 4))
    sb, refresh = world([("reports", 2)])
    await refresh()

    def broken(sb: Any, partitions: Any) -> Any:
        raise RuntimeError("broker away")

    monkeypatch.setattr(gauges, "_lag", broken)
    sb.open_sessions.opened("new")
    await refresh()
    assert value(sb, "switchboard_consumer_lag", topic="t.reports", partition="2") == 4
    assert value(sb, "switchboard_sessions_open") == 2  # the other gauges were refreshed
    sb.app.rebalancing = True
    sb.open_sessions.opened("newer")
    await refresh()
    assert value(sb, "switchboard_sessions_open") == 2
