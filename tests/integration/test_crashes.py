"""Issue 11: nothing lost, nothing stuck. A 202 is a promise kept through every restart, crash
and rebalance.

Two workers share one deployment (topic prefix and app id) behind a load balancer: a steady load
of small SMS sessions is posted to both, Twilio is :class:`DeliveringTwilioServer` (it reports
every message ``delivered`` at once, its signed callbacks spread over both workers and tried
again while a worker is down), and the workers are stopped, killed and restarted under the load.
Afterwards every session answered 202 must be completed with every recipient ``delivered``; the
provider must have been asked at most once per message (rolling restarts) or a bounded number of
times per crash (kill -9); no callback may end up rejected; and the status topic must tell each
state once, by event id.

The other tests pin down the races behind those promises one at a time: a callback that arrives
before its send is recorded, two copies of one job in flight at once, and a replay of the
report agent (whose status events must carry the ids they had the first time).

Nothing here asserts on timing: waits are generous and only bound how long a failure takes to
show. A killed worker leaves the consumer group after ``SWITCHBOARD_SESSION_TIMEOUT`` (10 s by
default), which is how soon its partitions move.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import shutil
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from http.client import HTTPException
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest
from confluent_kafka import ConsumerGroupTopicPartitions, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from twilio.request_validator import RequestValidator

from cli.kafka.local import LocalBroker
from switchboard.clients import api_key_digest
from switchboard.fanout import dispatch_key
from tests.fakes.background import BackgroundServer
from tests.fakes.twilio_callbacks import DeliveringTwilioServer
from tests.fakes.twilio_server import (
    TEST_ACCOUNT_SID,
    TEST_AUTH_TOKEN,
    Behaviour,
    FakeTwilioServer,
)
from tests.integration.conftest import Keys, WorkerFactory
from tests.integration.harness import (
    Worker,
    http,
    read_topic,
    rejection_record,
    status_record,
    wait_for,
)

pytestmark = pytest.mark.kafka

#: Messages a worker killed with SIGKILL may have sent without recording it: its sends in flight
#: (SWITCHBOARD_MAX_IN_FLIGHT's default). Measured duplicates are printed, to tighten it.
DUPLICATE_BOUND_PER_KILL = 100

PUBLIC_URL = "http://switchboard.invalid"  # the load balancer's address, as Twilio knows it
SENDER = "+14155550100"
LOAD_RATE = 15.0  # sessions per second, 1 to 5 recipients each
SETTLE = 5.0  # seconds of load before, between and after the faults
COMPLETION_TIMEOUT = 150.0  # how long the sessions get to complete once the load stopped
PROVIDER_LATENCY = 0.1  # seconds the fake Twilio takes to answer a create: sends are in flight
TWILIO_PREFIX = "http:/twilio"  # the rejected topic's ``topic`` of a refused Twilio request


# -- numbers, clients and workers ------------------------------------------------------------


class Numbers:
    """Unique US numbers, +1 415 5xx xxxx (never the sender)."""

    def __init__(self) -> None:
        self._next = itertools.count(random.randrange(1_000_000))
        self._lock = threading.Lock()

    def take(self, count: int) -> list[str]:
        with self._lock:
            out: list[str] = []
            while len(out) < count:
                number = f"+14155{next(self._next) % 1_000_000:06d}"
                if number != SENDER:
                    out.append(number)
            return out


numbers = Numbers()


def twilio_document(keys: Keys, api_base: str) -> dict[str, Any]:
    """Client ``acme`` sending SMS through Twilio at ``api_base``."""
    sms = {
        "provider": "twilio",
        "account_sid": TEST_ACCOUNT_SID,
        "auth_token_env": "ACME_TWILIO_TOKEN",
        "from": [SENDER],
        "api_base": api_base,
        "rate_per_second": 1000,
    }
    acme = {
        "api_keys": [api_key_digest(keys.acme)],
        "default_channels": ["sms"],
        "channels": {"sms": sms},
    }
    return {"clients": {"acme": acme}}


def two_workers(
    make_worker: WorkerFactory, keys: Keys, api_base: str, extra_env: dict[str, str] | None = None
) -> tuple[Worker, Worker]:
    """Two workers of one deployment (same topic prefix and app id), each with its own port
    and data directory, behind one public URL."""
    env = {
        "ACME_TWILIO_TOKEN": TEST_AUTH_TOKEN,
        "SWITCHBOARD_PUBLIC_URL": PUBLIC_URL,
        **(extra_env or {}),
    }
    document = twilio_document(keys, api_base)
    first = make_worker(env, document=document)
    second = make_worker(env, prefix=first.prefix, document=document)
    return first, second


def group_of(worker: Worker) -> str:
    return f"sb-{worker.prefix}"  # SWITCHBOARD_APP_ID, as the harness sets it


# -- the load --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Accepted:
    """A session the Send API answered 202 for: a promise."""

    session_id: str
    recipients: tuple[str, ...]
    via: str
    at: float


class Load:
    """Posts small SMS sessions at a steady rate, alternately to each worker, in a thread.

    A connection error or a 503 is tried again on the other worker after a short pause (a new
    instruction: only a 202 is a promise). Every answer is counted by status; a 202 records the
    session and its recipients; any other answer but 503 is kept as unexpected (the test fails
    on it)."""

    def __init__(
        self,
        workers: Sequence[Worker],
        key: str,
        rate: float = LOAD_RATE,
        seed: int = 11,
        zero: float | None = None,
        threads: int = 1,
    ) -> None:
        self._urls = [w.url for w in workers]  # a worker keeps its port across restarts
        self._key = key
        self._interval = threads / rate  # each thread posts its share of the rate
        self._rng = random.Random(seed)
        self._turn = itertools.count()
        self._lock = threading.Lock()
        self._accepted: dict[str, Accepted] = {}
        self._answers: Counter[str] = Counter()
        self._unexpected: list[str] = []
        self._given_up = 0
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, name=f"load-{i}", daemon=True)
            for i in range(threads)
        ]
        self._zero = zero  # the clock's zero for Accepted.at (default: the start)

    def __enter__(self) -> Self:
        if self._zero is None:
            self._zero = time.monotonic()
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            if thread.is_alive():
                thread.join(60)

    def accepted(self) -> dict[str, Accepted]:
        with self._lock:
            return dict(self._accepted)

    def answers(self) -> Counter[str]:
        with self._lock:
            return Counter(self._answers)

    def unexpected(self) -> list[str]:
        with self._lock:
            return list(self._unexpected)

    def summary(self) -> str:
        with self._lock:
            return (
                f"{len(self._accepted)} sessions accepted "
                f"({sum(len(a.recipients) for a in self._accepted.values())} recipients), "
                f"answers {dict(self._answers)}, {self._given_up} instructions given up"
            )

    def _run(self) -> None:
        due = time.monotonic()
        serial = 0
        while not self._stop.is_set():
            now = time.monotonic()
            if now < due:
                self._stop.wait(due - now)
                continue
            due = max(due + self._interval, now - 1.0)  # never a burst of more than a second
            serial += 1
            self._post(serial)

    def _post(self, serial: int) -> None:
        with self._lock:
            count = self._rng.randint(1, 5)
        recipients = numbers.take(count)
        body = {
            "transport": {
                "type": "sms",
                "message": f"Load {serial}: your code is {serial % 1_000_000:06d}",
            },
            "audience": recipients,
        }
        for _ in range(30):
            url = self._urls[next(self._turn) % len(self._urls)]
            try:
                answer = http("POST", f"{url}/v1/messages", body, key=self._key, timeout=20)
            except (OSError, HTTPException) as exc:
                self._count(f"connection error ({type(exc).__name__})")
            else:
                self._count(str(answer.status))
                if answer.status == 503:
                    self._count(f"503: {_first_error(answer.body)}")
                if answer.status == 202:
                    session_id = str(answer.body["session_id"])
                    with self._lock:
                        self._accepted[session_id] = Accepted(
                            session_id, tuple(recipients), url, time.monotonic() - (self._zero or 0)
                        )
                    return
                if answer.status != 503:
                    with self._lock:
                        self._unexpected.append(
                            f"{answer.status} from {url}: {str(answer.body)[:300]}"
                        )
                    return
            if self._stop.wait(0.2):
                break
        with self._lock:
            self._given_up += 1

    def _count(self, what: str) -> None:
        with self._lock:
            self._answers[what] += 1


def _first_error(body: Any) -> str:
    """The first error message of an error answer (the API's ``{"errors": [...]}``)."""
    errors = body.get("errors") if isinstance(body, dict) else None
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        return str(errors[0].get("error", ""))[:60]
    return str(body)[:60]


# -- reading the outcome ---------------------------------------------------------------------


def session_document(urls: Sequence[str], key: str, session_id: str) -> tuple[int | str, Any]:
    """The whole session (every page of recipients) from the first worker that has it;
    ``(200, document)``, else the last answer's status and body."""
    last: tuple[int | str, Any] = ("no answer", None)
    for url in urls:
        try:
            answer = http("GET", f"{url}/v1/sessions/{session_id}?limit=500", key=key, timeout=15)
            if answer.status != 200:
                last = (answer.status, answer.body)
                continue
            document = answer.body
            while document.get("next_offset") is not None:
                page = http(
                    "GET",
                    f"{url}/v1/sessions/{session_id}?limit=500&offset={document['next_offset']}",
                    key=key,
                    timeout=15,
                )
                if page.status != 200:
                    raise OSError(f"page at {document['next_offset']}: {page.status}")
                document["recipients"] += page.body["recipients"]
                document["next_offset"] = page.body.get("next_offset")
            return 200, document
        except (OSError, HTTPException) as exc:
            last = (type(exc).__name__, str(exc))
    return last


def await_completed(
    urls: Sequence[str], key: str, sessions: Sequence[str], timeout: float
) -> tuple[dict[str, Any], dict[str, str], set[str]]:
    """Poll the API until every session is ``completed`` (a session may answer 404 or fail for a
    moment while partitions move). Returns the completed documents, for each session that did
    not complete in ``timeout`` what the API last said about it, and the keys of their
    deliveries that were not delivered."""
    pending = set(sessions)
    done: dict[str, Any] = {}
    last: dict[str, str] = {}
    undelivered: dict[str, list[str]] = {}
    deadline = time.monotonic() + timeout
    with ThreadPoolExecutor(4) as pool:
        while pending:
            ordered = sorted(pending)
            for session_id, (status, document) in zip(
                ordered, pool.map(lambda s: session_document(urls, key, s), ordered), strict=True
            ):
                if status == 200 and document["status"] == "completed":
                    done[session_id] = document
                    pending.discard(session_id)
                elif status == 200:
                    seen = Counter(r["status"] for r in document["recipients"])
                    open_ = [
                        f"#{r['index']} {r['status']}"
                        for r in document["recipients"]
                        if r["status"] != "delivered"
                    ]
                    undelivered[session_id] = [
                        f"{session_id}/{r['index']}/{r['channel']}"
                        for r in document["recipients"]
                        if r["status"] != "delivered"
                    ]
                    last[session_id] = (
                        f"{document['status']}, recipients {dict(seen)} "
                        f"(not delivered: {', '.join(open_)}), counts {document['counts']}"
                    )
                else:
                    last[session_id] = f"{status}: {str(document)[:160]}"
            if not pending or time.monotonic() > deadline:
                break
            time.sleep(1.0)
    missing = {s: last.get(s, "?") for s in sorted(pending)}
    return done, missing, {key for s in pending for key in undelivered.get(s, [])}


def status_events(
    bootstrap: str, topic: str, sessions: set[str], timeout: float = 60.0
) -> list[dict[str, Any]]:
    """The status topic as it is once it holds a ``completed`` event of each of ``sessions``
    (or after ``timeout``): a session's events share its key, so all that precede it are in."""
    deadline = time.monotonic() + timeout
    while True:
        events = read_topic(bootstrap, topic, status_record)
        have = {e["session_id"] for e in events if e["status"] == "completed"}
        if sessions <= have or time.monotonic() > deadline:
            return events
        time.sleep(1.0)


def distinct_ids(
    events: Sequence[dict[str, Any]], key: Callable[[dict[str, Any]], Any]
) -> dict[Any, tuple[int, set[str]]]:
    """Per ``key(event)``: how many times such an event was published, and its distinct ids."""
    out: dict[Any, tuple[int, set[str]]] = {}
    for event in events:
        k = key(event)
        count, ids = out.get(k, (0, set()))
        ids.add(str(event["event_id"]))
        out[k] = (count + 1, ids)
    return out


def committed_offsets(
    bootstrap: str, group: str, topic: str, partitions: Sequence[int]
) -> dict[int, int]:
    """The consumer group's committed offset of each partition (negative: none)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    request = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for p in partitions])
    result = admin.list_consumer_group_offsets([request])[group].result(15)
    return {tp.partition: tp.offset for tp in result.topic_partitions}


def wait_consumed(
    bootstrap: str, group: str, topic: str, partition: int, offset: int, timeout: float = 60.0
) -> None:
    """Wait until ``group`` committed past ``offset`` of ``topic``/``partition``: the record was
    processed (and whatever it produced was written)."""
    wait_for(
        lambda: committed_offsets(bootstrap, group, topic, [partition])[partition] > offset,
        timeout,
        0.5,
        f"{group} to commit past {topic}[{partition}]@{offset}",
    )


def errors_logged(worker: Worker) -> Counter[str]:
    """The worker's error and critical log lines (every start), by message."""
    return Counter(
        f"{r.get('level')}: {r.get('msg')}"
        for r in worker.log_records()
        if r.get("level") in ("error", "critical")
    )


# -- findings --------------------------------------------------------------------------------


@dataclass
class Findings:
    """What a scenario saw: broken promises (the test fails on any) and context for the report."""

    started: float = field(default_factory=time.monotonic)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: Measurements for the soak's report (``make soak``).
    figures: dict[str, Any] = field(default_factory=dict)

    def note(self, message: str) -> None:
        line = f"[{time.monotonic() - self.started:6.1f}s] {message}"
        print(line, flush=True)
        self.notes.append(line)

    def check(self, ok: bool, problem: str) -> None:
        if not ok:
            self.problems.append(problem)

    def verdict(self) -> None:
        if self.problems:
            raise AssertionError(
                f"{len(self.problems)} broken promise(s):\n- "
                + "\n- ".join(self.problems)
                + "\n\nwhat happened:\n"
                + "\n".join(self.notes)
            )


def longest_gap(accepted: dict[str, Accepted]) -> float:
    """The longest time, in seconds, between two sessions answered 202 in a row: how long the
    Send API was unavailable at worst."""
    times = sorted(a.at for a in accepted.values())
    return max((b - a for a, b in itertools.pairwise(times)), default=0.0)


def _examples(items: Sequence[Any] | set[Any] | dict[Any, Any], n: int = 5) -> str:
    if isinstance(items, dict):
        return ", ".join(f"{k}: {v}" for k, v in list(items.items())[:n])
    return ", ".join(str(i) for i in list(items)[:n])


@dataclass
class Outcome:
    """Everything a load scenario is judged on, read once the load stopped."""

    accepted: dict[str, Accepted]
    completed: dict[str, Any]
    missing: dict[str, str]
    #: The deliveries of the missing sessions that are not delivered (``<session>/<index>/<channel>``).
    undelivered: set[str]
    events: list[dict[str, Any]]
    rejected: list[dict[str, Any]]
    twilio: DeliveringTwilioServer
    #: Worker base URL -> "A" or "B".
    names: dict[str, str]
    zero: float


def run_load_scenario(
    kafka: LocalBroker,
    keys: Keys,
    twilio: BackgroundServer[DeliveringTwilioServer],
    workers: tuple[Worker, Worker],
    faults: Callable[[Findings], None],
    findings: Findings,
    *,
    rate: float = LOAD_RATE,
    threads: int = 1,
    completion_timeout: float = COMPLETION_TIMEOUT,
) -> Outcome:
    """Start both workers, run the load while ``faults`` happen, stop it, and read the outcome."""
    first, second = workers
    twilio.fake.set_targets([first.url, second.url])
    first.start()
    second.start(timeout=120)
    findings.note(f"workers up: {first.url} and {second.url} (prefix {first.prefix})")
    with Load(workers, keys.acme, rate=rate, zero=findings.started, threads=threads) as load:
        findings.figures["load_started_at"] = round(time.monotonic() - findings.started, 1)
        time.sleep(SETTLE)
        findings.note(f"load running: {load.summary()}")
        faults(findings)
        time.sleep(SETTLE)
    findings.note(f"load stopped: {load.summary()}")
    findings.figures["answers"] = dict(load.answers())
    findings.figures["load_stopped_at"] = round(time.monotonic() - findings.started, 1)
    accepted = load.accepted()
    unexpected = load.unexpected()
    findings.check(
        not unexpected,
        f"the Send API answered {len(unexpected)} times neither 202 nor 503 "
        f"(e.g. {_examples(unexpected, 3)}); answers: {dict(load.answers())}",
    )
    findings.check(
        load.answers()["500"] == 0, f"the Send API answered 500 {load.answers()['500']} times"
    )

    urls = [first.url, second.url]
    completed, missing, undelivered = await_completed(
        urls, keys.acme, list(accepted), completion_timeout
    )
    findings.note(f"{len(completed)} of {len(accepted)} sessions completed")
    findings.figures["all_completed_at"] = round(time.monotonic() - findings.started, 1)
    idle = twilio.fake.wait_idle(30 if missing else 150)
    findings.note(
        f"fake Twilio: {twilio.fake.summary()}{'' if idle else ' (callbacks still tried)'}"
    )
    events = status_events(kafka.bootstrap_servers, first.topic("status"), set(completed))
    rejected = read_topic(kafka.bootstrap_servers, first.topic("rejected"), rejection_record)
    findings.note(f"status topic: {len(events)} events; rejected topic: {len(rejected)} records")
    for worker, name in ((first, "A"), (second, "B")):
        logged = errors_logged(worker)
        if logged:
            findings.note(
                f"worker {name} logged {sum(logged.values())} errors: {_examples(dict(logged.most_common(6)), 6)}"
            )
    names = {first.url: "A", second.url: "B"}
    return Outcome(
        accepted,
        completed,
        missing,
        undelivered,
        events,
        rejected,
        twilio.fake,
        names,
        findings.started,
    )


def check_sessions(outcome: Outcome, findings: Findings) -> None:
    """Every accepted session completed, and every recipient in it delivered."""
    if outcome.missing:
        lost = outcome.missing
        creates = outcome.twilio.creates()
        sent_to = {c.session_id for c in creates}
        never_sent = [s for s in lost if s not in sent_to]
        findings.problems.append(
            f"{len(lost)} of {len(outcome.accepted)} sessions answered 202 are not completed after "
            f"{COMPLETION_TIMEOUT:g}s ({len(never_sent)} of them never reached the provider); e.g. "
            + "; ".join(
                f"{s} (accepted at {outcome.accepted[s].at:.1f}s via {outcome.names[outcome.accepted[s].via]}): {lost[s]}"
                for s in (never_sent[:3] + [s for s in lost if s not in never_sent])[:6]
            )
        )
        callbacks = [c for c in outcome.twilio.callbacks() if c.delivery in outcome.undelivered]
        findings.notes.append(
            f"callbacks of {len(callbacks)} deliveries not delivered (delivery: tries as worker answer @time): "
            + "; ".join(
                f"{c.delivery}: "
                + ", ".join(
                    f"{outcome.names.get(t, t)} {a} @{at - outcome.zero:.1f}s"
                    for t, a, at in c.tries
                )
                for c in sorted(callbacks, key=lambda c: c.delivery or "")[:12]
            )
        )
    bad: dict[str, str] = {}
    for session_id, document in outcome.completed.items():
        expected = outcome.accepted[session_id].recipients
        entries = document["recipients"]
        wrong = [
            f"#{e['index']} {e.get('recipient')} {e['status']}"
            for e in entries
            if e["status"] != "delivered"
            or e["index"] >= len(expected)
            or e.get("recipient") != expected[e["index"]]
        ]
        if len(entries) != len(expected) or wrong:
            bad[session_id] = (
                f"{len(entries)} of {len(expected)} recipients; not delivered: {wrong[:3]}"
            )
    findings.check(
        not bad,
        f"{len(bad)} completed sessions have recipients that are not delivered: {_examples(bad)}",
    )


def check_callbacks(outcome: Outcome, findings: Findings) -> None:
    """Every status callback ended 200, and none was recorded as rejected."""
    ended = outcome.twilio.final_answers()
    not_ok = {k: v for k, v in ended.items() if k != 200}
    findings.check(
        not not_ok, f"status callbacks that did not end 200: {not_ok} (all: {dict(ended)})"
    )
    twilio = [r for r in outcome.rejected if str(r.get("topic", "")).startswith(TWILIO_PREFIX)]
    reports = [r for r in outcome.rejected if str(r.get("topic", "")).endswith(".reports")]
    # A send repeated after a kill (in doubt) is a second message of the same attempt: the
    # callbacks of the copy whose id the delivery recorded first apply, and the other copy's are
    # recorded on the rejected topic (README, "A callback is about one message"). Expected for
    # exactly the deliveries the fake saw created twice; any other rejected report is a finding.
    duplicated = set(outcome.twilio.duplicates())
    other_copy = [r for r in reports if _other_copy_of(r, duplicated)]
    if other_copy:
        findings.note(
            f"callbacks of the second copy of a send in doubt, rejected as documented: "
            f"{len(other_copy)}"
        )
    reports = [r for r in reports if r not in other_copy]
    findings.check(
        not twilio,
        f"{len(twilio)} status callbacks were recorded as rejected: "
        f"{_examples([r['errors'][0]['error'] for r in twilio], 3)}",
    )
    findings.check(
        not reports,
        f"{len(reports)} reports were quarantined on the rejected topic: "
        f"{_examples([r['errors'][0]['error'] for r in reports], 3)}",
    )
    others = [r for r in outcome.rejected if r not in twilio and r not in reports]
    if others:
        findings.note(
            f"other rejections: {_examples([(r['topic'], r['errors'][0]['error']) for r in others], 3)}"
        )


def _other_copy_of(rejection: dict[str, Any], duplicated: set[tuple[str, str]]) -> bool:
    """Whether ``rejection`` is a callback about another message of a delivery attempt that was
    sent twice (the report agent's ``provider_message_id`` refusal)."""
    if rejection["errors"][0].get("field") != "provider_message_id":
        return False
    value = rejection.get("value")
    report = json.loads(value) if isinstance(value, bytes | str) else {}
    key = f"{report.get('session_id')}/{report.get('index')}/{report.get('channel')}"
    return bool(report.get("from_callback")) and (key, str(report.get("attempt"))) in duplicated


def duplicate_sends(outcome: Outcome, findings: Findings) -> int:
    dupes = outcome.twilio.duplicates()
    extra = sum(n - 1 for n in dupes.values())
    findings.note(
        f"duplicate provider sends: {extra} extra creates of {len(dupes)} messages"
        + (f", e.g. {_examples(dupes)}" if dupes else "")
    )
    return extra


def delivered_ids(outcome: Outcome) -> dict[Any, tuple[int, set[str]]]:
    return distinct_ids(
        [
            e
            for e in outcome.events
            if e["status"] == "delivered" and e["session_id"] in outcome.accepted
        ],
        lambda e: (e["session_id"], e["recipient"]),
    )


def completed_ids(outcome: Outcome) -> dict[Any, tuple[int, set[str]]]:
    return distinct_ids(
        [
            e
            for e in outcome.events
            if e["status"] == "completed" and e["session_id"] in outcome.accepted
        ],
        lambda e: e["session_id"],
    )


def note_replays(outcome: Outcome, findings: Findings) -> None:
    """How many status events were published more than once (the same session, recipient,
    status and attempt), and how many of those with the same id each time."""
    published = distinct_ids(
        outcome.events, lambda e: (e["session_id"], e["recipient"], e["status"], e["attempt"])
    )
    again = {k: ids for k, (n, ids) in published.items() if n > 1}
    same = sum(1 for ids in again.values() if len(ids) == 1)
    differ = {k: f"{len(ids)} ids" for k, ids in again.items() if len(ids) > 1}
    findings.note(
        f"status events published more than once: {len(again)} ({same} of them with one id)"
        + (f"; with new ids: {_examples(differ, 3)}" if differ else "")
    )


# -- the scenarios ---------------------------------------------------------------------------


@pytest.mark.timeout(600)
def test_rolling_sigterm_restarts_lose_nothing_and_send_nothing_twice(
    make_worker: WorkerFactory, kafka: LocalBroker, keys: Keys
) -> None:
    findings = Findings()
    with BackgroundServer(partial(DeliveringTwilioServer, latency=PROVIDER_LATENCY)) as twilio:
        first, second = two_workers(make_worker, keys, twilio.url)

        def faults(findings: Findings) -> None:
            for worker, name in ((first, "A"), (second, "B")):
                code = worker.stop(signal.SIGTERM)
                findings.note(f"SIGTERM {name}: exit code {code}")
                findings.check(
                    code == 0,
                    f"worker {name} exited {code} on SIGTERM, not 0:\n{worker.log_tail(15)}",
                )
                worker.start(timeout=120)
                findings.note(f"{name} restarted")
                if name == "A":
                    time.sleep(SETTLE)

        try:
            outcome = run_load_scenario(kafka, keys, twilio, (first, second), faults, findings)
        finally:
            first.stop()
            second.stop()

    check_sessions(outcome, findings)
    check_callbacks(outcome, findings)
    extra = duplicate_sends(outcome, findings)
    findings.check(
        extra == 0,
        f"{extra} messages were sent to the provider twice across clean restarts "
        f"(the same delivery and attempt created again): {_examples(outcome.twilio.duplicates())}",
    )
    note_replays(outcome, findings)
    completed = completed_ids(outcome)
    twice = {s: f"{n} events, {len(ids)} ids" for s, (n, ids) in completed.items() if len(ids) != 1}
    findings.check(
        not twice,
        f"{len(twice)} sessions have more than one `completed` event id: {_examples(twice)}",
    )
    absent = [s for s in outcome.completed if s not in completed]
    findings.check(
        not absent,
        f"{len(absent)} completed sessions have no `completed` event: {_examples(absent)}",
    )
    delivered = delivered_ids(outcome)
    dup = {k: f"{n} events, {len(ids)} ids" for k, (n, ids) in delivered.items() if len(ids) != 1}
    findings.check(
        not dup, f"{len(dup)} recipients have more than one `delivered` event id: {_examples(dup)}"
    )
    expected = {(s, r) for s in outcome.completed for r in outcome.accepted[s].recipients}
    without = expected - set(delivered)
    findings.check(
        not without,
        f"{len(without)} recipients of completed sessions have no `delivered` event: {_examples(without)}",
    )
    findings.verdict()


@pytest.mark.timeout(600)
def test_kill_9_mid_flight_loses_nothing_and_duplicates_stay_bounded(
    make_worker: WorkerFactory, kafka: LocalBroker, keys: Keys
) -> None:
    findings = Findings()
    kills = 0
    with BackgroundServer(partial(DeliveringTwilioServer, latency=PROVIDER_LATENCY)) as twilio:
        first, second = two_workers(make_worker, keys, twilio.url)

        def faults(findings: Findings) -> None:
            nonlocal kills
            for worker, name in ((first, "A"), (second, "B")):
                code = worker.stop(signal.SIGKILL)
                kills += 1
                findings.note(f"SIGKILL {name}: exit code {code}")
                time.sleep(2.0)
                worker.start(timeout=150)
                findings.note(f"{name} restarted")
                if name == "A":
                    time.sleep(SETTLE)

        try:
            outcome = run_load_scenario(kafka, keys, twilio, (first, second), faults, findings)
        finally:
            first.stop()
            second.stop()

    check_sessions(outcome, findings)
    check_callbacks(outcome, findings)
    extra = duplicate_sends(outcome, findings)
    bound = DUPLICATE_BOUND_PER_KILL * kills
    findings.check(
        extra <= bound,
        f"{extra} duplicate provider sends after {kills} kills; at most "
        f"{DUPLICATE_BOUND_PER_KILL} per kill may be sent twice",
    )
    note_replays(outcome, findings)
    completed = completed_ids(outcome)
    findings.note(
        "sessions with more than one `completed` event id (not asserted here): "
        f"{sum(1 for _, ids in completed.values() if len(ids) > 1)}"
    )
    delivered = delivered_ids(outcome)
    dup = {k: f"{n} events, {len(ids)} ids" for k, (n, ids) in delivered.items() if len(ids) > 1}
    findings.check(
        not dup,
        f"{len(dup)} recipients have more than one distinct `delivered` event id: {_examples(dup)}",
    )
    findings.verdict()


@pytest.fixture
def twilio() -> Iterator[BackgroundServer[FakeTwilioServer]]:
    with BackgroundServer(FakeTwilioServer) as server:
        yield server


def single_worker(make_worker: WorkerFactory, keys: Keys, api_base: str) -> Worker:
    """One worker whose public URL is its own (Twilio calls it directly)."""
    worker = make_worker(
        {"ACME_TWILIO_TOKEN": TEST_AUTH_TOKEN}, document=twilio_document(keys, api_base)
    )
    worker.extra_env["SWITCHBOARD_PUBLIC_URL"] = worker.url
    return worker.start()


def post_sms(
    worker: Worker, key: str, audience: list[str], message: str = "Your code is 1234"
) -> str:
    answer = worker.post(
        {"transport": {"type": "sms", "message": message}, "audience": audience}, key
    )
    assert answer.status == 202, answer.body
    return str(answer.body["session_id"])


def answered_sids(twilio: BackgroundServer[FakeTwilioServer], to: str) -> list[str]:
    """The SIDs the fake answered for messages to ``to`` (none while they are delayed)."""
    resources: dict[str, dict[str, Any]] = twilio.call(lambda: dict(twilio.fake.resources))
    return [sid for sid, r in resources.items() if r.get("to") == to]


def twilio_rejections(kafka: LocalBroker, worker: Worker, session_id: str) -> list[dict[str, Any]]:
    """Rejections of a Twilio request, or of a report of ``session_id``."""
    return [
        r
        for r in read_topic(kafka.bootstrap_servers, worker.topic("rejected"), rejection_record)
        if str(r.get("topic", "")).startswith(TWILIO_PREFIX)
        or session_id in str(r.get("value", b""))
        or session_id in str(r.get("errors"))
    ]


def reports_in(value: bytes) -> list[dict[str, Any]]:
    """The reports of a record of the reports topic: one, or a batch of them."""
    body = json.loads(value)
    return list(body["items"]) if body.get("kind") == "reports" else [body]


def test_a_callback_that_arrives_before_its_send_is_recorded_is_applied(
    make_worker: WorkerFactory,
    kafka: LocalBroker,
    keys: Keys,
    twilio: BackgroundServer[FakeTwilioServer],
) -> None:
    worker = single_worker(make_worker, keys, twilio.url)
    try:
        number = numbers.take(1)[0]
        twilio.script(Behaviour(delay=3.0), to=number)  # Twilio accepted it; its answer is late
        session_id = post_sms(worker, keys.acme, [number])
        [create] = twilio.wait_records(
            lambda r: r.resource == "Messages" and r.to == number, timeout=60
        )
        url = create.get("StatusCallback")
        assert url and url.startswith(f"{worker.url}/twilio/messages/status?"), url

        # Twilio delivers at once and calls back before its own answer to the create arrives.
        sid = "SM" + "0f" * 16
        params = {
            "AccountSid": TEST_ACCOUNT_SID,
            "From": SENDER,
            "To": number,
            "ApiVersion": "2010-04-01",
            "MessageSid": sid,
            "SmsSid": sid,
            "MessageStatus": "delivered",
            "SmsStatus": "delivered",
        }
        signature = RequestValidator(TEST_AUTH_TOKEN).compute_signature(url, params)
        assert answered_sids(twilio, number) == [], "precondition: the send must still be in flight"
        answer = http(
            "POST",
            url,
            raw=urlencode(params).encode(),
            headers={
                "X-Twilio-Signature": signature,
                "Content-Type": "application/x-www-form-urlencoded",
            },
        )
        assert 200 <= answer.status < 300, (
            f"the callback was answered {answer.status}: {answer.body}"
        )

        document = worker.wait_completed(session_id, keys.acme, timeout=60)
        assert [r["status"] for r in document["recipients"]] == ["delivered"], document

        # The provider's late answer (the dispatcher's `sent`) is applied too, and changes nothing.
        def sent_reports() -> list[dict[str, Any]]:
            # A dispatcher's reports travel in batches (``ReportBatch``): the record holding it.
            return [
                r
                for r in read_topic(kafka.bootstrap_servers, worker.topic("reports"))
                if r["key"] == session_id.encode()
                and any(item.get("status") == "sent" for item in reports_in(r["value"]))
            ]

        [sent] = wait_for(sent_reports, 30, 0.5, "the dispatcher's `sent` report")
        wait_consumed(
            kafka.bootstrap_servers,
            group_of(worker),
            worker.topic("reports"),
            sent["partition"],
            sent["offset"],
        )
        again = worker.session(session_id, keys.acme).body
        assert again["status"] == "completed", again
        assert [r["status"] for r in again["recipients"]] == ["delivered"], again
        rejected = twilio_rejections(kafka, worker, session_id)
        assert rejected == [], [r["errors"] for r in rejected]
    finally:
        worker.stop()


def test_two_copies_of_one_job_in_flight_reach_the_provider_once(
    make_worker: WorkerFactory,
    kafka: LocalBroker,
    keys: Keys,
    twilio: BackgroundServer[FakeTwilioServer],
) -> None:
    worker = single_worker(make_worker, keys, twilio.url)
    try:
        number = numbers.take(1)[0]
        twilio.script(Behaviour(delay=4.0), to=number)  # every create to it is answered 4 s late
        session_id = post_sms(worker, keys.acme, [number])
        twilio.wait_records(lambda r: r.resource == "Messages" and r.to == number, timeout=60)

        # The job is in flight: the same record (a redelivery, a re-emitted chunk) twice more.
        topic = worker.topic("dispatch.sms")
        [job] = [
            r
            for r in read_topic(kafka.bootstrap_servers, topic)
            if r["key"] == dispatch_key(session_id, 0)  # its session and slice of recipients
        ]
        producer = Producer({"bootstrap.servers": kafka.bootstrap_servers})
        offsets: list[int] = []

        def delivered(err: Any, msg: Any) -> None:
            offsets.append(-1 if err is not None else int(msg.offset()))

        for _ in range(2):
            producer.produce(
                topic,
                value=job["value"],
                key=job["key"],
                headers=job["headers"],
                partition=job["partition"],
                on_delivery=delivered,
            )
        assert producer.flush(30) == 0 and len(offsets) == 2 and min(offsets) >= 0, offsets
        assert answered_sids(twilio, number) == [], (
            "precondition: the first copy must still be in flight"
        )

        [sid] = wait_for(
            lambda: answered_sids(twilio, number), 30, 0.1, "the first create's answer"
        )[:1]
        assert twilio.call(twilio.fake.send_status_callback, sid, "delivered") == 200
        worker.wait_completed(session_id, keys.acme, timeout=60)
        # Both copies were consumed (committed past): whatever they were going to send, they sent.
        wait_consumed(
            kafka.bootstrap_servers, group_of(worker), topic, job["partition"], max(offsets)
        )
        creates = twilio.records("requests", lambda r: r.resource == "Messages" and r.to == number)
        keys_sent = Counter(
            (
                parse_query(r.get("StatusCallback")).get("d"),
                parse_query(r.get("StatusCallback")).get("a"),
            )
            for r in creates
        )
        assert len(creates) == 1, (
            f"one message, {len(creates)} creates at the provider: {dict(keys_sent)} "
            f"(the job was in flight when its copies arrived)"
        )
    finally:
        worker.stop()


def parse_query(url: str | None) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query)) if url else {}


def test_a_replayed_status_event_carries_the_same_id(
    make_worker: WorkerFactory, kafka: LocalBroker, keys: Keys
) -> None:
    """The report agent processes a session's reports again after a crash in which their status
    events were already published but neither its table rows nor its consumer offsets were
    durable. Simulated deterministically while the worker is stopped: the session's rows in the
    report agent's table (``deliveries``: each delivery's state and the session's progress) are
    removed (tombstones on the changelog, local tables dropped) and the group's committed offsets
    of the reports topic are reset to the beginning. Every event published again must carry the
    id it had the first time."""
    worker = make_worker().start()  # acme's sms is the sandbox: delivered at once
    bootstrap = kafka.bootstrap_servers
    try:
        recipients = numbers.take(3)
        session_id = post_sms(worker, keys.acme, recipients, "Replay me")
        worker.wait_completed(session_id, keys.acme, timeout=60)
        ours = [
            e
            for e in status_events(bootstrap, worker.topic("status"), {session_id})
            if e["session_id"] == session_id
        ]
        assert [e["status"] for e in ours].count("completed") == 1, [e["status"] for e in ours]
        assert worker.stop(signal.SIGTERM) == 0, worker.log_tail()

        producer = Producer({"bootstrap.servers": bootstrap})
        removed = Counter[str]()
        for table in ("deliveries",):
            changelog = f"{group_of(worker)}-{table}-changelog"
            rows = [
                r
                for r in read_topic(bootstrap, changelog)
                if r["key"] is not None and r["key"].decode(errors="replace").startswith(session_id)
            ]
            for key, partition in {(r["key"], r["partition"]) for r in rows}:
                producer.produce(changelog, value=None, key=key, partition=partition)
                removed[table] += 1
        assert producer.flush(30) == 0
        # A row per delivery and the session's progress.
        assert sum(removed.values()) >= len(recipients) + 1, (
            f"the session's rows were not found on the changelogs (table names changed?): {dict(removed)}"
        )
        shutil.rmtree(worker.workdir / "data")  # the local tables are rebuilt from the changelogs
        reset_offsets(bootstrap, group_of(worker), worker.topic("reports"), 4)

        worker.start()
        deadline = time.monotonic() + 90
        while True:
            ours = [
                e
                for e in read_topic(bootstrap, worker.topic("status"), status_record)
                if e["session_id"] == session_id
            ]
            if [e["status"] for e in ours].count("completed") >= 2 or time.monotonic() > deadline:
                break
            time.sleep(1.0)
        published = distinct_ids(ours, lambda e: (e["recipient"], e["status"], e["attempt"]))
        replayed = {k: n for k, (n, _) in published.items() if n > 1}
        assert replayed, (
            "the replay did not happen (no status event was published twice), so this test "
            f"proves nothing: {[(e['recipient'], e['status']) for e in ours]}"
        )
        differ = {
            k: f"published {n} times with {len(ids)} ids"
            for k, (n, ids) in published.items()
            if len(ids) != 1
        }
        assert not differ, (
            f"{len(differ)} of {len(published)} status events got a new id when the same report was "
            f"processed again (replayed: {len(replayed)}): {differ}"
        )
    finally:
        worker.stop()


def reset_offsets(
    bootstrap: str, group: str, topic: str, partitions: int, timeout: float = 60.0
) -> None:
    """Set ``group``'s committed offsets of every partition of ``topic`` to 0 (the group must
    have no live member: tried again until the stopped worker has left it)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    request = ConsumerGroupTopicPartitions(
        group, [TopicPartition(topic, p, 0) for p in range(partitions)]
    )
    deadline = time.monotonic() + timeout
    while True:
        try:
            admin.alter_consumer_group_offsets([request])[group].result(15)
            break
        except Exception as exc:  # a member still in the group: its session has to expire
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"could not reset {group}'s offsets of {topic}: {exc}"
                ) from exc
            time.sleep(1.0)
    after = committed_offsets(bootstrap, group, topic, range(partitions))
    assert all(offset == 0 for offset in after.values()), after


# -- the soak: `make soak` (not part of `make test`) ------------------------------------------


SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS", "120"))
SOAK_RATE = float(os.environ.get("SOAK_RATE", "30"))  # sessions per second, 3 recipients on average


def _soak_report(name: str, outcome: Outcome, findings: Findings, faults: int, extra: int) -> None:
    """Print the soak's figures, and add them to ``$SOAK_REPORT`` (JSON) when it is set."""
    recipients = sum(len(a.recipients) for a in outcome.accepted.values())
    figures = {
        "scenario": name,
        "seconds_of_load": round(
            findings.figures["load_stopped_at"] - findings.figures["load_started_at"], 1
        ),
        "sessions_accepted": len(outcome.accepted),
        "recipients": recipients,
        "sessions_lost": len(outcome.missing),
        "faults": faults,
        "duplicate_sends": extra,
        "duplicate_sends_per_fault": round(extra / faults, 2) if faults else 0,
        "callbacks_rejected": sum(
            1 for r in outcome.rejected if str(r.get("topic", "")).startswith(TWILIO_PREFIX)
        ),
        "callback_answers": {str(k): v for k, v in outcome.twilio.tries().items()},
        "longest_api_gap_s": round(longest_gap(outcome.accepted), 1),
        **findings.figures,
    }
    print(json.dumps(figures, indent=2), flush=True)
    path = os.environ.get("SOAK_REPORT")
    if path:
        report = Path(path)
        previous = json.loads(report.read_text()) if report.exists() else []
        report.write_text(json.dumps([*previous, figures], indent=2) + "\n")


@pytest.mark.soak
@pytest.mark.timeout(3600)
def test_soak_sigterm_every_20_seconds(
    make_worker: WorkerFactory, kafka: LocalBroker, keys: Keys
) -> None:
    """The operator's test of a clean restart: two workers under a steady load for
    ``SOAK_SECONDS``, one of them stopped with SIGTERM every 20 s (in turn) and started again."""
    findings = Findings()
    stops = 0
    with BackgroundServer(partial(DeliveringTwilioServer, latency=PROVIDER_LATENCY)) as twilio:
        first, second = two_workers(make_worker, keys, twilio.url)

        def faults(findings: Findings) -> None:
            nonlocal stops
            end = time.monotonic() + SOAK_SECONDS - 2 * SETTLE
            for worker, name in itertools.cycle(((first, "A"), (second, "B"))):
                if time.monotonic() + 20 > end:
                    break
                time.sleep(max(0.0, 20 - (time.monotonic() - findings.started) % 20))
                code = worker.stop(signal.SIGTERM)
                stops += 1
                findings.note(f"SIGTERM {name}: exit code {code}")
                findings.check(code == 0, f"worker {name} exited {code} on SIGTERM")
                worker.start(timeout=150)
                findings.note(f"{name} restarted")
            findings.figures["last_fault_at"] = round(time.monotonic() - findings.started, 1)

        try:
            outcome = run_load_scenario(
                kafka,
                keys,
                twilio,
                (first, second),
                faults,
                findings,
                rate=SOAK_RATE,
                threads=8,
                completion_timeout=900,
            )
        finally:
            first.stop()
            second.stop()
    check_sessions(outcome, findings)
    check_callbacks(outcome, findings)
    extra = duplicate_sends(outcome, findings)
    findings.check(extra == 0, f"{extra} messages sent twice across clean restarts")
    _soak_report("SIGTERM every 20 s", outcome, findings, stops, extra)
    findings.verdict()


@pytest.mark.soak
@pytest.mark.timeout(3600)
def test_soak_kill_9_every_10_seconds(
    make_worker: WorkerFactory, kafka: LocalBroker, keys: Keys
) -> None:
    """The operator's test of crashes: two workers under a steady load, `kill -9` of one of them
    every 10 s (in turn) five times, each started again 2 s after it died."""
    findings = Findings()
    kills = 0
    with BackgroundServer(partial(DeliveringTwilioServer, latency=PROVIDER_LATENCY)) as twilio:
        first, second = two_workers(make_worker, keys, twilio.url)

        def faults(findings: Findings) -> None:
            nonlocal kills
            restarts: dict[str, threading.Thread] = {}
            pairs = itertools.cycle(((first, "A"), (second, "B")))
            for _ in range(5):
                worker, name = next(pairs)
                previous = restarts.get(name)
                if previous is not None:
                    previous.join(300)  # kill a running worker, not one still starting
                time.sleep(max(0.0, 10 - (time.monotonic() - findings.started) % 10))
                worker.stop(signal.SIGKILL)
                kills += 1
                findings.note(f"SIGKILL {name}")

                def restart(worker: Worker = worker, name: str = name) -> None:
                    time.sleep(2.0)
                    worker.start(timeout=300)
                    findings.note(f"{name} restarted")

                restarts[name] = threading.Thread(target=restart, daemon=True)
                restarts[name].start()
            findings.figures["last_fault_at"] = round(time.monotonic() - findings.started, 1)
            for thread in restarts.values():
                thread.join(300)

        try:
            outcome = run_load_scenario(
                kafka,
                keys,
                twilio,
                (first, second),
                faults,
                findings,
                rate=SOAK_RATE,
                threads=8,
                completion_timeout=900,
            )
        finally:
            first.stop()
            second.stop()
    check_sessions(outcome, findings)
    check_callbacks(outcome, findings)
    extra = duplicate_sends(outcome, findings)
    findings.check(
        extra <= DUPLICATE_BOUND_PER_KILL * kills, f"{extra} duplicate sends after {kills} kills"
    )
    _soak_report("kill -9 every 10 s, five times", outcome, findings, kills, extra)
    findings.verdict()
