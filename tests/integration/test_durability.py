"""Kafka is the system of record: a worker stops or dies, another carries on, nothing is lost
and nothing is sent twice; a write the broker did not confirm is never answered 202."""

from __future__ import annotations

import os
import shutil
import signal
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from tests.integration.conftest import WorkerFactory
from tests.integration.harness import MailSink, TopicReader, Worker, status_reader, wait_for
from tests.integration.test_pipeline import email_instruction

pytestmark = pytest.mark.kafka


def _send(worker: Worker, key: str, n: int, tag: str) -> tuple[str, list[str]]:
    recipients = [f"{tag}-{i}-{uuid.uuid4().hex[:6]}@example.com" for i in range(n)]
    answer = worker.post(email_instruction(*recipients), key)
    assert answer.status == 202, answer.body
    return answer.body["session_id"], recipients


def _assert_sent_once(
    mail: MailSink, statuses: TopicReader, sessions: list[str], recipients: list[str]
) -> None:
    # A session's events share its key, so once the reader has its `completed` event it has every
    # event of the session before it (the API may answer `completed` a moment sooner).
    for session_id in sessions:
        statuses.wait(lambda e, s=session_id: e["session_id"] == s and e["status"] == "completed")
    for address in recipients:
        assert len(mail.to(address)) == 1, f"{address} got {len(mail.to(address))} emails"
    sent = Counter(e["recipient"] for e in statuses.matching(lambda e: e["status"] == "sent"))
    assert all(sent[a] == 1 for a in recipients), {a: sent[a] for a in recipients}


def test_restart_keeps_sessions_and_sends_nothing_twice(
    make_worker: WorkerFactory, kafka: Any, keys: Any, mail: MailSink
) -> None:
    worker = make_worker().start()
    statuses = status_reader(kafka.bootstrap_servers, worker.topic("status"))
    try:
        first, first_recipients = _send(worker, keys.acme, 5, "before")
        worker.wait_completed(first, keys.acme)

        assert worker.stop(signal.SIGTERM) == 0, worker.log_tail()
        worker.start()
        # The session from before the restart is still there, read from the worker's tables.
        assert worker.session(first, keys.acme).body["status"] == "completed"

        second, second_recipients = _send(worker, keys.acme, 5, "after")
        worker.wait_completed(second, keys.acme)
        _assert_sent_once(mail, statuses, [first, second], first_recipients + second_recipients)

        # Another worker on another machine (an empty data directory) rebuilds the tables from
        # their changelog topics and carries on.
        assert worker.stop(signal.SIGTERM) == 0
        shutil.rmtree(worker.workdir / "data")
        worker.start()
        session = worker.session(first, keys.acme).body
        assert session["status"] == "completed" and session["counts"] == {"delivered": 5}
        third, third_recipients = _send(worker, keys.acme, 3, "fresh")
        worker.wait_completed(third, keys.acme)
        _assert_sent_once(
            mail,
            statuses,
            [first, second, third],
            first_recipients + second_recipients + third_recipients,
        )
    finally:
        statuses.close()
        worker.stop()


def test_a_write_the_broker_does_not_confirm_answers_503(
    worker_for_writes: Worker, kafka: Any, keys: Any
) -> None:
    """The broker stops answering (SIGSTOP) while the instruction is written: the Send API
    answers 503 with Retry-After after SWITCHBOARD_PRODUCE_TIMEOUT, never 202."""
    pid = kafka.running_pid()
    os.kill(pid, signal.SIGSTOP)
    try:
        answer = worker_for_writes.post(email_instruction("paused@example.com"), keys.acme)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert answer.status == 503, answer.body
    assert answer.headers.get("Retry-After") == "5"
    assert "did not confirm the write" in answer.body["errors"][0]["error"]
    # The broker is back: the worker serves again.
    ok = worker_for_writes.post(email_instruction("resumed@example.com"), keys.acme)
    assert ok.status == 202, ok.body


def test_a_write_the_broker_refuses_is_never_202(worker_for_writes: Worker, keys: Any) -> None:
    """The sessions topic of this worker accepts at most 2,000-byte records: the broker
    refuses a larger instruction, and the client hears it (413) instead of a 202."""
    big = email_instruction(*(f"r{i:04d}@example.com" for i in range(200)))
    answer = worker_for_writes.post(big, keys.acme)
    assert answer.status == 413, answer.body
    assert "max.message.bytes" in answer.body["errors"][0]["error"]
    # Every refused write was collected: none is left for asyncio to log as unhandled.
    time.sleep(0.5)
    assert "never retrieved" not in worker_for_writes.log_path.read_text(errors="replace")


@pytest.fixture(scope="module")
def worker_for_writes(make_worker: WorkerFactory, kafka: Any) -> Worker:
    worker = make_worker({"SWITCHBOARD_PRODUCE_TIMEOUT": "2"})
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap_servers})
    # The Send API opens sessions on the sessions topic: that is the write the broker refuses.
    topic = NewTopic(worker.topic("sessions"), 4, 1, config={"max.message.bytes": "2000"})
    admin.create_topics([topic])[worker.topic("sessions")].result(30)
    return worker.start()


def test_a_restart_loses_no_timer_and_sends_nothing_twice(
    make_worker: WorkerFactory, kafka: Any, keys: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Scheduled, deferred and awaiting-retry messages across a stop and a start on an empty
    data directory (timers and their index rebuilt from the changelogs): each sent once."""
    from streams.clients import publish_clients
    from switchboard.clients import api_key_digest, parse_client
    from switchboard.settings import Settings
    from tests.integration.test_rules import window_opening_soon

    out = tmp_path_factory.mktemp("outbox") / "outbox.jsonl"
    document = {
        "clients": {
            "acme": {
                "api_keys": [api_key_digest(keys.acme)],
                "default_channels": ["sms"],
                "channels": {"sms": {"provider": "sandbox"}},
            }
        }
    }
    worker = make_worker({"SWITCHBOARD_SANDBOX_OUTBOX": str(out)}, document=document).start()
    window, opens = window_opening_soon()
    windowed = parse_client(
        "other",
        {
            "api_keys": [api_key_digest(keys.other)],
            "default_channels": ["sms"],
            "channels": {"sms": {"provider": "sandbox"}},
            "time_windows": {"sms": window},
        },
    )
    publish_clients(
        Settings.from_env(bootstrap_servers=kafka.bootstrap_servers, topic_prefix=worker.prefix),
        [windowed],
    )
    # The worker follows the clients topic: it knows the new client once its key is accepted
    # (a session it does not have is then a 404, not a 401).
    wait_for(
        lambda: worker.session(str(uuid.uuid4()), keys.other).status == 404,
        30,
        0.1,
        "the worker to read the new client",
    )
    try:
        sms = {"type": "sms", "message": "Hi"}
        scheduled, deferred, retried = "+14155550111", "+14155550112", "+14155550113"
        due = (datetime.now(UTC) + timedelta(seconds=20)).isoformat()
        answers = [
            worker.post(
                {
                    "transport": sms,
                    "audience": [scheduled],
                    "options": {"trigger": "scheduled", "scheduledTimestamp": due},
                },
                keys.acme,
            ),
            worker.post({"transport": sms, "audience": [deferred]}, keys.other),
            worker.post(
                {
                    "transport": {
                        **sms,
                        "extras": {"sandbox": {"fail": "retryable", "fail_attempts": 1}},
                    },
                    "audience": [retried],
                    "options": {"retries": 2, "retryIntervalMinutes": "0.4"},
                },
                keys.acme,
            ),
        ]
        assert all(a.status == 202 for a in answers), [a.body for a in answers]
        first = [a.body["session_id"] for a in answers]
        # The retried one has failed once and waits for its retry; the others wait for their time.
        wait_for(
            lambda: (
                any(r["to"] == retried for r in _sent(out))
                or _failed_once(worker, keys.acme, first[2])
            ),
            30,
            0.2,
            "the first attempt to fail",
        )
        assert [r["to"] for r in _sent(out)] == []

        assert worker.stop(signal.SIGTERM) == 0, worker.log_tail()
        shutil.rmtree(worker.workdir / "data")
        worker.start()

        for session_id, key in zip(first, (keys.acme, keys.other, keys.acme), strict=True):
            worker.wait_completed(
                session_id, key, timeout=max(90.0, opens.timestamp() - time.time() + 60)
            )
        sends = [r["to"] for r in _sent(out)]
        assert sorted(sends) == sorted([scheduled, deferred, retried]), sends
        assert [r["attempt"] for r in _sent(out) if r["to"] == retried] == [2]
        assert next(r["at"] for r in _sent(out) if r["to"] == deferred) >= opens.timestamp()
    finally:
        worker.stop()


def _sent(path: Any) -> list[dict[str, Any]]:
    import json

    return (
        [json.loads(line) for line in path.read_text().splitlines() if line]
        if path.exists()
        else []
    )


def _failed_once(worker: Worker, key: str, session_id: str) -> bool:
    answer = worker.session(session_id, key)
    return answer.status == 200 and any(r.get("attempt") == 1 for r in answer.body["recipients"])


def test_a_report_read_before_its_sessions_replayed_opening_is_applied(
    make_worker: WorkerFactory, kafka: Any, keys: Any
) -> None:
    """A worker that dies after fanning a session out and before its checkpoint writes the
    session's row: on its restart, the session's reports may be read before the session agent
    handles the opening again (another topic). Set up here on a stopped worker: an opening with
    thousands of session commands ahead of it on its partition, and a ``delivered`` report for
    it on the reports topic. The report waits for the opening and is applied (its provider id is
    the delivery's), not rejected as a report for an unknown session."""
    import json

    from confluent_kafka import Producer

    from cli.topic_snapshot import read_topic
    from streams.web.routing import partition_of
    from switchboard import records
    from tests.integration.harness import rejection_reader

    worker = make_worker().start()
    bootstrap = kafka.bootstrap_servers
    statuses = status_reader(bootstrap, worker.topic("status"))
    rejected = rejection_reader(bootstrap, worker.topic("rejected"))
    try:
        # A real opening (its audience, then the command) to copy under a new session id.
        model = worker.send_sms(keys.acme, ["+14155550123"])
        worker.wait_completed(model, keys.acme)
        opening = [
            json.loads(r["value"])
            for r in read_topic(bootstrap, worker.topic("sessions"))
            if r["key"] == model.encode()
            and json.loads(r["value"]).get("kind") in ("audience", "open")
        ]
        assert [c["kind"] for c in opening] == ["audience", "open"], opening
        partitions = len(
            AdminClient({"bootstrap.servers": bootstrap})
            .list_topics(worker.topic("sessions"), timeout=10)
            .topics[worker.topic("sessions")]
            .partitions
        )
        assert worker.stop(signal.SIGTERM) == 0, worker.log_tail()

        session_id = str(uuid.uuid4())
        key, partition = session_id.encode(), partition_of(session_id.encode(), partitions)
        producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
        for n in range(5_000):  # commands that change nothing, ahead of the opening
            forget = records.ForgetKey(f"no-such-key-{n}", 0.0)
            producer.produce(worker.topic("sessions"), records.encode(forget), key, partition)
        for command in opening:
            value = json.dumps({**command, "session_id": session_id}).encode()
            producer.produce(worker.topic("sessions"), value, key, partition)
        early = f"early-{uuid.uuid4().hex}"
        report = records.Report(
            session_id=session_id,
            client_id="acme",
            channel="sms",
            index=0,
            address="+14155550123",
            status="delivered",
            attempt=1,
            provider_message_id=early,
            occurred_at=time.time(),
            passed=["sent"],
        )
        producer.produce(worker.topic("reports"), records.encode(report), key, partition)
        assert producer.flush(30) == 0

        worker.start()
        worker.wait_completed(session_id, keys.acme)
        [delivered] = statuses.wait(
            lambda e: e["session_id"] == session_id and e["status"] == "delivered"
        )
        assert delivered["provider_message_id"] == early, "the early report was not applied"
        assert not [r["errors"] for r in rejected.matching(lambda r: session_id in repr(r))]
        logged = [r for r in worker.log_records() if r.get("session_id") == session_id]
        assert any("waits for its session" in r["msg"] for r in logged), logged
    finally:
        statuses.close()
        rejected.close()
        worker.stop()
