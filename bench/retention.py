"""The retention figure of ``make bench`` (issue 13): table sizes after N sessions, kept forever
and with a retention of a few seconds, in one run.

Two workers of their own (sandbox SMS, 4 partitions) each get the same N instructions of
:data:`RECIPIENTS` recipients, produced as Avro, and are waited on until every session is
``completed`` (and, with retention, until every purge has run). Then, per table:

* **live rows**: the keys whose latest record on the table's changelog is a value, not a
  tombstone: what any worker rebuilding the table holds;
* **changelog records**: everything the changelog holds before Kafka compacts it (tombstones
  included): what a rebuild reads today; compaction removes what the tombstones cover (and,
  after ``delete.retention.ms``, the tombstones), which this run does not wait for;
* **RocksDB bytes** of a worker rebuilt from the changelogs (an empty data directory; RocksDB's
  own text logs aside), and how long that rebuild took (start to settled).

With retention, what stays is each purged session's ``410 Gone`` marker and its timer
(``SWITCHBOARD_GONE_FOR``, 30 days by default), two small rows per session.
"""

from __future__ import annotations

import shutil
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import Producer

import schemas
from bench.workload import avro, instruction, sandbox_worker
from cli.kafka.local import LocalBroker
from cli.topic_snapshot import read_topic
from cli.worker_process import WorkerProcess
from switchboard.wire import read_record

__all__ = ["RECIPIENTS", "RetentionResult", "run_retention"]

#: Recipients of each session.
RECIPIENTS = 20
#: Seconds of retention of the second worker.
RETENTION = 5
TABLES = ("sessions", "sends", "deliveries", "timers")


@dataclass
class TableSizes:
    label: str
    live: dict[str, int] = field(default_factory=dict)
    records: dict[str, int] = field(default_factory=dict)
    disk_bytes: int = 0
    rebuild_seconds: float = 0.0

    def rows(self) -> list[str]:
        out = [f"| {self.label} | {t} | {self.live[t]:,} | {self.records[t]:,} |" for t in TABLES]
        out.append(
            f"| {self.label} | all (RocksDB of a rebuilt worker: {self.disk_bytes / 1e6:,.2f} MB, "
            f"rebuilt in {self.rebuild_seconds:.1f} s) | {sum(self.live.values()):,} | "
            f"{sum(self.records.values()):,} |"
        )
        return out


@dataclass
class RetentionResult:
    sessions: int
    recipients: int
    sizes: list[TableSizes]


def run_retention(broker: LocalBroker, workdir: Path, sessions: int) -> RetentionResult:
    sizes = [
        _measure(broker, workdir, sessions, "kept (retention 0)", 0),
        _measure(broker, workdir, sessions, f"retention {RETENTION} s", RETENTION),
    ]
    return RetentionResult(sessions, RECIPIENTS, sizes)


def _measure(
    broker: LocalBroker, workdir: Path, sessions: int, label: str, retention: int
) -> TableSizes:
    prefix = f"ret{uuid.uuid4().hex[:6]}"
    worker = sandbox_worker(broker, workdir, prefix, {"SWITCHBOARD_RETENTION": str(retention)})
    worker.start()
    bootstrap = broker.bootstrap_servers
    try:
        producer = Producer({"bootstrap.servers": bootstrap})
        headers = [("content-type", schemas.content_type("instruction").encode())]
        for i in range(sessions):
            body, _ = instruction(i, RECIPIENTS, "sms")
            producer.produce(
                worker.topic("instructions"), avro(body), key=b"bench", headers=headers
            )
        producer.flush(60)
        _wait(lambda: _completed(bootstrap, worker) >= sessions, f"{sessions} completed")
        if retention:
            # Every purge done: no delivery row is left (the last rows each purge deletes).
            _wait(lambda: _live(bootstrap, worker, "deliveries")[0] == 0, "every purge")
        result = TableSizes(label)
        for table in TABLES:
            result.live[table], result.records[table] = _live(bootstrap, worker, table)
        worker.stop()
        shutil.rmtree(worker.workdir / "data")
        started = time.monotonic()
        worker.start(timeout=600)
        result.rebuild_seconds = time.monotonic() - started
        worker.stop()
        tables = worker.workdir / "data" / "tables"
        # RocksDB's files, its diagnostic text logs (LOG, LOG.old.*) aside.
        files = [f for f in tables.rglob("*") if f.is_file() and not f.name.startswith("LOG")]
        result.disk_bytes = sum(f.stat().st_size for f in files)
        return result
    finally:
        worker.stop()


def _wait(predicate: Callable[[], bool], what: str, timeout: float = 900.0) -> None:
    """Wait for ``predicate`` (each look reads whole topics: once a second)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"benchmark: timed out waiting for {what}")
        time.sleep(1.0)


def _completed(bootstrap: str, worker: WorkerProcess) -> int:
    events = read_topic(
        bootstrap,
        worker.topic("status"),
        lambda msg: read_record("status_event", msg.value())["status"],
    )
    return Counter(events)["completed"]


def _live(bootstrap: str, worker: WorkerProcess, table: str) -> tuple[int, int]:
    """(live rows, records) of ``table``'s changelog."""
    latest: dict[tuple[int, bytes], bool] = {}
    records = 0
    for record in read_topic(bootstrap, f"sb-{worker.prefix}-{table}-changelog"):
        records += 1
        latest[(record["partition"], record["key"])] = record["value"] is not None
    return sum(latest.values()), records


def print_result(result: RetentionResult) -> None:
    print(
        f"\ntable sizes after {result.sessions:,} sessions of {result.recipients} SMS recipients "
        "(sandbox, one worker, 4 partitions), kept forever and with a retention:\n"
    )
    print("| run | table | live rows | changelog records (before compaction) |")
    print("|---|---|---:|---:|")
    for sizes in result.sizes:
        for row in sizes.rows():
            print(row)
