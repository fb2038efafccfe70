"""The durable scheduler: produce a message at a given time, once, whatever restarts happen.

Scheduled sessions, deliveries held by a time window, retries and the call tool's silence
limit are all "produce this record to that topic at time T". :meth:`Switchboard.schedule_at`
asks for it; this module keeps the promise.

How, in Faust's terms (timers may only read tables and produce; agents write them):

1. ``schedule_at`` produces a ``set`` command to ``<prefix>.schedule``, keyed like the record it
   will produce, so the timer lives on the same partition number as the state it concerns.
2. The scheduler agent is the only writer of the ``timers`` table (timer id -> due time, target
   topic, key, value, partition). It also keeps a **time index**: a RocksDB database of its own
   (rocksdict, ``<data dir>/scheduler/index``) keyed by big-endian ``(due ms, partition, id)``,
   so keys sort by time.
3. A Faust timer, every 250 ms on every worker, walks that index from the start and stops at
   the first entry not yet due. The cost is the number of due entries, never the number waiting.
   For each due entry it produces a ``fire`` command to the timer's own partition.
4. The agent, on ``fire``, checks that the timer still exists and is due, produces its record,
   and deletes the timer and its index entry. A duplicate or stale ``fire`` finds nothing to do.

The index is derived state: it is rebuilt from the ``timers`` table (which Faust recovers from
its changelog) whenever this worker's active partitions change, e.g. after a restart or a
rebalance. Timers of partitions that moved away leave the index; moved-in ones join it.

Guarantees and failure modes:
    * A timer's record is produced at least once, within about a second of its due time (or
      at once when its time has passed, e.g. after downtime). A crash between producing the
      record and committing the ``fire`` can produce it twice; every record Switchboard
      schedules is idempotent where it lands (session commands, dispatch jobs).
    * A ``fire`` on its way is not produced again at every tick, only after
      :data:`REFIRE_AFTER` without effect (a ``fire`` lost with a worker); a timer set again
      under the same id for a later time (a cancel's fence check, a fan-out held by the
      dispatch backlog, each looking again every half second) fires when due, not
      :data:`REFIRE_AFTER` after its previous fire (:class:`Fires`).
    * ``set`` with an existing id replaces the timer; ``cancel`` removes it; both are ordered with
      ``fire`` on the partition, so a cancel acknowledged by the agent is never followed by its
      record.
"""

from __future__ import annotations

import json
import logging
import shutil
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from rocksdict import Options, Rdict

from streams.checkpoint import put, run_checkpointed
from switchboard.timers import fire_command, unb64

if TYPE_CHECKING:
    from faust.types import EventT, StreamT

    from streams.app import Switchboard

__all__ = ["Fires", "TimerIndex", "register"]

log = logging.getLogger(__name__)

TICK_SECONDS = 0.25
REFIRE_AFTER = 10.0  # seconds before a fire with no visible effect is produced again
_INDEX_KEY = struct.Struct(">QH")  # due in ms, partition; then the timer id


class TimerIndex:
    """Due-time order over timer ids, in a RocksDB of its own. Synchronous and local."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if path.exists():  # derived state: always rebuilt from the timers table
            shutil.rmtree(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = Rdict(str(path), Options(raw_mode=True))

    @staticmethod
    def key(due: float, partition: int, timer_id: str) -> bytes:
        return _INDEX_KEY.pack(max(0, int(due * 1000)), partition) + timer_id.encode()

    def add(self, due: float, partition: int, timer_id: str) -> None:
        self._db[self.key(due, partition, timer_id)] = b""

    def remove(self, due: float, partition: int, timer_id: str) -> None:
        del self._db[self.key(due, partition, timer_id)]

    def due(self, now: float) -> Iterator[tuple[float, int, str]]:
        """(due, partition, id) of every entry due at ``now``, earliest first."""
        limit = int(now * 1000)
        it = self._db.iter()
        it.seek_to_first()
        while it.valid():
            raw: bytes = it.key()
            due_ms, partition = _INDEX_KEY.unpack_from(raw)
            if due_ms > limit:
                return
            yield due_ms / 1000, partition, raw[_INDEX_KEY.size :].decode()
            it.next()

    def clear(self) -> None:
        keys = list(self._db.keys())
        for key in keys:
            del self._db[key]

    def close(self) -> None:
        self._db.close()


class Fires:
    """The fires this worker produced lately, so that a timer whose ``fire`` is on its way is
    not fired again at every tick: again only after :data:`REFIRE_AFTER` without effect (a
    ``fire`` lost with a worker). A timer set again for a later time (a check that looks again
    every half second, under the same id) is another firing: it fires as soon as it is due,
    not :data:`REFIRE_AFTER` after its previous time."""

    def __init__(self) -> None:
        self._fired: dict[str, tuple[float, float]] = {}  # timer id -> (due, fired at)

    def fire(self, timer_id: str, due: float, now: float) -> bool:
        """Whether to produce a ``fire`` for ``timer_id`` due at ``due`` (and remember it)."""
        last = self._fired.get(timer_id)
        if last is not None and last[0] == due and now - last[1] < REFIRE_AFTER:
            return False
        self._fired[timer_id] = (due, now)
        return True

    def forget_done(self, now: float) -> None:
        """Forget fires long done (bounded memory: a fire older than :data:`REFIRE_AFTER`
        would be produced again anyway)."""
        if len(self._fired) > 10_000:
            self._fired = {k: v for k, v in self._fired.items() if now - v[1] < REFIRE_AFTER}


def register(sb: Switchboard) -> None:
    app = sb.app
    index = TimerIndex(sb.settings.data_dir / "scheduler" / "index")
    state: dict[str, Any] = {"indexed": None}
    fires = Fires()

    @app.agent(sb.topics.schedule, name="switchboard.scheduler")
    async def scheduler(stream: StreamT[bytes]) -> None:
        await run_checkpointed(sb, stream, "scheduler", lambda e: _handle(sb, index, e))

    async def tick() -> None:
        # Tables are being recovered or moved: the index would be rebuilt from partial data.
        if app.rebalancing or cast(Any, app.tables).recovery.in_recovery:
            return
        actives = frozenset(
            tp.partition
            for tp in app.assignor.assigned_actives()
            if tp.topic == sb.topics.schedule.get_topic_name()
        )
        if actives != state["indexed"]:
            _rebuild(sb, index)
            state["indexed"] = actives
        now = time.time()
        for due, partition, timer_id in index.due(now):
            if not fires.fire(timer_id, due, now):
                continue
            await sb.produce(
                sb.topics.schedule,
                key=timer_id.encode(),
                value=fire_command(timer_id),
                partition=partition,
            )
        fires.forget_done(now)

    app.timer(TICK_SECONDS, name="switchboard.scheduler.tick")(tick)

    async def close_index(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        index.close()

    app.on_before_shutdown.connect(close_index)


def _rebuild(sb: Switchboard, index: TimerIndex) -> None:
    """Index every timer of this worker's active partitions (a scan: only after rebalances),
    and tally those the gauges count (``switchboard/backlog.py``)."""
    index.clear()
    count = 0
    sb.timer_tally.rebuild(())  # the gauges of deferred deliveries and webhook retries
    for raw_id, raw in sb.tables.timers.items():
        timer = json.loads(raw)
        index.add(timer["due"], timer["partition"], _text(raw_id))
        sb.timer_tally.set(_text(raw_id), timer)
        count += 1
    log.info("scheduler index rebuilt", extra={"timers": count})


async def _handle(sb: Switchboard, index: TimerIndex, event: EventT[bytes]) -> None:
    command = json.loads(event.value)
    timer_id: str = command["id"]
    key = timer_id.encode()
    table = sb.tables.timers
    raw = sb.staged.get(table, key)
    existing = json.loads(raw) if raw is not None else None
    kind = command["kind"]
    if kind == "set":
        if existing is not None:
            index.remove(existing["due"], existing["partition"], timer_id)
        partition = event.message.partition
        # Set again (a replay, or a retry set twice): what it holds was deferred the first time.
        at = command.get("at")
        if existing is not None and existing.get("set_at") is not None:
            at = existing["set_at"] if at is None else min(at, existing["set_at"])
        row = {
            **{k: command[k] for k in ("due", "topic", "key", "value")},
            "partition": partition,
            "set_at": at,
        }
        put(table, key, _json(row))
        index.add(command["due"], partition, timer_id)
        sb.timer_tally.set(timer_id, row)
    elif kind == "cancel":
        if existing is not None:
            index.remove(existing["due"], existing["partition"], timer_id)
            put(table, key, None)
            sb.timer_tally.remove(timer_id)
    elif kind == "fire":
        if existing is None or existing["due"] > time.time() + TICK_SECONDS:
            return  # already fired, cancelled, or rescheduled later: a stale fire
        topic = _topic(sb, existing["topic"])
        # The record is in Kafka before the timer's row is deleted (streams/checkpoint.py).
        await sb.produce(topic, key=unb64(existing["key"]), value=unb64(existing["value"]))
        index.remove(existing["due"], existing["partition"], timer_id)
        put(table, key, None)
        sb.timer_tally.remove(timer_id)
        lateness = time.time() - existing["due"]
        sb.metrics.timer_lateness.observe(max(0.0, lateness))
    else:
        raise ValueError(f"unknown scheduler command {kind!r}")


def _topic(sb: Switchboard, name: str) -> Any:
    """The app's topic object for a timer's target (kept per app: a process may hold several)."""
    topics: dict[str, Any] = sb.__dict__.setdefault("_timer_topics", {})
    if name not in topics:
        topics[name] = sb.app.topic(name, key_type=bytes, value_type=bytes, internal=False)
    return topics[name]


def _json(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes | bytearray) else str(raw)
