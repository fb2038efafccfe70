"""One campaign on two workers, end to end on the real broker: both send a share of it, the
session completes with exact counts, and a cancel stops both (no send after its ``202``).

Each worker records its sandbox sends in an outbox of its own (one JSON line per send, with its
time), which says exactly which worker sent what, and when."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from switchboard.clients import api_key_digest
from tests.fakes.background import BackgroundServer
from tests.fakes.twilio_server import TEST_ACCOUNT_SID, TEST_AUTH_TOKEN, FakeTwilioServer
from tests.integration.conftest import Keys, WorkerFactory
from tests.integration.harness import Worker, http, wait_for

pytestmark = pytest.mark.kafka


@pytest.fixture(scope="module")
def pair(make_worker: WorkerFactory) -> tuple[Worker, Worker]:
    first = make_worker()
    second = make_worker(prefix=first.prefix)
    for worker in (first, second):
        worker.extra_env.update(
            {
                "SWITCHBOARD_SANDBOX_OUTBOX": str(worker.workdir / "outbox.jsonl"),
                "SWITCHBOARD_MAX_IN_FLIGHT": "10",
            }
        )
    first.start()
    second.start()
    for worker in (first, second):  # a quiet group: both own partitions
        wait_for(
            lambda w=worker: http("GET", f"{w.url}/readyz").body.get("settled") is True,
            90,
            0.5,
            "the group to settle",
        )
    return first, second


def sends(worker: Worker, session_id: str) -> list[dict[str, Any]]:
    outbox = Path(worker.extra_env["SWITCHBOARD_SANDBOX_OUTBOX"])
    if not outbox.exists():
        return []
    lines = [json.loads(line) for line in outbox.read_text().splitlines() if line.strip()]
    return [r for r in lines if r["reference"].startswith(f"{session_id}/")]


def campaign(recipients: int, delay_ms: int = 0) -> dict[str, Any]:
    extras = {"sandbox": {"delay_ms": delay_ms}} if delay_ms else {}
    return {
        "transport": {"type": "sms", "message": "Polls open at 7am", "extras": extras},
        "audience": [f"+1415557{i:04d}" for i in range(recipients)],
    }


def test_a_campaign_is_sent_by_both_workers_and_completes_exactly(
    pair: tuple[Worker, Worker], keys: Keys
) -> None:
    first, second = pair
    answer = first.post(campaign(2000), keys.acme)
    assert answer.status == 202, answer.body
    session_id = answer.body["session_id"]
    done = first.wait_completed(session_id, keys.acme, timeout=120)
    assert done["final"] == 2000 and done["counts"] == {"delivered": 2000}, done
    by_first, by_second = sends(first, session_id), sends(second, session_id)
    assert by_first and by_second, f"one worker sent all: {len(by_first)} and {len(by_second)}"
    sent = [r["to"] for r in by_first + by_second]
    assert len(sent) == len(set(sent)) == 2000  # each recipient once, by one of them


def test_a_cancel_stops_both_workers(pair: tuple[Worker, Worker], keys: Keys) -> None:
    first, second = pair
    answer = first.post(campaign(3000, delay_ms=200), keys.acme)  # about 100 a second in all
    assert answer.status == 202, answer.body
    session_id = answer.body["session_id"]
    wait_for(
        lambda: len(sends(first, session_id)) > 20 and len(sends(second, session_id)) > 20,
        60,
        0.2,
        "both workers to be sending",
    )
    cancel = http("POST", f"{second.url}/v1/sessions/{session_id}/cancel", key=keys.acme)
    acknowledged = time.time()
    assert cancel.status == 202, cancel.body
    done = first.wait_completed(session_id, keys.acme, timeout=60)
    time.sleep(1)  # anything still going would be in the outboxes by now
    made = sends(first, session_id) + sends(second, session_id)
    late = [r for r in made if r["at"] > acknowledged]
    assert not late, f"{len(late)} sent after the cancel's 202"
    counts = done["counts"]
    assert counts.get("delivered", 0) == len(made) and counts.get("cancelled", 0) == 3000 - len(
        made
    ), done
    assert 0 < len(made) < 3000


# -- pacing: a sender's rate is a limit at the provider, whatever the number of workers ---------

SENDER = "+14155550100"
RATE = 5


def test_two_workers_together_keep_a_senders_rate(make_worker: WorkerFactory, keys: Keys) -> None:
    with BackgroundServer(FakeTwilioServer) as twilio:
        sms = {
            "provider": "twilio",
            "account_sid": TEST_ACCOUNT_SID,
            "auth_token_env": "PACED_TWILIO_TOKEN",
            "from": [SENDER],
            "api_base": twilio.url,
            "rate_per_second": RATE,
        }
        document = {
            "clients": {
                "acme": {
                    "api_keys": [api_key_digest(keys.acme)],
                    "default_channels": ["sms"],
                    "channels": {"sms": sms},
                }
            }
        }
        env = {"PACED_TWILIO_TOKEN": TEST_AUTH_TOKEN}
        first = make_worker(env, document=document)
        second = make_worker(env, prefix=first.prefix, document=document)
        first.start()
        second.start()
        try:
            for worker in (first, second):
                wait_for(
                    lambda w=worker: http("GET", f"{w.url}/readyz").body.get("settled") is True,
                    90,
                    0.5,
                    "the group to settle",
                )

            def send_sessions(sessions: int, prefix: str) -> int:
                """Small sessions: their jobs land on every partition, so both workers send."""
                sent = 0
                for i in range(sessions):
                    audience = [f"+1415{prefix}{i:02d}{k:02d}" for k in range(3)]
                    answer = (first if i % 2 else second).post(
                        {"transport": {"type": "sms", "message": "Hello"}, "audience": audience},
                        keys.acme,
                    )
                    assert answer.status == 202, answer.body
                    sent += len(audience)
                return sent

            # Warm-up: each worker makes its Twilio client and connection on its first send, which
            # delays that one request (by up to a slot); the measure starts after.
            warm = send_sessions(12, "557")
            twilio.wait_records(lambda r: r.resource == "Messages", warm, timeout=120)
            total = send_sessions(20, "558")
            requests = twilio.wait_records(
                lambda r: r.resource == "Messages", warm + total, timeout=120
            )[warm:]
        finally:
            second.stop()
            first.stop()
    offset = time.time() - time.monotonic()  # the fake's clock is this process's loop clock
    seconds = Counter(int(r.received_at + offset) for r in requests if r.get("From") == SENDER)
    assert sum(seconds.values()) == total
    assert max(seconds.values()) <= RATE, (
        f"requests per second at the provider: {sorted(seconds.items())}"
    )
    span = max(seconds) - min(seconds) + 1
    assert span >= total / RATE - 1, f"{total} requests in {span} s: faster than {RATE}/s"
