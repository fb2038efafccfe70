"""Compliance on every channel, end to end on the real broker (issue 14, part 3).

* A number's STOP (a signed inbound SMS, as Twilio sends it) withholds its voice broadcasts and
  WhatsApp messages too, through the real Twilio transport to a fake Twilio that records every
  request; a client that narrowed ``optout_channels`` to sms still calls the number.
* A number in sixteen time zones (a Russian mobile) whose three-hour window is never open in
  all of them at once is ``rejected`` (``no-common-window``), never sent outside it.
* Bulk email carries ``List-Unsubscribe`` and ``List-Unsubscribe-Post`` (read from the message
  the local aiosmtpd server received); the one-click POST of that link, signed, suppresses a later
  send to the address; a forged one changes nothing; a transactional email has no such header and
  is still sent.
"""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest

from switchboard.clients import api_key_digest
from tests.fakes.background import BackgroundServer
from tests.fakes.twilio_server import TEST_ACCOUNT_SID, TEST_AUTH_TOKEN, FakeTwilioServer
from tests.integration.conftest import Keys, WorkerFactory
from tests.integration.harness import MailSink, TopicReader, Worker, http, status_reader

pytestmark = pytest.mark.kafka

SENDER = "+14155550100"
NARROW_SENDER = "+14155550111"
SECRET = "integration-unsubscribe-secret-0123456789"
NARROW_KEY = "narrow-key-0123456789abcdef"
QUIET_KEY = "quiet-key-0123456789abcdef"
_numbers = itertools.count(int(time.time()) % 300_000 + 300_000)
_mailboxes = itertools.count(1)


def number() -> str:
    n = next(_numbers)
    return f"+1415{200 + n // 10_000:03d}{n % 10_000:04d}"


def mailbox() -> str:
    return f"reader{next(_mailboxes)}-{int(time.time())}@example.com"


@pytest.fixture(scope="module")
def worker(
    make_worker: WorkerFactory,
    keys: Keys,
    mail: MailSink,
    twilio: BackgroundServer[FakeTwilioServer],
) -> Worker:
    def twilio_channel(sender: str) -> dict[str, Any]:
        return {
            "provider": "twilio",
            "account_sid": TEST_ACCOUNT_SID,
            "auth_token_env": "ACME_TWILIO_TOKEN",
            "from": [sender],
            "api_base": twilio.url,
            "rate_per_second": 50,
        }

    email = {
        "provider": "smtp",
        "from": "Acme <news@acme.example>",
        "host": "127.0.0.1",
        "port": mail.port,
        "security": "none",
    }
    document = {
        "clients": {
            "acme": {
                "api_keys": [api_key_digest(keys.acme)],
                "default_channels": ["sms"],
                "channels": {
                    "sms": twilio_channel(SENDER),
                    "voice": twilio_channel(SENDER),
                    "whatsapp": twilio_channel(SENDER),
                    "email": email,
                },
            },
            "narrow": {
                "api_keys": [api_key_digest(NARROW_KEY)],
                "default_channels": ["sms"],
                "optout_channels": ["sms"],
                "channels": {
                    "sms": twilio_channel(NARROW_SENDER),
                    "voice": {"provider": "sandbox"},
                },
            },
            "quiet": {
                "api_keys": [api_key_digest(QUIET_KEY)],
                "default_channels": ["sms"],
                "channels": {"sms": {"provider": "sandbox"}},
                "time_windows": {
                    "sms": {"start": "09:00", "end": "12:00", "timezone": "recipient"}
                },
            },
        }
    }
    worker = make_worker(
        {"ACME_TWILIO_TOKEN": TEST_AUTH_TOKEN, "SWITCHBOARD_UNSUBSCRIBE_SECRET": SECRET},
        document=document,
    )
    # Twilio calls the worker back here, and the unsubscribe links point here.
    worker.extra_env["SWITCHBOARD_PUBLIC_URL"] = worker.url
    return worker.start()


@pytest.fixture(scope="module")
def statuses(kafka: Any, worker: Worker) -> Iterator[TopicReader]:
    reader = status_reader(kafka.bootstrap_servers, worker.topic("status"))
    yield reader
    reader.close()


def send(worker: Worker, key: str, channel: str, audience: list[str], **options: Any) -> str:
    body: dict[str, Any] = {
        "transport": {"type": channel, "message": "Hello from Acme"},
        "audience": audience,
    }
    if channel == "email":
        body["transport"]["subject"] = "News"
    if options:
        body["options"] = options
    answer = worker.post(body, key)
    assert answer.status == 202, answer.body
    return str(answer.body["session_id"])


#: Statuses after which a delivery's outcome is known here (a call stays ``sent`` until Twilio
#: calls back, which the fake does not do unasked).
SETTLED = frozenset({"sent", "delivered", "failed", "suppressed", "rejected", "undelivered"})


def final(statuses: TopicReader, session_id: str, address: str) -> dict[str, Any]:
    """The first settled status event of ``address`` in the session (``sent`` for a message
    handed to its provider, also when ``delivered`` follows at once)."""
    [event] = statuses.wait(
        lambda e: (
            e["session_id"] == session_id and e["recipient"] == address and e["status"] in SETTLED
        ),
        1,
        60,
    )[:1]
    return dict(event)


def stop(worker: Worker, twilio: BackgroundServer[FakeTwilioServer], sender: str, to: str) -> None:
    """A signed inbound ``STOP`` from ``sender`` to the client number ``to``, as Twilio sends it."""
    inbound = f"{worker.url}/twilio/messages/inbound"
    params = {
        "From": sender,
        "To": to,
        "Body": "STOP",
        "AccountSid": TEST_ACCOUNT_SID,
        "MessageSid": "SM" + "2" * 32,
    }
    signed = {
        "X-Twilio-Signature": twilio.fake.signature(inbound, params),
        "Content-Type": "application/x-www-form-urlencoded",
    }
    answer = http("POST", inbound, raw=urlencode(params).encode(), headers=signed)
    assert answer.status == 200 and "unsubscribed" in answer.body


def requests_to(twilio: BackgroundServer[FakeTwilioServer], address: str) -> list[Any]:
    return twilio.records("requests", lambda r: r.get("To") in (address, f"whatsapp:{address}"))


def test_a_stop_withholds_voice_and_whatsapp_too(
    worker: Worker, keys: Keys, statuses: TopicReader, twilio: BackgroundServer[FakeTwilioServer]
) -> None:
    opted_out, by_whatsapp, other = number(), number(), number()
    stop(worker, twilio, opted_out, SENDER)
    # A STOP sent over WhatsApp comes from "whatsapp:+1..." and opts out the same number.
    stop(worker, twilio, f"whatsapp:{by_whatsapp}", f"whatsapp:{SENDER}")

    for channel in ("voice", "whatsapp", "sms"):
        session_id = send(worker, keys.acme, channel, [opted_out, by_whatsapp, other])
        for address in (opted_out, by_whatsapp):
            event = final(statuses, session_id, address)
            assert (event["status"], event["error_code"], event["channel"]) == (
                "suppressed",
                "opted-out",
                channel,
            ), event
        assert final(statuses, session_id, other)["status"] in ("sent", "delivered")
    assert requests_to(twilio, opted_out) == [] and requests_to(twilio, by_whatsapp) == []
    assert {r.resource for r in requests_to(twilio, other)} == {"Calls", "Messages"}


def test_a_client_can_narrow_a_numbers_opt_out_to_sms(
    worker: Worker, statuses: TopicReader, twilio: BackgroundServer[FakeTwilioServer]
) -> None:
    address = number()
    stop(worker, twilio, address, NARROW_SENDER)
    sms = send(worker, NARROW_KEY, "sms", [address])
    voice = send(worker, NARROW_KEY, "voice", [address])
    assert final(statuses, sms, address)["error_code"] == "opted-out"
    assert final(statuses, voice, address)["status"] == "sent"  # optout_channels: [sms]


def test_bulk_email_has_a_one_click_unsubscribe_that_suppresses_later_sends(
    worker: Worker, keys: Keys, statuses: TopicReader, mail: MailSink
) -> None:
    ana, bob = mailbox(), mailbox()
    first = send(worker, keys.acme, "email", [ana, bob])
    assert final(statuses, first, ana)["status"] == "sent"
    [message] = mail.to(ana)
    header = str(message["List-Unsubscribe"])
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    found = re.fullmatch(r"<(\S+)>", re.sub(r"\s+", "", header))
    assert found and found[1].startswith(f"{worker.url}/v1/unsubscribe?t="), header
    link = found[1]
    bob_link = re.sub(r"\s+", "", str(mail.to(bob)[0]["List-Unsubscribe"]))[1:-1]
    assert SECRET not in link and link != bob_link

    one_click = {"Content-Type": "application/x-www-form-urlencoded"}
    body = b"List-Unsubscribe=One-Click"
    # A forged or altered link is refused and records nothing; a GET (a mail scanner's
    # prefetch) shows a page and records nothing either.
    forged = link[:-3] + ("AAA" if not link.endswith("AAA") else "BBB")
    assert http("POST", forged, raw=body, headers=one_click).status == 403
    assert (
        http("POST", f"{worker.url}/v1/unsubscribe?t=x.y", raw=body, headers=one_click).status
        == 403
    )
    page = http("GET", bob_link, headers={"Accept": "text/html"})
    assert page.status == 200 and "Unsubscribe" in page.body and 'method="post"' in page.body
    assert http("POST", link, raw=b"List-Unsubscribe=Later", headers=one_click).status == 400
    second = send(worker, keys.acme, "email", [ana, bob])
    assert final(statuses, second, ana)["status"] == "sent"
    assert final(statuses, second, bob)["status"] == "sent"

    # The one-click POST, as a mail client sends it: 200 once recorded.
    answer = http("POST", link, raw=body, headers=one_click)
    assert answer.status == 200, answer.body
    third = send(worker, keys.acme, "email", [ana, bob])
    event = final(statuses, third, ana)
    assert (event["status"], event["error_code"]) == ("suppressed", "opted-out"), event
    assert final(statuses, third, bob)["status"] == "sent"
    assert len(mail.to(ana)) == 2, "nothing was mailed after the unsubscribe"

    # A transactional email (a receipt) has no unsubscribe header, and still reaches ana.
    receipt = send(worker, keys.acme, "email", [ana], transactional=True)
    assert final(statuses, receipt, ana)["status"] == "sent"
    last = mail.to(ana)[-1]
    assert last["List-Unsubscribe"] is None and last["List-Unsubscribe-Post"] is None


def test_a_window_never_open_in_all_of_a_numbers_zones_rejects_the_delivery(
    worker: Worker, statuses: TopicReader
) -> None:
    russian, with_profile = "+79161234567", "+79161234568"
    answer = worker.post(
        {
            "transport": {"type": "sms", "message": "Hello"},
            "audience": [russian, {"phone": with_profile, "timezone": "Europe/Moscow"}],
        },
        QUIET_KEY,
    )
    assert answer.status == 202, answer.body
    session_id = answer.body["session_id"]
    event = final(statuses, session_id, russian)
    assert (event["status"], event["error_code"]) == ("rejected", "no-common-window"), event
    assert "Asia/Kamchatka" in event["error"] and "timezone" in event["error"]
    # The profile's zone is the only one read: sent now, or held for 09:00 in Moscow.
    [held_or_sent] = statuses.wait(
        lambda e: (
            e["session_id"] == session_id
            and e["recipient"] == with_profile
            and e["status"] in ("deferred", "sent")
        ),
    )[:1]
    assert held_or_sent["status"] in ("deferred", "sent")
