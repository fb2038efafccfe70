"""Send-by deadlines on the real broker (``options.expiresAt`` / ``options.ttlSeconds``,
``switchboard/deadline.py``): a delivery not handed to the provider by its deadline ends
``expired`` (``error_code`` and ``detail.reason``: ``deadline``, the particulars in ``error``) and is never sent
late: not after waiting for the sender's slot, not on a retry, not behind a window, not from a
backlog. The sandbox's outbox is what was handed over.

The worker has one partition and two sends in flight, so a campaign's slow sends form a backlog
that a later session's job waits behind."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import Keys, WorkerFactory, sandbox_sms_clients
from tests.integration.harness import TopicReader, Worker

pytestmark = pytest.mark.kafka

_numbers = itertools.count(1)


def _closed_window() -> dict[str, Any]:
    """A window that opens in about two hours (every day, for a minute): closed now."""
    opens = datetime.now(UTC) + timedelta(hours=2)
    return {
        "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
        "timezone": "UTC",
        "start": opens.strftime("%H:%M"),
        "end": (opens + timedelta(minutes=1)).strftime("%H:%M"),
    }


@pytest.fixture(scope="module")
def worker(
    make_worker: WorkerFactory, keys: Keys, tmp_path_factory: pytest.TempPathFactory
) -> Worker:
    """acme sends at once; other's sms window is closed for the next two hours."""
    outbox = tmp_path_factory.mktemp("outbox") / "outbox.jsonl"
    document = sandbox_sms_clients(keys, time_windows={"sms": _closed_window()})
    env = {
        "SWITCHBOARD_SANDBOX_OUTBOX": str(outbox),
        "SWITCHBOARD_PARTITIONS": "1",
        "SWITCHBOARD_MAX_IN_FLIGHT": "2",
    }
    return make_worker(env, document=document).start()


def number() -> str:
    n = next(_numbers)
    return f"+1415{300 + n // 10_000:03d}{n % 10_000:04d}"


def sent_to(worker: Worker, address: str) -> list[dict[str, Any]]:
    path = Path(worker.env()["SWITCHBOARD_SANDBOX_OUTBOX"])
    lines = path.read_text().splitlines() if path.exists() else []
    return [r for r in map(json.loads, filter(None, lines)) if r["to"] == address]


def send(
    worker: Worker,
    key: str,
    address: str,
    options: dict[str, Any],
    sandbox: dict[str, Any] | None = None,
) -> str:
    transport: dict[str, Any] = {"type": "sms", "message": "Your code is 492817"}
    if sandbox:
        transport["extras"] = {"sandbox": sandbox}
    answer = worker.post({"transport": transport, "audience": [address], "options": options}, key)
    assert answer.status == 202, answer.body
    return str(answer.body["session_id"])


def events_of(statuses: TopicReader, session_id: str) -> list[dict[str, Any]]:
    return statuses.matching(lambda e: e["session_id"] == session_id)


def expired_event(statuses: TopicReader, session_id: str) -> dict[str, Any]:
    [event] = statuses.wait(
        lambda e: e["session_id"] == session_id and e["status"] == "expired", timeout=60
    )
    assert event["error_code"] == event["detail"]["reason"] == "deadline", event
    assert event["error"].startswith("deadline ") and "expires_at" in event["detail"], event
    return dict(event)


def test_a_one_time_password_within_its_deadline_is_delivered(
    worker: Worker, statuses: TopicReader, keys: Keys
) -> None:
    """The OpenAPI example: the high-priority lane, five minutes to go or not at all."""
    address = number()
    session_id = send(worker, keys.acme, address, {"priority": "high", "ttlSeconds": 300})
    session = worker.wait_completed(session_id, keys.acme)
    assert session["counts"] == {"delivered": 1}
    assert len(sent_to(worker, address)) == 1


def test_a_deadline_that_passes_while_the_send_waits_expires_it_at_the_last_moment(
    worker: Worker, statuses: TopicReader, keys: Keys
) -> None:
    """The sandbox answers after 2.5 s (as a provider's slot or latency would), and checks
    again just before it records the send: a deadline passed meanwhile stops it."""
    address = number()
    session_id = send(worker, keys.acme, address, {"ttlSeconds": 1}, {"delay_ms": 2500})
    event = expired_event(statuses, session_id)
    assert event["error"].endswith("passed before hand-off")
    assert worker.wait_completed(session_id, keys.acme)["counts"] == {"expired": 1}
    assert sent_to(worker, address) == [], "handed over after its deadline"


def test_a_retry_that_would_be_due_after_the_deadline_expires_at_once(
    worker: Worker, statuses: TopicReader, keys: Keys
) -> None:
    """Every attempt fails retryably, 3 s apart, with 5 retries allowed and 5 s to go: the
    second attempt is made, and its failure ends the delivery ``expired``, not ``failed``
    and not a third attempt after the deadline."""
    address = number()
    options = {"ttlSeconds": 5, "retries": 5, "retryIntervalMinutes": "0.05"}
    session_id = send(worker, keys.acme, address, options, {"fail": "retryable"})
    event = expired_event(statuses, session_id)
    assert event["attempt"] == 2, event
    assert "passed before the retry due at" in event["error"]
    assert event["detail"]["last_error_code"] == "sandbox-retryable"
    assert worker.wait_completed(session_id, keys.acme)["counts"] == {"expired": 1}
    attempts = [e["attempt"] for e in events_of(statuses, session_id) if e["status"] == "failed"]
    assert attempts == [1], "only the first attempt's failure is a failed event"


def test_a_window_that_opens_after_the_deadline_expires_it_without_holding_it(
    worker: Worker, statuses: TopicReader, keys: Keys
) -> None:
    address = number()
    session_id = send(worker, keys.other, address, {"ttlSeconds": 600})
    event = expired_event(statuses, session_id)
    assert "passed before its window opens at" in event["error"]
    assert worker.wait_completed(session_id, keys.other)["counts"] == {"expired": 1}
    assert "deferred" not in [e["status"] for e in events_of(statuses, session_id)]
    assert sent_to(worker, address) == []


def test_a_job_that_waited_in_a_backlog_past_its_deadline_is_not_sent(
    worker: Worker, statuses: TopicReader, keys: Keys
) -> None:
    """A campaign of six 1.5 s sends, two at a time, holds the only partition for 4.5 s; a
    message with one second to go queued behind it expires when its turn comes."""
    campaign = [number() for _ in range(6)]
    answer = worker.post(
        {
            "transport": {
                "type": "sms",
                "message": "Polls open at 7am",
                "extras": {"sandbox": {"delay_ms": 1500}},
            },
            "audience": campaign,
        },
        keys.acme,
    )
    assert answer.status == 202, answer.body
    address = number()
    session_id = send(worker, keys.acme, address, {"ttlSeconds": 1})
    event = expired_event(statuses, session_id)
    assert event["error"].endswith("passed before hand-off")
    assert worker.wait_completed(session_id, keys.acme)["counts"] == {"expired": 1}
    assert sent_to(worker, address) == []
    campaign_done = worker.wait_completed(str(answer.body["session_id"]), keys.acme)
    assert campaign_done["counts"] == {"delivered": 6}, (
        "a campaign without a deadline is unaffected"
    )
