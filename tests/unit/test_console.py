"""The web console's pure half (switchboard/console.py) and the feed's routing of events to the
streams of their client (streams/console_feed.py, without Kafka)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from streams.console_feed import StatusFeed
from switchboard.console import RECENT, Activity, parse_statuses, recent, visible
from switchboard.settings import Settings
from switchboard.status import StatusEvent
from switchboard.status_avro import encode_status_event

AT = datetime(2026, 12, 6, 1, 2, 3, tzinfo=UTC)


def event(
    session_id: str = "s-1", client_id: str = "acme", status: str = "delivered"
) -> dict[str, Any]:
    return {"session_id": session_id, "client_id": client_id, "status": status, "occurred_at": AT}


def test_a_client_sees_only_its_own_events() -> None:
    assert visible(event(), "acme")
    assert not visible(event(client_id="other"), "acme")
    assert not visible({"session_id": "s-1", "status": "sent"}, "acme")  # no client: never
    assert not visible(event(client_id=""), "")
    assert visible(event(session_id="s-1"), "acme", "s-1")
    assert not visible(event(session_id="s-2"), "acme", "s-1")


def test_activity_folds_a_burst_into_counts_and_the_newest_events() -> None:
    activity = Activity()
    assert not activity and activity.drain() is None
    for n in range(RECENT + 5):
        activity.add({**event(status="sent" if n % 2 else "delivered"), "recipient": str(n)})
    activity.add(event(session_id="s-2", status="completed"))
    update = activity.drain()
    assert update is not None
    by_id = {s["session_id"]: s for s in update["sessions"]}
    assert by_id["s-1"] == {
        "session_id": "s-1",
        "statuses": {"delivered": 13, "sent": 12},
        "completed": False,
    }
    assert by_id["s-2"]["completed"] is True
    assert len(update["events"]) == RECENT  # bounded, the newest kept
    assert update["events"][-1]["status"] == "completed"
    assert update["events"][0]["occurred_at"] == "2026-12-06T01:02:03Z"
    assert activity.drain() is None  # drained


def test_recent_is_newest_first_and_limited() -> None:
    rows = [(3.0, "c"), (1.0, "a"), (2.0, "b"), (3.0, "d")]
    assert recent(rows, 3) == ["d", "c", "b"]
    assert recent([], 5) == []


def test_status_filter_names_every_unknown_status() -> None:
    assert parse_statuses(None) == (frozenset(), [])
    assert parse_statuses(" failed, deferred ,") == (frozenset({"failed", "deferred"}), [])
    assert parse_statuses("failed,bogus,completed")[1] == ["bogus", "completed"]


def status_record(session_id: str, client_id: str, status: str = "sent") -> tuple[bytes, Any]:
    avro = StatusEvent(
        session_id=session_id,
        client_id=client_id,
        status=status,  # type: ignore[arg-type]
        occurred_at=AT,
    ).to_avro()
    return encode_status_event(avro)


@pytest.fixture
def feed(monkeypatch: pytest.MonkeyPatch) -> StatusFeed:
    async def no_kafka(self: StatusFeed) -> None:
        return None

    monkeypatch.setattr(StatusFeed, "_run", no_kafka)
    return StatusFeed(Settings.from_env())


async def test_the_feed_hands_each_event_only_to_its_clients_streams(feed: StatusFeed) -> None:
    acme = feed.subscribe("acme")
    only = feed.subscribe("acme", "s-2")
    other = feed.subscribe("other")
    for session_id, client_id in (
        ("s-1", "acme"),
        ("s-2", "acme"),
        ("s-3", "other"),
        ("s-4", "nobody"),
    ):
        value, headers = status_record(session_id, client_id)
        feed._handle(session_id.encode(), value, headers)
    feed._handle(b"s-5", b"\x07not a status event", [])
    assert feed.undecodable == 1

    def sessions(update: dict[str, Any] | None) -> set[str]:
        assert update is not None
        return {s["session_id"] for s in update["sessions"]}

    assert sessions(await acme.next_update(0)) == {"s-1", "s-2"}
    assert sessions(await only.next_update(0)) == {"s-2"}
    assert sessions(await other.next_update(0)) == {"s-3"}
    assert await acme.next_update(0) is None  # nothing new


async def test_the_feed_runs_only_while_a_stream_is_open(feed: StatusFeed) -> None:
    assert not feed.running
    first, second = feed.subscribe("acme"), feed.subscribe("other")
    assert feed._task is not None
    first.close()
    assert feed._task is not None  # one stream still open
    second.close()
    second.close()  # closing twice is harmless
    assert feed._task is None and not feed.running


async def test_a_client_nobody_watches_is_not_decoded_twice(
    feed: StatusFeed, monkeypatch: pytest.MonkeyPatch
) -> None:
    import streams.console_feed as module

    decoded: list[bytes] = []
    real = module.decode_status

    def counting(value: bytes | None, headers: Any) -> dict[str, Any]:
        decoded.append(value or b"")
        return real(value, headers)

    monkeypatch.setattr(module, "decode_status", counting)
    feed.subscribe("acme")
    for _ in range(3):
        feed._handle(b"s-9", *status_record("s-9", "other"))
    assert len(decoded) == 1  # the first tells the session's client; the rest are skipped
