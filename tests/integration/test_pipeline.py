"""The walking skeleton end to end, on the real broker: Send API and Kafka in, email out over
SMTP (aiosmtpd), status events on the status topic, bad input to the rejected topic."""

from __future__ import annotations

import io
import json
import uuid
from typing import Any

import fastavro
import pytest

import schemas
from tests.integration.harness import MailSink, TopicReader, Worker, produce

pytestmark = pytest.mark.kafka


def email_instruction(
    *addresses: str, subject: str = "Your order", client: str | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "transport": {
            "type": "email",
            "subject": subject,
            "message": "Hello {{name}}, it shipped.",
            "extras": {"template_vars": {"name": "friend"}},
        },
        "audience": list(addresses),
    }
    if client:
        body["client_id"] = client
    return body


def events_of(
    statuses: TopicReader, session_id: str, count: int, timeout: float = 60
) -> list[dict[str, Any]]:
    return statuses.wait(lambda r: r["session_id"] == session_id, count, timeout)


def assert_delivered(statuses: TopicReader, session_id: str, recipients: list[str]) -> None:
    """accepted, sent, delivered for each recipient, in that order, then one ``completed``."""
    events = events_of(statuses, session_id, 3 * len(recipients) + 1)
    for address in recipients:
        mine = [e["status"] for e in events if e["recipient"] == address]
        assert mine == ["accepted", "sent", "delivered"], (address, mine)
    completed = [e for e in events if e["status"] == "completed"]
    assert len(completed) == 1
    assert completed[0]["detail"]["counts"] == {"delivered": len(recipients)}
    assert all(e["_key"] == session_id.encode() for e in events)


# -- the Send API ----------------------------------------------------------------------------


def test_http_instruction_delivers_three_emails(
    worker: Worker, keys: Any, mail: MailSink, statuses: TopicReader
) -> None:
    recipients = [f"http-{i}-{uuid.uuid4().hex[:6]}@example.com" for i in range(3)]
    answer = worker.post(email_instruction(*recipients, subject="Three for you"), keys.acme)
    assert answer.status == 202, answer.body
    assert answer.body["status"] == "accepted" and answer.body["recipients"] == 3
    session_id = answer.body["session_id"]

    assert_delivered(statuses, session_id, recipients)
    for address in recipients:
        [message] = mail.to(address)
        assert message["Subject"] == "Three for you"
        assert message["From"] == "Acme <noreply@acme.example>"
        assert message.get_payload().strip() == "Hello friend, it shipped."

    session = worker.wait_completed(session_id, keys.acme)
    assert session["counts"] == {"delivered": 3} and session["final"] == 3
    assert sorted(r["recipient"] for r in session["recipients"]) == sorted(recipients)
    assert all(
        r["status"] == "delivered" and r["provider_message_id"] for r in session["recipients"]
    )


def test_another_clients_session_is_not_found(
    worker: Worker, keys: Any, statuses: TopicReader
) -> None:
    answer = worker.post(email_instruction("mine@example.com"), keys.acme)
    session_id = answer.body["session_id"]
    events_of(statuses, session_id, 4)
    assert worker.session(session_id, keys.acme).status == 200
    assert worker.session(session_id, keys.other).status == 404
    assert worker.session(str(uuid.uuid4()), keys.acme).status == 404
    assert worker.session("not-a-uuid", keys.acme).status == 404


@pytest.mark.parametrize(
    ("body", "status", "fields"),
    [
        (b"{not json", 400, [""]),
        (b"[1, 2]", 400, [""]),
        (
            json.dumps(
                {"transport": {"type": "fax", "message": "x"}, "audience": ["a@b.co"]}
            ).encode(),
            422,
            ["transport.type"],
        ),
        (
            json.dumps(
                {
                    "transport": {"type": "email", "subject": "s", "message": "m"},
                    "audience": ["ok@example.com", "not-an-email", {"email": "x@y"}],
                }
            ).encode(),
            422,
            ["audience[1]", "audience[2].email"],
        ),
        (
            json.dumps({"transport": {"type": "email", "message": "m"}, "audience": []}).encode(),
            422,
            ["transport.subject", "audience"],
        ),
        (
            json.dumps(
                {"transport": {"type": "voice", "message": "m"}, "audience": ["+14155550100"]}
            ).encode(),
            422,
            ["transport.type"],
        ),
        (
            json.dumps(
                {
                    "client_id": "other",
                    "transport": {"type": "sms", "message": "m"},
                    "audience": ["+14155550100"],
                }
            ).encode(),
            422,
            ["client_id"],
        ),
        (
            json.dumps(
                {
                    "transport": {"type": "sms", "message": "m"},
                    "audience": ["+14155550100"],
                    "optionz": {},
                }
            ).encode(),
            422,
            ["optionz"],
        ),
    ],
    ids=[
        "malformed",
        "not-an-object",
        "unknown-channel",
        "invalid-emails",
        "missing-fields",
        "unconfigured-channel",
        "other-client-id",
        "unknown-field",
    ],
)
def test_bad_http_input_names_every_error(
    worker: Worker, keys: Any, body: bytes, status: int, fields: list[str]
) -> None:
    answer = worker.post(None, keys.acme, raw=body)
    assert answer.status == status, answer.body
    assert [e["field"] for e in answer.body["errors"]] == fields
    assert all(e["error"] for e in answer.body["errors"])


def test_http_authentication_and_limits(worker: Worker, keys: Any) -> None:
    body = email_instruction("auth@example.com")
    assert worker.post(body, key=None).status == 401
    missing = worker.post(body, key="wrong-key")
    assert missing.status == 401 and missing.body["errors"][0]["field"] == "Authorization"
    huge = worker.post(None, keys.acme, raw=b'{"pad": "' + b"x" * (65 * 1024 * 1024) + b'"}')
    assert huge.status == 413


def test_valid_message_after_bad_http_input_gets_through(
    worker: Worker, keys: Any, statuses: TopicReader
) -> None:
    assert worker.post(None, keys.acme, raw=b"{broken").status == 400
    answer = worker.post(email_instruction("after-bad@example.com"), keys.acme)
    assert answer.status == 202
    assert_delivered(statuses, answer.body["session_id"], ["after-bad@example.com"])


# -- instructions produced to Kafka -----------------------------------------------------------


def avro_body(instruction: dict[str, Any], schema: Any = None) -> bytes:
    """What an outside producer does with nothing but instruction.avsc and fastavro."""
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, schema or schemas.parsed("instruction"), instruction)
    return buf.getvalue()


def avro_instruction(*addresses: str, subject: str) -> dict[str, Any]:
    return {
        "client_id": "acme",
        "idempotency_key": None,
        "transport": {
            "type": "email",
            "subject": subject,
            "message": "Hello {{name}}, it shipped.",
            "fileUrl": None,
            "extras": {"template_vars": {"name": "friend"}},
        },
        "audience": list(addresses),
        "options": None,
    }


def session_of(statuses: TopicReader, recipient: str) -> str:
    [event] = statuses.wait(lambda r: r["recipient"] == recipient and r["status"] == "accepted")
    return str(event["session_id"])


@pytest.mark.parametrize("encoding", ["avro-header", "json-header", "json-bare"])
def test_kafka_instruction_delivers(
    worker: Worker, kafka: Any, mail: MailSink, statuses: TopicReader, encoding: str
) -> None:
    recipients = [f"{encoding}-{i}-{uuid.uuid4().hex[:6]}@example.com" for i in range(3)]
    subject = f"Via Kafka ({encoding})"
    if encoding == "avro-header":
        value = avro_body(avro_instruction(*recipients, subject=subject))
        headers = [("content-type", schemas.content_type("instruction").encode())]
    else:
        value = json.dumps(email_instruction(*recipients, subject=subject, client="acme")).encode()
        headers = [("content-type", b"application/json")] if encoding == "json-header" else []
    produce(
        kafka.bootstrap_servers, worker.topic("instructions"), value, key=b"acme", headers=headers
    )

    session_id = session_of(statuses, recipients[0])
    assert_delivered(statuses, session_id, recipients)
    assert all(m["Subject"] == subject for r in recipients for m in mail.to(r))


def _other_schema() -> Any:
    return fastavro.parse_schema(
        {
            "type": "record",
            "name": "Order",
            "fields": [{"name": "id", "type": "long"}, {"name": "note", "type": "string"}],
        }
    )


BAD_KAFKA_INPUTS: list[tuple[str, bytes, list[tuple[str, bytes]], list[str]]] = [
    ("malformed", b"\x07\x00garbage\xff", [], [""]),
    (
        "wrong-schema",
        avro_body({"id": 42, "note": "an order, not an instruction"}, _other_schema()),
        [("content-type", schemas.content_type("instruction").encode())],
        [""],
    ),
    (
        "missing-field",
        json.dumps(
            {"client_id": "acme", "transport": {"type": "email", "subject": "s", "message": "m"}}
        ).encode(),
        [("content-type", b"application/json")],
        ["audience"],
    ),
    (
        "invalid-email",
        json.dumps(email_instruction("fine@example.com", "no-at-sign", client="acme")).encode(),
        [("content-type", b"application/json")],
        ["audience[1]"],
    ),
    (
        "unknown-channel",
        json.dumps(
            {
                "client_id": "acme",
                "transport": {"type": "pigeon", "message": "m"},
                "audience": ["a@example.com"],
            }
        ).encode(),
        [("content-type", b"application/json")],
        ["transport.type"],
    ),
    ("confluent-without-registry", b"\x00\x00\x00\x00\x07" + b"\x02" * 10, [], [""]),
]


@pytest.mark.parametrize(
    ("name", "value", "headers", "fields"), BAD_KAFKA_INPUTS, ids=[b[0] for b in BAD_KAFKA_INPUTS]
)
def test_bad_kafka_input_is_rejected_and_the_next_gets_through(
    worker: Worker,
    kafka: Any,
    statuses: TopicReader,
    rejections: TopicReader,
    name: str,
    value: bytes,
    headers: list[tuple[str, bytes]],
    fields: list[str],
) -> None:
    key = f"bad-{name}-{uuid.uuid4().hex[:6]}".encode()
    produce(kafka.bootstrap_servers, worker.topic("instructions"), value, key=key, headers=headers)
    [rejection] = rejections.wait(lambda r: r["key"] == key)
    assert rejection["value"] == value, "the original bytes are kept"
    assert rejection["topic"] == worker.topic("instructions") and rejection["offset"] >= 0
    assert [e["field"] for e in rejection["errors"]] == fields
    assert all(e["error"] for e in rejection["errors"])
    assert rejection["_headers"]["content-type"] == schemas.content_type("rejection").encode()

    good = f"after-{name}-{uuid.uuid4().hex[:6]}@example.com"
    produce(
        kafka.bootstrap_servers,
        worker.topic("instructions"),
        json.dumps(email_instruction(good, client="acme")).encode(),
        key=b"acme",
    )
    assert_delivered(statuses, session_of(statuses, good), [good])


def test_poison_message_on_an_internal_topic_is_quarantined(
    worker: Worker, kafka: Any, statuses: TopicReader, rejections: TopicReader
) -> None:
    """An agent that raises does not silently drop the event (Faust's default): it goes to the
    rejected topic with the error, and the agent goes on with the next one."""
    key = str(uuid.uuid4()).encode()
    produce(
        kafka.bootstrap_servers,
        worker.topic("sessions"),
        b'{"kind": "open", "session_id": 7}',
        key=key,
    )
    [rejection] = rejections.wait(lambda r: r["key"] == key)
    assert rejection["topic"] == worker.topic("sessions")
    assert "internal error in sessions" in rejection["errors"][0]["error"]

    good = f"after-poison-{uuid.uuid4().hex[:6]}@example.com"
    produce(
        kafka.bootstrap_servers,
        worker.topic("instructions"),
        json.dumps(email_instruction(good, client="acme")).encode(),
        key=b"acme",
    )
    assert_delivered(statuses, session_of(statuses, good), [good])


def test_metrics_health_and_openapi(worker: Worker) -> None:
    from tests.integration.harness import http

    health = http("GET", f"{worker.url}/healthz")
    assert health.status == 200 and health.body["status"] == "ok" and health.body["clients"] == 2
    metrics = http("GET", f"{worker.url}/metrics")
    assert metrics.status == 200 and "switchboard_instructions_total" in metrics.body
    document = http("GET", f"{worker.url}/openapi.json")
    assert document.status == 200 and "/v1/messages" in document.body["paths"]
