"""The ``http`` provider end to end on the real broker: an instruction over the Send API, the
gateway's request at a local server that records each one, and the status events back.

One worker serves the module, with two clients whose ``sms`` goes through ``provider: http``
(options as an operator writes them in ``clients.yaml``, the secret in the worker's environment):

* ``acme``: single mode, a JSON body, the secret in an ``Authorization`` header, addresses as
  ``tel:`` and digits only;
* ``sparrow``: bulk mode, a Sparrow-SMS-like form (``token``, ``from``, ``to``, ``text``), the
  numbers as the local 10 digits joined by commas, per-number results in the answer.

Every test uses numbers of its own, so it finds its requests among the gateway's records.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import pytest

from switchboard.clients import api_key_digest
from tests.fakes.background import BackgroundServer
from tests.fakes.sms_gateway import FakeSmsGateway, GatewayReply, GatewayRequest
from tests.integration.conftest import Keys, WorkerFactory, clients_document
from tests.integration.harness import MailSink, TopicReader, Worker, wait_for

pytestmark = pytest.mark.kafka

TOKEN_ENV = "SB_TEST_GATEWAY_TOKEN"
TOKEN = f"gw-{secrets.token_hex(8)}"
SPARROW_KEY = f"sparrow-{secrets.token_hex(8)}"


@pytest.fixture(scope="module")
def gateway() -> Iterator[BackgroundServer[FakeSmsGateway]]:
    server = BackgroundServer(FakeSmsGateway).start()
    yield server
    server.stop()


def document(keys: Keys, mail: MailSink, url: str) -> dict[str, Any]:
    single = {
        "provider": "http",
        "url": f"{url}/api/messages",
        "secrets": {"token": TOKEN_ENV},
        "headers": {"Authorization": "Bearer {{secrets.token}}", "X-Reference": "{{reference}}"},
        "from": "ACME",
        "body": {
            "to": "{{to}}",
            "text": "{{body}}",
            "sender": "{{from}}",
            "subject": "{{subject}}",
            "attempt": "{{attempt}}",
        },
        "address": {"prefix": "tel:", "digits_only": True},
        "response": {
            "success_when": {"path": "status", "equals": "ok"},
            "message_id": "data.message_id",
            "error": "error",
        },
        "timeout": 10,
    }
    bulk = {
        "provider": "http",
        "url": f"{url}/v2/sms/",
        "format": "form",
        "secrets": {"token": TOKEN_ENV},
        "from": "InfoAlert",
        "body": {
            "token": "{{secrets.token}}",
            "from": "{{from}}",
            "to": "{{to}}",
            "text": "{{body}}",
        },
        "address": {"strip": "+977", "digits_only": True},
        "bulk": {
            "max_addresses": 100,
            "linger": 0.5,
            "join": ",",
            "results": "data.messages",
            "match": "to",
            "message_id": "id",
            "success_when": {"path": "status", "equals": "queued"},
        },
        "response": {
            "success_when": {"path": "status", "equals": "ok"},
            "message_id": "data.message_id",
        },
    }
    doc = clients_document(keys, mail.port)
    acme = doc["clients"]["acme"]
    acme["channels"] = {**acme["channels"], "sms": single}
    doc["clients"]["sparrow"] = {
        "api_keys": [api_key_digest(SPARROW_KEY)],
        "default_channels": ["sms"],
        "channels": {"sms": bulk},
    }
    return doc


@pytest.fixture(scope="module")
def worker(
    gateway: BackgroundServer[FakeSmsGateway],
    make_worker: WorkerFactory,
    keys: Keys,
    mail: MailSink,
) -> Worker:
    """The module's one worker (it replaces conftest's, so ``statuses`` reads this one)."""
    return make_worker(
        # A send stuck longer than the deadline fails retryably (its request's own timeout is 10 s).
        extra_env={TOKEN_ENV: TOKEN, "SWITCHBOARD_SEND_DEADLINE": str(SEND_DEADLINE)},
        document=document(keys, mail, gateway.url),
    ).start()


SEND_DEADLINE = 2


@pytest.fixture(autouse=True)
def _gateway_stays_healthy(gateway: BackgroundServer[FakeSmsGateway]) -> Iterator[None]:
    yield
    assert not gateway.loop_errors, gateway.loop_errors


_numbers = iter(range(1000, 10000))


def us_numbers(count: int) -> list[str]:
    return [f"+1415555{next(_numbers):04d}" for _ in range(count)]


def nepal_numbers(count: int) -> list[str]:
    return [f"+977984{next(_numbers):07d}" for _ in range(count)]


def post(worker: Worker, key: str, audience: list[str], message: str, **options: Any) -> str:
    body: dict[str, Any] = {"transport": {"type": "sms", "message": message}, "audience": audience}
    if options:
        body["options"] = options
    answer = worker.post(body, key)
    assert answer.status == 202, answer.body
    return str(answer.body["session_id"])


def events_of(statuses: TopicReader, session_id: str, count: int) -> list[dict[str, Any]]:
    return statuses.wait(lambda r: r["session_id"] == session_id, count, 90)


def mine(events: list[dict[str, Any]], recipient: str) -> list[dict[str, Any]]:
    return [e for e in events if e["recipient"] == recipient]


def requests_to(
    gateway: BackgroundServer[FakeSmsGateway], address: str, count: int = 1
) -> list[GatewayRequest]:
    found: list[GatewayRequest] = gateway.wait_records(lambda r: address in r.addresses, count)
    return found


def session_when(worker: Worker, key: str, session_id: str, done: Any) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        answer = worker.session(session_id, key)
        return answer.body if answer.status == 200 and done(answer.body) else None

    found: dict[str, Any] = wait_for(ready, 60, 0.2, "the session document")
    return found


# -- single mode ----------------------------------------------------------------------------------


def test_one_request_per_recipient_with_the_secret_header_and_the_gateway_id(
    worker: Worker, keys: Keys, statuses: TopicReader, gateway: BackgroundServer[FakeSmsGateway]
) -> None:
    numbers = us_numbers(2)
    session_id = post(worker, keys.acme, numbers, "Your code is 4321")
    events = events_of(statuses, session_id, 7)  # 2 x (accepted, sent, delivered) + completed
    for number in numbers:
        address = "tel:" + number.removeprefix("+")
        [request] = requests_to(gateway, address)
        assert request.method == "POST" and request.path == "/api/messages"
        assert request.headers["authorization"] == f"Bearer {TOKEN}"
        assert request.headers["x-reference"].startswith(f"{session_id}/")
        # `subject` is empty for an sms: its key is dropped; `attempt` keeps its type.
        assert request.fields == {
            "to": address,
            "text": "Your code is 4321",
            "sender": "ACME",
            "attempt": 1,
        }
        gateway_id = request.answer["data"]["message_id"]
        statuses_seen = [(e["status"], e["provider_message_id"]) for e in mine(events, number)]
        assert statuses_seen == [
            ("accepted", None),
            ("sent", gateway_id),
            ("delivered", gateway_id),
        ]
    assert events[-1]["status"] == "completed"
    assert events[-1]["detail"]["counts"] == {"delivered": 2}
    session = worker.wait_completed(session_id, keys.acme)
    by_number = {r["recipient"]: r["provider_message_id"] for r in session["recipients"]}
    assert by_number == {
        n: requests_to(gateway, "tel:" + n[1:])[0].answer["data"]["message_id"] for n in numbers
    }


def test_a_500_is_retried_and_the_retry_delivers(
    worker: Worker, keys: Keys, statuses: TopicReader, gateway: BackgroundServer[FakeSmsGateway]
) -> None:
    [number] = us_numbers(1)
    address = "tel:" + number[1:]
    gateway.script(address, GatewayReply(status=500, body={"error": "try later"}))
    session_id = post(worker, keys.acme, [number], "Hello", retries=1, retryIntervalMinutes="0.02")
    events = events_of(statuses, session_id, 5)
    seen = [(e["status"], e["attempt"]) for e in events]
    assert seen == [("accepted", 0), ("failed", 1), ("sent", 2), ("delivered", 2), ("completed", 0)]
    failed = events[1]
    assert failed["error_code"] == "http-500" and "try later" in failed["error"]
    assert failed["detail"]["retry_at"], "retryable: a next attempt is due"
    assert [r.status for r in requests_to(gateway, address, 2)] == [500, 200]


def test_a_send_stuck_past_the_deadline_fails_retryably_in_a_batch_and_alone(
    worker: Worker, keys: Keys, statuses: TopicReader, gateway: BackgroundServer[FakeSmsGateway]
) -> None:
    """The first attempt goes in the fan-out's batch (the batch keeps the deadline), the retry
    alone (a timeout of its own): both stuck sends fail with ``deadline``; the third delivers."""
    [number] = us_numbers(1)
    address = "tel:" + number[1:]
    gateway.script(address, GatewayReply(delay=3 * SEND_DEADLINE, times=2))
    session_id = post(worker, keys.acme, [number], "Hello", retries=2, retryIntervalMinutes="0.02")
    events = events_of(statuses, session_id, 6)
    seen = [(e["status"], e["attempt"], e["error_code"]) for e in events]
    assert seen == [
        ("accepted", 0, None),
        ("failed", 1, "deadline"),
        ("failed", 2, "deadline"),
        ("sent", 3, None),
        ("delivered", 3, None),
        ("completed", 0, None),
    ]
    assert f"within {SEND_DEADLINE}s" in events[1]["error"]


def test_a_400_is_a_permanent_failure(
    worker: Worker, keys: Keys, statuses: TopicReader, gateway: BackgroundServer[FakeSmsGateway]
) -> None:
    [number] = us_numbers(1)
    address = "tel:" + number[1:]
    gateway.script(address, GatewayReply(status=400, body={"error": "invalid number"}, times=None))
    session_id = post(worker, keys.acme, [number], "Hello", retries=3, retryIntervalMinutes="0.02")
    events = events_of(statuses, session_id, 3)
    assert [e["status"] for e in events] == ["accepted", "failed", "completed"]
    failed = events[1]
    assert failed["error_code"] == "http-400"
    assert failed["error"] == "the gateway answered HTTP 400: invalid number"
    assert not failed["detail"], "permanent: no retry"
    assert TOKEN not in failed["error"]
    session = worker.wait_completed(session_id, keys.acme)
    assert session["counts"] == {"failed": 1}
    assert len(requests_to(gateway, address)) == 1, "no retry"


# -- bulk mode ------------------------------------------------------------------------------------


def test_bulk_sends_one_request_for_the_audience_and_maps_each_number(
    worker: Worker, statuses: TopicReader, gateway: BackgroundServer[FakeSmsGateway]
) -> None:
    numbers = nepal_numbers(5)
    local = [n.removeprefix("+977") for n in numbers]
    gateway.call(gateway.fake.refuse, local[2])
    session_id = post(worker, SPARROW_KEY, numbers, "Namaste, the clinic opens at 9")
    events = events_of(statuses, session_id, 4 * 3 + 2 + 1)

    [request] = requests_to(gateway, local[0])
    assert request.path == "/v2/sms/" and request.method == "POST"
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert request.fields == {
        "token": [TOKEN],
        "from": ["InfoAlert"],
        "to": [",".join(local)],
        "text": ["Namaste, the clinic opens at 9"],
    }
    ids = {item["to"]: item["id"] for item in request.answer["data"]["messages"]}
    for number, address in zip(numbers, local, strict=True):
        seen = mine(events, number)
        if address == local[2]:
            assert [e["status"] for e in seen] == ["accepted", "failed"]
            assert seen[1]["error_code"] == "gateway-refused"
            continue
        assert [(e["status"], e["provider_message_id"]) for e in seen] == [
            ("accepted", None),
            ("sent", ids[address]),
            ("delivered", ids[address]),
        ]
        assert seen[2]["detail"]["bulk_size"] == 5
    assert events[-1]["status"] == "completed"
    assert events[-1]["detail"]["counts"] == {"delivered": 4, "failed": 1}
    session = session_when(worker, SPARROW_KEY, session_id, lambda d: d["status"] == "completed")
    assert {r["recipient"]: r["provider_message_id"] for r in session["recipients"]} == {
        number: ids[address] if address != local[2] else None
        for number, address in zip(numbers, local, strict=True)
    }
