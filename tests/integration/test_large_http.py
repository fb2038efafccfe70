"""A large audience over HTTP (issue 13, part 3): 100,000 recipients in one ``POST /v1/messages``.

Validation is not under the produce deadline (only Kafka's confirmations are), so a large
submission answers 202 once it is durable; a late invalid recipient refuses everything; and a
503 never hides a session opened behind the client's back. SMS are paused: what is checked is
the submission, not 100,000 deliveries.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest

from switchboard import records
from switchboard.clients import api_key_digest
from switchboard.records import AudienceChunk, Claim, Discard, OpenSession
from tests.integration.conftest import Keys, WorkerFactory
from tests.integration.harness import Answer, Worker, http, read_topic, wait_for

pytestmark = pytest.mark.kafka

LARGE = 100_000
#: The Send API's deadline for Kafka's confirmations on the "slow" worker: no broker confirms a
#: write that fast, so every submission there meets a confirmation later than its deadline.
UNMEETABLE = "0.000001"


def audience(first: int) -> list[str]:
    """LARGE distinct valid NANP numbers (area code 415), from ``first`` on."""
    return [
        f"+1415{200 + (k // 10_000) % 800:03d}{k % 10_000:04d}" for k in range(first, first + LARGE)
    ]


def body(recipients: list[Any]) -> dict[str, Any]:
    return {"transport": {"type": "sms", "message": "Polls open at 7am"}, "audience": recipients}


def post(worker: Worker, key: str, recipients: list[Any], **headers: str) -> Answer:
    # A generous client timeout: validating 100,000 numbers takes seconds on a slow machine.
    return http(
        "POST", f"{worker.url}/v1/messages", body(recipients), key=key, headers=headers, timeout=300
    )


@pytest.fixture(scope="module")
def document(keys: Keys) -> dict[str, Any]:
    return {
        "clients": {
            "acme": {
                "api_keys": [api_key_digest(keys.acme)],
                "default_channels": ["sms"],
                "channels": {"sms": {"provider": "sandbox"}},
            }
        }
    }


@pytest.fixture(scope="module")
def worker(make_worker: WorkerFactory, document: dict[str, Any]) -> Worker:
    return make_worker({"SWITCHBOARD_PAUSED_CHANNELS": "sms"}, document=document).start()


def commands(kafka: Any, worker: Worker) -> list[Any]:
    """Every session command on the worker's sessions topic, as it is now."""
    return read_topic(
        kafka.bootstrap_servers,
        worker.topic("sessions"),
        lambda msg: records.decode_command(msg.value()),
    )


def written(kafka: Any, worker: Worker, last: Callable[[Any], bool]) -> list[Any]:
    """The sessions topic once a command matching ``last`` is on it: the same producer wrote
    a session's commands in order to one partition, so every one before it is there too."""
    found: list[Any] = wait_for(
        lambda: (cs := commands(kafka, worker)) and any(last(c) for c in cs) and cs,
        60,
        0.5,
        "the command",
    )
    return found


def opened(worker: Worker, key: str, session_id: str) -> dict[str, Any]:
    """The session's document, once its opening (confirmed before the 202) is applied."""
    found: dict[str, Any] = wait_for(
        lambda: (a := worker.session(session_id, key)).status == 200 and a.body,
        60,
        0.2,
        f"session {session_id}",
    )
    return found


def test_a_100k_audience_answers_202_with_its_session(worker: Worker, keys: Keys) -> None:
    answer = post(worker, keys.acme, audience(0))
    assert answer.status == 202, answer.body
    assert answer.body["recipients"] == LARGE
    assert opened(worker, keys.acme, answer.body["session_id"])["recipient_count"] == LARGE


def test_an_invalid_last_recipient_of_100k_opens_nothing(
    worker: Worker, keys: Keys, kafka: Any
) -> None:
    recipients: list[Any] = audience(LARGE)
    recipients[-1] = "+1 415 CALL ME"
    answer = post(worker, keys.acme, recipients)
    assert answer.status == 422, answer.body
    assert [e["field"] for e in answer.body["errors"]] == [f"audience[{LARGE - 1}]"]

    # Its chunks were written as they were validated, then discarded: find them by their
    # first recipient, and check that no command opened their session.
    def first_chunk(c: Any) -> bool:
        return (
            isinstance(c, AudienceChunk)
            and c.chunk == 0
            and c.recipients[0]["given"] == recipients[0]
        )

    [chunk] = [c for c in written(kafka, worker, first_chunk) if first_chunk(c)]
    session_id = chunk.session_id
    after = written(kafka, worker, lambda c: isinstance(c, Discard) and c.session_id == session_id)
    assert not [c for c in after if isinstance(c, OpenSession | Claim) and _opens(c, session_id)]


def test_a_503_opens_nothing_and_a_retry_opens_one_session(
    worker: Worker, make_worker: WorkerFactory, document: dict[str, Any], keys: Keys, kafka: Any
) -> None:
    """A worker of the same deployment whose broker never confirms in time answers 503 "no
    session was opened"; the client's retry, on a healthy worker, opens exactly one."""
    slow = make_worker(
        {"SWITCHBOARD_PAUSED_CHANNELS": "sms", "SWITCHBOARD_PRODUCE_TIMEOUT": UNMEETABLE},
        prefix=worker.prefix,
        document=document,
    ).start()
    wait_for(lambda: http("GET", f"{worker.url}/readyz").body.get("settled"), 60, 0.2, "settled")
    recipients = audience(2 * LARGE)
    key = f"campaign-{uuid.uuid4()}"
    refused = post(slow, keys.acme, recipients, **{"Idempotency-Key": key})
    assert refused.status == 503, refused.body
    assert "no session was opened" in refused.body["errors"][0]["error"]
    assert "session_id" not in refused.body
    retried = post(worker, keys.acme, recipients, **{"Idempotency-Key": key})
    assert retried.status == 202, retried.body
    session_id = retried.body["session_id"]
    assert opened(worker, keys.acme, session_id)["recipient_count"] == LARGE
    after = written(
        kafka, worker, lambda c: isinstance(c, OpenSession) and c.session_id == session_id
    )
    openings = [c for c in after if isinstance(c, OpenSession) and c.session_id == session_id]
    assert len(openings) == 1
    # And the refused attempt wrote no opening of its own (a Claim for the key: one, the retry's).
    assert len([c for c in after if isinstance(c, Claim) and c.candidate == session_id]) == 1


def _opens(command: OpenSession | Claim, session_id: str) -> bool:
    return (command.candidate if isinstance(command, Claim) else command.session_id) == session_id


def test_chunks_of_a_keyed_503_never_retried_are_deleted(
    make_worker: WorkerFactory, document: dict[str, Any], keys: Keys, kafka: Any
) -> None:
    """A keyed submission answered 503 keeps its chunks for a retry under the same id, so no
    ``Discard`` follows it; never retried, they are deleted two idempotency windows later
    (bounded state: before, they were kept forever)."""
    slow = make_worker(
        {
            "SWITCHBOARD_PAUSED_CHANNELS": "sms",
            "SWITCHBOARD_PRODUCE_TIMEOUT": UNMEETABLE,
            "SWITCHBOARD_IDEMPOTENCY_WINDOW": "2",
        },
        document=document,
    ).start()
    try:
        recipients = audience(3 * LARGE)[:1_200]  # three chunks
        refused = post(slow, keys.acme, recipients, **{"Idempotency-Key": f"orphan-{uuid.uuid4()}"})
        assert refused.status == 503, refused.body

        def first_chunk(c: Any) -> bool:
            return (
                isinstance(c, AudienceChunk)
                and c.chunk == 0
                and c.recipients[0]["given"] == recipients[0]
            )

        session_id = next(c.session_id for c in written(kafka, slow, first_chunk) if first_chunk(c))
        rows = {f"{session_id}:{n}".encode() for n in range(3)}

        def latest() -> dict[bytes, bytes | None]:
            changelog = f"sb-{slow.prefix}-sessions-changelog"
            return {
                r["key"]: r["value"]
                for r in read_topic(kafka.bootstrap_servers, changelog)
                if r["key"] in rows
            }

        # Stored (the writes were only confirmed too late), then tombstoned by the orphan check.
        wait_for(
            lambda: set(latest()) == rows and all(v is None for v in latest().values()),
            90,
            0.5,
            "the chunks' tombstones",
        )
        assert not [
            c
            for c in commands(kafka, slow)
            if isinstance(c, OpenSession | Claim) and _opens(c, session_id)
        ]
    finally:
        slow.stop()
