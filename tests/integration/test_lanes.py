"""Lanes, end to end on the real broker: a one-time password sent with ``options.priority:
high`` never waits behind a campaign of the same client on the same channel, and one client's
large campaign does not starve another client's small one.

The worker has one partition, so that the campaign's jobs and reports and the one-time
password's would share every partition if they shared topics: without the lane, the one-time
password's job would wait behind every queued job of the campaign."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.conftest import Keys, WorkerFactory
from tests.integration.harness import TopicReader, Worker, http, status_reader

pytestmark = pytest.mark.kafka

#: The campaign: each send takes a second at the sandbox, 10 at a time, so it takes 20 s.
CAMPAIGN = 200
SEND_MS = 1000
IN_FLIGHT = 10
#: Jobs that may wait in the dispatch topic before a session fans out its next chunk.
BACKLOG = 500


@pytest.fixture(scope="module")
def lane_worker(make_worker: WorkerFactory) -> Worker:
    return make_worker(
        {
            "SWITCHBOARD_PARTITIONS": "1",
            "SWITCHBOARD_MAX_IN_FLIGHT": str(IN_FLIGHT),
            "SWITCHBOARD_DISPATCH_BACKLOG": str(BACKLOG),
        }
    ).start()


@pytest.fixture(scope="module")
def lane_statuses(kafka: Any, lane_worker: Worker) -> Iterator[TopicReader]:
    reader = status_reader(kafka.bootstrap_servers, lane_worker.topic("status"))
    yield reader
    reader.close()


def test_a_one_time_password_overtakes_a_campaign_on_the_same_channel(
    lane_worker: Worker, lane_statuses: TopicReader, keys: Keys
) -> None:
    campaign = lane_worker.post(
        {
            "transport": {
                "type": "sms",
                "message": "Polls open at 7am",
                "extras": {"sandbox": {"delay_ms": SEND_MS}},
            },
            "audience": [f"+1415556{i:04d}" for i in range(CAMPAIGN)],
        },
        keys.acme,
    )
    assert campaign.status == 202, campaign.body
    campaign_id = campaign.body["session_id"]
    # The campaign is under way: its first sends are out, the rest queued behind them.
    lane_statuses.wait(
        lambda e: e["session_id"] == campaign_id and e["status"] == "delivered", timeout=60
    )

    posted = time.monotonic()
    otp = lane_worker.post(
        {
            "transport": {"type": "sms", "message": "Your code is 492817"},
            "audience": ["+14155550199"],
            "options": {"priority": "high"},
        },
        keys.acme,
    )
    assert otp.status == 202, otp.body
    otp_id = otp.body["session_id"]
    delivered = lane_statuses.wait(
        lambda e: e["session_id"] == otp_id and e["status"] == "delivered", timeout=60
    )
    took = time.monotonic() - posted

    campaign_delivered = lane_statuses.matching(
        lambda e: e["session_id"] == campaign_id and e["status"] == "delivered"
    )
    campaign_done = lane_statuses.matching(
        lambda e: e["session_id"] == campaign_id and e["status"] == "completed"
    )
    assert not campaign_done and len(campaign_delivered) < CAMPAIGN // 2, (
        f"the one-time password was delivered after {took:.1f}s, once "
        f"{len(campaign_delivered)} of the campaign's {CAMPAIGN} were: it waited behind them"
    )
    assert delivered[0]["recipient"] == "+14155550199"
    # Its session is complete, with its lane, while the campaign still runs.
    lane_statuses.wait(lambda e: e["session_id"] == otp_id and e["status"] == "completed")
    session = lane_worker.session(otp_id, keys.acme)
    assert session.status == 200 and session.body["priority"] == "high", session.body

    # The campaign is cancelled (the test need not wait for it), and completes as cancelled.
    cancel = http("POST", f"{lane_worker.url}/v1/sessions/{campaign_id}/cancel", key=keys.acme)
    assert cancel.status == 202, cancel.body
    done = lane_worker.wait_completed(campaign_id, keys.acme)
    assert done["counts"].get("cancelled", 0) > 0, done


def test_a_large_campaign_does_not_starve_another_clients_campaign(
    lane_worker: Worker, lane_statuses: TopicReader, keys: Keys
) -> None:
    """The large campaign's chunks wait while the dispatch topic holds ``BACKLOG`` jobs, so the
    small campaign's jobs queue behind a thousand of them at most, not behind all 4,000."""
    large = lane_worker.post(
        {
            "transport": {
                "type": "sms",
                "message": "Polls open at 7am",
                "extras": {"sandbox": {"delay_ms": 100}},
            },  # 100 a second: 40 s in all
            "audience": [f"+1415559{i:04d}" for i in range(4000)],
        },
        keys.acme,
    )
    assert large.status == 202, large.body
    large_id = large.body["session_id"]

    def of_large(status: str) -> int:
        return len(
            lane_statuses.matching(lambda e: e["session_id"] == large_id and e["status"] == status)
        )

    # For 10 s of its 40, the jobs it has waiting (fanned out, not yet sent) stay near the limit.
    queued: list[int] = []
    until = time.monotonic() + 10
    while time.monotonic() < until:
        queued.append(of_large("accepted") - of_large("delivered"))
        time.sleep(0.2)
    assert of_large("delivered") > 0
    assert max(queued) <= BACKLOG + 2 * 500 + IN_FLIGHT, f"jobs waiting, sampled: {queued}"

    small = lane_worker.post(
        {
            "transport": {"type": "sms", "message": "Hello"},
            "audience": [f"+1415560{i:04d}" for i in range(100)],
        },
        keys.other,
    )
    assert small.status == 202, small.body
    small_id = small.body["session_id"]
    lane_statuses.wait(
        lambda e: e["session_id"] == small_id and e["status"] == "completed", timeout=60
    )
    large_delivered = of_large("delivered")
    assert large_delivered < 3000, (
        f"the small campaign completed once {large_delivered} of the large one's 4,000 were "
        "delivered: it waited behind them"
    )

    cancel = http("POST", f"{lane_worker.url}/v1/sessions/{large_id}/cancel", key=keys.acme)
    assert cancel.status == 202, cancel.body
    done = lane_worker.wait_completed(large_id, keys.acme)
    assert done["final"] == 4000 and done["counts"].get("cancelled", 0) > 0, done
