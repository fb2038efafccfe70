"""Idempotency, quotas and large audiences, end to end on the real broker (issue 4)."""

from __future__ import annotations

import itertools
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from switchboard.clients import api_key_digest
from tests.integration.conftest import Keys, WorkerFactory
from tests.integration.harness import (
    TopicReader,
    Worker,
    concurrently,
    produce,
    status_reader,
    wait_for,
)

pytestmark = pytest.mark.kafka

_numbers = itertools.count(int(time.time()) % 400_000 + 100_000)


def number() -> str:
    n = next(_numbers)
    return f"+1415{200 + n // 10_000:03d}{n % 10_000:04d}"


@pytest.fixture(scope="module")
def worker(
    make_worker: WorkerFactory, keys: Keys, tmp_path_factory: pytest.TempPathFactory
) -> Worker:
    outbox = tmp_path_factory.mktemp("outbox") / "outbox.jsonl"
    document = {
        "clients": {
            "acme": {
                "api_keys": [api_key_digest(keys.acme)],
                "default_channels": ["sms"],
                "channels": {"sms": {"provider": "sandbox"}},
            },
            "other": {
                "api_keys": [api_key_digest(keys.other)],
                "default_channels": ["sms"],
                "channels": {"sms": {"provider": "sandbox"}},
                "rate_limit": {"per_second": 2, "burst": 3},
            },
        }
    }
    return make_worker({"SWITCHBOARD_SANDBOX_OUTBOX": str(outbox)}, document=document).start()


@pytest.fixture(scope="module")
def statuses(kafka: Any, worker: Worker) -> Iterator[TopicReader]:
    reader = status_reader(kafka.bootstrap_servers, worker.topic("status"))
    yield reader
    reader.close()


def outbox(worker: Worker) -> list[dict[str, Any]]:
    path = Path(worker.env()["SWITCHBOARD_SANDBOX_OUTBOX"])
    return (
        [json.loads(line) for line in path.read_text().splitlines() if line]
        if path.exists()
        else []
    )


def body(audience: list[Any], message: str = "Hi", **extra: Any) -> dict[str, Any]:
    return {"transport": {"type": "sms", "message": message}, "audience": audience, **extra}


def completed(statuses: TopicReader, session_id: str, timeout: float = 120) -> dict[str, Any]:
    return statuses.wait(
        lambda e: e["session_id"] == session_id and e["status"] == "completed", 1, timeout
    )[0]


# -- idempotency -------------------------------------------------------------------------------


def test_a_repeat_with_the_same_key_answers_the_first_session(
    worker: Worker, keys: Keys, statuses: TopicReader
) -> None:
    key = f"order-{uuid.uuid4()}"
    address = number()
    first = worker.post(body([address]), keys.acme, headers={"Idempotency-Key": key})
    assert first.status == 202, first.body
    session_id = first.body["session_id"]
    completed(statuses, session_id)
    # The same instruction again, the key in the body this time, keys in another order.
    again = worker.post(
        {
            "idempotency_key": key,
            "audience": [address],
            "transport": {"message": "Hi", "type": "sms"},
        },
        keys.acme,
    )
    assert (
        again.status == 202
        and again.body["session_id"] == session_id
        and again.body["repeat"] is True
    )
    time.sleep(1)
    assert len([r for r in outbox(worker) if r["to"] == address]) == 1, "sent once"

    different = worker.post(
        body([address], message="Something else"), keys.acme, headers={"Idempotency-Key": key}
    )
    assert different.status == 422
    assert (
        different.body["errors"][0]["field"] == "idempotency_key"
        and session_id in different.body["errors"][0]["error"]
    )
    # Another client's identical key is its own.
    theirs = worker.post(body([number()]), keys.other, headers={"Idempotency-Key": key})
    assert theirs.status == 202 and theirs.body["session_id"] != session_id


def test_concurrent_repeats_create_exactly_one_session(
    worker: Worker, keys: Keys, statuses: TopicReader
) -> None:
    key = f"burst-{uuid.uuid4()}"
    audience = [number(), number()]
    answers = concurrently(
        lambda _: worker.post(body(audience), keys.acme, headers={"Idempotency-Key": key}), 8
    )
    assert all(a.status == 202 for a in answers), [a.body for a in answers]
    session_ids = {a.body["session_id"] for a in answers}
    assert len(session_ids) == 1
    completed(statuses, session_ids.pop())
    time.sleep(1)
    assert sorted(r["to"] for r in outbox(worker) if r["to"] in audience) == sorted(audience), (
        "each sent once"
    )


def test_a_repeat_on_kafka_opens_no_new_session(
    worker: Worker, kafka: Any, keys: Keys, statuses: TopicReader
) -> None:
    key = f"kafka-{uuid.uuid4()}"
    address = number()
    value = json.dumps({**body([address]), "client_id": "acme", "idempotency_key": key}).encode()
    produce(kafka.bootstrap_servers, worker.topic("instructions"), value, key=key.encode())
    [accepted] = statuses.wait(lambda e: e["recipient"] == address and e["status"] == "accepted")
    completed(statuses, accepted["session_id"])
    produce(kafka.bootstrap_servers, worker.topic("instructions"), value, key=key.encode())
    [repeat] = statuses.wait(
        lambda e: (
            e["session_id"] == accepted["session_id"]
            and (e["detail"] or {}).get("repeat") == "duplicate"
        )
    )
    assert repeat["status"] == "accepted" and repeat["detail"]["idempotency_key"] == key
    time.sleep(1)
    assert len([r for r in outbox(worker) if r["to"] == address]) == 1


# -- quotas ------------------------------------------------------------------------------------


def test_a_client_over_its_rate_gets_429_with_retry_after(worker: Worker, keys: Keys) -> None:
    answers = [worker.post(body([number()]), keys.other) for _ in range(6)]
    statuses_seen = [a.status for a in answers]
    assert statuses_seen[:3] == [202, 202, 202], statuses_seen  # the burst
    limited = [a for a in answers if a.status == 429]
    assert limited, statuses_seen
    assert int(limited[0].headers["Retry-After"]) >= 1
    assert "rate limited" in limited[0].body["errors"][0]["error"]
    wait_for(
        lambda: worker.post(body([number()]), keys.other).status == 202,
        10,
        0.25,
        "the bucket to refill",
    )
    assert worker.post(body([number()]), keys.acme).status == 202, "other clients are not limited"


# -- large audiences ---------------------------------------------------------------------------


def test_a_large_audience_fans_out_in_chunks(
    worker: Worker, keys: Keys, statuses: TopicReader
) -> None:
    audience = [number() for _ in range(1_200)]  # three chunks of 500
    answer = worker.post(body(audience), keys.acme)
    assert answer.status == 202 and answer.body["recipients"] == 1_200
    session_id = answer.body["session_id"]
    done = completed(statuses, session_id, timeout=240)
    assert done["detail"]["counts"] == {"delivered": 1_200}
    session = worker.session(session_id, keys.acme).body
    assert session["recipient_count"] == 1_200 and session["next_offset"] == 100
    page = http_page(worker, keys.acme, session_id, offset=1_100, limit=100)
    assert [r["index"] for r in page["recipients"]] == list(range(1_100, 1_200)) and page[
        "next_offset"
    ] is None
    sent = {r["to"] for r in outbox(worker)}
    assert all(a in sent for a in audience)


def test_an_invalid_recipient_late_in_a_large_audience_opens_nothing(
    worker: Worker, keys: Keys
) -> None:
    audience = [number() for _ in range(1_100)]
    audience[1_050] = "+1 415 CALL ME"
    audience[1_070] = {"phone": "12345"}
    answer = worker.post(body(audience), keys.acme)
    assert answer.status == 422
    assert [e["field"] for e in answer.body["errors"]] == ["audience[1050]", "audience[1070].phone"]
    time.sleep(2)
    sent = {r["to"] for r in outbox(worker)}
    assert not any(a in sent for a in audience[:1_000] if isinstance(a, str))


def http_page(
    worker: Worker, key: str, session_id: str, *, offset: int, limit: int
) -> dict[str, Any]:
    from tests.integration.harness import http

    answer = http(
        "GET", f"{worker.url}/v1/sessions/{session_id}?offset={offset}&limit={limit}", key=key
    )
    assert answer.status == 200, answer.body
    return dict(answer.body)


# -- the command line --------------------------------------------------------------------------


def test_switchboard_send_reads_an_audience_file(
    worker: Worker, keys: Keys, statuses: TopicReader, tmp_path: Path
) -> None:
    """`switchboard send --audience FILE` through the Send API, then straight to Kafka."""
    import subprocess
    import sys

    audience = [number() for _ in range(3)]
    csv_file = tmp_path / "audience.csv"
    csv_file.write_text(
        "phone,name\n" + "".join(f"{a},Friend {i}\n" for i, a in enumerate(audience))
    )
    env = {**worker.env(), "SWITCHBOARD_URL": worker.url, "SWITCHBOARD_API_KEY": keys.acme}
    command = [sys.executable, "-m", "cli.main", "send", "--audience", str(csv_file)]
    command += ["-m", "Hello {{name}}"]
    result = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    session_id = json.loads(result.stdout)["session_id"]
    completed(statuses, session_id)
    bodies = {r["to"]: r["body"] for r in outbox(worker) if r["to"] in audience}
    assert bodies == {a: f"Hello Friend {i}" for i, a in enumerate(audience)}

    lines = tmp_path / "audience.txt"
    more = [number() for _ in range(2)]
    lines.write_text("\n".join(["# two more", *more]) + "\n")
    command = [sys.executable, "-m", "cli.main", "send", "--audience", str(lines), "--via-kafka"]
    command += ["--client", "acme", "--channel", "sms", "-m", "Via Kafka"]
    result = subprocess.run(
        command,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "produced 2 recipients" in result.stdout
    [accepted] = statuses.wait(lambda e: e["recipient"] == more[0] and e["status"] == "accepted")
    completed(statuses, accepted["session_id"])


def test_switchboard_tail_follows_a_clients_status_events(
    worker: Worker, keys: Keys, statuses: TopicReader
) -> None:
    """`switchboard tail` reads the status topic as any consumer would: every framing the worker
    writes, filtered by client, session and status, as JSON lines or columns."""
    import subprocess
    import sys

    audience = [number(), number()]
    answer = worker.post(body(audience), keys.acme)
    assert answer.status == 202, answer.body
    session_id = answer.body["session_id"]
    completed(statuses, session_id)

    def tail(*options: str) -> list[str]:
        command = [sys.executable, "-m", "cli.main", "tail", "--from-beginning", *options]
        result = subprocess.run(
            command, env=worker.env(), capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode == 0, result.stderr
        return result.stdout.splitlines()

    lines = tail("--client", "acme", "--session", session_id, "--json", "--count", "7")
    events = [json.loads(line) for line in lines]
    assert sorted(e["status"] for e in events) == sorted(
        ["accepted"] * 2 + ["sent"] * 2 + ["delivered"] * 2 + ["completed"]
    )
    assert {e["recipient"] for e in events} == {*audience, None}
    for address in audience:
        mine = [e["status"] for e in events if e["recipient"] == address]
        assert mine == ["accepted", "sent", "delivered"], "in order per recipient"
    assert all(e["occurred_at"].endswith("Z") for e in events)

    [line] = tail("--session", session_id, "--status", "completed", "--count", "1")
    assert session_id in line and "completed" in line and "delivered=2" in line
    # Another client's filter shows nothing of acme's session, and stops when idle.
    assert tail("--client", "other", "--session", session_id, "--idle-timeout", "3") == []
