"""Bounded state (issue 13): a completed session past its retention is deleted with tombstones
on every changelog, a worker rebuilt from the changelogs holds none of its rows, its id answers
410 Gone, and what is not due is untouched. Idempotency records go after their window.

The worker runs with a retention of a few seconds; every wait is on a condition, with a deadline.
"""

from __future__ import annotations

import itertools
import random
import shutil
import signal
import uuid
from collections.abc import Iterable

from rocksdict import AccessType, Options, Rdict

from cli.kafka.local import LocalBroker
from switchboard.idempotency import anchor
from tests.integration.conftest import Keys, WorkerFactory
from tests.integration.harness import Worker, http, read_topic, wait_for

RETENTION = "4"
TABLES = ("sessions", "sends", "deliveries", "timers")
_numbers = itertools.count(random.randrange(1_000_000))


def numbers(count: int) -> list[str]:
    return [f"+14156{next(_numbers) % 1_000_000:06d}" for _ in range(count)]


def changelog(worker: Worker, table: str) -> str:
    return f"sb-{worker.prefix}-{table}-changelog"


def last_values(bootstrap: str, topic: str) -> dict[tuple[int, bytes], bytes | None]:
    """The latest value of every key of a compacted topic, by partition (None: a tombstone)."""
    latest: dict[tuple[int, bytes], bytes | None] = {}
    for record in read_topic(bootstrap, topic):
        if record["key"] is not None:
            latest[(record["partition"], record["key"])] = record["value"]
    return latest


def of_sessions(keys: Iterable[tuple[int, bytes]], sessions: Iterable[str]) -> set[bytes]:
    ids = [s.encode() for s in sessions]
    return {key for _, key in keys if any(sid in key for sid in ids)}


def kept_on_purpose(key: bytes) -> bool:
    """A deleted session's marker (410 Gone) and the timer that deletes it later (also in the
    scheduler's time index, whose keys start with the due time)."""
    return key.startswith(b"purged:") or b"gone:" in key


def leftovers(worker: Worker, bootstrap: str, sessions: list[str]) -> dict[str, list[bytes]]:
    """The rows of ``sessions`` still alive on each changelog (the markers aside)."""
    out: dict[str, list[bytes]] = {}
    for table in TABLES:
        latest = last_values(bootstrap, changelog(worker, table))
        alive = {k for k, v in latest.items() if v is not None}
        rows = sorted(k for k in of_sessions(alive, sessions) if not kept_on_purpose(k))
        if rows:
            out[table] = rows
    return out


def local_keys(worker: Worker, sessions: list[str]) -> dict[str, list[bytes]]:
    """The keys of ``sessions`` in the stopped worker's local RocksDB tables, by database."""
    ids = [s.encode() for s in sessions]
    found: dict[str, list[bytes]] = {}
    databases = [p.parent for p in (worker.workdir / "data").rglob("CURRENT")]
    assert databases, "no local table found"
    for path in databases:
        db = Rdict(str(path), Options(raw_mode=True), access_type=AccessType.read_only())
        try:
            keys = [k for k in db.keys() if any(sid in k for sid in ids)]  # noqa: SIM118 - an Rdict
        finally:
            db.close()
        if keys:
            found[str(path.relative_to(worker.workdir))] = keys
    return found


def completed_or_gone(worker: Worker, session_id: str, key: str) -> bool:
    answer = worker.session(session_id, key)
    return answer.status == 410 or (answer.status == 200 and answer.body["status"] == "completed")


def test_a_session_past_its_retention_is_tombstoned_everywhere_and_gone_after_a_rebuild(
    make_worker: WorkerFactory, kafka: LocalBroker, keys: Keys
) -> None:
    worker = make_worker(
        {"SWITCHBOARD_RETENTION": RETENTION, "SWITCHBOARD_IDEMPOTENCY_WINDOW": RETENTION}
    ).start()
    bootstrap = kafka.bootstrap_servers
    try:
        # A campaign over several dispatch partitions (slices of 100), a cancelled session
        # (its fences are rows in every dispatch partition, and it is on the cancels topic),
        # one sent with an idempotency key, and a manual session never triggered (never
        # completed: kept).
        campaign = worker.send_sms(keys.acme, numbers(250))
        cancelled = worker.send_sms(keys.acme, numbers(3), trigger="manual")
        cancel = http("POST", f"{worker.url}/v1/sessions/{cancelled}/cancel", key=keys.acme)
        assert cancel.status == 202, cancel.body
        idem_key = f"retention-{uuid.uuid4()}"
        keyed = worker.post(
            {"transport": {"type": "sms", "message": "Hi"}, "audience": numbers(1)},
            keys.acme,
            headers={"Idempotency-Key": idem_key},
        )
        assert keyed.status == 202, keyed.body
        first_keyed = keyed.body["session_id"]
        waiting = worker.send_sms(keys.acme, numbers(2), trigger="manual")
        purged = [campaign, cancelled, first_keyed]
        for session_id in purged:
            wait_for(
                lambda s=session_id: completed_or_gone(worker, s, keys.acme),
                90,
                0.2,
                f"session {session_id} to complete",
            )

        # Before the purge, each of these tables had rows of the campaign.
        before = {
            t: of_sessions(last_values(bootstrap, changelog(worker, t)), [campaign])
            for t in ("sessions", "sends", "deliveries")
        }
        assert all(before.values()), {t: len(k) for t, k in before.items()}

        # Past the retention: every row of the purged sessions is a tombstone on its changelog.
        wait_for(
            lambda: not leftovers(worker, bootstrap, purged),
            90,
            1.0,
            "the purged sessions' rows to be tombstoned",
        )
        for table in ("sessions", "sends", "deliveries"):
            latest = last_values(bootstrap, changelog(worker, table))
            tombstoned = {k for k, v in latest.items() if v is None}
            assert of_sessions(tombstoned, [campaign]) >= {
                k for k in before[table] if not kept_on_purpose(k)
            }, table
        fences = {
            k
            for k in of_sessions(last_values(bootstrap, changelog(worker, "sends")), [cancelled])
            if k.startswith(b"cancelled:")
        }
        assert fences, "the cancelled session's fences were rows, now tombstones"
        cancels = last_values(bootstrap, worker.topic("cancels"))
        assert [v for (_, k), v in cancels.items() if k == cancelled.encode()] == [None]

        gone = worker.session(campaign, keys.acme)
        assert gone.status == 410, gone.body
        assert gone.body["status"] == "removed" and gone.body["session_id"] == campaign
        assert "retention" in gone.body["errors"][0]["error"]
        assert worker.session(campaign, keys.other).status == 404, "another client's: unknown"
        assert worker.session(waiting, keys.acme).body["status"] == "waiting", "not due: kept"

        # The idempotency key's record went after its window (a tombstone), and the key opens
        # a new session.
        row = f"idem:{anchor('acme', idem_key)}".encode()
        wait_for(
            lambda: (
                [
                    v
                    for (_, k), v in last_values(bootstrap, changelog(worker, "sessions")).items()
                    if k == row
                ]
                == [None]
            ),
            30,
            0.5,
            "the idempotency record's tombstone",
        )
        again = worker.post(
            {"transport": {"type": "sms", "message": "Hi"}, "audience": numbers(1)},
            keys.acme,
            headers={"Idempotency-Key": idem_key},
        )
        assert again.status == 202 and not again.body.get("repeat"), again.body
        assert again.body["session_id"] != first_keyed

        # Another machine (an empty data directory) rebuilds every table from the changelogs.
        assert worker.stop(signal.SIGTERM) == 0, worker.log_tail()
        shutil.rmtree(worker.workdir / "data")
        worker.start()
        assert worker.session(campaign, keys.acme).status == 410
        assert worker.session(cancelled, keys.acme).status == 410
        assert worker.session(waiting, keys.acme).body["status"] == "waiting"
        assert worker.stop(signal.SIGTERM) == 0, worker.log_tail()
        local = local_keys(worker, purged)
        assert {
            db: [k for k in ks if not kept_on_purpose(k)]
            for db, ks in local.items()
            if any(not kept_on_purpose(k) for k in ks)
        } == {}
        assert local_keys(worker, [waiting]), "the session not due is in the rebuilt tables"
    finally:
        worker.stop()


def test_a_purge_interrupted_by_a_crash_is_finished_by_the_restarted_worker(
    make_worker: WorkerFactory, kafka: LocalBroker, keys: Keys
) -> None:
    """kill -9 as soon as the purge has begun (its marker is on the changelog); the worker is
    restarted with an empty data directory, and every row of the session ends tombstoned. The
    session is large enough (3,000 recipients: 6 chunks of deliveries, 30 dispatch batches)
    that the kill usually lands mid-purge; either way the purge must complete."""
    bootstrap = kafka.bootstrap_servers
    worker = make_worker({"SWITCHBOARD_RETENTION": RETENTION}).start()
    try:
        session_id = worker.send_sms(keys.acme, numbers(3_000))
        wait_for(
            lambda: completed_or_gone(worker, session_id, keys.acme),
            180,
            0.5,
            "the session to complete",
        )
        marker = f"purged:{session_id}".encode()

        def begun() -> bool:
            latest = last_values(bootstrap, changelog(worker, "sessions"))
            return any(k == marker and v is not None for (_, k), v in latest.items())

        wait_for(begun, 60, 0.05, "the purge to begin")
        worker.stop(signal.SIGKILL)
        left = leftovers(worker, bootstrap, [session_id])
        shutil.rmtree(worker.workdir / "data")
        worker.start()
        wait_for(
            lambda: not leftovers(worker, bootstrap, [session_id]),
            90,
            1.0,
            "the purge to finish after the crash",
        )
        assert worker.session(session_id, keys.acme).status == 410
        print(f"rows left when the worker was killed: { {t: len(r) for t, r in left.items()} }")
    finally:
        worker.stop()
