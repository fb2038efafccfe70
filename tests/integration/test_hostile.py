"""Hostile input never gets a 500, and secrets never reach a log (issue 13, part 4).

Each test sends what once answered 500 or 503 to a real worker, and checks the 4xx that names
the problem, and that neither the answer nor the worker's log holds what must not be there.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import socket
import time
import uuid
from typing import Any

import pytest

from tests.integration.conftest import Keys
from tests.integration.harness import Answer, TopicReader, Worker, concurrently

pytestmark = pytest.mark.kafka

_numbers = itertools.count(int(time.time()) % 400_000 + 500_000)


def number() -> str:
    n = next(_numbers)
    return f"+1415{200 + n // 10_000:03d}{n % 10_000:04d}"


def sms(audience: list[Any], **extra: Any) -> dict[str, Any]:
    return {"transport": {"type": "sms", "message": "Hi"}, "audience": audience, **extra}


def post_raw(
    worker: Worker,
    key: str,
    raw: bytes,
    content_type: str | None = "application/json",
    headers: dict[str, str] | None = None,
) -> Answer:
    """A POST /v1/messages with exactly these bytes and this Content-Type (None: no header)."""
    all_headers = dict(headers or {})
    if content_type is not None:
        all_headers["Content-Type"] = content_type
    return _send(worker, "/v1/messages", raw, key, all_headers)


def _send(
    worker: Worker, path: str, raw: bytes, key: str | None, headers: dict[str, str]
) -> Answer:
    # http.client adds no Content-Type of its own, so "none" is really none.
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", worker.port, timeout=30)
    try:
        if key is not None:
            headers = {**headers, "Authorization": f"Bearer {key}"}
        connection.request("POST", path, body=raw, headers=headers)
        response = connection.getresponse()
        payload = response.read()
        status, hdrs = response.status, dict(response.getheaders())
    finally:
        connection.close()
    try:
        parsed = json.loads(payload) if payload else None
    except ValueError:
        parsed = payload.decode(errors="replace")
    return Answer(status, parsed, hdrs)


def log_text(worker: Worker) -> str:
    return "\n".join(
        p.read_text(errors="replace") for p in sorted(worker.workdir.glob("worker-*.log"))
    )


def fields(answer: Answer) -> list[str]:
    return [e["field"] for e in answer.body["errors"]]


# -- the Send API ------------------------------------------------------------------------------


def test_a_number_of_5000_digits_is_a_400_that_says_so(worker: Worker, keys: Keys) -> None:
    raw = (
        b'{"transport": {"type": "sms", "message": "Hi"}, "audience": ["+14155550123"], "options": {"retries": '
        + b"7" * 5000
        + b"}}"
    )
    answer = post_raw(worker, keys.acme, raw)
    assert answer.status == 400, answer.body
    assert (
        "a number has 5,000 digits; at most 100 are accepted" in answer.body["errors"][0]["error"]
    )
    answer = post_raw(
        worker,
        keys.acme,
        b'{"transport": {"type": "sms", "message": "Hi"}, "audience": ["+14155550123"], "options": {"retries": NaN}}',
    )
    assert answer.status == 400 and "NaN is not a JSON value" in answer.body["errors"][0]["error"]


def test_a_lone_surrogate_is_a_422_naming_the_field_and_the_instruction_is_never_logged(
    worker: Worker, keys: Keys
) -> None:
    recipient = f"surrogate-{uuid.uuid4().hex}@example.com"
    # The JSON escape as a client sends it: the text is valid JSON, the string is not Unicode.
    raw = (
        b'{"transport": {"type": "email", "subject": "\\ud800", "message": "Hi"}, "audience": ["'
        + recipient.encode()
        + b'", "\\udcff"]}'
    )
    answer = post_raw(worker, keys.acme, raw)
    assert answer.status == 422, answer.body
    assert fields(answer) == ["transport.subject", "audience[1]"]
    assert all("lone surrogate" in e["error"] for e in answer.body["errors"])
    assert recipient not in log_text(worker), "the instruction's body reached the log"


def test_a_header_that_is_not_utf8_is_a_400(worker: Worker, keys: Keys) -> None:
    body = json.dumps(sms([number()])).encode()
    # http.client sends a header's characters as Latin-1 bytes: \xff is a lone 0xFF byte.
    answer = post_raw(worker, keys.acme, body, headers={"Idempotency-Key": "order-\xff"})
    assert answer.status == 400, answer.body
    assert answer.body["errors"] == [
        {"field": "Idempotency-Key", "error": "the Idempotency-Key header is not UTF-8 text"}
    ]
    answer = _send(
        worker,
        "/v1/messages",
        body,
        None,
        {"Content-Type": "application/json", "Authorization": "Bearer k\xff"},
    )
    assert answer.status == 400 and fields(answer) == ["Authorization"], answer.body


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"],
)
def test_a_body_that_is_not_json_is_a_415(
    worker: Worker, keys: Keys, content_type: str | None
) -> None:
    answer = post_raw(worker, keys.acme, json.dumps(sms([number()])).encode(), content_type)
    assert answer.status == 415, answer.body
    assert fields(answer) == ["Content-Type"]
    assert "send Content-Type: application/json" in answer.body["errors"][0]["error"]


@pytest.mark.parametrize(
    "content_type",
    ["application/json; charset=utf-8", "APPLICATION/JSON", "application/vnd.acme+json"],
)
def test_every_json_content_type_is_accepted(worker: Worker, keys: Keys, content_type: str) -> None:
    answer = post_raw(worker, keys.acme, json.dumps(sms([number()])).encode(), content_type)
    assert answer.status == 202, answer.body


def test_every_problem_at_once_when_the_transport_is_wrong_too(worker: Worker, keys: Keys) -> None:
    body = {
        "transport": {"type": "email", "message": "Hi"},
        "audience": ["ana@example.com", "nope"],
        "options": {"retries": 99},
    }
    answer = worker.post(body, keys.acme)
    assert answer.status == 422, answer.body
    assert fields(answer) == ["transport.subject", "audience[1]", "options.retries"]


def test_concurrent_repeats_answer_repeat_true(worker: Worker, keys: Keys) -> None:
    key = f"burst-{uuid.uuid4()}"
    audience = [number()]
    answers: list[Answer] = concurrently(
        lambda _: worker.post(sms(audience), keys.acme, headers={"Idempotency-Key": key}), 49
    )
    assert [a.status for a in answers] == [202] * 49, [a.body for a in answers if a.status != 202]
    assert len({a.body["session_id"] for a in answers}) == 1
    first = [a.body for a in answers if not a.body.get("repeat")]
    assert len(first) == 1, f"{len(first)} answers without repeat: true"
    # And one more, once everything is settled: a repeat too.
    again = worker.post(sms(audience), keys.acme, headers={"Idempotency-Key": key})
    assert again.status == 202 and again.body["repeat"] is True
    assert again.body["session_id"] == first[0]["session_id"]


def test_concurrent_repeats_with_another_instruction_get_a_422(worker: Worker, keys: Keys) -> None:
    key = f"mixed-{uuid.uuid4()}"

    def post(i: int) -> Answer:
        instruction = {
            "transport": {"type": "sms", "message": "AB"[i % 2]},
            "audience": ["+14155550177"],
        }
        return worker.post(instruction, keys.acme, headers={"Idempotency-Key": key})

    answers: list[Answer] = concurrently(post, 10)
    accepted = [a for a in answers if a.status == 202]
    refused = [a for a in answers if a.status == 422]
    # One instruction won the key (whichever was first); the other's five are refused.
    assert len(accepted) == 5 and len(refused) == 5, [a.status for a in answers]
    assert len({a.body["session_id"] for a in accepted}) == 1
    assert [a.body.get("repeat", False) for a in accepted].count(False) == 1
    assert all(fields(a) == ["idempotency_key"] for a in refused)


# -- the HTTP parser ---------------------------------------------------------------------------


def test_a_malformed_authorization_header_is_never_echoed_nor_logged(
    worker: Worker, keys: Keys
) -> None:
    request = (
        b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 2\r\nAuthorization: Bearer " + keys.acme.encode() + b"\x01\r\n\r\n{}"
    )
    with socket.create_connection(("127.0.0.1", worker.port), timeout=30) as conn:
        conn.sendall(request)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    response = b"".join(chunks)
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.split(b" ")[1] == b"400", response[:200]
    assert keys.acme.encode() not in response
    [error] = json.loads(body)["errors"]
    assert error["error"].startswith("malformed HTTP request")
    # The refusal is logged (the line is written before the answer), without the key.
    assert "malformed HTTP request refused" in log_text(worker)
    assert keys.acme not in log_text(worker)


# -- Twilio's endpoints ------------------------------------------------------------------------

TWILIO_PATHS = [
    "/twilio/messages/status?d=x/0/sms&a=1&c=acme",
    "/twilio/messages/inbound",
    f"/twilio/calls/{uuid.uuid4()}/start",
]


@pytest.mark.parametrize("path", TWILIO_PATHS)
@pytest.mark.parametrize(
    ("content_type", "raw"),
    [
        ("application/json", b'{"MessageStatus": "delivered"}'),
        ("multipart/form-data; boundary=zz", b"--zz\r\ngarbage\r\n--zz"),
        ("multipart/form-data", b"no boundary at all"),
        (None, b"MessageStatus=delivered"),
    ],
)
def test_a_twilio_endpoint_refuses_what_is_not_a_form_with_415(
    worker: Worker, path: str, content_type: str | None, raw: bytes
) -> None:
    answer = _send(worker, path, raw, None, {"Content-Type": content_type} if content_type else {})
    assert answer.status == 415, answer.body
    assert "application/x-www-form-urlencoded" in answer.body


@pytest.mark.parametrize("path", TWILIO_PATHS)
def test_a_twilio_form_that_is_not_text_is_a_400(worker: Worker, path: str) -> None:
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    answer = _send(worker, path, b"Body=%FF%FE&To=\xff\xfe", None, form)
    assert answer.status == 400, answer.body
    answer = _send(
        worker,
        path,
        b"Body=hi",
        None,
        {"Content-Type": "application/x-www-form-urlencoded; charset=nonesuch"},
    )
    assert answer.status == 400, answer.body


@pytest.mark.parametrize("path", TWILIO_PATHS)
def test_a_twilio_body_over_32_kb_is_a_413(worker: Worker, path: str) -> None:
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    answer = _send(worker, path, b"Body=" + b"x" * 900_000, None, form)
    assert answer.status == 413, answer.body


def test_an_unsigned_inbound_message_is_recorded_as_a_bounded_summary(
    worker: Worker, rejections: TopicReader
) -> None:
    marker = uuid.uuid4().hex
    raw = f"To=%2B19995550000&From=%2B14155550100&Body={marker}".encode() + b"x" * 30_000
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    answer = _send(worker, "/twilio/messages/inbound", raw, None, form)
    assert answer.status == 200, answer.body
    [record] = rejections.wait(lambda r: marker.encode() in (r["value"] or b""))
    assert record["topic"] == "http:/twilio/messages/inbound"
    assert len(record["value"]) == 1024 and raw.startswith(record["value"])
    headers = {h["key"]: h["value"] for h in record["headers"]}
    assert headers["body-bytes"] == str(len(raw)).encode()
    assert headers["body-sha256"] == hashlib.sha256(raw).hexdigest().encode()
