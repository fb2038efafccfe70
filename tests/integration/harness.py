"""Test harness for end-to-end tests: real worker processes, readers of the public topics.

A :class:`Worker` is ``python -m cli.main worker`` in a subprocess, configured only
through its environment, exactly as an operator runs it (:mod:`cli.worker_process`, which the
benchmarks use too): tests talk to it over HTTP and Kafka and can stop, kill and restart
it. Each test module uses its own topic prefix and app id, so modules never see each other's
messages or tables.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from email import message_from_bytes
from email.message import Message
from typing import Any

from confluent_kafka import Consumer, Producer
from prometheus_client.parser import text_string_to_metric_families

# ROOT, free_port, raw_record and read_topic are the tests' too (hence "as": re-exported).
from cli.topic_snapshot import raw_record as raw_record
from cli.topic_snapshot import read_topic as read_topic
from cli.worker_process import ROOT as ROOT
from cli.worker_process import WorkerDidNotStart, WorkerProcess, wait_until
from cli.worker_process import free_port as free_port
from switchboard.wire import read_record

# -- HTTP ------------------------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    body: Any
    headers: dict[str, str]


def http(
    method: str,
    url: str,
    body: Any = None,
    *,
    key: str | None = None,
    raw: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30,
) -> Answer:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    if key is not None:
        all_headers["Authorization"] = f"Bearer {key}"
    request = urllib.request.Request(url, data=data, method=method, headers=all_headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            payload = response.read()
            status, hdrs = response.status, dict(response.headers)
    except urllib.error.HTTPError as exc:
        payload, status, hdrs = exc.read(), exc.code, dict(exc.headers)
    try:
        parsed = json.loads(payload) if payload else None
    except ValueError:
        parsed = payload.decode(errors="replace")
    return Answer(status, parsed, hdrs)


def wait_for(
    predicate: Callable[[], Any],
    timeout: float = 30.0,
    interval: float = 0.1,
    what: str = "condition",
) -> Any:
    """:func:`cli.worker_process.wait_until`, failing the test (``AssertionError``) on timeout."""
    try:
        return wait_until(predicate, timeout, interval, what)
    except TimeoutError as exc:
        raise AssertionError(str(exc)) from None


def concurrently(call: Callable[[int], Any], count: int) -> list[Any]:
    """``call(0)`` ... ``call(count - 1)``, each in a thread of its own, released together (a
    barrier), and their results in the order of their indexes."""
    start = threading.Barrier(count)
    results: list[Any] = [None] * count

    def run(i: int) -> None:
        start.wait()
        results[i] = call(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


# -- metrics ---------------------------------------------------------------------------------

#: A worker's /metrics: (sample name, sorted labels) -> value.
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(worker: WorkerProcess) -> Samples:
    answer = http("GET", f"{worker.url}/metrics")
    assert answer.status == 200
    samples: Samples = {}
    for family in text_string_to_metric_families(str(answer.body)):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def gauge(worker: WorkerProcess, name: str, **labels: str) -> float | None:
    return scrape(worker).get((name, tuple(sorted(labels.items()))))


# -- the worker ------------------------------------------------------------------------------


class Worker(WorkerProcess):
    """One ``switchboard worker`` process (:class:`cli.worker_process.WorkerProcess`), with
    the Send API calls the tests make. A start that fails fails the test."""

    def start(self, timeout: float = 90.0) -> Worker:
        try:
            super().start(timeout)
        except WorkerDidNotStart as exc:
            raise AssertionError(str(exc)) from None
        return self

    # -- the Send API --

    def post(self, body: Any, key: str, **kwargs: Any) -> Answer:
        return http("POST", f"{self.url}/v1/messages", body, key=key, **kwargs)

    def send_sms(self, key: str, audience: list[str], **options: Any) -> str:
        """Open an SMS session ("Hi") for ``audience`` with ``options``; its id (asserts 202)."""
        body: dict[str, Any] = {"transport": {"type": "sms", "message": "Hi"}, "audience": audience}
        if options:
            body["options"] = options
        answer = self.post(body, key)
        assert answer.status == 202, answer.body
        return str(answer.body["session_id"])

    def session(self, session_id: str, key: str) -> Answer:
        return http("GET", f"{self.url}/v1/sessions/{session_id}", key=key)

    def wait_completed(self, session_id: str, key: str, timeout: float = 60.0) -> dict[str, Any]:
        def done() -> dict[str, Any] | None:
            answer = self.session(session_id, key)
            return (
                answer.body
                if answer.status == 200 and answer.body["status"] == "completed"
                else None
            )

        result: dict[str, Any] = wait_for(done, timeout, 0.2, f"session {session_id} to complete")
        return result


# -- Kafka -----------------------------------------------------------------------------------


def produce(
    bootstrap: str,
    topic: str,
    value: bytes | None,
    *,
    key: bytes | None = None,
    headers: list[tuple[str, bytes]] | None = None,
) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    errors: list[Any] = []
    producer.produce(
        topic,
        value=value,
        key=key,
        headers=headers or [],
        on_delivery=lambda err, msg: errors.append(err) if err else None,
    )
    assert producer.flush(30) == 0, "produce not confirmed"
    assert not errors, errors


class TopicReader:
    """Reads a topic from the beginning in a background thread (a consumer with its own group)
    and keeps every record; tests wait for the records they expect."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        decode: Callable[[Any], Any],
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"test-{uuid.uuid4()}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
        self._consumer.subscribe([topic])
        self._decode = decode
        self._on_close = on_close
        self._lock = threading.Lock()
        self.records: list[Any] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            msg = self._consumer.poll(0.2)
            if msg is None or msg.error():
                continue
            try:
                record = self._decode(msg)
            except Exception as exc:  # a test must see this, not a dead thread and a timeout
                self.errors.append(f"offset {msg.offset()}: {type(exc).__name__}: {exc}")
                continue
            with self._lock:
                self.records.append(record)
        self._consumer.close()

    def matching(self, predicate: Callable[[Any], bool]) -> list[Any]:
        with self._lock:
            return [r for r in self.records if predicate(r)]

    def wait(
        self, predicate: Callable[[Any], bool], count: int = 1, timeout: float = 60.0
    ) -> list[Any]:
        try:
            return list(
                wait_for(
                    lambda: (m := self.matching(predicate)) and len(m) >= count and m,
                    timeout,
                    0.1,
                    f"{count} matching record(s)",
                )
            )
        except AssertionError:
            with self._lock:
                seen = [_brief(r) for r in self.records[-8:]]
            raise AssertionError(
                f"{len(self.matching(predicate))} of {count} records after {timeout}s; "
                f"decode errors: {self.errors[:5]}; last records: {seen}"
            ) from None

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        if self._on_close is not None:
            self._on_close()


def _brief(record: Any) -> Any:
    if isinstance(record, dict):
        return {
            k: record.get(k) for k in ("session_id", "recipient", "status", "key") if k in record
        }
    return record


def status_reader(bootstrap: str, topic: str, writer_schema: Any = None) -> TopicReader:
    def decode(msg: Any) -> dict[str, Any]:
        record = read_record("status_event", msg.value(), writer_schema)
        record["_key"] = msg.key()
        record["_headers"] = dict(msg.headers() or [])
        return record

    return TopicReader(bootstrap, topic, decode)


def rejection_reader(bootstrap: str, topic: str, writer_schema: Any = None) -> TopicReader:
    def decode(msg: Any) -> dict[str, Any]:
        record = read_record("rejection", msg.value(), writer_schema)
        record["_headers"] = dict(msg.headers() or [])
        return record

    return TopicReader(bootstrap, topic, decode)


def status_record(msg: Any) -> dict[str, Any]:
    """A status event as :func:`status_reader` decodes it (schemaless Avro, no registry)."""
    record = read_record("status_event", msg.value())
    record["_key"] = msg.key()
    record["_headers"] = dict(msg.headers() or [])
    record["_offset"] = (msg.partition(), msg.offset())
    return record


def rejection_record(msg: Any) -> dict[str, Any]:
    """A rejection as :func:`rejection_reader` decodes it (schemaless Avro, no registry)."""
    record = read_record("rejection", msg.value())
    record["_headers"] = dict(msg.headers() or [])
    return record


# -- SMTP ------------------------------------------------------------------------------------


class MailSink:
    """An aiosmtpd server on loopback that keeps every message it accepts (thread-safe)."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.messages: list[tuple[str, list[str], Message]] = []
        self._lock = threading.Lock()
        self.port = free_port()
        self.reject: dict[str, str] = {}  # recipient -> SMTP reply to answer instead of 250
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self._controller.start()

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any
    ) -> str:
        if address in self.reject:
            return self.reject[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self._lock:
            self.messages.append(
                (envelope.mail_from, list(envelope.rcpt_tos), message_from_bytes(envelope.content))
            )
        return "250 Message accepted for delivery"

    def to(self, address: str) -> list[Message]:
        with self._lock:
            return [m for _, rcpts, m in self.messages if address in rcpts]

    def stop(self) -> None:
        self._controller.stop()
