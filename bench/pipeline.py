"""The pipeline benchmark: ``make bench`` (not part of ``make test``).

Pushes N instructions x M recipients through the whole chain of a real worker process (Avro
produced to the instructions topic, ``delivered`` status events consumed) and prints:

* deliveries per second, from the first instruction produced to the last ``delivered`` consumed;
* end-to-end latency p50 / p99: instruction produced -> its recipient's ``delivered`` consumed;
* CPU seconds of the worker process per 1,000 deliveries, and its peak RSS;
* CPU seconds of the broker per 1,000 deliveries over the same window: on one machine the
  broker shares the CPUs with what it serves, and serving Switchboard costs it more than
  serving the baseline.

Beside it, in the same run, a baseline: a plain confluent-kafka consume -> transform -> produce
loop over the same number of topic hops (instructions -> sessions -> fan-out -> dispatch ->
reports -> status: five hops), in one process of its own, fanned out per recipient at the first
hop like Switchboard. The baseline is what Kafka and Python cost without Faust, tables, status
events or validation: the floor to compare against.

``--provider twilio-fake`` sends SMS through the real Twilio transport (the official SDK) to a
lean local stand-in for Twilio's Messages API (``bench/twilio_responder.py``, a process of its
own) that answers each request after ``--provider-latency-ms`` (default 20 ms), instead of the
sandbox: with 100 requests in flight, provider latency should be hidden by concurrency.

    .venv/bin/python -m bench.pipeline --instructions 200 --recipients 50
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

import schemas
from bench.retention import RetentionResult, run_retention
from bench.retention import print_result as print_retention
from bench.workload import avro, instruction, sandbox_worker
from cli.kafka.local import KafkaDistribution, LocalBroker
from cli.worker_process import WorkerProcess
from switchboard.clients import api_key_digest
from switchboard.wire import read_record

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Result:
    name: str
    deliveries: int
    seconds: float
    latencies: list[float]  # the burst: every instruction produced at once
    cpu_seconds: float
    peak_rss_mb: float
    paced: list[float]  # one-recipient instructions at a steady rate well below capacity
    #: The broker's CPU over the same window as ``cpu_seconds``: it shares the machine.
    broker_cpu_seconds: float = float("nan")

    @property
    def rate(self) -> float:
        return self.deliveries / self.seconds

    @property
    def cpu_ms(self) -> float:
        """The process's CPU per delivery, in milliseconds."""
        return self.cpu_seconds / self.deliveries * 1000

    @property
    def broker_cpu_ms(self) -> float:
        """The broker's CPU per delivery over the same window, in milliseconds."""
        return self.broker_cpu_seconds / self.deliveries * 1000

    def row(self) -> str:
        burst, paced = _percentiles(self.latencies), _percentiles(self.paced)
        return (
            f"| {self.name} | {self.deliveries:,} | {self.rate:,.0f} | {burst} | {paced} | "
            f"{self.cpu_ms:.2f} | {self.broker_cpu_ms:.2f} | {self.peak_rss_mb:.0f} |"
        )


def _percentiles(latencies: list[float]) -> str:
    if not latencies:
        return "- / -"
    ordered = sorted(latencies)
    p50 = statistics.median(ordered) * 1000
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000
    return f"{p50:,.0f} / {p99:,.0f}"


PACED_RATE = 20  # instructions per second, one recipient each
PACED_COUNT = 200


def paced(
    produce_one: Callable[[int], list[str]], seen: Callable[[], dict[str, float]], what: str
) -> list[float]:
    """Produce PACED_COUNT one-recipient instructions at PACED_RATE per second; return the
    latency of each (produced -> final status consumed)."""
    produced_at: dict[str, float] = {}
    start = time.perf_counter()
    for i in range(PACED_COUNT):
        time.sleep(max(0.0, start + i / PACED_RATE - time.perf_counter()))
        now = time.perf_counter()
        for address in produce_one(i):
            produced_at[address] = now
    _wait_until(lambda: all(a in seen() for a in produced_at), 300, f"paced {what}")
    done = seen()
    return [done[a] - produced_at[a] for a in produced_at]


# -- process accounting (Linux /proc) ---------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime


def broker_cpu_seconds(broker: LocalBroker) -> float:
    """The broker's CPU so far (NaN when its process is not found): on this machine it shares
    the CPUs with the worker, and what Switchboard asks of it is part of what a delivery costs."""
    pid = broker.running_pid()
    return cpu_seconds(pid) if pid is not None else float("nan")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# -- Switchboard ------------------------------------------------------------------------------


class Watcher:
    """Consumes a topic in a background thread and records when each address's final record was
    consumed (``extract`` names the address of a final record, or None)."""

    def __init__(self, bootstrap: str, topic: str, extract: Callable[[bytes], str | None]) -> None:
        self.extract = extract
        self.seen: dict[str, float] = {}
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"bench-{uuid.uuid4()}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
        self._consumer.subscribe([topic])
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for msg in self._consumer.consume(1000, 0.05):
                if msg.error():
                    continue
                address = self.extract(msg.value())
                if address is not None:
                    with self.lock:
                        self.seen.setdefault(address, time.perf_counter())
        self._consumer.close()

    def count(self) -> int:
        with self.lock:
            return len(self.seen)

    def snapshot(self) -> dict[str, float]:
        with self.lock:
            return dict(self.seen)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def status_watcher(bootstrap: str, topic: str, final: str) -> Watcher:
    # The status as Avro writes it (its length, zigzag-encoded, then its bytes): an event whose
    # value lacks it is not ``final`` and is skipped undecoded. Most are not (``accepted``,
    # ``sent``), and decoding every one took a third of a core from a machine the worker needs
    # whole; the baseline's watcher reads one record per delivery, this one three.
    marker = bytes([len(final) << 1]) + final.encode()

    def extract(value: bytes) -> str | None:
        if marker not in value:
            return None
        event = read_record("status_event", value)
        return str(event["recipient"]) if event["status"] == final else None

    return Watcher(bootstrap, topic, extract)


def run_switchboard(
    broker: LocalBroker,
    workdir: Path,
    n: int,
    m: int,
    provider: str,
    latency_ms: int,
    *,
    paced_sends: bool = True,
) -> Result:
    """Switchboard's burst of ``n`` x ``m`` deliveries through one worker, then
    (``paced_sends``) its paced one-recipient sends."""
    prefix = f"bench{uuid.uuid4().hex[:6]}"
    channel = "sms" if provider == "twilio-fake" else "email"
    extra_env: dict[str, str] = {"SWITCHBOARD_LOG_LEVEL": "warning", "SWITCHBOARD_PARTITIONS": "4"}
    with fake_provider(provider, latency_ms) as channel_config:
        if provider == "twilio-fake":
            extra_env["BENCH_TWILIO_TOKEN"] = channel_config.pop("_token")
        clients = {
            "clients": {
                "bench": {
                    "api_keys": [api_key_digest("bench-key")],
                    "default_channels": [channel],
                    "channels": {channel: channel_config},
                }
            }
        }
        clients_file = workdir / "clients.yaml"
        clients_file.write_text(yaml.safe_dump(clients))
        worker = WorkerProcess(
            broker.bootstrap_servers, prefix, workdir / prefix, clients_file, extra_env
        )
        worker.start()
        final = "sent" if provider == "twilio-fake" else "delivered"
        watcher = status_watcher(broker.bootstrap_servers, worker.topic("status"), final)
        try:
            producer = Producer({"bootstrap.servers": broker.bootstrap_servers, "linger.ms": 5})
            topic = worker.topic("instructions")
            headers = [("content-type", schemas.content_type("instruction").encode())]
            _wait_until(
                lambda: _warm_up(producer, topic, headers, channel, watcher), 120, "warm-up"
            )
            before = watcher.count()
            assert worker.process is not None
            pid = worker.process.pid
            cpu0, broker0 = cpu_seconds(pid), broker_cpu_seconds(broker)
            produced_at: dict[str, float] = {}
            start = time.perf_counter()
            for i in range(n):
                body, audience = instruction(i, m, channel)
                now = time.perf_counter()
                for address in audience:
                    produced_at[address] = now
                producer.produce(topic, avro(body), key=b"bench", headers=headers)
                producer.poll(0)
            producer.flush(60)
            total = n * m
            _wait_until(lambda: watcher.count() - before >= total, 600, f"{total} deliveries")
            with watcher.lock:
                finished = [watcher.seen[a] for a in produced_at]
                latencies = [watcher.seen[a] - produced_at[a] for a in produced_at]
            seconds = max(finished) - start
            cpu, broker_cpu = cpu_seconds(pid) - cpu0, broker_cpu_seconds(broker) - broker0

            def produce_one(i: int) -> list[str]:
                body, audience = instruction(
                    n * m + 1 + i, 1, channel
                )  # addresses the burst did not use
                producer.produce(topic, avro(body), key=b"bench", headers=headers)
                producer.poll(0)
                producer.flush(5)
                return audience

            paced_latencies = (
                paced(produce_one, watcher.snapshot, "Switchboard") if paced_sends else []
            )
            rss = peak_rss_mb(pid)
        finally:
            watcher.stop()
            worker.stop()
    name = (
        f"Switchboard ({'sandbox' if provider == 'sandbox' else f'fake Twilio, {latency_ms} ms'})"
    )
    return Result(name, total, seconds, latencies, cpu, rss, paced_latencies, broker_cpu)


def _warm_up(
    producer: Producer,
    topic: str,
    headers: list[tuple[str, bytes]],
    channel: str,
    watcher: Watcher,
) -> bool:
    if watcher.count() > 0:
        return True
    body, _ = instruction(10**6, 1, channel)
    producer.produce(topic, avro(body), key=b"bench", headers=headers)
    producer.flush(10)
    time.sleep(1)
    return watcher.count() > 0


@contextmanager
def fake_provider(provider: str, latency_ms: int) -> Iterator[dict[str, Any]]:
    if provider == "sandbox":
        yield {"provider": "sandbox"}
        return
    # A lean responder in a process of its own (bench/twilio_responder.py): the real Twilio's
    # CPU is not on the worker's machine either.
    responder = subprocess.Popen(
        [sys.executable, "-m", "bench.twilio_responder", "--latency-ms", str(latency_ms)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert responder.stdout is not None
        port = int(responder.stdout.readline())
        yield {
            "provider": "twilio",
            "account_sid": "AC" + "0" * 32,
            "auth_token_env": "BENCH_TWILIO_TOKEN",
            "from": ["+14155550100"],
            "api_base": f"http://127.0.0.1:{port}",
            "rate_per_second": 1_000_000,
            "max_in_flight": 100,
            "_token": "bench-token",
        }
    finally:
        responder.terminate()
        responder.wait(10)


# -- lanes: one-time passwords during a campaign ------------------------------------------------

LANE_RATE = 5  # one-recipient sends per second during the campaign
LANE_COUNT = 50


@dataclass
class LanesResult:
    campaign: int
    partitions: int
    latencies: dict[str, list[float]]  # priority -> produced -> delivered, seconds
    campaign_left: dict[
        str, int
    ]  # priority -> campaign deliveries not yet made when its sends ended

    def rows(self) -> list[str]:
        return [
            f"| {priority} | {len(lat)} at {LANE_RATE}/s | {_percentiles(lat)} | {self.campaign_left[priority]:,} |"
            for priority, lat in self.latencies.items()
        ]


def run_lanes(broker: LocalBroker, workdir: Path, campaign: int) -> LanesResult:
    """A campaign of ``campaign`` SMS recipients (sandbox) on one worker; while it runs,
    LANE_COUNT one-recipient sends of the same client and channel at LANE_RATE per second with
    ``options.priority: high``, then as many with the default priority: the latency of each,
    produced -> ``delivered`` consumed."""
    partitions = 4
    prefix = f"lane{uuid.uuid4().hex[:6]}"
    worker = sandbox_worker(broker, workdir, prefix, {"SWITCHBOARD_PARTITIONS": str(partitions)})
    worker.start()
    watcher = status_watcher(broker.bootstrap_servers, worker.topic("status"), "delivered")
    latencies: dict[str, list[float]] = {}
    left: dict[str, int] = {}
    try:
        producer = Producer({"bootstrap.servers": broker.bootstrap_servers, "linger.ms": 1})
        topic = worker.topic("instructions")
        headers = [("content-type", schemas.content_type("instruction").encode())]
        _wait_until(lambda: _warm_up(producer, topic, headers, "sms", watcher), 120, "warm-up")
        body, audience = instruction(0, campaign, "sms")
        producer.produce(topic, avro(body), key=b"bench", headers=headers)
        producer.flush(60)
        first = audience[0]
        _wait_until(
            lambda: first in watcher.snapshot() or watcher.count() > 10,
            300,
            "the campaign to start",
        )
        base = campaign + 10
        for priority in ("high", "normal"):
            produced_at: dict[str, float] = {}
            start = time.perf_counter()
            for i in range(LANE_COUNT):
                time.sleep(max(0.0, start + i / LANE_RATE - time.perf_counter()))
                one, addresses = instruction(base + i, 1, "sms")
                base_options: dict[str, Any] = {
                    "trigger": None,
                    "scheduledTimestamp": None,
                    "retries": None,
                    "retryIntervalMinutes": None,
                    "webhookUrl": None,
                }
                one["options"] = {**base_options, "priority": priority}
                produced_at[addresses[0]] = time.perf_counter()
                producer.produce(topic, avro(one), key=b"bench", headers=headers)
                producer.poll(0)
            producer.flush(10)
            base += LANE_COUNT
            _wait_until(
                lambda sent=produced_at: all(a in watcher.snapshot() for a in sent),
                600,
                f"{priority} sends",
            )
            seen = watcher.snapshot()
            latencies[priority] = [seen[a] - produced_at[a] for a in produced_at]
            left[priority] = sum(1 for a in audience if a not in seen)
    finally:
        watcher.stop()
        worker.stop()
    return LanesResult(campaign, partitions, latencies, left)


# -- one campaign on two workers -------------------------------------------------------------


@dataclass
class ShareResult:
    recipients: int
    seconds: float  # instruction produced -> last `delivered` consumed
    sent: list[int]  # provider sends per worker
    cpu_seconds: list[float]

    def row(self) -> str:
        total = sum(self.sent)
        shares = " / ".join(f"{n / total:.0%}" for n in self.sent)
        cpu = " / ".join(f"{c:,.0f}" for c in self.cpu_seconds)
        return (
            f"| {self.recipients:,} | 2 | {self.seconds:,.1f} s | {self.recipients / self.seconds:,.0f} | "
            f"{shares} | {cpu} |"
        )


def _sends(worker: WorkerProcess) -> int:
    """The worker's provider sends so far, from its Prometheus metrics."""
    import urllib.request

    with urllib.request.urlopen(f"{worker.url}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    return int(
        sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("switchboard_provider_sends_total{") and 'outcome="ok"' in line
        )
    )


def run_share(broker: LocalBroker, workdir: Path, recipients: int) -> ShareResult:
    """One campaign of ``recipients`` SMS recipients (sandbox) on two workers of one deployment:
    how long it takes, and the share of it each worker sent."""
    prefix = f"share{uuid.uuid4().hex[:6]}"
    workers = [sandbox_worker(broker, workdir, prefix, {}, name=f"{prefix}-{n}") for n in range(2)]
    for worker in workers:
        worker.start()
    watcher = status_watcher(broker.bootstrap_servers, workers[0].topic("status"), "delivered")
    try:
        _wait_until(lambda: all(_settled(w) for w in workers), 120, "the group to settle")
        producer = Producer(
            {
                "bootstrap.servers": broker.bootstrap_servers,
                "linger.ms": 5,
                "message.max.bytes": 64 * 1024 * 1024,
            }
        )
        topic = workers[0].topic("instructions")
        headers = [("content-type", schemas.content_type("instruction").encode())]
        _wait_until(lambda: _warm_up(producer, topic, headers, "sms", watcher), 120, "warm-up")
        before = [_sends(w) for w in workers]
        pids = [w.process.pid for w in workers if w.process is not None]
        cpu0 = [cpu_seconds(pid) for pid in pids]
        body, audience = instruction(1, recipients, "sms")
        start = time.perf_counter()
        producer.produce(topic, avro(body), key=b"bench", headers=headers)
        producer.flush(60)
        _wait_until(
            lambda: (
                all(a in watcher.seen for a in audience[-10:])
                and sum(1 for a in audience if a in watcher.seen) == recipients
            ),
            1800,
            "the campaign",
        )
        seconds = max(watcher.snapshot()[a] for a in audience) - start
        sent = [_sends(w) - b for w, b in zip(workers, before, strict=True)]
        cpu = [cpu_seconds(pid) - c for pid, c in zip(pids, cpu0, strict=True)]
    finally:
        watcher.stop()
        for worker in workers:
            worker.stop()
    return ShareResult(recipients, seconds, sent, cpu)


def _settled(worker: WorkerProcess) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"{worker.url}/readyz", timeout=5) as answer:
            return bool(json.loads(answer.read()).get("settled"))
    except OSError:
        return False


# -- fan-out of one large instruction -----------------------------------------------------------


@dataclass
class FanoutResult:
    recipients: int
    produced_bytes: int
    accepted_seconds: float  # instruction produced -> last `accepted` consumed
    peak_rss_mb: float

    def row(self) -> str:
        rate = self.recipients / self.accepted_seconds
        return (
            f"| {self.recipients:,} | {self.produced_bytes / 1e6:,.1f} MB | {self.accepted_seconds:,.1f} s | "
            f"{rate:,.0f} | {self.peak_rss_mb:,.0f} |"
        )


def _produce_one(
    broker: LocalBroker, worker: WorkerProcess, recipients: int
) -> tuple[float, bytes]:
    """Produce one Avro instruction of ``recipients`` SMS recipients to ``worker``'s
    instructions topic, as any outside producer would; returns when it started, and its bytes."""
    body, _ = instruction(0, recipients, "sms")
    value = avro(body)
    producer = Producer(
        {"bootstrap.servers": broker.bootstrap_servers, "message.max.bytes": 64 * 1024 * 1024}
    )
    headers = [("content-type", schemas.content_type("instruction").encode())]
    start = time.perf_counter()
    producer.produce(worker.topic("instructions"), value, key=b"bench", headers=headers)
    producer.flush(60)
    return start, value


def run_fanout(broker: LocalBroker, workdir: Path, recipients: int) -> FanoutResult:
    """One instruction of ``recipients`` SMS recipients, produced as Avro like any outside
    producer would: time until every recipient is ``accepted`` (validated, stored in chunks,
    fanned out into dispatch jobs), and the worker's peak RSS meanwhile."""
    prefix = f"fan{uuid.uuid4().hex[:6]}"
    # Dispatch paused: the jobs wait in Kafka, and what is measured is the fan-out alone.
    worker = sandbox_worker(
        broker,
        workdir,
        prefix,
        {"SWITCHBOARD_PAUSED_CHANNELS": "sms", "SWITCHBOARD_DISPATCH_BACKLOG": "0"},
    )
    worker.start()
    watcher = status_watcher(broker.bootstrap_servers, worker.topic("status"), "accepted")
    try:
        start, value = _produce_one(broker, worker, recipients)
        _wait_until(lambda: watcher.count() >= recipients, 3600, f"{recipients:,} accepted")
        seconds = max(watcher.snapshot().values()) - start
        assert worker.process is not None
        rss = peak_rss_mb(worker.process.pid)
    finally:
        watcher.stop()
        worker.stop()
    return FanoutResult(recipients, len(value), seconds, rss)


# -- one large instruction over HTTP ----------------------------------------------------------


@dataclass
class HttpResult:
    recipients: int
    body_bytes: int
    status: int
    seconds: float  # request sent -> answer received (202 once every write is confirmed)
    slowest_health: float  # the slowest GET /healthz answered meanwhile: the event loop's stalls
    idle_rss_mb: float
    peak_rss_mb: float

    def row(self) -> str:
        return (
            f"| {self.recipients:,} | {self.body_bytes / 1e6:,.1f} MB | {self.status} | {self.seconds:,.1f} s | "
            f"{self.recipients / self.seconds:,.0f} | {self.slowest_health * 1000:,.0f} ms | "
            f"{self.idle_rss_mb:,.0f} | {self.peak_rss_mb:,.0f} |"
        )


def run_http(broker: LocalBroker, workdir: Path, recipients: int) -> HttpResult:
    """One ``POST /v1/messages`` of ``recipients`` SMS recipients (JSON, no idempotency key):
    the time until its answer (202 once durable), the slowest ``/healthz`` answered by the same
    worker meanwhile (polled every 0.2 s: validation must not hold the event loop), and the
    worker's RSS before and at its peak."""
    import urllib.error
    import urllib.request

    prefix = f"http{uuid.uuid4().hex[:6]}"
    # Dispatch paused: what is measured is the submission alone, not the deliveries.
    worker = sandbox_worker(broker, workdir, prefix, {"SWITCHBOARD_PAUSED_CHANNELS": "sms"})
    worker.start()
    assert worker.process is not None
    pid = worker.process.pid
    body, _ = instruction(0, recipients, "sms")
    data = json.dumps(body).encode()
    request = urllib.request.Request(
        f"{worker.url}/v1/messages",
        data=data,
        method="POST",
        headers={"Content-Type": "application/json", "Authorization": "Bearer bench-key"},
    )
    health: list[float] = []
    done = threading.Event()

    def poll_health() -> None:
        while not done.wait(0.2):
            asked = time.perf_counter()
            with urllib.request.urlopen(f"{worker.url}/healthz", timeout=120) as answer:
                answer.read()
            health.append(time.perf_counter() - asked)

    poller = threading.Thread(target=poll_health, daemon=True)
    try:
        idle = Path(f"/proc/{pid}/status").read_text()
        idle_rss = next(
            int(line.split()[1]) / 1024 for line in idle.splitlines() if line.startswith("VmRSS:")
        )
        poller.start()
        start = time.perf_counter()
        try:
            with urllib.request.urlopen(request, timeout=600) as answer:
                status = answer.status
        except urllib.error.HTTPError as exc:
            status = exc.code
        seconds = time.perf_counter() - start
        done.set()
        poller.join(130)
        rss = peak_rss_mb(pid)
    finally:
        done.set()
        worker.stop()
    return HttpResult(
        recipients, len(data), status, seconds, max(health, default=0.0), idle_rss, rss
    )


# -- one large campaign end to end --------------------------------------------------------------


@dataclass
class CampaignResult:
    recipients: int
    seconds: float  # instruction produced -> the session's `completed` consumed
    counts: dict[str, int]
    cpu_seconds: float
    peak_rss_mb: float

    def row(self) -> str:
        counts = ", ".join(f"{k} {v:,}" for k, v in sorted(self.counts.items()))
        return (
            f"| {self.recipients:,} | {self.seconds / 60:,.1f} min | {self.recipients / self.seconds:,.0f} | "
            f"{self.cpu_seconds / self.recipients * 1e3:,.2f} | {self.peak_rss_mb:,.0f} | {counts} |"
        )


def run_campaign(
    broker: LocalBroker, workdir: Path, recipients: int, *, window: bool = False
) -> CampaignResult:
    """One instruction of ``recipients`` SMS recipients sent through the sandbox by one worker,
    end to end: time until its session's ``completed`` event, the counts it carries, and the
    worker's CPU and peak RSS meanwhile. ``window``: the client's SMS have an always-open
    window read in each recipient's zones (``workload.OPEN_WINDOW``)."""
    prefix = f"cmp{uuid.uuid4().hex[:6]}"
    worker = sandbox_worker(broker, workdir, prefix, {}, window=window)
    worker.start()
    completed: dict[str, Any] = {}

    def extract(value: bytes) -> str | None:
        if b"completed" not in value:  # skip decoding the per-recipient events
            return None
        event = read_record("status_event", value)
        if event["status"] != "completed":
            return None
        detail = event["detail"] or {}
        completed.update(json.loads(detail) if isinstance(detail, str) else detail)
        return str(event["session_id"])

    watcher = Watcher(broker.bootstrap_servers, worker.topic("status"), extract)
    try:
        assert worker.process is not None
        pid = worker.process.pid
        cpu0 = cpu_seconds(pid)
        start, _ = _produce_one(broker, worker, recipients)
        _wait_until(lambda: watcher.count() >= 1, 3 * 3600, f"{recipients:,} recipients completed")
        seconds = max(watcher.snapshot().values()) - start
        cpu = cpu_seconds(pid) - cpu0
        rss = peak_rss_mb(pid)
    finally:
        watcher.stop()
        worker.stop()
    return CampaignResult(recipients, seconds, dict(completed.get("counts", {})), cpu, rss)


# -- the baseline -----------------------------------------------------------------------------

BASELINE = r"""
import json, sys, threading
from confluent_kafka import Consumer, Producer
bootstrap, prefix, hops = sys.argv[1], sys.argv[2], int(sys.argv[3])

def stage(k):
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{prefix}-{k}", "auto.offset.reset": "earliest",
                         "enable.auto.commit": True})
    consumer.subscribe([f"{prefix}.hop{k}"])
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    while True:
        for msg in consumer.consume(500, 0.1):
            if msg.error():
                continue
            record = json.loads(msg.value())
            # hop 0 fans an instruction out to its recipients, as the session agent does
            outs = [{"to": a, "message": record["message"]} for a in record["audience"]] if k == 0 else [dict(record, hop=k)]
            for out in outs:
                producer.produce(f"{prefix}.hop{k + 1}", json.dumps(out).encode(), key=msg.key())
        producer.poll(0)

for k in range(hops):
    threading.Thread(target=stage, args=(k,), daemon=True).start()
threading.Event().wait()
"""

HOPS = 5  # instructions -> sessions (open) -> sessions (fan-out) -> dispatch -> reports -> status


def run_baseline(
    broker: LocalBroker, workdir: Path, n: int, m: int, *, paced_sends: bool = True
) -> Result:
    """The baseline's burst of ``n`` x ``m`` deliveries, then (``paced_sends``) its paced
    one-recipient sends."""
    import subprocess

    prefix = f"base{uuid.uuid4().hex[:6]}"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
    names = [f"{prefix}.hop{k}" for k in range(HOPS + 1)]
    for future in admin.create_topics([NewTopic(t, 4, 1) for t in names]).values():
        future.result(30)
    script = workdir / "baseline.py"
    script.write_text(BASELINE)
    process = subprocess.Popen(
        [sys.executable, str(script), broker.bootstrap_servers, prefix, str(HOPS)]
    )
    watcher = Watcher(
        broker.bootstrap_servers, names[-1], lambda value: str(json.loads(value)["to"])
    )
    producer = Producer({"bootstrap.servers": broker.bootstrap_servers, "linger.ms": 5})

    def produce(audience: list[str]) -> None:
        body = json.dumps(
            {"message": "Hello there, your code is 1234.", "audience": audience}
        ).encode()
        producer.produce(names[0], body, key=b"k")
        producer.poll(0)

    try:
        produce(["warm"])  # one message through every hop
        producer.flush(10)
        _wait_until(lambda: "warm" in watcher.snapshot(), 120, "baseline warm-up")
        cpu0, broker0 = cpu_seconds(process.pid), broker_cpu_seconds(broker)
        produced_at: dict[str, float] = {}
        start = time.perf_counter()
        for i in range(n):
            audience = [f"b{i}-{j}" for j in range(m)]
            now = time.perf_counter()
            for a in audience:
                produced_at[a] = now
            produce(audience)
        producer.flush(60)
        _wait_until(lambda: watcher.count() > len(produced_at), 600, "baseline deliveries")
        seen = watcher.snapshot()
        seconds = max(seen[a] for a in produced_at) - start
        latencies = [seen[a] - produced_at[a] for a in produced_at]
        cpu = cpu_seconds(process.pid) - cpu0
        broker_cpu = broker_cpu_seconds(broker) - broker0

        def produce_one(i: int) -> list[str]:
            produce([f"p{i}"])
            producer.flush(5)
            return [f"p{i}"]

        paced_latencies = paced(produce_one, watcher.snapshot, "baseline") if paced_sends else []
        return Result(
            f"baseline: confluent-kafka, {HOPS} hops",
            n * m,
            seconds,
            latencies,
            cpu,
            peak_rss_mb(process.pid),
            paced_latencies,
            broker_cpu,
        )
    finally:
        watcher.stop()
        process.kill()
        process.wait()


#: The broker's JVM compiles with C1 only. With C2 (the JVM's default), its compiler threads
#: took 5.1, 2.6, 2.5, 1.5, 1.4, 0.8, 0.8 and 0.6 CPU seconds during eight Switchboard bursts in
#: a row (10,000 deliveries each, about 10 s with the worker's start), more than the broker's
#: request handling (0.7-1.5 s) and on the machine's two cores beside the worker: the burst
#: measured was the one that met the compiler, not the one that cost more. C1 alone compiled
#: 0.04-0.2 s per burst and handled the requests in the same time (README "Benchmarks").
BROKER_JIT: Final = ("-XX:TieredStopAtLevel=1",)

#: The least free memory for the broker's log to go in /dev/shm: a ``make bench`` leaves about
#: 4.4 GB of log there by its end (measured 2026-12-07), removed when the broker stops.
MEMORY_DIR_FREE: Final = 8 * 1024**3


def _memory_dir(shm: Path = Path("/dev/shm")) -> Path | None:
    """A memory-backed directory for the broker's log (/dev/shm), when there is one with room.

    On disk (ext4 on this machine's virtual disk), the broker's appends to its memory-mapped
    indexes and its metadata log's fsyncs cost it about twice the CPU per delivery (0.06-0.13
    ms against 0.04-0.06 ms, C1 only, ten bursts each): CPU the worker and the baseline then
    lack, more so for the side that makes more requests. A broker on its own machines does
    not share its cores; the worker's own state (RocksDB) stays on disk, in the work directory.

    The benchmark removes the broker's directory when it ends, Ctrl-C included; one killed
    outright leaves its ``switchboard-bench-kafka-*`` there, in memory until deleted.
    """
    try:
        if (
            shm.is_dir()
            and os.access(shm, os.W_OK)
            and shutil.disk_usage(shm).free >= MEMORY_DIR_FREE
        ):
            return shm
    except OSError:
        return None
    return None


def _wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"benchmark: timed out waiting for {what}")
        time.sleep(0.05)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--instructions", "-n", type=int, default=200)
    p.add_argument("--recipients", "-m", type=int, default=50)
    p.add_argument("--provider", choices=["sandbox", "twilio-fake", "both"], default="both")
    p.add_argument("--provider-latency-ms", type=int, default=20)
    p.add_argument("--no-baseline", action="store_true")
    p.add_argument(
        "--ratio-pairs",
        type=int,
        default=4,
        metavar="K",
        help="after the runs, K more bursts of the sandbox run and the baseline back to back, "
        "without their paced sends: the ratio of each pair and their median (0: none)",
    )
    p.add_argument(
        "--campaign-window",
        action="store_true",
        help="give the campaign end to end an always-open SMS window in each recipient's zones "
        "(what checking a window costs)",
    )
    for size, only, default, what in (
        ("--fanout",             "--only-fanout",    1_000_000, "the one large instruction whose fan-out is measured"),
        ("--lanes-campaign",     "--only-lanes",        50_000, "the campaign during which one-time passwords are timed"),
        ("--share-campaign",     "--only-share",       100_000, "the campaign sent by two workers, whose shares are measured"),
        ("--campaign",           "--only-campaign",  1_000_000, "the campaign sent end to end by one worker"),
        ("--http-million",       "--only-http",      1_000_000, "the one large POST /v1/messages whose time to 202 is measured"),
        ("--retention-sessions", "--only-retention",       200, "the sessions after which table sizes are measured, kept and with a retention"),
    ):  # fmt: skip
        unit = "sessions" if size == "--retention-sessions" else "recipients"
        p.add_argument(
            size, type=int, default=default, metavar="N", help=f"{unit} of {what} (0: skip)"
        )
        p.add_argument(only, action="store_true", help=f"run only {what}")
    p.add_argument(
        "--broker-on-disk",
        action="store_true",
        help="keep the broker's log on disk rather than in memory (/dev/shm): see _memory_dir",
    )
    p.add_argument(
        "--broker-full-jit",
        action="store_true",
        help="let the broker's JVM compile with C2 too (its default): see BROKER_JIT",
    )
    args = p.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="switchboard-bench-"))
    broker_dir = workdir if args.broker_on_disk else _memory_dir() or workdir
    broker = LocalBroker(
        Path(tempfile.mkdtemp(prefix="switchboard-bench-kafka-", dir=broker_dir)),
        distribution=KafkaDistribution(cache_dir=ROOT / ".cache" / "kafka"),
        port=0,
        jvm_options=() if args.broker_full_jit else BROKER_JIT,
    )
    print(
        f"Starting Kafka {broker.distribution.version} (single node, loopback, its log "
        f"{'in memory' if broker_dir != workdir else 'on disk'}, "
        f"{'C1 and C2' if args.broker_full_jit else 'C1 only'})...",
        flush=True,
    )
    broker.start()
    results: list[Result] = []
    pairs: list[tuple[Result, Result]] = []
    fanout: FanoutResult | None = None
    lanes: LanesResult | None = None
    share: ShareResult | None = None
    campaign: CampaignResult | None = None
    http: HttpResult | None = None
    only = (
        args.only_fanout
        or args.only_lanes
        or args.only_share
        or args.only_campaign
        or args.only_http
        or args.only_retention
    )
    retention: RetentionResult | None = None
    try:
        if not only:
            results, pairs = run_bursts(broker, workdir, args)
        if args.share_campaign and (args.only_share or not only):
            print(f"One campaign of {args.share_campaign:,} on two workers...", flush=True)
            share = run_share(broker, workdir, args.share_campaign)
        if args.lanes_campaign and (args.only_lanes or not only):
            print(f"One-time passwords during a campaign of {args.lanes_campaign:,}...", flush=True)
            lanes = run_lanes(broker, workdir, args.lanes_campaign)
        if args.fanout and (args.only_fanout or not only):
            print(f"Fan-out of one instruction to {args.fanout:,} recipients...", flush=True)
            fanout = run_fanout(broker, workdir, args.fanout)
        if args.campaign and (args.only_campaign or not only):
            print(f"One campaign of {args.campaign:,} end to end on one worker...", flush=True)
            campaign = run_campaign(broker, workdir, args.campaign, window=args.campaign_window)
        if args.http_million and (args.only_http or not only):
            print(f"One POST /v1/messages of {args.http_million:,} recipients...", flush=True)
            http = run_http(broker, workdir, args.http_million)
        if args.retention_sessions and (args.only_retention or not only):
            print(
                f"Table sizes after {args.retention_sessions:,} sessions, kept and with a retention...",
                flush=True,
            )
            retention = run_retention(broker, workdir, args.retention_sessions)
    finally:
        broker.stop()
        shutil.rmtree(broker.run_dir, ignore_errors=True)
        shutil.rmtree(workdir, ignore_errors=True)

    _print(args, results, share, lanes, fanout, campaign, http, pairs)
    if retention:
        print_retention(retention)
    return 0


def run_bursts(
    broker: LocalBroker, workdir: Path, args: argparse.Namespace
) -> tuple[list[Result], list[tuple[Result, Result]]]:
    """The bursts: the warm-up, each provider's run, the baseline right after the first of them
    (listed last), and the pairs."""
    # The broker's JIT compiles its hot paths during the first tens of seconds of load
    # (measured: up to 80 % of a core, on a machine of two), and compiles more of them for each
    # new mix of requests: warm it with a burst of each workload, unmeasured, so that the runs
    # compared below all meet a broker warmed for them. (Warmed with the baseline's alone, the
    # first Switchboard burst measured was, run after run, the slowest of a run's pairs: README
    # "Benchmarks".)
    print("Warming the broker up (a burst of each, not measured)...", flush=True)
    run_baseline(broker, workdir, args.instructions, args.recipients, paced_sends=False)
    run_switchboard(
        broker, workdir, args.instructions, args.recipients, "sandbox", 0, paced_sends=False
    )
    providers = ["sandbox", "twilio-fake"] if args.provider == "both" else [args.provider]
    results: list[Result] = []
    baseline: Result | None = None
    for provider in providers:
        print(
            f"Switchboard, {provider}: {args.instructions} instructions x {args.recipients} recipients...",
            flush=True,
        )
        results.append(
            run_switchboard(
                broker,
                workdir,
                args.instructions,
                args.recipients,
                provider,
                args.provider_latency_ms,
            )
        )
        if baseline is None and not args.no_baseline:
            # Right after the first run, the sandbox's when there is one: the two bursts of the
            # run's first pair as close together as the paced sends allow, as a pair's are
            # (the machine's speed moves within a minute: _run_ratio_line).
            print("Baseline...", flush=True)
            baseline = run_baseline(broker, workdir, args.instructions, args.recipients)
    if baseline is None:
        return results, []
    results.append(baseline)  # printed last, below the runs it is the baseline of
    if "sandbox" not in providers or not args.ratio_pairs:
        return results, []
    print(f"{args.ratio_pairs} more pairs, sandbox and baseline...", flush=True)
    return results, run_pairs(broker, workdir, args.instructions, args.recipients, args.ratio_pairs)


def run_pairs(
    broker: LocalBroker, workdir: Path, n: int, m: int, count: int
) -> list[tuple[Result, Result]]:
    """``count`` pairs of bursts, Switchboard's (sandbox) and the baseline's, back to back and
    without their paced sends, the first of each pair alternating.

    A 10,000-delivery burst lasts under half a second for the baseline, and the broker beside
    it moves through phases of its own (measured: one worker's identical bursts from 4,080/s to
    8,323/s within minutes, README "Benchmarks"), so the ratio of one pair moves by a third from
    pair to pair; the median of several is the figure to compare."""
    pairs: list[tuple[Result, Result]] = []
    for i in range(count):
        if i % 2:
            theirs = run_baseline(broker, workdir, n, m, paced_sends=False)
        ours = run_switchboard(broker, workdir, n, m, "sandbox", 0, paced_sends=False)
        if not i % 2:
            theirs = run_baseline(broker, workdir, n, m, paced_sends=False)
        pairs.append((ours, theirs))
    return pairs


def _pairs_line(pairs: Sequence[tuple[Result, Result]]) -> str:
    """The ratio of each pair of :func:`run_pairs`, and their median."""
    ratios = _ratios(pairs)
    each = ", ".join(
        f"{r:.1%} ({ours.rate:,.0f}/s beside {theirs.rate:,.0f}/s)"
        for r, (ours, theirs) in zip(ratios, pairs, strict=True)
    )
    cpu = statistics.median(ours.cpu_ms for ours, _ in pairs)
    return (
        f"Switchboard (sandbox) / baseline in {len(pairs)} more pairs of bursts, back to back: "
        f"{each} (median {statistics.median(ratios):.1%}; Switchboard's CPU per delivery, "
        f"median {cpu:.2f} ms)"
    )


def _ratios(pairs: Sequence[tuple[Result, Result]]) -> list[float]:
    """Switchboard's deliveries/s over the baseline's, pair by pair."""
    return [ours.rate / theirs.rate for ours, theirs in pairs]


def _run_ratio_line(first: tuple[Result, Result], pairs: Sequence[tuple[Result, Result]]) -> str:
    """The run's ratio: the median over every pair of it, the first burst's and the pairs'.

    On a machine whose speed moves by half within minutes (README "Benchmarks"), one pair can
    land on either side of a change (the first burst's two are the furthest apart: the
    sandbox's paced sends come between them), and the median of five or seven is what the run
    measured.
    """
    ratios = _ratios([first, *pairs])
    return (
        f"Switchboard (sandbox) / baseline, the run's ratio: {statistics.median(ratios):.1%} "
        f"(the median of its {len(ratios)} pairs, the first burst's and the {len(pairs)} more; "
        "the target: at least 25 %)"
    )


def _against(result: Result, baseline: Result) -> str:
    """``result`` as a ratio of the baseline of the same run (the issue's target: at least 25 %
    of its deliveries/s)."""
    cpu = result.cpu_ms / baseline.cpu_ms
    # The broker's CPU is read in clock ticks (10 ms): a short baseline burst may read none.
    broker = (
        result.broker_cpu_ms / baseline.broker_cpu_ms
        if baseline.broker_cpu_seconds > 0
        else float("nan")
    )
    return (
        f"{result.name} / baseline: {result.rate / baseline.rate:.1%} of its deliveries/s, "
        f"{cpu:.1f}x its CPU per delivery, {broker:.1f}x the broker's"
    )


def _print_bursts(
    args: argparse.Namespace, results: list[Result], pairs: Sequence[tuple[Result, Result]]
) -> None:
    """The table of the bursts, their ratios to the baseline, and the pairs'."""
    print(
        f"\nburst: {args.instructions} instructions x {args.recipients} recipients = {args.instructions * args.recipients:,} deliveries "
        f"produced at once; paced: {PACED_COUNT} one-recipient instructions at {PACED_RATE}/s; {os.cpu_count()} CPUs\n"
    )
    print(
        "| run | deliveries | deliveries/s | burst latency p50 / p99 ms | paced latency p50 / p99 ms | CPU s / 1k deliveries | broker CPU s / 1k deliveries | peak RSS MB |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for result in results:
        print(result.row())
    sandbox = next((r for r in results if "sandbox" in r.name), None)
    fake = next((r for r in results if "Twilio" in r.name), None)
    baseline = next((r for r in results if r.name.startswith("baseline")), None)
    if baseline:
        print()
        for result in results:
            if result is not baseline:
                print(_against(result, baseline))
    if pairs:
        print(f"\n{_pairs_line(pairs)}")
        if sandbox and baseline:
            print(_run_ratio_line((sandbox, baseline), pairs))
    if sandbox and fake:
        print(
            f"\nfake provider ({args.provider_latency_ms} ms per request, 100 in flight) / sandbox: "
            f"{fake.rate / sandbox.rate:.0%} of the sandbox's deliveries/s"
        )


def _print(
    args: argparse.Namespace,
    results: list[Result],
    share: ShareResult | None,
    lanes: LanesResult | None,
    fanout: FanoutResult | None,
    campaign: CampaignResult | None = None,
    http: HttpResult | None = None,
    pairs: Sequence[tuple[Result, Result]] = (),
) -> None:
    """The figures of the run, as the README's tables."""
    if results:
        _print_bursts(args, results, pairs)
    if share:
        print("\none campaign (SMS, sandbox) on two workers of one deployment, 4 partitions:\n")
        print(
            "| recipients | workers | to the last delivered | deliveries/s | share sent by each | worker CPU s |"
        )
        print("|---:|---:|---:|---:|---:|---:|")
        print(share.row())
    if lanes:
        print(
            f"\none-time passwords (1 SMS recipient each, same client and channel) during a campaign of "
            f"{lanes.campaign:,} SMS recipients, sandbox, one worker, {lanes.partitions} partitions:\n"
        )
        print(
            "| options.priority | sends | produced -> delivered p50 / p99 ms | campaign deliveries still queued after them |"
        )
        print("|---|---:|---:|---:|")
        for row in lanes.rows():
            print(row)
    if fanout:
        print(
            "\nfan-out of one instruction (Avro on the instructions topic -> every recipient accepted):\n"
        )
        print("| recipients | instruction | to all accepted | recipients/s | worker peak RSS MB |")
        print("|---:|---:|---:|---:|---:|")
        print(fanout.row())
    if campaign:
        print(
            "\none campaign end to end (SMS, sandbox, one worker, 4 partitions; instruction -> `completed`"
            + (
                "; an always-open SMS window in each recipient's zones"
                if args.campaign_window
                else ""
            )
            + "):\n"
        )
        print(
            "| recipients | to `completed` | deliveries/s | CPU ms / delivery | worker peak RSS MB | counts |"
        )
        print("|---:|---:|---:|---:|---:|---|")
        print(campaign.row())
    if http:
        print(
            "\none instruction over HTTP (POST /v1/messages, JSON, SMS paused; answered once every write is confirmed):\n"
        )
        print(
            "| recipients | body | status | to the answer | recipients/s | slowest /healthz meanwhile | worker RSS before MB | worker peak RSS MB |"
        )
        print("|---:|---:|---:|---:|---:|---:|---:|---:|")
        print(http.row())


if __name__ == "__main__":
    sys.exit(main())
