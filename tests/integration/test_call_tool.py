"""The call tool end to end, on the real broker (README: "The call tool").

One worker process serves the module. Its ``acme`` client has a Twilio ``voice`` channel pointed
at the fake Twilio (``tests/fakes/twilio_server.py``, in a background thread) and two campaigns.
The worker's ``SWITCHBOARD_PUBLIC_URL`` is its own address, so the fake, playing Twilio, calls
the worker's TwiML steps and callbacks with valid ``X-Twilio-Signature`` headers, exactly as
Twilio would: after ``POST /api/call`` creates a call, the fake posts the status callbacks and
follows the TwiML (:class:`~tests.fakes.twilio_server.CallPlan` says which keys the member
presses and how the dial ends).

Every test uses member numbers of its own, so it finds its requests among the fake's records.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import urllib.parse
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from switchboard.calltool.calls import target_checksum
from tests.fakes.background import BackgroundServer
from tests.fakes.twilio_server import (
    TEST_ACCOUNT_SID,
    TEST_AUTH_TOKEN,
    Behaviour,
    CallDrive,
    CallPlan,
    FakeTwilioServer,
    RecordedRequest,
)
from tests.integration.conftest import Keys, WorkerFactory, clients_document
from tests.integration.harness import Answer, MailSink, TopicReader, Worker, http, wait_for

pytestmark = pytest.mark.kafka

TOKEN_ENV = "SB_TEST_CALLS_TWILIO_TOKEN"
SECRET_ENV = "SB_TEST_CALLS_TARGET_SECRET"
SECRET = secrets.token_hex(24)
SENDER = "+14155550100"  # the voice channel's `from`
CALLER_ID = "+14155550101"  # the campaign's caller id: what members see
TARGET = "+14155550199"
TARGET_CALLER_ID = "+14155550102"
MANUAL_TARGET = "+14155550198"
SOUND = "https://cdn.example.org/bees/message.mp3"
MENU = "https://cdn.example.org/bees/menu.mp3"
#: The member has answered, listened to the clip without a key, then pressed 1 at the menu.
CONNECTS = (None, "1")
STATUS_EVENTS = ["initiated", "ringing", "answered", "completed"]


# -- the fake, the clients and the worker -----------------------------------------------------


@pytest.fixture(scope="module")
def twilio() -> Iterator[BackgroundServer[FakeTwilioServer]]:
    with BackgroundServer(FakeTwilioServer) as server:
        yield server


def calls_document(keys: Keys, mail: MailSink, twilio_url: str) -> dict[str, Any]:
    document = clients_document(keys, mail.port)
    acme = document["clients"]["acme"]
    acme["channels"]["voice"] = {
        "provider": "twilio",
        "account_sid": TEST_ACCOUNT_SID,
        "auth_token_env": TOKEN_ENV,
        "from": [SENDER],
        "api_base": twilio_url,
        "rate_per_second": 1000,
        "timeout": 20,
    }
    acme["campaigns"] = {
        "bees": {
            "sound_clip_url": SOUND,
            "menu_clip_url": MENU,
            "caller_id": CALLER_ID,
            "checksum_secret_env": SECRET_ENV,
            "targets": [
                {
                    "id": "mp-smith",
                    "name": "Jane Smith MP",
                    "phone_number": TARGET,
                    "extension": "123",
                    "caller_id": TARGET_CALLER_ID,
                },
            ],
        },
        # Spoken menu, no caller id (the channel's `from`), and a short silence limit.
        "quiet": {
            "sound_clip_url": SOUND,
            "menu_text": "Press 1 to speak to your representative.",
            "language": "en-GB",
            "silence_limit": 2,
            "targets": [{"id": "desk", "name": "Front desk", "phone_number": TARGET}],
        },
    }
    return document


@pytest.fixture(scope="module")
def worker(
    twilio: BackgroundServer[FakeTwilioServer],
    make_worker: WorkerFactory,
    keys: Keys,
    mail: MailSink,
) -> Worker:
    """The module's one worker; its public URL is its own address, for the fake to call."""
    env = {TOKEN_ENV: TEST_AUTH_TOKEN, SECRET_ENV: SECRET}
    made = make_worker(extra_env=env, document=calls_document(keys, mail, twilio.url))
    made.extra_env["SWITCHBOARD_PUBLIC_URL"] = made.url
    return made.start()


@pytest.fixture(autouse=True)
def _fake_stays_healthy(twilio: BackgroundServer[FakeTwilioServer]) -> Iterator[None]:
    yield
    assert not twilio.loop_errors, twilio.loop_errors


# -- helpers ------------------------------------------------------------------------------------

_numbers = iter(range(2000, 10000))


def member_number() -> str:
    """A valid US number (+1 415 555 xxxx) no other test of this module uses."""
    return f"+1415555{next(_numbers):04d}"


def place(worker: Worker, key: str, member: str, **fields: Any) -> Answer:
    body: dict[str, Any] = {"campaign_id": "bees", "target_id": "mp-smith", **fields}
    body["member_phone_number"] = member
    body = {k: v for k, v in body.items() if v is not None}
    return http("POST", f"{worker.url}/api/call", body, key=key)


def placed(worker: Worker, key: str, member: str, **fields: Any) -> str:
    answer = place(worker, key, member, **fields)
    assert answer.status == 201, answer.body
    assert set(answer.body) == {"call_id"}
    return str(answer.body["call_id"])


def state(worker: Worker, key: str, call_id: str) -> Answer:
    return http("GET", f"{worker.url}/v1/calls/{call_id}", key=key)


def state_when(
    worker: Worker, key: str, call_id: str, until: Callable[[dict[str, Any]], bool], what: str
) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        answer = state(worker, key, call_id)
        return answer.body if answer.status == 200 and until(answer.body) else None

    document: dict[str, Any] = wait_for(ready, 60, 0.1, what)
    return document


def drive_of(twilio: BackgroundServer[FakeTwilioServer], member: str) -> CallDrive:
    [drive] = twilio.wait_records(
        lambda d: d.to == member and d.finished, attribute="drives", timeout=60
    )
    assert drive.error is None, (drive.error, drive.steps)
    result: CallDrive = drive
    return result


def create_request(twilio: BackgroundServer[FakeTwilioServer], member: str) -> RecordedRequest:
    [request] = twilio.wait_records(lambda r: r.resource == "Calls" and r.to == member, timeout=30)
    result: RecordedRequest = request
    return result


def call_events(
    statuses: TopicReader, call_id: str, last: str, timeout: float = 60
) -> list[dict[str, Any]]:
    """The call's status events, once one with status ``last`` has arrived."""
    statuses.wait(lambda r: r["session_id"] == call_id and r["status"] == last, 1, timeout)
    events = statuses.matching(lambda r: r["session_id"] == call_id)
    assert all(e["_key"] == call_id.encode() for e in events), "keyed by call id"
    assert all(e["channel"] == "voice" and e["client_id"] == "acme" for e in events)
    return events


def changes(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["status"], e["detail"]["change"]) for e in events]


def step_url(worker: Worker, call_id: str, step: str) -> str:
    return f"{worker.url}/twilio/calls/{call_id}/{step}"


def post_form(url: str, params: dict[str, str], signature: str | None) -> Answer:
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if signature is not None:
        headers["X-Twilio-Signature"] = signature
    return http("POST", url, raw=urllib.parse.urlencode(params).encode(), headers=headers)


# -- a call, the whole way ----------------------------------------------------------------------


def test_member_presses_1_and_talks_to_the_target(
    worker: Worker, keys: Keys, twilio: BackgroundServer[FakeTwilioServer], statuses: TopicReader
) -> None:
    member = member_number()
    twilio.call(twilio.fake.plan_call, CallPlan(keys=CONNECTS, dial="completed"), to=member)
    call_id = placed(worker, keys.acme, member)

    create = create_request(twilio, member)
    assert create.authorized and create.account_sid == TEST_ACCOUNT_SID
    assert create.get("From") == CALLER_ID
    assert create.get("Url") == step_url(worker, call_id, "start")
    assert create.get("Method") == "POST"
    assert create.get("StatusCallback") == step_url(worker, call_id, "status")
    assert create.get("StatusCallbackMethod") == "POST"
    assert list(create.getall("StatusCallbackEvent")) == STATUS_EVENTS

    drive = drive_of(twilio, member)
    assert drive.steps == [
        "start",
        "menu?attempt=1",
        "menu?attempt=1 Digits=1",
        "connect",
        "dial-status",
    ]
    assert all(f.status == 200 for f in drive.fetches)
    assert drive.played == [SOUND, MENU]
    assert drive.dials == [
        {
            "number": TARGET,
            "sendDigits": "ww123",
            "callerId": TARGET_CALLER_ID,
            "action": step_url(worker, call_id, "dial-status"),
        }
    ]
    assert drive.callbacks == [
        ("initiated", 200),
        ("ringing", 200),
        ("in-progress", 200),
        ("completed", 200),
    ]
    assert drive.hung_up

    document = state_when(
        worker, keys.acme, call_id, lambda d: d["member"]["final"], "member final"
    )
    assert document["call_id"] == call_id and document["campaign_id"] == "bees"
    assert document["target_id"] == "mp-smith" and document["target_number"] == TARGET
    assert document["member_number"] == member
    assert document["status"] == "connected"
    assert document["twilio_call_sid"] == drive.sid
    assert document["started_at"] and document["connected_at"] and document["error"] is None
    assert document["member"]["status"] == "completed"
    assert [e["status"] for e in document["member"]["events"]] == [
        "initiated",
        "ringing",
        "in-progress",
        "completed",
    ]
    assert document["target"]["status"] == "completed"

    events = call_events(statuses, call_id, "completed")
    assert changes(events) == [
        ("accepted", "created"),
        ("sent", "placed"),
        ("sent", "member_status"),
        ("sent", "member_status"),
        ("delivered", "member_status"),
        ("delivered", "started"),
        ("delivered", "connected"),
        ("delivered", "target_status"),
        ("completed", "member_status"),
    ]
    assert all(e["recipient"] == member for e in events)
    assert all(e["provider_message_id"] == drive.sid for e in events[1:])
    final = events[-1]["detail"]
    assert final["call_status"] == "connected" and final["target_status"] == "completed"
    assert final["campaign_id"] == "bees" and final["target_id"] == "mp-smith"


def test_busy_member(
    worker: Worker, keys: Keys, twilio: BackgroundServer[FakeTwilioServer], statuses: TopicReader
) -> None:
    member = member_number()
    twilio.call(twilio.fake.plan_call, CallPlan(member="busy"), to=member)
    call_id = placed(worker, keys.acme, member)

    drive = drive_of(twilio, member)
    assert drive.steps == [], "Twilio fetches no TwiML for a call nobody answers"
    assert drive.callbacks == [("initiated", 200), ("ringing", 200), ("busy", 200)]

    document = state_when(worker, keys.acme, call_id, lambda d: d["member"]["final"], "busy")
    assert document["status"] == "unstarted"
    assert document["member"]["status"] == "busy"
    assert document["target"]["status"] is None
    events = call_events(statuses, call_id, "undelivered")
    assert [s for s, _ in changes(events)] == ["accepted", "sent", "sent", "sent", "undelivered"]


def test_member_who_never_presses_a_key_hears_three_menus_then_goodbye(
    worker: Worker, keys: Keys, twilio: BackgroundServer[FakeTwilioServer], statuses: TopicReader
) -> None:
    member = member_number()
    twilio.call(twilio.fake.plan_call, CallPlan(keys=()), to=member)
    call_id = placed(worker, keys.acme, member)

    drive = drive_of(twilio, member)
    assert drive.steps == ["start", "menu?attempt=1", "menu?attempt=2", "menu?attempt=3"]
    assert drive.played == [SOUND, MENU, MENU, MENU]
    assert drive.said == ["Goodbye."] and drive.hung_up
    assert drive.dials == []

    document = state_when(worker, keys.acme, call_id, lambda d: d["member"]["final"], "hung up")
    assert document["status"] == "started", "heard the message, never connected"
    assert document["member"]["status"] == "completed"
    assert document["target"]["status"] is None and document["connected_at"] is None
    events = call_events(statuses, call_id, "completed")
    assert ("delivered", "started") in changes(events)
    assert not any(change == "connected" for _, change in changes(events))


def test_a_silent_member_hears_three_menus_when_twilio_posts_empty_results(
    worker: Worker, keys: Keys, twilio: BackgroundServer[FakeTwilioServer]
) -> None:
    """Issue 14, part 5: a gather that times out may post an empty ``Digits`` to its action
    (``actionOnEmptyResult``, or ``#`` alone). The clip's gather did so as if a menu had been
    heard, and the member heard the menu twice, not three times."""
    member = member_number()
    twilio.call(twilio.fake.plan_call, CallPlan(keys=(), empty_result=True), to=member)
    placed(worker, keys.acme, member)

    drive = drive_of(twilio, member)
    assert drive.steps == [
        "start",
        "menu?attempt=0 Digits=",
        "menu?attempt=1 Digits=",
        "menu?attempt=2 Digits=",
        "menu?attempt=3 Digits=",
    ]
    assert drive.played == [SOUND, MENU, MENU, MENU]
    assert drive.said == ["Goodbye."] and drive.hung_up and drive.dials == []


def test_target_who_does_not_answer(
    worker: Worker, keys: Keys, twilio: BackgroundServer[FakeTwilioServer], statuses: TopicReader
) -> None:
    member = member_number()
    twilio.call(twilio.fake.plan_call, CallPlan(keys=CONNECTS, dial="no-answer"), to=member)
    call_id = placed(worker, keys.acme, member)

    drive = drive_of(twilio, member)
    assert drive.steps == [
        "start",
        "menu?attempt=1",
        "menu?attempt=1 Digits=1",
        "connect",
        "dial-status",
    ]
    assert drive.fetches[-1].params["DialCallStatus"] == "no-answer"
    assert drive.said == ["Sorry, we could not connect your call. Goodbye."] and drive.hung_up

    document = state_when(worker, keys.acme, call_id, lambda d: d["member"]["final"], "hung up")
    assert document["status"] == "connected"
    assert document["target"]["status"] == "no-answer"
    assert [e["dial_call_sid"] for e in document["target"]["events"]] == [
        drive.fetches[-1].params["DialCallSid"]
    ]
    events = call_events(statuses, call_id, "completed")
    [target] = [e for e in events if e["detail"]["change"] == "target_status"]
    assert target["detail"]["target_status"] == "no-answer"


def test_pressing_2_replays_the_message(
    worker: Worker, keys: Keys, twilio: BackgroundServer[FakeTwilioServer]
) -> None:
    member = member_number()
    twilio.call(twilio.fake.plan_call, CallPlan(keys=(None, "2", None, "1")), to=member)
    call_id = placed(worker, keys.acme, member)

    drive = drive_of(twilio, member)
    assert drive.steps == [
        "start",
        "menu?attempt=1",
        "menu?attempt=1 Digits=2",
        "start",
        "menu?attempt=1",
        "menu?attempt=1 Digits=1",
        "connect",
        "dial-status",
    ]
    assert drive.played == [SOUND, MENU, SOUND, MENU]
    document = state_when(worker, keys.acme, call_id, lambda d: d["member"]["final"], "done")
    assert document["status"] == "connected", "the second start changes nothing"


def test_spoken_menu_and_the_channels_caller_id(
    worker: Worker, keys: Keys, twilio: BackgroundServer[FakeTwilioServer]
) -> None:
    member = member_number()
    twilio.call(twilio.fake.plan_call, CallPlan(keys=("1",)), to=member)
    placed(worker, keys.acme, member, campaign_id="quiet", target_id="desk")

    assert create_request(twilio, member).get("From") == SENDER
    drive = drive_of(twilio, member)
    assert drive.steps == ["start", "menu?attempt=0 Digits=1", "connect", "dial-status"], (
        "1 during the clip connects"
    )
    assert drive.dials[0]["number"] == TARGET and drive.dials[0]["sendDigits"] is None


# -- signatures -----------------------------------------------------------------------------------


def test_a_bad_signature_is_refused_and_changes_nothing(
    worker: Worker, keys: Keys, twilio: BackgroundServer[FakeTwilioServer], statuses: TopicReader
) -> None:
    member = member_number()
    call_id = placed(worker, keys.acme, member)  # no plan: nobody drives this call
    sid = state_when(worker, keys.acme, call_id, lambda d: d["twilio_call_sid"], "the SID")[
        "twilio_call_sid"
    ]
    fake = twilio.fake
    params = {
        "AccountSid": TEST_ACCOUNT_SID,
        "CallSid": sid,
        "From": CALLER_ID,
        "To": member,
        "CallStatus": "completed",
        "SequenceNumber": "0",
        "ApiVersion": "2010-04-01",
    }
    status_url = step_url(worker, call_id, "status")
    start_url = step_url(worker, call_id, "start")
    forged = {
        "no signature": post_form(status_url, params, None),
        "signed for another URL": post_form(status_url, params, fake.signature(start_url, params)),
        "tampered parameter": post_form(
            status_url, {**params, "CallStatus": "busy"}, fake.signature(status_url, params)
        ),
        "another account's token": post_form(status_url, params, "c2lnbmF0dXJl"),
        "start without signature": post_form(start_url, params, None),
        "connect signed for start": post_form(
            step_url(worker, call_id, "connect"), params, fake.signature(start_url, params)
        ),
    }
    assert {what: answer.status for what, answer in forged.items()} == dict.fromkeys(forged, 403)

    time.sleep(1.0)  # anything the refused requests had produced would be applied by now
    document = state(worker, keys.acme, call_id).body
    assert document["status"] == "unstarted" and document["member"]["events"] == []
    assert [c for _, c in changes(statuses.matching(lambda r: r["session_id"] == call_id))] == [
        "created",
        "placed",
    ]

    # The same callback, correctly signed, is taken: the check refuses forgeries only.
    assert post_form(status_url, params, fake.signature(status_url, params)).status == 200
    document = state_when(worker, keys.acme, call_id, lambda d: d["member"]["final"], "callback")
    assert document["member"]["status"] == "completed"


def test_a_step_of_an_unknown_call_is_404(worker: Worker) -> None:
    url = step_url(worker, "no-such-call", "start")
    assert post_form(url, {"CallSid": "CA" + "0" * 32}, "c2lnbmF0dXJl").status == 404


# -- the limit ---------------------------------------------------------------------------------


def test_five_calls_per_member_and_campaign_even_concurrently(
    worker: Worker, keys: Keys, twilio: BackgroundServer[FakeTwilioServer]
) -> None:
    member = member_number()
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: place(worker, keys.acme, member), range(8)))
    assert sorted(a.status for a in answers) == [201] * 5 + [403] * 3, [a.body for a in answers]
    refused = next(a for a in answers if a.status == 403)
    assert refused.body["errors"][0]["field"] == "member_phone_number"
    assert place(worker, keys.acme, member).status == 403, "still over the limit"
    twilio.wait_records(lambda r: r.resource == "Calls" and r.to == member, 5)
    time.sleep(0.5)
    assert len(twilio.records(predicate=lambda r: r.resource == "Calls" and r.to == member)) == 5

    # Another campaign is another count; and the same member, formatted otherwise, is the same.
    assert place(worker, keys.acme, member, campaign_id="quiet", target_id="desk").status == 201
    national = f"+1 ({member[2:5]}) {member[5:8]}-{member[8:]}"
    assert place(worker, keys.acme, national).status == 403


def test_a_call_that_failed_at_creation_does_not_count(
    worker: Worker, keys: Keys, twilio: BackgroundServer[FakeTwilioServer]
) -> None:
    member = member_number()
    twilio.script(
        Behaviour.error(400, 21215, "Geo permissions do not allow this call"), to=member, times=2
    )
    assert [place(worker, keys.acme, member).status for _ in range(2)] == [422, 422]
    assert [place(worker, keys.acme, member).status for _ in range(6)] == [201] * 5 + [403]


# -- manual targets ---------------------------------------------------------------------------------


def test_manual_target_with_a_valid_checksum_is_dialled(
    worker: Worker, keys: Keys, twilio: BackgroundServer[FakeTwilioServer]
) -> None:
    member = member_number()
    twilio.call(twilio.fake.plan_call, CallPlan(keys=CONNECTS), to=member)
    checksum = target_checksum(MANUAL_TARGET, SECRET.encode())
    call_id = placed(
        worker,
        keys.acme,
        member,
        target_id=None,
        target_phone_number="+1 415-555-0198",
        target_checksum=checksum.upper(),
    )

    drive = drive_of(twilio, member)
    assert [d["number"] for d in drive.dials] == [MANUAL_TARGET]
    assert drive.dials[0]["sendDigits"] is None and drive.dials[0]["callerId"] is None
    document = state_when(worker, keys.acme, call_id, lambda d: d["member"]["final"], "done")
    assert document["target_id"] is None and document["target_number"] == MANUAL_TARGET


def test_manual_target_with_the_readme_s_recipe_is_dialled(
    worker: Worker, keys: Keys, twilio: BackgroundServer[FakeTwilioServer]
) -> None:
    """Issue 14, part 5: the checksum computed from the README's words alone (HMAC-SHA256 keyed
    with the secret's UTF-8 bytes, over the context, a zero byte and the E.164 number; the first
    32 hex digits) is accepted."""
    member = member_number()
    twilio.call(twilio.fake.plan_call, CallPlan(keys=CONNECTS), to=member)
    message = b"switchboard/call-target/v1\x00" + MANUAL_TARGET.encode()
    checksum = hmac.new(SECRET.encode(), message, hashlib.sha256).hexdigest()[:32]
    call_id = placed(
        worker,
        keys.acme,
        member,
        target_id=None,
        target_phone_number=MANUAL_TARGET,
        target_checksum=checksum,
    )
    assert [d["number"] for d in drive_of(twilio, member).dials] == [MANUAL_TARGET]
    document = state_when(worker, keys.acme, call_id, lambda d: d["member"]["final"], "done")
    assert document["target_id"] is None and document["target_number"] == MANUAL_TARGET


@pytest.mark.parametrize(
    ("number", "checksum", "field"),
    [
        (MANUAL_TARGET, "tampered", "target_checksum"),
        ("+14155550197", "checksum of another number", "target_checksum"),
        (MANUAL_TARGET, None, "target_checksum"),
    ],
)
def test_manual_target_with_a_bad_checksum_is_refused(
    worker: Worker,
    keys: Keys,
    twilio: BackgroundServer[FakeTwilioServer],
    number: str,
    checksum: str | None,
    field: str,
) -> None:
    member = member_number()
    if checksum == "tampered":
        good = target_checksum(number, SECRET.encode())
        checksum = ("0" if good[0] != "0" else "1") + good[1:]
    elif checksum is not None:
        checksum = target_checksum(MANUAL_TARGET, SECRET.encode())
    answer = place(
        worker,
        keys.acme,
        member,
        target_id=None,
        target_phone_number=number,
        target_checksum=checksum,
    )
    assert answer.status == 422, answer.body
    assert [e["field"] for e in answer.body["errors"]] == [field]
    assert not twilio.records(predicate=lambda r: r.to == member)


# -- refusals -------------------------------------------------------------------------------------


def test_a_twilio_error_at_creation_fails_the_call(
    worker: Worker, keys: Keys, twilio: BackgroundServer[FakeTwilioServer], statuses: TopicReader
) -> None:
    member = member_number()
    twilio.script(
        Behaviour.error(400, 21211, "The 'To' number is not a valid phone number."), to=member
    )
    answer = place(worker, keys.acme, member)
    assert answer.status == 422, answer.body
    assert answer.body["twilio_error_code"] == "21211"
    [error] = answer.body["errors"]
    assert error["field"] == "member_phone_number" and "21211" in error["error"]
    call_id = answer.body["call_id"]

    document = state_when(worker, keys.acme, call_id, lambda d: d["status"] == "failed", "failed")
    assert document["twilio_call_sid"] is None and "not a valid phone number" in document["error"]
    events = call_events(statuses, call_id, "failed")
    assert changes(events) == [("accepted", "created"), ("failed", "creation_failed")]
    assert events[-1]["error_code"] == "21211" and events[-1]["error"]


def test_validation_errors_name_every_field(worker: Worker, keys: Keys) -> None:
    answer = http(
        "POST",
        f"{worker.url}/api/call",
        {"campaign_id": "bees", "target_id": "nobody", "member_phone_number": "12ab"},
        key=keys.acme,
    )
    assert answer.status == 422
    assert sorted(e["field"] for e in answer.body["errors"]) == ["member_phone_number", "target_id"]
    answer = http(
        "POST", f"{worker.url}/api/call", {"member_phone_number": member_number()}, key=keys.acme
    )
    assert answer.status == 422 and answer.body["errors"][0]["field"] == "campaign_id"
    assert http("POST", f"{worker.url}/api/call", {"campaign_id": "bees"}).status == 401
    assert http("POST", f"{worker.url}/api/call", {}, key="not-a-key").status == 401


def test_another_clients_call_is_404(
    worker: Worker, keys: Keys, twilio: BackgroundServer[FakeTwilioServer]
) -> None:
    call_id = placed(worker, keys.acme, member_number())
    mine = state(worker, keys.acme, call_id)
    assert mine.status == 200, mine
    other = state(worker, keys.other, call_id)
    assert other.status == 404 and other.body["errors"][0]["field"] == "call_id", other
    unknown = state(worker, keys.acme, "no-such-call")
    assert unknown.status == 404, unknown
    anonymous = http("GET", f"{worker.url}/v1/calls/{call_id}")
    assert anonymous.status == 401, anonymous


# -- silence -------------------------------------------------------------------------------------


def test_no_callback_within_the_silence_limit_is_unknown(
    worker: Worker, keys: Keys, twilio: BackgroundServer[FakeTwilioServer], statuses: TopicReader
) -> None:
    member = member_number()  # no plan: Twilio "never calls back"
    call_id = placed(worker, keys.acme, member, campaign_id="quiet", target_id="desk")
    document = state_when(
        worker, keys.acme, call_id, lambda d: d["member"]["status"] == "unknown", "unknown"
    )
    assert document["status"] == "unstarted" and document["twilio_call_sid"]
    events = call_events(statuses, call_id, "expired")
    assert changes(events)[-1] == ("expired", "expired")


# -- two workers (last: it rebalances the module's worker) -----------------------------------------


def placed_after_rebalance(worker: Worker, key: str, member: str, attempts: int = 3) -> str:
    """Place a call, retrying a 503 as a client should: right after a rebalance, the partitions'
    agents stay paused until their tables are recovered (Faust), and the API answers 503 with
    Retry-After when the line's agent did not decide in time (the reservation is abandoned)."""
    for _ in range(attempts - 1):
        answer = place(worker, key, member)
        if answer.status != 503:
            assert answer.status == 201, answer.body
            return str(answer.body["call_id"])
        time.sleep(float(answer.headers.get("Retry-After", "2")))
    return placed(worker, key, member)


def test_with_two_workers_requests_reach_the_partitions_owner(
    worker: Worker,
    make_worker: WorkerFactory,
    keys: Keys,
    mail: MailSink,
    twilio: BackgroundServer[FakeTwilioServer],
) -> None:
    """A second worker joins the group. Both have the same public URL, the first worker's (it
    plays the load balancer Twilio calls). ``POST /api/call``, sent to the new worker, is decided
    and placed by the worker owning the member's line; Twilio's requests, made to the first
    worker, are answered by the worker owning the call: both reached by forwarding with the body
    and the headers, so the API key and the signature are checked by the owner."""
    env = {TOKEN_ENV: TEST_AUTH_TOKEN, SECRET_ENV: SECRET, "SWITCHBOARD_PUBLIC_URL": worker.url}
    second = make_worker(
        extra_env=env, prefix=worker.prefix, document=calls_document(keys, mail, twilio.url)
    )
    second.start()
    try:
        # Settled: the rebalance over and the moved partitions' tables recovered from their
        # changelogs.
        for each in (worker, second):
            wait_for(
                lambda w=each: http("GET", f"{w.url}/healthz").body.get("settled") is True,
                90,
                0.5,
                "the rebalance to end and the tables to be recovered",
            )

        def placer(call_id: str) -> str | None:
            for each in (worker, second):
                if any(
                    r.get("msg") == "call placed" and r.get("call_id") == call_id
                    for r in each.log_records()
                ):
                    return each.url
            return None

        placed_by: dict[str, str] = {}  # call id -> the worker that placed it
        members: dict[str, str] = {}
        while len(placed_by) < 6 or len(set(placed_by.values())) < 2:
            assert len(placed_by) < 40, f"every line owned by one worker? {placed_by}"
            member = member_number()
            twilio.call(twilio.fake.plan_call, CallPlan(keys=CONNECTS), to=member)
            call_id = placed_after_rebalance(second, keys.acme, member)
            placed_by[call_id] = wait_for(lambda c=call_id: placer(c), 10, 0.1, "its log")
            members[call_id] = member
            assert create_request(twilio, member).get("Url") == step_url(worker, call_id, "start")
        for call_id, member in members.items():
            drive = drive_of(twilio, member)
            assert drive.steps[-2:] == ["connect", "dial-status"], (call_id, drive.steps)
            for each in (worker, second):  # GET is routed to the owner by either
                document = state_when(
                    each, keys.acme, call_id, lambda d: d["member"]["final"], "final"
                )
                assert document["status"] == "connected"
                assert state(each, keys.other, call_id).status == 404

        member = member_number()
        answers = [place(w, keys.acme, member).status for w in (worker, second) * 3]
        assert sorted(answers) == [201] * 5 + [403], "one count, whichever worker is asked"
    finally:
        second.stop()
