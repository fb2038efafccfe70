"""Signed webhooks end to end (issue 5): every status event of a session with a webhookUrl is
POSTed to a local receiver that verifies it with the official `standardwebhooks` library."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from switchboard.clients import api_key_digest
from tests.fakes.background import BackgroundServer
from tests.fakes.webhook_receiver import Reply, WebhookReceiver
from tests.integration.conftest import Keys, WorkerFactory
from tests.integration.harness import Worker, http

pytestmark = pytest.mark.kafka

SECRET = "whsec_c3dpdGNoYm9hcmQtd2ViaG9vay1zZWNyZXQtMDI="
OLD_SECRET = "whsec_b2xkLXN3aXRjaGJvYXJkLXdlYmhvb2stc2VjcmV0LTE="


@pytest.fixture(scope="module")
def receiver() -> Iterator[BackgroundServer[WebhookReceiver]]:
    # A receiver still on the old secret: the rotation's second signature must verify for it.
    with BackgroundServer(lambda: WebhookReceiver(secrets=[OLD_SECRET])) as server:
        yield server


def document(keys: Keys) -> dict[str, Any]:
    return {
        "clients": {
            "acme": {
                "api_keys": [api_key_digest(keys.acme)],
                "default_channels": ["sms"],
                "channels": {"sms": {"provider": "sandbox"}},
                "webhook_secret": SECRET,
                "previous_webhook_secret": OLD_SECRET,
            }
        }
    }


@pytest.fixture(scope="module")
def worker(make_worker: WorkerFactory, keys: Keys) -> Worker:
    env = {
        "SWITCHBOARD_ALLOW_PRIVATE_WEBHOOKS": "true",
        "SWITCHBOARD_WEBHOOK_BACKOFF_SCALE": "0.02",
    }
    return make_worker(env, document=document(keys)).start()


def send(worker: Worker, key: str, hook: str, **options: Any) -> str:
    body = {
        "transport": {"type": "sms", "message": "Hi"},
        "audience": ["+14155550100", "+14155550101"],
        "options": {"webhookUrl": hook, **options},
    }
    answer = worker.post(body, key)
    assert answer.status == 202, answer.body
    return str(answer.body["session_id"])


def of_session(
    receiver: BackgroundServer[WebhookReceiver], path: str, session_id: str
) -> list[Any]:
    return [
        r
        for r in receiver.records("requests")
        if r.path == path and r.payload and r.payload["data"]["session_id"] == session_id
    ]


def test_every_status_event_arrives_signed_and_verifiable(
    worker: Worker, keys: Keys, receiver: BackgroundServer[WebhookReceiver]
) -> None:
    session_id = send(worker, keys.acme, f"{receiver.url}/hooks/all")
    # 2 recipients x (accepted, sent, delivered) + completed
    received = receiver.wait_records(
        lambda r: (
            r.path == "/hooks/all" and r.payload and r.payload["data"]["session_id"] == session_id
        ),
        7,
        timeout=60,
    )
    assert all(r.verified for r in received), (
        "verified by standardwebhooks, with the previous secret"
    )
    types = sorted(r.payload["type"] for r in received)
    assert types == sorted(
        ["message.accepted"] * 2
        + ["message.sent"] * 2
        + ["message.delivered"] * 2
        + ["session.completed"]
    )
    completed = next(r for r in received if r.payload["type"] == "session.completed")
    assert completed.payload["data"]["detail"]["counts"] == {"delivered": 2}
    assert len({r.webhook_id for r in received}) == 7, "one webhook-id per status event"
    signature = received[0].headers["webhook-signature"]
    assert len(re.findall(r"v1,", signature)) == 2, "two signatures during the rotation"


def test_a_failing_receiver_is_retried_until_it_answers(
    worker: Worker, keys: Keys, receiver: BackgroundServer[WebhookReceiver]
) -> None:
    receiver.script("/hooks/flaky", Reply.fail(2))
    session_id = send(worker, keys.acme, f"{receiver.url}/hooks/flaky")

    def answered(r: Any) -> bool:
        return bool(
            r.path == "/hooks/flaky"
            and r.payload
            and r.payload["data"]["session_id"] == session_id
            and r.status == 204
        )

    # Retries come after a backoff, so they may land after session.completed: wait for all 7
    # events to have been answered 204, whatever the order.
    receiver.wait_records(answered, 7, timeout=60)
    received = of_session(receiver, "/hooks/flaky", session_id)
    failed = [r for r in received if r.status == 500]
    assert len(failed) == 2, "the receiver's first two answers were 500s"
    attempts: dict[str | None, int] = {}
    for r in received:
        attempts[r.webhook_id] = attempts.get(r.webhook_id, 0) + 1
    assert len(received) == 7 + 2 and len(attempts) == 7, attempts
    for r in failed:
        assert attempts[r.webhook_id] == 2, "each failure retried once, under the same webhook-id"
        retry = next(x for x in received if x.webhook_id == r.webhook_id and x.status == 204)
        assert retry.body == r.body, "a retry sends the same bytes"
        assert retry.headers["webhook-timestamp"] >= r.headers["webhook-timestamp"]


def test_410_stops_the_retries(
    worker: Worker, keys: Keys, receiver: BackgroundServer[WebhookReceiver]
) -> None:
    receiver.script("/hooks/gone", Reply.gone())
    session_id = send(worker, keys.acme, f"{receiver.url}/hooks/gone")
    receiver.wait_records(
        lambda r: (
            r.path == "/hooks/gone" and r.payload and r.payload["data"]["session_id"] == session_id
        ),
        7,
        timeout=60,
    )
    time.sleep(3)  # retries would come within about a second at this worker's backoff scale
    assert len(of_session(receiver, "/hooks/gone", session_id)) == 7, "each event posted once"


def test_private_and_metadata_addresses_are_refused(
    make_worker: WorkerFactory, keys: Keys, receiver: BackgroundServer[WebhookReceiver]
) -> None:
    guarded = make_worker(
        {"SWITCHBOARD_WEBHOOK_BACKOFF_SCALE": "0.02"}, document=document(keys)
    ).start()
    try:
        loopback = send(guarded, keys.acme, f"{receiver.url}/hooks/ssrf")
        metadata = send(guarded, keys.acme, "http://169.254.169.254/latest/meta-data/")
        assert guarded.wait_completed(loopback, keys.acme) and guarded.wait_completed(
            metadata, keys.acme
        )
        time.sleep(2)
        assert of_session(receiver, "/hooks/ssrf", loopback) == []
        metrics = http("GET", f"{guarded.url}/metrics").body
        refused = re.search(r'switchboard_webhooks_total\{outcome="refused"\} (\d+)', metrics)
        assert refused and int(float(refused.group(1))) >= 14, (
            "7 events x 2 sessions refused, none retried"
        )
    finally:
        guarded.stop()
