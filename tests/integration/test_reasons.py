"""Why was it held, and can I see it (issue 14, part 4), end to end on the real broker.

* A delivery held by its window says which window and zone hold it, and until when: a recipient
  whose profile names its zone, and a Russian mobile read in all sixteen of its zones.
* Suppressed and cancelled deliveries, and a cancelled session, say why (``detail.reason``).
* ``GET /v1/sessions/{id}?status=`` lists only the deliveries in those statuses, with their
  reason, pages through ``next_offset``, and answers 400 naming a status it does not know.
* A session's lifecycle is replayed in order from the status topic (``switchboard tail
  --from-beginning --session``), each change once with its own id.

The window is computed from the time the test runs: it opens eight hours after the current UTC
hour and lasts 13 hours, so it is closed now in the recipient's zone (Asia/Kathmandu, UTC+5:45)
and in the Russian mobile's westernmost zones, and its common opening in all sixteen zones (a
three-hour span, the zones spanning ten hours) is hours ahead.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from switchboard import optout
from switchboard.clients import api_key_digest
from tests.integration.conftest import Keys, WorkerFactory
from tests.integration.harness import (
    ROOT,
    TopicReader,
    Worker,
    http,
    produce,
    status_reader,
    wait_for,
)

pytestmark = pytest.mark.kafka

RUSSIAN_MOBILE = "+79161234567"
EVERY_DAY = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
_numbers = itertools.count(int(time.time()) % 400_000)


def number() -> str:
    n = next(_numbers)
    return f"+1415{200 + n // 10_000:03d}{n % 10_000:04d}"


def window() -> dict[str, Any]:
    start = (datetime.now(UTC).hour + 8) % 24
    return {
        "days": EVERY_DAY,
        "start": f"{start:02d}:00",
        "end": f"{(start + 13) % 24:02d}:00",
        "timezone": "recipient",
    }


@pytest.fixture(scope="module")
def held_window() -> dict[str, Any]:
    return window()


@pytest.fixture(scope="module")
def worker(make_worker: WorkerFactory, keys: Keys, held_window: dict[str, Any]) -> Worker:
    document = {
        "clients": {
            "acme": {
                "api_keys": [api_key_digest(keys.acme)],
                "default_channels": ["sms"],
                "channels": {"sms": {"provider": "sandbox"}},
                "time_windows": {"sms": held_window},
            },
            "other": {
                "api_keys": [api_key_digest(keys.other)],
                "default_channels": ["sms"],
                "channels": {"sms": {"provider": "sandbox"}},
            },
        }
    }
    return make_worker(document=document).start()


@pytest.fixture(scope="module")
def statuses(kafka: Any, worker: Worker) -> Iterator[TopicReader]:
    reader = status_reader(kafka.bootstrap_servers, worker.topic("status"))
    yield reader
    reader.close()


def events_of(statuses: TopicReader, session_id: str, count: int) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = statuses.wait(lambda e: e["session_id"] == session_id, count, 60)
    return found


def recipients(worker: Worker, key: str, session_id: str, query: str) -> Any:
    return http("GET", f"{worker.url}/v1/sessions/{session_id}?{query}", key=key)


def test_a_deferral_says_which_window_and_zone_hold_it(
    worker: Worker, keys: Keys, statuses: TopicReader, held_window: dict[str, Any]
) -> None:
    audience = [{"phone": "+9779812345678", "timezone": "Asia/Kathmandu"}, RUSSIAN_MOBILE]
    answer = worker.post(
        {"transport": {"type": "sms", "message": "Later"}, "audience": audience}, keys.acme
    )
    assert answer.status == 202, answer.body
    session_id = answer.body["session_id"]
    events = events_of(statuses, session_id, 4)
    deferred = {e["recipient"]: e for e in events if e["status"] == "deferred"}
    assert set(deferred) == {"+9779812345678", RUSSIAN_MOBILE}, [e["status"] for e in events]
    configured = {
        "days": ",".join(EVERY_DAY),
        "start": held_window["start"],
        "end": held_window["end"],
        "timezone": "recipient",
    }
    for event in deferred.values():
        detail = event["detail"]
        assert (event["error_code"], detail["reason"]) == ("window-closed", "window-closed")
        assert detail["window"] == configured
        release = datetime.fromisoformat(detail["release_at"])
        # The release is the window's opening in the zone named: the one that held it.
        assert (
            release.astimezone(ZoneInfo(detail["zone"])).strftime("%H:%M") == held_window["start"]
        )
        assert detail["zone"] in event["error"] and detail["release_at"] in event["error"]

    nepal = deferred["+9779812345678"]["detail"]
    assert nepal["zone"] == "Asia/Kathmandu" and "zones" not in nepal
    russia = deferred[RUSSIAN_MOBILE]["detail"]
    assert len(russia["zones"]) >= 10 and russia["zone"] in russia["zones"], russia
    assert "time zones" in deferred[RUSSIAN_MOBILE]["error"]

    # The session's document shows the same, filtered, and pages through next_offset.
    def held() -> Any:
        page = recipients(worker, keys.acme, session_id, "status=deferred")
        return page if page.status == 200 and len(page.body["recipients"]) == 2 else None

    page = wait_for(held, 30, 0.2, "both deferrals in the session's document")
    for entry in page.body["recipients"]:
        assert (entry["status"], entry["reason"], entry["error_code"]) == (
            "deferred",
            "window-closed",
            "window-closed",
        )
        assert entry["error"] == deferred[entry["recipient"]]["error"]
    assert page.body["next_offset"] is None
    first = recipients(worker, keys.acme, session_id, "status=deferred&limit=1")
    assert [e["index"] for e in first.body["recipients"]] == [0] and first.body["next_offset"] == 1
    rest = recipients(worker, keys.acme, session_id, "status=deferred&limit=1&offset=1")
    assert [e["index"] for e in rest.body["recipients"]] == [1] and rest.body["next_offset"] is None
    none = recipients(worker, keys.acme, session_id, "status=delivered,failed")
    assert none.status == 200 and none.body["recipients"] == [] and none.body["next_offset"] is None


def test_an_unknown_status_is_a_400_naming_it(worker: Worker, keys: Keys) -> None:
    session_id = worker.send_sms(keys.other, [number()])
    for query, named in (
        ("status=deferred,held", "held"),
        ("status=completed", "completed"),
        ("status=sent,nope,gone", "gone, nope"),
    ):
        answer = recipients(worker, keys.other, session_id, query)
        assert answer.status == 400, answer.body
        assert answer.body["errors"][0]["field"] == "status"
        assert named in answer.body["errors"][0]["error"], answer.body


def test_suppressed_deliveries_say_why_and_the_filter_finds_them(
    worker: Worker, kafka: Any, keys: Keys, statuses: TopicReader
) -> None:
    # An opt-out on the opt-out topic, as a STOP records it; it reaches the worker's replica
    # within a moment: until then a send to the number goes out.
    stopped = number()
    produce(
        kafka.bootstrap_servers,
        worker.topic("optouts"),
        json.dumps(
            {"at": time.time(), "source": "keyword", "detail": "STOP", "channel": "sms"}
        ).encode(),
        key=optout.key("other", stopped),
    )

    def suppressed_session() -> str | None:
        session_id = worker.send_sms(keys.other, [stopped, number()])
        events = events_of(statuses, session_id, 5)  # 2 accepted, the outcomes, completed
        final = [e for e in events if e["recipient"] == stopped and e["status"] != "accepted"]
        return session_id if final and final[0]["status"] == "suppressed" else None

    session_id = wait_for(suppressed_session, 30, 0.5, "the opt-out to reach the worker")
    events = events_of(statuses, session_id, 6)
    event = next(e for e in events if e["status"] == "suppressed")
    assert (event["error_code"], event["detail"]["reason"]) == ("opted-out", "opted-out")
    assert event["error"]
    worker.wait_completed(session_id, keys.other)
    page = recipients(worker, keys.other, session_id, "status=suppressed")
    assert [(e["index"], e["reason"], e["error_code"]) for e in page.body["recipients"]] == [
        (0, "opted-out", "opted-out")
    ]
    both = recipients(worker, keys.other, session_id, "status=suppressed,delivered")
    assert [e["status"] for e in both.body["recipients"]] == ["suppressed", "delivered"]

    # A provider's refusal for good: its own code stays, the reason is provider-suppressed.
    answer = worker.post(
        {
            "transport": {
                "type": "sms",
                "message": "Hi",
                "extras": {"sandbox": {"fail": "suppressed"}},
            },
            "audience": [number()],
        },
        keys.other,
    )
    assert answer.status == 202, answer.body
    refused = next(
        e for e in events_of(statuses, answer.body["session_id"], 3) if e["status"] == "suppressed"
    )
    assert (refused["error_code"], refused["detail"]["reason"]) == (
        "sandbox-suppressed",
        "provider-suppressed",
    )


def test_a_cancelled_session_and_its_deliveries_say_why(
    worker: Worker, keys: Keys, statuses: TopicReader
) -> None:
    session_id = worker.send_sms(keys.other, [number(), number()], trigger="manual")
    cancel = http("POST", f"{worker.url}/v1/sessions/{session_id}/cancel", key=keys.other)
    assert cancel.status == 202, cancel.body
    events = events_of(statuses, session_id, 5)  # accepted (manual), cancelled x3, completed
    session_event = next(e for e in events if e["status"] == "cancelled" and e["recipient"] is None)
    assert (session_event["error_code"], session_event["detail"]["reason"]) == (
        "cancelled",
        "cancelled",
    )
    assert session_event["error"]
    worker.wait_completed(session_id, keys.other)
    page = recipients(worker, keys.other, session_id, "status=cancelled")
    assert [(e["index"], e["reason"]) for e in page.body["recipients"]] == [
        (0, "cancelled"),
        (1, "cancelled"),
    ]
    told = [e for e in events_of(statuses, session_id, 5) if e["recipient"] is not None]
    assert {e["detail"].get("reason") for e in told if e["status"] == "cancelled"} == {"cancelled"}


def test_a_sessions_lifecycle_replays_in_order_from_the_status_topic(
    worker: Worker, keys: Keys, statuses: TopicReader
) -> None:
    """``switchboard tail --from-beginning --session`` reads the status topic again (no group,
    nothing committed): the session's events come in the order they were published, each state
    change once with its own id, and ``completed`` last."""
    audience = [number(), number(), number()]
    session_id = worker.send_sms(keys.other, audience)
    worker.wait_completed(session_id, keys.other)
    published = events_of(statuses, session_id, 10)  # 3 x (accepted, sent, delivered), completed
    command = [sys.executable, "-m", "cli.main", "tail", "--from-beginning"]
    command += ["--session", session_id, "--json"]
    command += ["--count", str(len(published)), "--idle-timeout", "20"]
    tail = subprocess.run(
        command,
        cwd=ROOT,
        env=worker.env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    replayed = [json.loads(line) for line in tail.stdout.splitlines() if line.startswith("{")]
    assert [e["event_id"] for e in replayed] == [e["event_id"] for e in published]
    assert len({e["event_id"] for e in replayed}) == len(replayed), "one id per state change"
    for address in audience:
        assert [e["status"] for e in replayed if e["recipient"] == address] == [
            "accepted",
            "sent",
            "delivered",
        ]
    assert replayed[-1]["status"] == "completed" and replayed[-1]["recipient"] is None
