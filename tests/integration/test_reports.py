"""Delivery reports and opt-outs end to end (issue 5): SMS through the real Twilio transport to a
fake Twilio, which calls the worker back with signed status callbacks, as Twilio does."""

from __future__ import annotations

import itertools
import secrets
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest

from switchboard.clients import api_key_digest
from tests.fakes.background import BackgroundServer
from tests.fakes.twilio_server import TEST_ACCOUNT_SID, TEST_AUTH_TOKEN, FakeTwilioServer
from tests.integration.conftest import Keys, WorkerFactory
from tests.integration.harness import (
    TopicReader,
    Worker,
    http,
    rejection_reader,
    status_reader,
    wait_for,
)

pytestmark = pytest.mark.kafka

SENDER = "+14155550100"
_numbers = itertools.count(int(time.time()) % 300_000 + 600_000)


def number() -> str:
    n = next(_numbers)
    return f"+1415{200 + n // 10_000:03d}{n % 10_000:04d}"


@pytest.fixture(scope="module")
def worker(
    make_worker: WorkerFactory, keys: Keys, twilio: BackgroundServer[FakeTwilioServer]
) -> Worker:
    sms = {
        "provider": "twilio",
        "account_sid": TEST_ACCOUNT_SID,
        "auth_token_env": "ACME_TWILIO_TOKEN",
        "from": [SENDER],
        "api_base": twilio.url,
        "rate_per_second": 5,
    }
    document = {
        "clients": {
            "acme": {
                "api_keys": [api_key_digest(keys.acme)],
                "default_channels": ["sms"],
                "channels": {"sms": sms, "voice": {**sms, "rate_per_second": 50}},
                "help_text": "Acme: reply STOP to stop.",
            }
        }
    }
    worker = make_worker(
        {"ACME_TWILIO_TOKEN": TEST_AUTH_TOKEN, "SWITCHBOARD_REPORT_TIMEOUT": "6"}, document=document
    )
    worker.extra_env["SWITCHBOARD_PUBLIC_URL"] = worker.url  # Twilio calls the worker back here
    return worker.start()


@pytest.fixture(scope="module")
def statuses(kafka: Any, worker: Worker) -> Iterator[TopicReader]:
    reader = status_reader(kafka.bootstrap_servers, worker.topic("status"))
    yield reader
    reader.close()


def send(worker: Worker, key: str, audience: list[str]) -> str:
    answer = worker.post(
        {"transport": {"type": "sms", "message": "Your code is 1234"}, "audience": audience}, key
    )
    assert answer.status == 202, answer.body
    return str(answer.body["session_id"])


def sid_of(twilio: BackgroundServer[FakeTwilioServer], to: str, count: int = 1) -> list[str]:
    """The SIDs Twilio gave the messages to ``to`` (waiting for ``count`` of them)."""
    twilio.wait_records(lambda r: r.resource == "Messages" and r.get("To") == to, count, timeout=60)
    return [
        sid
        for sid, res in twilio.call(lambda: dict(twilio.fake.resources)).items()
        if res.get("to") == to
    ]


def callback(
    twilio: BackgroundServer[FakeTwilioServer], sid: str, status: str, error: int | None = None
) -> int:
    return int(twilio.call(twilio.fake.send_status_callback, sid, status, error))


def statuses_of(statuses: TopicReader, address: str) -> list[str]:
    return [e["status"] for e in statuses.matching(lambda e: e["recipient"] == address)]


def statuses_of_session(statuses: TopicReader, session_id: str, address: str) -> list[Any]:
    return statuses.matching(lambda e: e["session_id"] == session_id and e["recipient"] == address)


def completed(statuses: TopicReader, session_id: str, timeout: float = 60) -> dict[str, Any]:
    return statuses.wait(
        lambda e: e["session_id"] == session_id and e["status"] == "completed", 1, timeout
    )[0]


def test_a_message_is_reported_delivered_by_signed_callbacks_in_any_order(
    worker: Worker, keys: Keys, statuses: TopicReader, twilio: BackgroundServer[FakeTwilioServer]
) -> None:
    in_order, out_of_order = number(), number()
    session_id = send(worker, keys.acme, [in_order, out_of_order])
    [first] = sid_of(twilio, in_order)
    [second] = sid_of(twilio, out_of_order)
    created = twilio.records("requests", lambda r: r.get("To") == in_order)[0]
    assert (created.get("StatusCallback") or "").startswith(f"{worker.url}/twilio/messages/status?")

    for status in ("queued", "sent", "delivered"):
        assert callback(twilio, first, status) == 200
    assert callback(twilio, second, "delivered") == 200  # before its `sent`...
    assert callback(twilio, second, "sent") == 200  # ...which then changes nothing
    assert callback(twilio, second, "delivered") == 200  # and a repeat changes nothing either

    done = completed(statuses, session_id)
    assert done["detail"]["counts"] == {"delivered": 2}
    assert statuses_of(statuses, in_order) == ["accepted", "sent", "delivered"]
    assert statuses_of(statuses, out_of_order) == ["accepted", "sent", "delivered"]
    delivered = statuses.matching(
        lambda e: e["recipient"] == in_order and e["status"] == "delivered"
    )[0]
    assert (
        delivered["provider_message_id"] == first
        and delivered["detail"]["twilio_status"] == "delivered"
    )


def test_a_failed_delivery_keeps_twilios_error_code(
    worker: Worker, keys: Keys, statuses: TopicReader, twilio: BackgroundServer[FakeTwilioServer]
) -> None:
    address = number()
    session_id = send(worker, keys.acme, [address])
    [sid] = sid_of(twilio, address)
    assert callback(twilio, sid, "undelivered", 30005) == 200
    assert callback(twilio, sid, "delivered") == 200  # a final state is never replaced
    done = completed(statuses, session_id)
    assert done["detail"]["counts"] == {"undelivered": 1}
    [event] = statuses.matching(
        lambda e: e["recipient"] == address and e["status"] == "undelivered"
    )
    assert event["error_code"] == "30005"


def test_a_forged_callback_is_refused_and_changes_nothing(
    worker: Worker, keys: Keys, statuses: TopicReader, twilio: BackgroundServer[FakeTwilioServer]
) -> None:
    address = number()
    session_id = send(worker, keys.acme, [address])
    [sid] = sid_of(twilio, address)
    statuses.wait(lambda e: e["recipient"] == address and e["status"] == "sent")
    url = twilio.records("requests", lambda r: r.get("To") == address)[0].get("StatusCallback")
    params = {
        "MessageSid": sid,
        "MessageStatus": "delivered",
        "To": address,
        "AccountSid": TEST_ACCOUNT_SID,
    }
    forged = {
        "X-Twilio-Signature": "bm90IGEgc2lnbmF0dXJl",
        "Content-Type": "application/x-www-form-urlencoded",
    }
    answer = http("POST", url, raw=urlencode(params).encode(), headers=forged)
    assert answer.status == 403
    time.sleep(1)
    assert statuses_of(statuses, address) == ["accepted", "sent"]
    assert worker.session(session_id, keys.acme).body["recipients"][0]["status"] == "sent"


def test_a_signed_callback_for_another_message_changes_nothing_and_is_rejected(
    worker: Worker,
    kafka: Any,
    keys: Keys,
    statuses: TopicReader,
    twilio: BackgroundServer[FakeTwilioServer],
) -> None:
    """Issue 14, part 5: a correctly signed callback on a delivery's own URL, with another
    ``MessageSid``, neither replaces the delivery's id nor moves its status."""
    rejected = rejection_reader(kafka.bootstrap_servers, worker.topic("rejected"))
    try:
        address = number()
        session_id = send(worker, keys.acme, [address])
        [sid] = sid_of(twilio, address)
        statuses.wait(lambda e: e["recipient"] == address and e["status"] == "sent")
        url = twilio.records("requests", lambda r: r.get("To") == address)[0].get("StatusCallback")
        other = "SM" + secrets.token_hex(16)
        params = {
            "MessageSid": other,
            "MessageStatus": "undelivered",
            "ErrorCode": "30005",
            "To": address,
            "AccountSid": TEST_ACCOUNT_SID,
        }
        signed = {
            "X-Twilio-Signature": twilio.fake.signature(url, params),
            "Content-Type": "application/x-www-form-urlencoded",
        }
        assert http("POST", url, raw=urlencode(params).encode(), headers=signed).status == 200
        [record] = rejected.wait(lambda r: other in r["errors"][0]["error"])
        assert record["errors"][0]["field"] == "provider_message_id"
        assert sid in record["errors"][0]["error"] and record["client_id"] == "acme"
        [recipient] = worker.session(session_id, keys.acme).body["recipients"]
        assert (recipient["status"], recipient["provider_message_id"]) == ("sent", sid)
        # The delivery's own message still moves it on.
        assert callback(twilio, sid, "delivered") == 200
        completed(statuses, session_id)
        assert statuses_of(statuses, address) == ["accepted", "sent", "delivered"]
        [recipient] = worker.session(session_id, keys.acme).body["recipients"]
        assert (recipient["status"], recipient["provider_message_id"]) == ("delivered", sid)
    finally:
        rejected.close()


def test_a_callback_for_an_unknown_message_is_answered_and_recorded(
    worker: Worker, kafka: Any, twilio: BackgroundServer[FakeTwilioServer]
) -> None:
    rejected = rejection_reader(kafka.bootstrap_servers, worker.topic("rejected"))
    try:
        unknown = f"{uuid.uuid4()}/0/sms"
        url = (
            f"{worker.url}/twilio/messages/status?{urlencode({'d': unknown, 'a': 1, 'c': 'acme'})}"
        )
        sid = "SM" + secrets.token_hex(16)
        params = {
            "MessageSid": sid,
            "MessageStatus": "delivered",
            "To": number(),
            "AccountSid": TEST_ACCOUNT_SID,
        }
        signed = {
            "X-Twilio-Signature": twilio.fake.signature(url, params),
            "Content-Type": "application/x-www-form-urlencoded",
        }
        assert http("POST", url, raw=urlencode(params).encode(), headers=signed).status == 200
        [record] = rejected.wait(lambda r: unknown.split("/")[0] in r["errors"][0]["error"])
        assert "unknown session" in record["errors"][0]["error"]
        # and a request naming no client at all is answered and recorded too
        stray = f"{worker.url}/twilio/messages/status?d=nothing"
        assert (
            http(
                "POST",
                stray,
                raw=b"MessageSid=SMx",
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            ).status
            == 200
        )
        rejected.wait(
            lambda r: (
                r["topic"] == "http:/twilio/messages/status"
                and "no delivery" in r["errors"][0]["error"]
            )
        )
    finally:
        rejected.close()


def test_without_a_final_report_a_message_expires(
    worker: Worker, keys: Keys, statuses: TopicReader, twilio: BackgroundServer[FakeTwilioServer]
) -> None:
    address, answered = number(), number()
    session_id = send(worker, keys.acme, [address, answered])  # the worker waits 6 s for reports
    [sid] = sid_of(twilio, answered)
    assert callback(twilio, sid, "delivered") == 200
    done = completed(statuses, session_id, timeout=60)
    assert done["detail"]["counts"] == {"expired": 1, "delivered": 1}
    [expired] = statuses.matching(lambda e: e["recipient"] == address and e["status"] == "expired")
    assert expired["error_code"] == "no-report"
    sent = next(
        e for e in statuses_of_session(statuses, session_id, address) if e["status"] == "sent"
    )
    waited = (expired["occurred_at"] - sent["occurred_at"]).total_seconds()
    assert 6 <= waited < 12, f"expired {waited:.1f}s after the send (timeout 6 s)"


def test_stop_while_messages_are_queued_sends_none_after_it(
    worker: Worker, keys: Keys, statuses: TopicReader, twilio: BackgroundServer[FakeTwilioServer]
) -> None:
    address = number()
    # 100 messages to one number, paced at 5 per second by the sender's rate limit.
    session_id = send(worker, keys.acme, [address] * 100)
    twilio.wait_records(
        lambda r: r.resource == "Messages" and r.get("To") == address, 3, timeout=60
    )

    inbound = f"{worker.url}/twilio/messages/inbound"
    params = {
        "From": address,
        "To": SENDER,
        "Body": "  stop ",
        "AccountSid": TEST_ACCOUNT_SID,
        "MessageSid": "SM" + "1" * 32,
    }
    signed = {
        "X-Twilio-Signature": twilio.fake.signature(inbound, params),
        "Content-Type": "application/x-www-form-urlencoded",
    }
    answer = http("POST", inbound, raw=urlencode(params).encode(), headers=signed)
    recorded = time.monotonic()  # the fake's request times are on this clock too
    assert answer.status == 200 and "unsubscribed" in answer.body

    done = completed(statuses, session_id, timeout=120)
    requests = twilio.records(
        "requests", lambda r: r.resource == "Messages" and r.get("To") == address
    )
    late = [r.received_at - recorded for r in requests if r.received_at > recorded]
    assert all(d < 0.05 for d in late), (
        f"requests reached Twilio {late} s after the opt-out was recorded"
    )
    counts = done["detail"]["counts"]
    assert counts.get("suppressed", 0) >= 100 - len(requests) - 1 > 50
    assert all(
        e["error_code"] == "opted-out"
        for e in statuses.matching(
            lambda e: e["recipient"] == address and e["status"] == "suppressed"
        )
    )

    # START opts back in; HELP answers the client's help text; a forged STOP is refused.
    for body, expected in (("Start", "subscribed again"), ("HELP", "Acme: reply STOP")):
        params = {**params, "Body": body}
        signed["X-Twilio-Signature"] = twilio.fake.signature(inbound, params)
        answer = http("POST", inbound, raw=urlencode(params).encode(), headers=signed)
        assert answer.status == 200 and expected in answer.body
    forged = {**signed, "X-Twilio-Signature": "Zm9yZ2Vk"}
    assert (
        http(
            "POST", inbound, raw=urlencode({**params, "Body": "STOP"}).encode(), headers=forged
        ).status
        == 403
    )
    send(worker, keys.acme, [address])
    wait_for(
        lambda: statuses_of(statuses, address)[-1:] == ["sent"] or None,
        60,
        0.2,
        "a send after START",
    )


def test_a_voice_broadcast_is_final_on_its_call_status_and_busy_is_retried(
    worker: Worker, keys: Keys, statuses: TopicReader, twilio: BackgroundServer[FakeTwilioServer]
) -> None:
    """Twilio reports a broadcast call's end on its status callback (CallStatus): an answered
    call is delivered; busy and no-answer are failures that the session's retries try again."""
    busy_then_answers, never_answers = number(), number()
    answer = worker.post(
        {
            "transport": {"type": "voice", "message": "Your appointment is tomorrow"},
            "audience": [busy_then_answers, never_answers],
            "options": {"retries": 1, "retryIntervalMinutes": "0.02"},
        },
        keys.acme,
    )
    assert answer.status == 202, answer.body
    session_id = answer.body["session_id"]

    def calls_to(to: str, count: int) -> list[str]:
        twilio.wait_records(
            lambda r: r.resource == "Calls" and r.get("To") == to, count, timeout=60
        )
        return [
            sid
            for sid, res in twilio.call(lambda: dict(twilio.fake.resources)).items()
            if res.get("to") == to and sid.startswith("CA")
        ]

    [first] = calls_to(busy_then_answers, 1)
    [other_first] = calls_to(never_answers, 1)
    assert callback(twilio, first, "busy") == 200
    assert callback(twilio, first, "busy") == 200, "a repeated callback schedules nothing more"
    assert callback(twilio, other_first, "no-answer") == 200
    failed = statuses.wait(
        lambda e: e["recipient"] == busy_then_answers and e["status"] == "failed"
    )[0]
    assert (failed["error_code"], failed["attempt"]) == ("busy", 1) and "retry_at" in failed[
        "detail"
    ]

    second = next(sid for sid in calls_to(busy_then_answers, 2) if sid != first)
    [other_second] = [s for s in calls_to(never_answers, 2) if s != other_first]
    assert callback(twilio, second, "completed") == 200
    assert callback(twilio, other_second, "no-answer") == 200, "the last attempt: final"

    done = completed(statuses, session_id)
    assert done["detail"]["counts"] == {"delivered": 1, "failed": 1}
    assert statuses_of(statuses, busy_then_answers) == [
        "accepted",
        "sent",
        "failed",
        "sent",
        "delivered",
    ]
    assert statuses_of(statuses, never_answers) == ["accepted", "sent", "failed", "sent", "failed"]
    time.sleep(2)
    assert len(calls_to(busy_then_answers, 2)) == 2, "one retry, though busy was reported twice"
