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
from dataclasses import dataclass
from typing import Any

import pytest

from tests.fakes.background import BackgroundServer
from tests.fakes.twilio_server import TEST_ACCOUNT_SID, TEST_AUTH_TOKEN, FakeTwilioServer
from tests.integration.conftest import Keys, WorkerFactory, clients_document
from tests.integration.harness import MailSink, TopicReader, Worker, wait_for

pytestmark = pytest.mark.kafka

SENDER = "+14155550100"
_people = itertools.count(int(time.time()) % 300_000 + 300_000)


@pytest.fixture(scope="module")
def worker(
    make_worker: WorkerFactory,
    keys: Keys,
    mail: MailSink,
    twilio: BackgroundServer[FakeTwilioServer],
) -> Worker:
    # acme's email goes to the test mail server; its sms and calls to the fake Twilio.
    document = clients_document(keys, mail.port)
    twilio_channel = {
        "provider": "twilio",
        "account_sid": TEST_ACCOUNT_SID,
        "auth_token_env": "ACME_TWILIO_TOKEN",
        "from": [SENDER],
        "api_base": twilio.url,
    }
    document["clients"]["acme"]["channels"].update(sms=twilio_channel, voice=twilio_channel)
    worker = make_worker(
        {"ACME_TWILIO_TOKEN": TEST_AUTH_TOKEN, "SWITCHBOARD_REPORT_TIMEOUT": "10"},
        document=document,
    )
    worker.extra_env["SWITCHBOARD_PUBLIC_URL"] = worker.url  # Twilio calls the worker back here
    return worker.start()


@dataclass(frozen=True)
class Scene:
    """What every test here uses: the worker, the API key, the status topic, the mail server
    and the fake Twilio; and the tests' steps on them."""

    worker: Worker
    key: str
    statuses: TopicReader
    mail: MailSink
    twilio: BackgroundServer[FakeTwilioServer]

    def send(self, audience: list[dict[str, str]], **options: Any) -> str:
        """Open a session with ``options`` (a fallback, ...); its id."""
        answer = self.worker.post(
            {
                "transport": {"message": "Your parcel is at the door", "subject": "Your parcel"},
                "audience": audience,
                "options": options,
            },
            self.key,
        )
        assert answer.status == 202, answer.body
        return str(answer.body["session_id"])

    def sids(self, resource: str, to: str, count: int = 1) -> list[str]:
        """The SIDs of the Twilio ``resource`` (Messages, Calls) for ``to``, once ``count`` are."""
        self.twilio.wait_records(
            lambda r: r.resource == resource and r.get("To") == to, count, timeout=60
        )
        prefix = "SM" if resource == "Messages" else "CA"
        resources = self.twilio.call(lambda: dict(self.twilio.fake.resources))
        return [sid for sid, r in resources.items() if r.get("to") == to and sid.startswith(prefix)]

    def callback(self, sid: str, status: str, error: int | None = None) -> None:
        """Twilio's signed status callback for message or call ``sid``."""
        assert self.twilio.call(self.twilio.fake.send_status_callback, sid, status, error) == 200

    def event(self, session_id: str, channel: str, status: str) -> dict[str, Any]:
        """The session's one event of ``status`` on ``channel``, once it is published."""
        [found] = self.statuses.wait(
            lambda e: (e["session_id"], e["channel"], e["status"]) == (session_id, channel, status)
        )
        return dict(found)

    def told(self, session_id: str, channel: str) -> list[str]:
        """The statuses published so far for the session's deliveries on ``channel``."""
        return [
            e["status"]
            for e in self.statuses.matching(
                lambda e: e["session_id"] == session_id and e["channel"] == channel
            )
        ]

    def mailed(self, address: str) -> list[Any]:
        """The emails to ``address``, once there is one."""
        found: list[Any] = wait_for(lambda: self.mail.to(address), 60, what=f"mail to {address}")
        return found

    def completed(self, session_id: str) -> dict[str, Any]:
        return self.worker.wait_completed(session_id, self.key)


@pytest.fixture
def at(
    worker: Worker,
    keys: Keys,
    statuses: TopicReader,
    mail: MailSink,
    twilio: BackgroundServer[FakeTwilioServer],
) -> Scene:
    return Scene(worker, keys.acme, statuses, mail, twilio)


def person() -> dict[str, str]:
    n = next(_people)
    return {"phone": f"+1415{500 + n // 10_000:03d}{n % 10_000:04d}", "email": f"p{n}@example.com"}


def test_an_sms_not_delivered_in_time_falls_back_to_email(at: Scene) -> None:
    ada = person()
    session_id = at.send([ada], fallback={"channels": ["sms", "email"], "afterSeconds": 2})
    at.sids("Messages", ada["phone"])  # handed to Twilio, which never reports
    [message] = at.mailed(ada["email"])
    assert message["Subject"] == "Your parcel"

    step = at.event(session_id, "email", "accepted")
    assert step["detail"] == {
        "reason": "fallback",
        "fallback_from": "sms",
        "why": "sms not delivered within 2 s",
        "step": 2,
    }
    sent = at.event(session_id, "sms", "sent")
    assert (step["occurred_at"] - sent["occurred_at"]).total_seconds() >= 2, "moved on early"

    done = at.completed(session_id)
    assert (done["deliveries"], done["counts"]) == (1, {"delivered": 1}), "one recipient, once"
    assert done["fallback"] == {"channels": ["sms", "email"], "afterSeconds": 2}
    assert [(r["channel"], r["status"]) for r in done["recipients"]] == [
        ("sms", "sent"),
        ("email", "delivered"),
    ]
    # The completed document is read from the worker's tables; the status topic is read by a
    # consumer of its own, which may still be behind: wait for the last event (a session's
    # events share its key, so every earlier one is read by then).
    at.event(session_id, "email", "delivered")
    assert at.told(session_id, "email") == ["accepted", "sent", "delivered"]


def test_a_permanent_sms_failure_falls_back_at_once(at: Scene) -> None:
    """Ten minutes to be delivered, but Twilio says undelivered: the email goes now."""
    grace = person()
    session_id = at.send([grace], fallback={"channels": ["sms", "email"], "afterSeconds": 600})
    [sid] = at.sids("Messages", grace["phone"])
    at.callback(sid, "undelivered", 30005)
    at.mailed(grace["email"])
    step = at.event(session_id, "email", "accepted")
    assert step["detail"]["why"].startswith("sms undelivered"), step
    assert at.event(session_id, "sms", "undelivered")["error_code"] == "30005"
    assert at.completed(session_id)["counts"] == {"delivered": 1}


def test_a_late_delivered_is_recorded_and_nothing_is_sent_a_third_time(at: Scene) -> None:
    """sms, then a voice call, then email: the sms is delivered after the call went out, and
    the call's own timeout then starts no email."""
    alan = person()
    plan = {"channels": ["sms", "voice", "email"], "afterSeconds": 2}
    session_id = at.send([alan], fallback=plan)
    [sms] = at.sids("Messages", alan["phone"])
    at.sids("Calls", alan["phone"])  # the fallback to voice fired
    assert at.event(session_id, "voice", "accepted")["detail"]["fallback_from"] == "sms"
    at.callback(sms, "delivered")  # late

    late = at.event(session_id, "sms", "delivered")
    assert late["detail"]["after_fallback_to"] == "voice"
    assert at.completed(session_id)["counts"] == {"delivered": 1}

    # The call is never answered: it expires for lack of a report, after its own fallback
    # timeout was due. No email was started, or sent.
    assert at.event(session_id, "voice", "expired")["error_code"] == "no-report"
    assert at.told(session_id, "email") == []
    assert at.mail.to(alan["email"]) == []
    assert len(at.sids("Messages", alan["phone"])) == len(at.sids("Calls", alan["phone"])) == 1
    assert at.worker.session(session_id, at.key).body["counts"] == {"delivered": 1}


def test_a_recipient_delivered_on_its_first_channel_never_gets_the_second(at: Scene) -> None:
    quick, silent = person(), person()
    plan = {"channels": ["sms", "email"], "afterSeconds": 5}
    session_id = at.send([quick, silent], fallback=plan)
    [sid] = at.sids("Messages", quick["phone"])
    at.callback(sid, "delivered")
    at.mailed(silent["email"])  # the other recipient's sms timed out: its email went
    done = at.completed(session_id)
    assert (done["deliveries"], done["counts"]) == (2, {"delivered": 2})
    # The silent sms expires after every fallback timeout of the session was due (the two
    # were handed off together): the quick recipient's never started an email.
    assert at.event(session_id, "sms", "expired")["recipient"] == silent["phone"]
    assert at.mail.to(quick["email"]) == []
    assert at.statuses.matching(lambda e: e["recipient"] == quick["email"]) == []


def test_a_fallback_step_after_the_send_by_deadline_expires_unsent(at: Scene) -> None:
    edsger = person()
    plan = {"channels": ["sms", "email"], "afterSeconds": 4}
    session_id = at.send([edsger], ttlSeconds=3, fallback=plan)
    at.sids("Messages", edsger["phone"])
    expired = at.event(session_id, "email", "expired")
    assert expired["error_code"] == expired["detail"]["reason"] == "deadline"
    assert "before the fallback to email" in expired["error"]
    assert at.event(session_id, "email", "accepted")["detail"]["reason"] == "fallback"
    assert at.completed(session_id)["counts"] == {"expired": 1}  # once the sms expires too
    assert at.mail.to(edsger["email"]) == []


def test_the_fallback_timer_survives_a_restart(at: Scene) -> None:
    """The worker crashes after the sms went out: the restarted worker sends the email."""
    barbara = person()
    session_id = at.send([barbara], fallback={"channels": ["sms", "email"], "afterSeconds": 3})
    at.sids("Messages", barbara["phone"])
    at.event(session_id, "sms", "sent")
    at.worker.stop(signal.SIGKILL)
    at.worker.start()
    at.mailed(barbara["email"])
    assert at.completed(session_id)["counts"] == {"delivered": 1}
    assert len(at.sids("Messages", barbara["phone"])) == 1


def test_every_problem_of_a_fallback_is_a_422(at: Scene) -> None:
    answer = at.worker.post(
        {
            "transport": {"message": "Hi"},
            "audience": [{"phone": "+14155550123"}, {"slack": "C0123456789"}],
            "options": {
                "fallback": {"channels": ["sms", "whatsapp", "sms", "fax"], "afterSeconds": 0}
            },
        },
        at.key,
    )
    assert answer.status == 422, answer.body
    fields = {e["field"] for e in answer.body["errors"]}
    assert {
        "options.fallback.channels[1]",  # whatsapp is not configured for acme
        "options.fallback.channels[2]",  # sms twice
        "options.fallback.channels[3]",  # no such channel
        "options.fallback.afterSeconds",
    } <= fields, answer.body
