"""The rules of sending, end to end on the real broker: scheduled and manual triggers, time
windows, retries and cancellation (issue 4). Deliveries go to the sandbox, whose outbox (one
JSON line per send, with its time) tells exactly what was sent and when."""

from __future__ import annotations

import itertools
import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from streams.clients import publish_clients
from switchboard.clients import api_key_digest, parse_client
from switchboard.settings import Settings
from tests.integration.conftest import Keys, WorkerFactory
from tests.integration.harness import (
    TopicReader,
    Worker,
    http,
    read_topic,
    status_reader,
    wait_for,
)

pytestmark = pytest.mark.kafka


_numbers = itertools.count(int(time.time()) % 500_000)


def window_opening_soon() -> tuple[dict[str, Any], datetime]:
    """A UTC window that opens at the next minute boundary at least 10 s away, for 3 minutes."""
    now = datetime.now(UTC)
    opens = (now + timedelta(seconds=70)).replace(second=0, microsecond=0)
    closes = opens + timedelta(minutes=3)
    window = {
        "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
        "start": opens.strftime("%H:%M"),
        "end": closes.strftime("%H:%M"),
        "timezone": "UTC",
    }
    return window, opens


@pytest.fixture(scope="module")
def worker(
    make_worker: WorkerFactory, keys: Keys, tmp_path_factory: pytest.TempPathFactory
) -> Worker:
    outbox = tmp_path_factory.mktemp("outbox") / "outbox.jsonl"
    document = {
        "clients": {
            "acme": {
                "api_keys": [api_key_digest(keys.acme)],
                "default_channels": ["sms"],
                "channels": {"sms": {"provider": "sandbox"}, "slack": {"provider": "sandbox"}},
            },
            "other": {
                "api_keys": [api_key_digest(keys.other)],
                "default_channels": ["sms"],
                "channels": {"sms": {"provider": "sandbox"}},
            },
        }
    }
    return make_worker({"SWITCHBOARD_SANDBOX_OUTBOX": str(outbox)}, document=document).start()


@pytest.fixture(scope="module")
def statuses(kafka: Any, worker: Worker) -> Iterator[TopicReader]:
    reader = status_reader(kafka.bootstrap_servers, worker.topic("status"))
    yield reader
    reader.close()


def outbox(worker: Worker) -> list[dict[str, Any]]:
    path = Path(worker.env()["SWITCHBOARD_SANDBOX_OUTBOX"])
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def sent_to(worker: Worker, address: str) -> list[dict[str, Any]]:
    return [r for r in outbox(worker) if r["to"] == address]


def number() -> str:
    """A valid number no other test of the session has used (they share the outbox)."""
    n = next(_numbers)
    return f"+1415{200 + n // 10_000:03d}{n % 10_000:04d}"


def send(worker: Worker, key: str, audience: list[Any], **options: Any) -> str:
    body: dict[str, Any] = {"transport": {"type": "sms", "message": "Hi"}, "audience": audience}
    extras = options.pop("extras", None)
    if extras:
        body["transport"]["extras"] = extras
    if options:
        body["options"] = options
    answer = worker.post(body, key)
    assert answer.status == 202, answer.body
    return str(answer.body["session_id"])


def events_of(
    statuses: TopicReader, session_id: str, count: int, timeout: float = 60
) -> list[dict[str, Any]]:
    return statuses.wait(lambda e: e["session_id"] == session_id, count, timeout)


def at(event: dict[str, Any]) -> float:
    return float(event["occurred_at"].timestamp())


# -- scheduled and manual ----------------------------------------------------------------------


def test_a_scheduled_session_is_released_at_its_time(
    worker: Worker, keys: Keys, statuses: TopicReader
) -> None:
    due = datetime.now(UTC) + timedelta(seconds=6)
    address = number()
    session_id = send(
        worker, keys.acme, [address], trigger="scheduled", scheduledTimestamp=due.isoformat()
    )
    [scheduled] = events_of(statuses, session_id, 1)
    assert scheduled["status"] == "scheduled" and scheduled["recipient"] is None
    assert worker.session(session_id, keys.acme).body["status"] == "scheduled"
    assert sent_to(worker, address) == []

    events = events_of(statuses, session_id, 5, timeout=60)
    assert [e["status"] for e in events] == [
        "scheduled",
        "accepted",
        "sent",
        "delivered",
        "completed",
    ]
    [sent] = sent_to(worker, address)
    lateness = sent["at"] - due.timestamp()
    assert 0 <= lateness < 3, f"released {lateness:.2f}s after its time"


def test_a_scheduled_time_in_the_past_sends_at_once(
    worker: Worker, keys: Keys, statuses: TopicReader
) -> None:
    past = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    session_id = send(worker, keys.acme, [number()], trigger="scheduled", scheduledTimestamp=past)
    events = events_of(statuses, session_id, 4)
    assert [e["status"] for e in events] == ["accepted", "sent", "delivered", "completed"]


def test_a_manual_session_waits_for_its_trigger(
    worker: Worker, keys: Keys, statuses: TopicReader
) -> None:
    address = number()
    session_id = send(worker, keys.acme, [address], trigger="manual")
    [waiting] = events_of(statuses, session_id, 1)
    assert waiting["detail"]["trigger"] == "manual"
    time.sleep(2)
    assert (
        sent_to(worker, address) == []
        and worker.session(session_id, keys.acme).body["status"] == "waiting"
    )

    trigger = http("POST", f"{worker.url}/v1/sessions/{session_id}/trigger", key=keys.acme)
    assert trigger.status == 202, trigger.body
    events = events_of(statuses, session_id, 5)
    assert [e["status"] for e in events][-1] == "completed"
    assert len(sent_to(worker, address)) == 1

    again = http("POST", f"{worker.url}/v1/sessions/{session_id}/trigger", key=keys.acme)
    assert again.status == 409 and "nothing to trigger" in again.body["errors"][0]["error"]
    assert (
        http("POST", f"{worker.url}/v1/sessions/{session_id}/trigger", key=keys.other).status == 404
    )
    assert (
        http("POST", f"{worker.url}/v1/sessions/{uuid.uuid4()}/trigger", key=keys.acme).status
        == 404
    )


def test_include_failed_sends_the_failed_deliveries_again(
    worker: Worker, keys: Keys, statuses: TopicReader
) -> None:
    audience = [number(), number()]
    # Every first attempt fails permanently (the sandbox's scripted failure); a re-send is
    # attempt 2 and goes through.
    session_id = send(
        worker,
        keys.acme,
        audience,
        trigger="manual",
        extras={"sandbox": {"fail": "permanent", "fail_attempts": 1}},
    )
    events_of(statuses, session_id, 1)
    url = f"{worker.url}/v1/sessions/{session_id}/trigger"
    assert http("POST", url, key=keys.acme).status == 202
    first = statuses.wait(
        lambda e: e["session_id"] == session_id and e["status"] == "completed", 1, 60
    )[0]
    assert first["detail"]["counts"] == {"failed": 2}

    assert http("POST", f"{url}?include_failed=true", key=keys.acme).status == 202
    completions = statuses.wait(
        lambda e: e["session_id"] == session_id and e["status"] == "completed", 2, 60
    )
    assert completions[-1]["detail"]["counts"] == {"delivered": 2}
    for address in audience:
        mine = [
            (e["status"], e["attempt"])
            for e in statuses.matching(lambda e, a=address: e["recipient"] == a)
        ]
        assert mine == [
            ("accepted", 0),
            ("failed", 1),
            ("accepted", 2),
            ("sent", 2),
            ("delivered", 2),
        ]
        assert [r["attempt"] for r in sent_to(worker, address)] == [2]
    session = worker.session(session_id, keys.acme).body
    assert session["status"] == "completed" and session["counts"] == {"delivered": 2}

    nothing = http("POST", f"{url}?include_failed=true", key=keys.acme)
    assert nothing.status == 409 and "no failed deliveries" in nothing.body["errors"][0]["error"]


# -- retries -----------------------------------------------------------------------------------


def test_retryable_failures_are_retried_with_their_intervals(
    worker: Worker, keys: Keys, statuses: TopicReader
) -> None:
    address = number()
    session_id = send(
        worker,
        keys.acme,
        [address],
        retries=3,
        retryIntervalMinutes="0.03,0.05",
        extras={"sandbox": {"fail": "retryable", "fail_attempts": 2}},
    )
    events = events_of(statuses, session_id, 6, timeout=60)
    mine = [(e["status"], e["attempt"]) for e in events if e["recipient"] == address]
    assert mine == [("accepted", 0), ("failed", 1), ("failed", 2), ("sent", 3), ("delivered", 3)]
    first, second = (e for e in events if e["status"] == "failed")
    assert first["detail"]["retry_at"] and second["detail"]["retry_at"]
    assert at(second) - at(first) >= 0.03 * 60 - 0.5, "attempt 2 waited the first interval"
    assert events[-1]["status"] == "completed" and events[-1]["detail"]["counts"] == {
        "delivered": 1
    }
    assert [r["attempt"] for r in sent_to(worker, address)] == [3]


def test_the_last_failure_is_final(worker: Worker, keys: Keys, statuses: TopicReader) -> None:
    address = number()
    session_id = send(
        worker,
        keys.acme,
        [address],
        retries=1,
        retryIntervalMinutes="0.02",
        extras={"sandbox": {"fail": "retryable"}},
    )
    events = events_of(statuses, session_id, 4, timeout=60)
    failed = [e for e in events if e["status"] == "failed"]
    assert [e["attempt"] for e in failed] == [1, 2]
    assert "retry_at" in failed[0]["detail"] and not failed[1]["detail"], (
        "the last failure is final: no retry"
    )
    assert events[-1]["status"] == "completed" and events[-1]["detail"]["counts"] == {"failed": 1}


def test_permanent_failures_are_not_retried(
    worker: Worker, keys: Keys, statuses: TopicReader
) -> None:
    session_id = send(
        worker,
        keys.acme,
        [number()],
        retries=5,
        retryIntervalMinutes="0.02",
        extras={"sandbox": {"fail": "permanent"}},
    )
    events = events_of(statuses, session_id, 3)
    assert [(e["status"], e["attempt"]) for e in events] == [
        ("accepted", 0),
        ("failed", 1),
        ("completed", 0),
    ]


# -- cancellation ------------------------------------------------------------------------------


def test_cancelling_a_scheduled_session_sends_nothing(
    worker: Worker, keys: Keys, statuses: TopicReader
) -> None:
    due = datetime.now(UTC) + timedelta(seconds=5)
    addresses = [number(), number()]
    session_id = send(
        worker, keys.acme, addresses, trigger="scheduled", scheduledTimestamp=due.isoformat()
    )
    cancel = http("POST", f"{worker.url}/v1/sessions/{session_id}/cancel", key=keys.acme)
    assert cancel.status == 202, cancel.body
    events = events_of(statuses, session_id, 1 + 1 + 2 + 1)
    assert [e["status"] for e in events if e["recipient"]] == ["cancelled", "cancelled"]
    assert events[-1]["detail"]["counts"] == {"cancelled": 2}
    time.sleep(max(0.0, due.timestamp() - time.time()) + 2)
    assert all(sent_to(worker, a) == [] for a in addresses)
    assert (
        http("POST", f"{worker.url}/v1/sessions/{session_id}/cancel", key=keys.other).status == 404
    )


def test_nothing_is_sent_after_a_cancel_is_acknowledged(
    worker: Worker, keys: Keys, statuses: TopicReader
) -> None:
    audience = [number() for _ in range(400)]
    # Slow sends (0.5 s each, 100 in flight at most): the cancel lands with sends in flight and
    # most of the audience still queued.
    session_id = send(worker, keys.acme, audience, extras={"sandbox": {"delay_ms": 500}})
    wait_for(
        lambda: len([r for r in outbox(worker) if r["to"] in audience]) >= 3,
        60,
        0.05,
        "the first sends",
    )
    cancel = http("POST", f"{worker.url}/v1/sessions/{session_id}/cancel", key=keys.acme)
    acknowledged = time.time()
    assert cancel.status == 202, cancel.body
    completed = statuses.wait(
        lambda e: e["session_id"] == session_id and e["status"] == "completed", 1, 60
    )[0]
    time.sleep(1)
    sends = [r for r in outbox(worker) if r["to"] in audience]
    assert all(r["at"] <= acknowledged for r in sends), "a send after the cancel was acknowledged"
    counts = completed["detail"]["counts"]
    assert counts.get("delivered", 0) == len(sends)
    assert counts.get("cancelled", 0) == len(audience) - len(sends) > 0


# -- time windows ------------------------------------------------------------------------------


def test_outside_its_window_a_message_is_deferred_then_released(
    worker: Worker, kafka: Any, keys: Keys, statuses: TopicReader
) -> None:
    # The client gets a window that opens at the next minute boundary (at least 10 s away),
    # written to the clients topic while the worker runs: no restart needed.
    window, opens = window_opening_soon()
    other = parse_client(
        "other",
        {
            "api_keys": [api_key_digest(keys.other)],
            "default_channels": ["sms"],
            "channels": {"sms": {"provider": "sandbox"}},
            "time_windows": {"sms": window},
        },
    )
    publish_clients(
        Settings.from_env(bootstrap_servers=kafka.bootstrap_servers, topic_prefix=worker.prefix),
        [other],
    )
    probe = number()

    def deferred() -> bool:
        session_id = send(worker, keys.other, [probe])
        return events_of(statuses, session_id, 2)[1]["status"] == "deferred"

    # The worker picks the change up within a moment; until then a send goes straight out.
    wait_for(deferred, 20, 0.5, "the new window to apply")
    addresses = [number() for _ in range(3)]
    session_id = send(worker, keys.other, addresses)
    events = events_of(statuses, session_id, 6)
    assert sorted(e["status"] for e in events) == ["accepted"] * 3 + ["deferred"] * 3
    assert {
        datetime.fromisoformat(e["detail"]["release_at"])
        for e in events
        if e["status"] == "deferred"
    } == {opens}
    # The chunk is held by one timer, not one per recipient.
    timers = [
        json.loads(r["value"])["id"]
        for r in read_topic(kafka.bootstrap_servers, worker.topic("schedule"))
        if session_id in json.loads(r["value"]).get("id", "")
    ]
    assert timers == [f"window:{session_id}:0:sms:{opens.timestamp():.0f}"], timers
    before = {a: len(sent_to(worker, a)) for a in addresses}

    remaining = opens.timestamp() - time.time()
    events = events_of(statuses, session_id, 13, timeout=remaining + 60)
    for address in addresses:
        assert [e["status"] for e in events if e["recipient"] == address] == [
            "accepted",
            "deferred",
            "sent",
            "delivered",
        ]
        released = sent_to(worker, address)[before[address] :]
        assert len(released) == 1
        assert opens.timestamp() <= released[0]["at"] < opens.timestamp() + 5
    assert events[-1]["status"] == "completed"
