"""Every provider channel end to end, on the real broker: an instruction over the Send API, the
provider's request at a local fake that speaks its wire protocol, and the status events back on
the status topic (keyed by session id, in order per recipient).

One worker process serves the whole module. Its clients document points each channel at a fake
running in a background thread (``tests/fakes/background.py``), and its environment carries the
provider secrets, named by the channel options, exactly as an operator configures them:

* ``acme``: sms over Twilio (Messages API), push over APNs (HTTP/2 + TLS, token auth), slack
  (``chat.postMessage`` with a bot token, and incoming webhooks);
* ``beta``: push over FCM HTTP v1 (service-account OAuth).

Every test uses addresses of its own, so it finds its requests among the fakes' records.
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from switchboard.clients import api_key_digest
from tests.fakes.apns_server import ApnsReply, FakeApnsServer
from tests.fakes.background import BackgroundServer
from tests.fakes.fcm_server import FakeFcmServer
from tests.fakes.slack_server import FakeSlackServer, SlackReply
from tests.fakes.tls import (
    ApnsKey,
    Pki,
    ServiceAccount,
    make_apns_key,
    make_pki,
    make_service_account,
)
from tests.fakes.twilio_server import (
    TEST_ACCOUNT_SID,
    TEST_AUTH_TOKEN,
    Behaviour,
    FakeTwilioServer,
    RecordedRequest,
)
from tests.integration.conftest import Keys, WorkerFactory, clients_document
from tests.integration.harness import MailSink, TopicReader, Worker, wait_for

pytestmark = pytest.mark.kafka

SENDER = "+14155550100"
APNS_TOPIC = "com.example.app"
SLACK_BOT_TOKEN = "xoxb-test-token"  # FakeSlackServer's default bot token
# The worker's environment: the channel options name these variables, never their values.
TWILIO_TOKEN_ENV = "SB_TEST_TWILIO_AUTH_TOKEN"
APNS_KEY_ENV = "SB_TEST_APNS_KEY"
FCM_ACCOUNT_ENV = "SB_TEST_FCM_SERVICE_ACCOUNT"
SLACK_TOKEN_ENV = "SB_TEST_SLACK_BOT_TOKEN"
#: Loose bound for the slow-provider test: the share of the serial time the run may take.
OVERLAP_BOUND = 0.5


# -- fakes, clients and the worker ------------------------------------------------------------


@dataclass
class Fakes:
    twilio: BackgroundServer[FakeTwilioServer]
    apns: BackgroundServer[FakeApnsServer]
    fcm: BackgroundServer[FakeFcmServer]
    slack: BackgroundServer[FakeSlackServer]
    pki: Pki
    apns_key: ApnsKey
    service_account: ServiceAccount

    def servers(self) -> list[BackgroundServer[Any]]:
        return [self.twilio, self.apns, self.fcm, self.slack]


@pytest.fixture(scope="module")
def fakes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fakes]:
    directory = tmp_path_factory.mktemp("fakes")
    pki = make_pki(directory / "pki")
    apns_key = make_apns_key(directory / "apns")
    started: list[BackgroundServer[Any]] = []
    try:
        twilio = BackgroundServer(FakeTwilioServer).start()
        started.append(twilio)
        apns = BackgroundServer(lambda: FakeApnsServer(pki, apns_key, topics=(APNS_TOPIC,)))
        started.append(apns.start())
        fcm = BackgroundServer(FakeFcmServer).start()
        started.append(fcm)
        slack = BackgroundServer(FakeSlackServer).start()
        started.append(slack)
        account = make_service_account(
            directory / "fcm", token_uri=fcm.fake.token_uri, project_id=fcm.fake.project_id
        )
        fcm.call(fcm.fake.register, account)
        yield Fakes(twilio, apns, fcm, slack, pki, apns_key, account)
    finally:
        for server in reversed(started):
            server.stop()


@dataclass(frozen=True)
class Beta:
    """The FCM client's API key."""

    key: str


@pytest.fixture(scope="module")
def beta() -> Beta:
    return Beta(key=f"beta-{secrets.token_hex(8)}")


def channels_document(keys: Keys, beta: Beta, mail: MailSink, fakes: Fakes) -> dict[str, Any]:
    sms = {
        "provider": "twilio",
        "account_sid": TEST_ACCOUNT_SID,
        "auth_token_env": TWILIO_TOKEN_ENV,
        "from": [SENDER],
        "api_base": fakes.twilio.url,
        "rate_per_second": 1000,  # one sender, many recipients per test: no pacing here
        "timeout": 20,
    }
    push_apns = {
        "provider": "apns",
        "key_env": APNS_KEY_ENV,
        "key_id": fakes.apns_key.key_id,
        "team_id": fakes.apns_key.team_id,
        "topic": APNS_TOPIC,
        "host": fakes.apns.host,
        "port": fakes.apns.port,
        "ca_file": str(fakes.pki.ca_file),
        "timeout": 20,
    }
    slack = {
        "provider": "slack",
        "token_env": SLACK_TOKEN_ENV,
        "base_url": fakes.slack.fake.api_url,
        "webhook_base": fakes.slack.url,
        "timeout": 20,
    }
    document = clients_document(keys, mail.port, default_channels=["sms"])
    acme = document["clients"]["acme"]
    acme["channels"] = {**acme["channels"], "sms": sms, "push": push_apns, "slack": slack}
    push_fcm = {
        "provider": "fcm",
        "service_account_env": FCM_ACCOUNT_ENV,
        "base_url": fakes.fcm.url,
        "timeout": 20,
    }
    document["clients"]["beta"] = {
        "api_keys": [api_key_digest(beta.key)],
        "default_channels": ["push"],
        "channels": {"push": push_fcm},
    }
    return document


def secrets_env(fakes: Fakes) -> dict[str, str]:
    return {
        TWILIO_TOKEN_ENV: TEST_AUTH_TOKEN,
        APNS_KEY_ENV: fakes.apns_key.pem,
        FCM_ACCOUNT_ENV: fakes.service_account.json,
        SLACK_TOKEN_ENV: SLACK_BOT_TOKEN,
    }


@pytest.fixture(scope="module")
def worker(
    fakes: Fakes, make_worker: WorkerFactory, keys: Keys, beta: Beta, mail: MailSink
) -> Worker:
    """The module's one worker (it replaces conftest's, so ``statuses`` reads this one).
    ``fakes`` comes first: they are set up before the worker and stopped after it."""
    document = channels_document(keys, beta, mail, fakes)
    return make_worker(extra_env=secrets_env(fakes), document=document).start()


@pytest.fixture(autouse=True)
def _fakes_stay_healthy(fakes: Fakes) -> Iterator[None]:
    yield
    for server in fakes.servers():
        assert not server.loop_errors, server.loop_errors


# -- helpers ------------------------------------------------------------------------------------


_numbers = iter(range(1000, 10000))


def phone_numbers(count: int) -> list[str]:
    """Valid US numbers (+1 415 555 xxxx) that no other test of this module uses."""
    return [f"+1415555{next(_numbers):04d}" for _ in range(count)]


def apns_token() -> str:
    return secrets.token_hex(32)  # 64 hex digits


def fcm_token() -> str:
    # Not all hex (or it would read as an APNs token): a registration token is base64url-ish.
    return f"fcm_{uuid.uuid4().hex}:APA91b" + secrets.token_urlsafe(96)


def post(worker: Worker, key: str, channel: str, audience: list[Any], **transport: Any) -> str:
    body = {"transport": {"type": channel, **transport}, "audience": audience}
    answer = worker.post(body, key)
    assert answer.status == 202, answer.body
    assert answer.body["recipients"] == len(audience)
    return str(answer.body["session_id"])


def session_events(
    statuses: TopicReader, session_id: str, count: int, timeout: float = 90
) -> list[dict[str, Any]]:
    events = statuses.wait(lambda r: r["session_id"] == session_id, count, timeout)
    assert all(e["_key"] == session_id.encode() for e in events), "keyed by session id"
    return events


def by_recipient(events: list[dict[str, Any]]) -> dict[str | None, list[dict[str, Any]]]:
    out: dict[str | None, list[dict[str, Any]]] = {}
    for event in events:
        out.setdefault(event["recipient"], []).append(event)
    return out


def statuses_of(events: list[dict[str, Any]], recipient: str) -> list[str]:
    return [e["status"] for e in events if e["recipient"] == recipient]


def completed_event(statuses: TopicReader, session_id: str, timeout: float = 90) -> dict[str, Any]:
    [event] = statuses.wait(
        lambda r: r["session_id"] == session_id and r["status"] == "completed", 1, timeout
    )
    assert event["recipient"] is None and event["channel"] is None
    result: dict[str, Any] = event
    return result


def session_document(
    worker: Worker, key: str, session_id: str, until: Any, what: str
) -> dict[str, Any]:
    """``GET /v1/sessions/{id}`` once ``until(document)`` holds."""

    def ready() -> dict[str, Any] | None:
        answer = worker.session(session_id, key)
        return answer.body if answer.status == 200 and until(answer.body) else None

    document: dict[str, Any] = wait_for(ready, 60, 0.2, what)
    return document


def twilio_sids(fakes: Fakes) -> dict[str, str]:
    """Destination number -> the SID the Twilio fake created for it."""

    def snapshot() -> dict[str, str]:
        return {str(req.get("To")): sid for sid, req in fakes.twilio.fake.created_by.items()}

    result: dict[str, str] = fakes.twilio.call(snapshot)
    return result


def twilio_requests_to(fakes: Fakes, numbers: list[str]) -> list[RecordedRequest]:
    wanted = set(numbers)
    return fakes.twilio.wait_records(lambda r: r.to in wanted, len(numbers), timeout=90)


# -- sms over Twilio ------------------------------------------------------------------------------


def test_sms_to_three_numbers_is_sent_and_awaits_delivery(
    worker: Worker, keys: Keys, statuses: TopicReader, fakes: Fakes
) -> None:
    numbers = phone_numbers(3)
    audience = [
        {"phone": numbers[0], "name": "Ana"},
        {"phone": numbers[1], "name": "Bo"},
        numbers[2],
    ]
    session_id = post(
        worker,
        keys.acme,
        "sms",
        audience,
        message="Hello {{name}}, your code is {{code}}.",
        extras={"template_vars": {"name": "friend", "code": "4321"}},
    )

    requests = twilio_requests_to(fakes, numbers)
    assert len(requests) == 3, "one Messages API request per number, no more"
    by_to = {r.to: r for r in requests}
    expected = {numbers[0]: "Ana", numbers[1]: "Bo", numbers[2]: "friend"}
    for number, name in expected.items():
        request = by_to[number]
        assert request.resource == "Messages" and request.authorized
        assert request.account_sid == TEST_ACCOUNT_SID
        assert request.get("From") == SENDER
        assert request.get("Body") == f"Hello {name}, your code is 4321."
        assert request.getall("MediaUrl") == ()

    events = session_events(statuses, session_id, 6)
    sids = twilio_sids(fakes)
    for number in numbers:
        mine = by_recipient(events)[number]
        assert [e["status"] for e in mine] == ["accepted", "sent"], (number, mine)
        sent = mine[1]
        assert sent["channel"] == "sms" and sent["client_id"] == "acme"
        assert sent["provider_message_id"] == sids[number]
        assert sent["provider_message_id"].startswith("SM")
        assert sent["attempt"] == 1 and sent["error_code"] is None

    # Twilio answered `queued`: the delivery comes later, by callback, so nothing is final yet.
    session = session_document(
        worker,
        keys.acme,
        session_id,
        lambda d: all(r["status"] == "sent" for r in d["recipients"]),
        "every recipient sent",
    )
    assert session["status"] != "completed" and session["completed_at"] is None
    assert session["final"] == 0 and session["counts"] == {}
    assert {r["recipient"]: r["provider_message_id"] for r in session["recipients"]} == {
        n: sids[n] for n in numbers
    }
    assert not statuses.matching(
        lambda r: r["session_id"] == session_id and r["status"] == "completed"
    )


def test_sms_failure_classes_are_final_and_complete_the_session(
    worker: Worker, keys: Keys, statuses: TopicReader, fakes: Fakes
) -> None:
    opted_out, invalid = phone_numbers(2)
    fakes.twilio.script(
        Behaviour.error(400, 21610, "Attempt to send to unsubscribed recipient"), to=opted_out
    )
    fakes.twilio.script(Behaviour.error(400, 21211, "The 'To' number is not valid."), to=invalid)
    session_id = post(worker, keys.acme, "sms", [opted_out, invalid], message="Sale today")

    requests = twilio_requests_to(fakes, [opted_out, invalid])
    assert sorted(str(r.to) for r in requests) == sorted([opted_out, invalid]), "no retries"

    events = session_events(statuses, session_id, 5)
    assert statuses_of(events, opted_out) == ["accepted", "suppressed"]
    assert statuses_of(events, invalid) == ["accepted", "failed"]
    final = {e["recipient"]: e for e in events if e["status"] in ("suppressed", "failed")}
    assert final[opted_out]["error_code"] == "21610" and final[opted_out]["error"]
    assert final[invalid]["error_code"] == "21211" and final[invalid]["error"]
    assert all(e["provider_message_id"] is None for e in final.values())

    completed = completed_event(statuses, session_id)
    assert completed["detail"]["counts"] == {"suppressed": 1, "failed": 1}
    assert [e["status"] for e in events][-1] == "completed", "completed comes last"
    session = worker.wait_completed(session_id, keys.acme)
    assert session["counts"] == {"suppressed": 1, "failed": 1} and session["final"] == 2
    states = {r["recipient"]: (r["status"], r["error_code"]) for r in session["recipients"]}
    assert states == {opted_out: ("suppressed", "21610"), invalid: ("failed", "21211")}


def test_mms_sends_the_image_as_media(
    worker: Worker, keys: Keys, statuses: TopicReader, fakes: Fakes
) -> None:
    [number] = phone_numbers(1)
    image = "https://cdn.example.com/promo/spring.png"
    session_id = post(worker, keys.acme, "sms", [number], message="Spring is here", fileUrl=image)

    [request] = twilio_requests_to(fakes, [number])
    assert request.getall("MediaUrl") == (image,)
    assert request.get("Body") == "Spring is here"
    assert request.get("From") == SENDER

    events = session_events(statuses, session_id, 2)
    assert statuses_of(events, number) == ["accepted", "sent"]
    sid = events[-1]["provider_message_id"]
    assert sid == twilio_sids(fakes)[number] and sid.startswith("MM"), "an MMS resource"


# -- push over APNs and FCM -------------------------------------------------------------------


def test_apns_push_and_an_unregistered_token(
    worker: Worker, keys: Keys, statuses: TopicReader, fakes: Fakes
) -> None:
    good, gone = apns_token(), apns_token()
    fakes.apns.call(fakes.apns.fake.script, gone, ApnsReply(reason="Unregistered"))
    session_id = post(
        worker,
        keys.acme,
        "push",
        [{"push_token": good, "name": "Ana"}, {"push_token": gone, "name": "Bo"}],
        subject="Order {{order}}",
        message="Hi {{name}}, it shipped.",
        extras={"template_vars": {"order": "1234"}, "data": {"order": "1234"}, "badge": 1},
    )

    requests = fakes.apns.wait_records(lambda r: r.token in (good, gone), 2, timeout=90)
    assert len(requests) == 2
    request = next(r for r in requests if r.token == good)
    assert request.headers[":method"] == "POST"
    assert request.headers[":path"] == f"/3/device/{good}"
    assert request.headers["apns-topic"] == APNS_TOPIC
    assert request.headers["apns-push-type"] == "alert"
    assert request.claims is not None, "a valid ES256 provider token"
    assert request.claims["iss"] == fakes.apns_key.team_id
    assert request.payload == {
        "aps": {
            "alert": {"title": "Order 1234", "body": "Hi Ana, it shipped."},
            "sound": "default",
            "badge": 1,
        },
        "order": "1234",
    }

    events = session_events(statuses, session_id, 5)
    # The provider's acceptance is final for push: it reports no device receipts.
    assert statuses_of(events, good) == ["accepted", "sent", "delivered"]
    assert statuses_of(events, gone) == ["accepted", "suppressed"]
    [sent] = [e for e in events if e["status"] == "sent"]
    assert sent["channel"] == "push"
    assert sent["provider_message_id"] == request.headers["apns-id"]
    [suppressed] = [e for e in events if e["status"] == "suppressed"]
    assert suppressed["error_code"] == "Unregistered" and suppressed["error"]


def test_fcm_push_and_an_unregistered_token(
    worker: Worker, beta: Beta, statuses: TopicReader, fakes: Fakes
) -> None:
    good, gone = fcm_token(), fcm_token()
    fakes.fcm.call(fakes.fcm.fake.fail, gone, "UNREGISTERED")
    session_id = post(
        worker,
        beta.key,
        "push",
        [{"push_token": good, "name": "Ana"}, gone],
        subject="Order 1234",
        message="Hi {{name}}, it shipped.",
        extras={"template_vars": {"name": "there"}, "data": {"order": 1234}},
    )

    def to(token: str) -> Any:
        return lambda m: isinstance(m["body"], dict) and m["body"]["message"]["token"] == token

    [message] = fakes.fcm.wait_records(to(good), attribute="messages", timeout=90)
    fakes.fcm.wait_records(to(gone), attribute="messages", timeout=90)
    assert message["project"] == fakes.fcm.fake.project_id
    assert message["authorization"].startswith("Bearer ya29.fake-"), "an OAuth access token"
    assert message["body"] == {
        "message": {
            "token": good,
            "data": {"order": "1234"},
            "notification": {"title": "Order 1234", "body": "Hi Ana, it shipped."},
        }
    }
    claims = fakes.fcm.records("token_requests")
    assert claims and claims[0]["iss"] == fakes.service_account.info["client_email"]

    events = session_events(statuses, session_id, 5)
    # The provider's acceptance is final for push: it reports no device receipts.
    assert statuses_of(events, good) == ["accepted", "sent", "delivered"]
    assert statuses_of(events, gone) == ["accepted", "suppressed"]
    [sent] = [e for e in events if e["status"] == "sent"]
    assert sent["client_id"] == "beta" and sent["channel"] == "push"
    assert sent["provider_message_id"].startswith(f"projects/{fakes.fcm.fake.project_id}/messages/")
    [suppressed] = [e for e in events if e["status"] == "suppressed"]
    assert suppressed["error_code"] == "UNREGISTERED" and suppressed["error"]


@pytest.mark.parametrize("provider", ["apns", "fcm"])
def test_push_session_completes(
    worker: Worker, keys: Keys, beta: Beta, statuses: TopicReader, fakes: Fakes, provider: str
) -> None:
    """APNs and FCM report no device delivery, ever: their acceptance is all there will be, so a
    push session must complete once every push is accepted or refused."""
    if provider == "apns":
        key, good, gone = keys.acme, apns_token(), apns_token()
        fakes.apns.call(fakes.apns.fake.script, gone, ApnsReply(reason="Unregistered"))
    else:
        key, good, gone = beta.key, fcm_token(), fcm_token()
        fakes.fcm.call(fakes.fcm.fake.fail, gone, "UNREGISTERED")
    session_id = post(worker, key, "push", [good, gone], message="Your order shipped")
    events = session_events(statuses, session_id, 5)
    assert statuses_of(events, gone) == ["accepted", "suppressed"]
    assert statuses_of(events, good) == ["accepted", "sent", "delivered"]

    completed = completed_event(statuses, session_id, timeout=30)
    counts = completed["detail"]["counts"]
    assert counts.get("suppressed") == 1 and sum(counts.values()) == 2, counts


# -- slack ----------------------------------------------------------------------------------------


def test_slack_bot_and_incoming_webhook_are_delivered(
    worker: Worker, keys: Keys, statuses: TopicReader, fakes: Fakes
) -> None:
    channel_id = "C" + secrets.token_hex(5).upper()
    channel_name = f"#ops-{secrets.token_hex(3)}"
    hook_path = f"/services/T0000/B{secrets.token_hex(4).upper()}/{secrets.token_urlsafe(18)}"
    webhook = f"https://hooks.slack.com{hook_path}"
    session_id = post(
        worker,
        keys.acme,
        "slack",
        [channel_id, channel_name, webhook],
        subject="Deploy",
        message="Release {{version}} is out",
        extras={"template_vars": {"version": "2.4.0"}},
    )

    text = "*Deploy*\nRelease 2.4.0 is out"
    posts = fakes.slack.wait_records(
        lambda p: p.get("channel") in (channel_id, channel_name), 2, attribute="posts", timeout=90
    )
    assert sorted(p["channel"] for p in posts) == sorted([channel_id, channel_name])
    assert all(p["text"] == text for p in posts)
    [hook] = fakes.slack.wait_records(
        lambda w: w["path"] == hook_path, attribute="webhooks", timeout=90
    )
    assert hook["body"] == {"text": text}

    events = session_events(statuses, session_id, 3 * 3 + 1)
    for address in (channel_id, channel_name, webhook):
        assert statuses_of(events, address) == ["accepted", "sent", "delivered"], address
    delivered = {e["recipient"]: e for e in events if e["status"] == "delivered"}
    assert delivered[channel_id]["provider_message_id"].startswith(f"{channel_id}:")
    assert delivered[channel_name]["provider_message_id"].startswith("C")  # resolved to an id
    assert delivered[webhook]["provider_message_id"] is None  # a webhook returns no id

    completed = completed_event(statuses, session_id)
    assert completed["detail"]["counts"] == {"delivered": 3}
    session = worker.wait_completed(session_id, keys.acme)
    assert session["counts"] == {"delivered": 3} and session["final"] == 3


# -- a slow provider ------------------------------------------------------------------------------


def test_slow_provider_is_called_concurrently(
    worker: Worker, keys: Keys, statuses: TopicReader, fakes: Fakes
) -> None:
    delay, count = 0.2, 50
    numbers = phone_numbers(count)
    for number in numbers:
        fakes.twilio.script(Behaviour.slow(delay * 1000), to=number, times=1)
    # Warm up (connections, transports) is not what is measured: the worker has sent sms before
    # in this module, but this test may run alone, so send one message first.
    [warm] = phone_numbers(1)
    session_events(statuses, post(worker, keys.acme, "sms", [warm], message="warm-up"), 2)

    started = time.monotonic()
    session_id = post(worker, keys.acme, "sms", numbers, message="Flash sale")
    events = statuses.wait(
        lambda r: r["session_id"] == session_id and r["status"] == "sent", count, timeout=120
    )
    elapsed = time.monotonic() - started

    requests = twilio_requests_to(fakes, numbers)
    assert len(requests) == count
    arrivals = sorted(r.received_at for r in requests)
    spread = arrivals[-1] - arrivals[0]
    serial = count * delay
    print(
        f"\n{count} sends, {delay * 1000:g} ms each: all sent after {elapsed:.2f}s "
        f"end to end; requests arrived within {spread:.2f}s (serial: {serial:g}s)"
    )
    assert {e["recipient"] for e in events} == set(numbers)
    assert elapsed < OVERLAP_BOUND * serial, (
        f"{elapsed:.2f}s: the provider's latency was paid serially"
    )
    assert spread < OVERLAP_BOUND * serial, f"requests arrived over {spread:.2f}s"


# -- secrets ---------------------------------------------------------------------------------------


def test_no_provider_secret_in_logs_or_status_events(
    worker: Worker, keys: Keys, statuses: TopicReader, fakes: Fakes
) -> None:
    """After everything above (and a few more sends, one refused), the worker's log and the
    status topic carry none of the secrets the worker was given. A Slack webhook URL is a
    credential too: it is the recipient's address in its own status events (the client gave
    it), but never in the log or in an error text."""
    [number] = phone_numbers(1)
    hook_secret = secrets.token_urlsafe(18)
    hook_path = f"/services/T0000/B0REFUSED/{hook_secret}"
    fakes.slack.script(hook_path, SlackReply(error="no_service"))
    session_events(statuses, post(worker, keys.acme, "sms", [number], message="last"), 2)
    audience = ["C0SECRETS1", f"https://hooks.slack.com{hook_path}"]
    events = session_events(statuses, post(worker, keys.acme, "slack", audience, message="last"), 6)
    [refused] = [e for e in events if e["status"] == "failed"]
    assert refused["error_code"] == "no_service" and hook_secret not in refused["error"]

    secret_values = {
        "twilio auth token": TEST_AUTH_TOKEN,
        "slack bot token": SLACK_BOT_TOKEN,
        "apns key": _pem_body(fakes.apns_key.pem),
        "fcm private key": _pem_body(fakes.service_account.info["private_key"]),
    }
    log_text = "\n".join(
        path.read_text(errors="replace")
        for path in sorted(Path(worker.workdir).glob("worker-*.log"))
    )
    assert log_text, "the worker wrote a log"
    status_text = "\n".join(repr(r) for r in statuses.matching(lambda r: True))
    for name, value in secret_values.items():
        assert value not in log_text, f"the {name} is in the worker's log"
        assert value not in status_text, f"the {name} is in a status event"
    assert hook_secret not in log_text, "a Slack webhook URL is in the worker's log"


def _pem_body(pem: str) -> str:
    """A distinctive line of a PEM key's base64 body (what a leak would show)."""
    lines = [line for line in pem.splitlines() if line and not line.startswith("-----")]
    return lines[1] if len(lines) > 1 else lines[0]
