"""Channel fallback on the real broker (``options.fallback``, ``switchboard/fallback.py``):
sms through the real Twilio transport to a fake Twilio (which reports nothing until the test
posts its signed status callbacks, as Twilio would), voice the same way, and email through SMTP
to the test mail server. Every wait is on a condition; the fallback timeout is seconds long.

The worker waits ``SWITCHBOARD_REPORT_TIMEOUT`` (10 s) for a message's final report: a step's
``expired`` (no report) comes from the session's sweep after every fallback timeout of the same
hand-off was due, so once it is seen, a fallback that was going to happen has happened."""

from __future__ import annotations

import itertools
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest

from switchboard.clients import api_key_digest
from tests.fakes.background import BackgroundServer
from tests.fakes.twilio_server import TEST_ACCOUNT_SID, TEST_AUTH_TOKEN, FakeTwilioServer
from tests.integration.conftest import Keys, WorkerFactory
from tests.integration.harness import MailSink, TopicReader, Worker, wait_for

pytestmark = pytest.mark.kafka

SENDER = "+14155550100"
_people = itertools.count(int(time.time()) % 300_000 + 300_000)


@pytest.fixture(scope="module")
def twilio() -> Iterator[BackgroundServer[FakeTwilioServer]]:
    with BackgroundServer(FakeTwilioServer) as server:
        yield server


@pytest.fixture(scope="module")
def worker(
    make_worker: WorkerFactory,
    keys: Keys,
    mail: MailSink,
    twilio: BackgroundServer[FakeTwilioServer],
) -> Worker:
    twilio_channel = {
        "provider": "twilio",
        "account_sid": TEST_ACCOUNT_SID,
        "auth_token_env": "ACME_TWILIO_TOKEN",
        "from": [SENDER],
        "api_base": twilio.url,
    }
    email = {
        "provider": "smtp",
        "from": "Acme <noreply@acme.example>",
        "host": "127.0.0.1",
        "port": mail.port,
        "security": "none",
    }
    document = {
        "clients": {
            "acme": {
                "api_keys": [api_key_digest(keys.acme)],
                "default_channels": ["sms"],
                "channels": {"sms": twilio_channel, "voice": twilio_channel, "email": email},
            }
        }
    }
    worker = make_worker(
        {"ACME_TWILIO_TOKEN": TEST_AUTH_TOKEN, "SWITCHBOARD_REPORT_TIMEOUT": "10"},
        document=document,
    )
    worker.extra_env["SWITCHBOARD_PUBLIC_URL"] = worker.url  # Twilio calls the worker back here
    return worker.start()


def person() -> dict[str, str]:
    n = next(_people)
    return {"phone": f"+1415{500 + n // 10_000:03d}{n % 10_000:04d}", "email": f"p{n}@example.com"}


def send(worker: Worker, keys: Keys, audience: list[dict[str, str]], **options: Any) -> str:
    answer = worker.post(
        {
            "transport": {"message": "Your parcel is at the door", "subject": "Your parcel"},
            "audience": audience,
            "options": options,
        },
        keys.acme,
    )
    assert answer.status == 202, answer.body
    return str(answer.body["session_id"])


def twilio_sids(
    twilio: BackgroundServer[FakeTwilioServer], resource: str, to: str, count: int = 1
) -> list[str]:
    """The SIDs of the ``resource`` (Messages, Calls) created for ``to``, once ``count`` are."""
    twilio.wait_records(lambda r: r.resource == resource and r.get("To") == to, count, timeout=60)
    prefix = "SM" if resource == "Messages" else "CA"
    return [
        sid
        for sid, res in twilio.call(lambda: dict(twilio.fake.resources)).items()
        if res.get("to") == to and sid.startswith(prefix)
    ]


def callback(
    twilio: BackgroundServer[FakeTwilioServer], sid: str, status: str, error: int | None = None
) -> None:
    assert twilio.call(twilio.fake.send_status_callback, sid, status, error) == 200


def event(statuses: TopicReader, session_id: str, channel: str, status: str) -> dict[str, Any]:
    [found] = statuses.wait(
        lambda e: (
            e["session_id"] == session_id and e["channel"] == channel and e["status"] == status
        )
    )
    return dict(found)


def events(statuses: TopicReader, session_id: str, channel: str) -> list[str]:
    return [
        e["status"]
        for e in statuses.matching(
            lambda e: e["session_id"] == session_id and e["channel"] == channel
        )
    ]


def mail_to(mail: MailSink, address: str) -> list[Any]:
    return wait_for(lambda: mail.to(address), 60, what=f"an email to {address}")  # type: ignore[no-any-return]


def test_an_sms_not_delivered_in_time_falls_back_to_email(
    worker: Worker,
    keys: Keys,
    statuses: TopicReader,
    mail: MailSink,
    twilio: BackgroundServer[FakeTwilioServer],
) -> None:
    ada = person()
    session_id = send(
        worker, keys, [ada], fallback={"channels": ["sms", "email"], "afterSeconds": 2}
    )
    twilio_sids(twilio, "Messages", ada["phone"])  # handed to Twilio, which never reports
    [message] = mail_to(mail, ada["email"])
    assert message["Subject"] == "Your parcel"

    step = event(statuses, session_id, "email", "accepted")
    assert step["detail"] == {
        "reason": "fallback",
        "fallback_from": "sms",
        "why": "sms not delivered within 2 s",
        "step": 2,
    }
    sent = event(statuses, session_id, "sms", "sent")
    assert (step["occurred_at"] - sent["occurred_at"]).total_seconds() >= 2, "moved on early"

    done = worker.wait_completed(session_id, keys.acme)
    assert (done["deliveries"], done["counts"]) == (1, {"delivered": 1}), "one recipient, once"
    assert done["fallback"] == {"channels": ["sms", "email"], "afterSeconds": 2}
    assert [(r["channel"], r["status"]) for r in done["recipients"]] == [
        ("sms", "sent"),
        ("email", "delivered"),
    ]
    assert events(statuses, session_id, "email") == ["accepted", "sent", "delivered"]


def test_a_permanent_sms_failure_falls_back_at_once(
    worker: Worker,
    keys: Keys,
    statuses: TopicReader,
    mail: MailSink,
    twilio: BackgroundServer[FakeTwilioServer],
) -> None:
    """Ten minutes to be delivered, but Twilio says undelivered: the email goes now."""
    grace = person()
    session_id = send(
        worker, keys, [grace], fallback={"channels": ["sms", "email"], "afterSeconds": 600}
    )
    [sid] = twilio_sids(twilio, "Messages", grace["phone"])
    callback(twilio, sid, "undelivered", 30005)
    mail_to(mail, grace["email"])
    step = event(statuses, session_id, "email", "accepted")
    assert step["detail"]["why"].startswith("sms undelivered"), step
    assert event(statuses, session_id, "sms", "undelivered")["error_code"] == "30005"
    done = worker.wait_completed(session_id, keys.acme)
    assert done["counts"] == {"delivered": 1}


def test_a_late_delivered_is_recorded_and_nothing_is_sent_a_third_time(
    worker: Worker,
    keys: Keys,
    statuses: TopicReader,
    mail: MailSink,
    twilio: BackgroundServer[FakeTwilioServer],
) -> None:
    """sms, then a voice call, then email: the sms is delivered after the call went out, and
    the call's own timeout then starts no email."""
    alan = person()
    session_id = send(
        worker, keys, [alan], fallback={"channels": ["sms", "voice", "email"], "afterSeconds": 2}
    )
    [sms] = twilio_sids(twilio, "Messages", alan["phone"])
    twilio_sids(twilio, "Calls", alan["phone"])  # the fallback to voice fired
    assert event(statuses, session_id, "voice", "accepted")["detail"]["fallback_from"] == "sms"
    callback(twilio, sms, "delivered")  # late

    late = event(statuses, session_id, "sms", "delivered")
    assert late["detail"]["after_fallback_to"] == "voice"
    done = worker.wait_completed(session_id, keys.acme)
    assert done["counts"] == {"delivered": 1}

    # The call is never answered: it expires for lack of a report, after its own fallback
    # timeout was due. No email was started, or sent.
    expired = event(statuses, session_id, "voice", "expired")
    assert expired["error_code"] == "no-report"
    assert events(statuses, session_id, "email") == []
    assert mail.to(alan["email"]) == []
    assert len(twilio_sids(twilio, "Messages", alan["phone"])) == 1
    assert len(twilio_sids(twilio, "Calls", alan["phone"])) == 1
    assert worker.session(session_id, keys.acme).body["counts"] == {"delivered": 1}


def test_a_recipient_delivered_on_its_first_channel_never_gets_the_second(
    worker: Worker,
    keys: Keys,
    statuses: TopicReader,
    mail: MailSink,
    twilio: BackgroundServer[FakeTwilioServer],
) -> None:
    quick, silent = person(), person()
    session_id = send(
        worker, keys, [quick, silent], fallback={"channels": ["sms", "email"], "afterSeconds": 5}
    )
    [sid] = twilio_sids(twilio, "Messages", quick["phone"])
    callback(twilio, sid, "delivered")
    mail_to(mail, silent["email"])  # the other recipient's sms timed out: its email went
    done = worker.wait_completed(session_id, keys.acme)
    assert (done["deliveries"], done["counts"]) == (2, {"delivered": 2})
    # The silent sms expires after every fallback timeout of the session was due (the two
    # were handed off together): the quick recipient's never started an email.
    [expired] = statuses.wait(lambda e: e["session_id"] == session_id and e["status"] == "expired")
    assert expired["recipient"] == silent["phone"]
    assert mail.to(quick["email"]) == []
    assert [
        e["channel"] for e in statuses.matching(lambda e: e["recipient"] == quick["email"])
    ] == []


def test_a_fallback_step_after_the_send_by_deadline_expires_unsent(
    worker: Worker,
    keys: Keys,
    statuses: TopicReader,
    mail: MailSink,
    twilio: BackgroundServer[FakeTwilioServer],
) -> None:
    edsger = person()
    session_id = send(
        worker,
        keys,
        [edsger],
        ttlSeconds=3,
        fallback={"channels": ["sms", "email"], "afterSeconds": 4},
    )
    twilio_sids(twilio, "Messages", edsger["phone"])
    expired = event(statuses, session_id, "email", "expired")
    assert expired["error_code"] == expired["detail"]["reason"] == "deadline"
    assert "before the fallback to email" in expired["error"]
    assert event(statuses, session_id, "email", "accepted")["detail"]["reason"] == "fallback"
    done = worker.wait_completed(session_id, keys.acme)  # once the sms expires (no report)
    assert done["counts"] == {"expired": 1}
    assert mail.to(edsger["email"]) == []


def test_the_fallback_timer_survives_a_restart(
    worker: Worker,
    keys: Keys,
    statuses: TopicReader,
    mail: MailSink,
    twilio: BackgroundServer[FakeTwilioServer],
) -> None:
    """The worker crashes after the sms went out: the restarted worker sends the email."""
    barbara = person()
    session_id = send(
        worker, keys, [barbara], fallback={"channels": ["sms", "email"], "afterSeconds": 3}
    )
    twilio_sids(twilio, "Messages", barbara["phone"])
    event(statuses, session_id, "sms", "sent")
    worker.stop(signal.SIGKILL)
    worker.start()
    mail_to(mail, barbara["email"])
    assert worker.wait_completed(session_id, keys.acme)["counts"] == {"delivered": 1}
    assert len(twilio_sids(twilio, "Messages", barbara["phone"])) == 1


def test_every_problem_of_a_fallback_is_a_422(worker: Worker, keys: Keys) -> None:
    answer = worker.post(
        {
            "transport": {"message": "Hi"},
            "audience": [{"phone": "+14155550123"}, {"slack": "C0123456789"}],
            "options": {"fallback": {"channels": ["sms", "push", "sms"], "afterSeconds": 0}},
        },
        keys.acme,
    )
    assert answer.status == 422, answer.body
    fields = {e["field"] for e in answer.body["errors"]}
    assert {
        "options.fallback.channels[1]",  # push is not configured for acme
        "options.fallback.channels[2]",  # sms twice
        "options.fallback.afterSeconds",
    } <= fields, answer.body
