"""The worker's state gauges and ``status --watch``, end to end on the real broker (issue 16):
``GET /metrics`` shows the consumer lag of every partition of the agents' topics (the dispatch
lanes included), the deliveries held by a time window and the oldest one's age, the webhook
backlog, and the sessions open going up, then down as a session completes. The gauges refresh
every few seconds: every check waits for its condition, with a deadline."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from switchboard.clients import api_key_digest
from tests.integration.conftest import Keys, WorkerFactory
from tests.integration.harness import ROOT, Samples, Worker, gauge, http, scrape, wait_for

pytestmark = pytest.mark.kafka


def closed_window() -> dict[str, Any]:
    """An sms window that opens in about two hours (every day, for a minute): closed now."""
    opens = datetime.now(UTC) + timedelta(hours=2)
    return {
        "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
        "timezone": "UTC",
        "start": opens.strftime("%H:%M"),
        "end": (opens + timedelta(minutes=1)).strftime("%H:%M"),
    }


@pytest.fixture(scope="module")
def worker(make_worker: WorkerFactory, keys: Keys) -> Worker:
    document = {
        "clients": {
            # acme's sms is held by its window; other's goes out at once.
            "acme": {
                "api_keys": [api_key_digest(keys.acme)],
                "default_channels": ["sms"],
                "channels": {"sms": {"provider": "sandbox"}},
                "time_windows": {"sms": closed_window()},
            },
            "other": {
                "api_keys": [api_key_digest(keys.other)],
                "default_channels": ["sms"],
                "channels": {"sms": {"provider": "sandbox"}},
            },
        }
    }
    return make_worker(document=document).start()


def lag(samples: Samples, topic: str) -> dict[int, float]:
    return {
        int(dict(labels)["partition"]): value
        for (name, labels), value in samples.items()
        if name == "switchboard_consumer_lag" and dict(labels)["topic"] == topic
    }


def numbers(count: int) -> list[str]:
    return [f"+1415555{n:04d}" for n in range(count)]


def test_gauges_follow_sessions_deferrals_and_lag(worker: Worker, keys: Keys) -> None:
    # Nothing open, nothing held at first.
    wait_for(lambda: gauge(worker, "switchboard_sessions_open") == 0, 30, 0.5, "sessions open = 0")
    assert gauge(worker, "switchboard_deferred_deliveries") == 0

    # A manual session is open until triggered: up.
    manual = worker.send_sms(keys.other, numbers(3), trigger="manual")
    wait_for(lambda: gauge(worker, "switchboard_sessions_open") == 1, 30, 0.5, "sessions open = 1")

    # A session held by its window: its 250 deliveries are deferred (one timer for the chunk),
    # and the session is open too.
    held = worker.send_sms(keys.acme, numbers(250))
    wait_for(
        lambda: gauge(worker, "switchboard_deferred_deliveries") == 250, 30, 0.5, "250 deferred"
    )
    wait_for(
        lambda: (gauge(worker, "switchboard_deferred_oldest_age_seconds") or 0) > 0,
        30,
        0.5,
        "the oldest deferral's age",
    )
    wait_for(lambda: gauge(worker, "switchboard_sessions_open") == 2, 30, 0.5, "sessions open = 2")
    assert worker.session(held, keys.acme).body["status"] == "dispatching"
    # The status filter (the console's) lists them, each with its release time.
    url = f"{worker.url}/v1/sessions/{held}?status=deferred&limit=5"
    page = wait_for(
        lambda: len(r := http("GET", url, key=keys.acme).body["recipients"]) == 5 and r,
        30,
        0.5,
        "5 deferred recipients listed",
    )
    assert all(r["status"] == "deferred" and r["release_at"].endswith("Z") for r in page), page
    assert http("GET", url, key=keys.acme).body["next_offset"] == 5
    assert worker.session(held, keys.acme).body["deferred"] == 250  # the console's bar shows them

    # `status --watch`, not on a terminal: plain lines, until the triggered session completes.
    command = [sys.executable, "-m", "cli.main", "status", manual, "--watch", "--interval", "0.2"]
    command += ["--url", worker.url, "--api-key", keys.other]
    watcher = subprocess.Popen(
        command,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        trigger = http("POST", f"{worker.url}/v1/sessions/{manual}/trigger", key=keys.other)
        assert trigger.status == 202, trigger.body
        out, err = watcher.communicate(timeout=60)
    finally:
        if watcher.poll() is None:
            watcher.kill()
    assert watcher.returncode == 0, err
    last = out.splitlines()[-1]
    assert (
        last.startswith(f"{manual[:8]} completed")
        and "100.0% 3/3" in last
        and "delivered 3" in last
    ), out

    # Down: the manual session completed; the held one stays open.
    wait_for(
        lambda: gauge(worker, "switchboard_sessions_open") == 1, 30, 0.5, "sessions open = 1 again"
    )

    # Lag: a series per partition of every agent topic this worker owns (all of them: it is
    # alone), the dispatch lanes included; once the work is done, nothing is left uncommitted.
    def settled() -> Samples | None:
        samples = scrape(worker)
        topics = [
            worker.topic(t)
            for t in ("sessions", "reports", "dispatch.sms", "dispatch.priority", "webhooks")
        ]
        lags = [lag(samples, t) for t in topics]
        ok = all(set(found) == {0, 1, 2, 3} and not any(found.values()) for found in lags)
        return samples if ok else None

    samples = wait_for(settled, 60, 0.5, "every partition's lag series, at 0")
    assert lag(samples, worker.topic("status")) == {}  # no agent consumes it
    assert samples[("switchboard_webhook_backlog", (("state", "queued"),))] == 0
    assert samples[("switchboard_webhook_backlog", (("state", "retrying"),))] == 0
    # The held deliveries are still there.
    assert samples[("switchboard_deferred_deliveries", ())] == 250
    age = samples[("switchboard_deferred_oldest_age_seconds", ())]
    assert 0 < age < 600  # seconds since the session was held, minutes at most
