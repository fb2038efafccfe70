"""An in-memory worker for the agents' fast tier: each agent's real handler, no broker.

:class:`MemorySwitchboard` is the shared :class:`~streams.app.Switchboard` itself (its own
``produce``, ``command``, ``report_batch``, ``dispatch_batch``, ``schedule_at``, ``reject`` and
``publish_status`` run), over stand-ins for what needs Kafka or RocksDB:

* topics are :class:`MemoryTopic`\\ s, declared by production's own
  :func:`streams.compose.declare_topics` on an in-memory app: what is produced is kept per topic
  (:class:`Produced`, with its partition and offset) and acknowledged at once;
* tables are dicts, read and written through the worker's staged rows (``sb.staged.get``,
  ``checkpoint.put``; ``streams/checkpoint.py``), so a handler sees its own staged rows as in
  production;
* the replicated tables (opt-outs, cancels, managers' memory) are :class:`MemoryReplica`\\ s;
* the settings, metrics, client registry (loaded from a clients document), transports (sandbox),
  service managers, circuit breakers and dispatch backlog are the real ones (the backlog is
  never measured: :class:`MemoryBacklog`).

Agents are driven by :func:`run_agent`, which runs the real ``run_checkpointed`` over a
:class:`MemoryStream` of :class:`MemoryEvent`\\ s (Faust's ``current_event`` set for each, as
Faust's stream does), so staging, commits, acknowledgements and quarantine are production's.
A record one agent produced is handed to the next with :meth:`Produced.event`, so a test can
follow an instruction through intake, sessions, dispatch and reports.
"""

from __future__ import annotations

import asyncio
import json
import time
import weakref
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

from faust.streams import _current_event
from faust.types import EventT, StreamT, TableT

from streams import dispatch, intake, reports, scheduler, sessions
from streams.app import Switchboard, Tables
from streams.bulk import BulkProducer, Keyed
from streams.checkpoint import run_checkpointed
from streams.clients import ClientRegistry
from streams.compose import declare_topics
from streams.failover import Failover
from streams.flow import DispatchBacklog
from streams.managers import ManagerDesk, build_managers
from streams.metrics import Metrics
from streams.replica import KeyValueReplica
from streams.tablestore import TableMemory
from switchboard import records
from switchboard.circuit import Breaker
from switchboard.settings import Settings
from switchboard.status import StatusEvent
from switchboard.validation import ValidationPolicy
from switchboard.wire import Headers
from transports.ratelimit import Slots
from transports.registry import TransportRegistry
from transports.sandbox import SandboxTransport
from transports.twilio_lookup import TwilioLookups

__all__ = [
    "CLIENT",
    "WEEKDAYS",
    "MemoryBacklog",
    "MemoryEvent",
    "MemorySwitchboard",
    "MemoryTopic",
    "Produced",
    "build",
    "command_event",
    "dispatch_event",
    "fan_out",
    "instruction",
    "jobs_of",
    "reports_of",
    "run_agent",
    "run_intake",
    "run_reports",
    "run_scheduler",
    "run_sessions",
    "settle_sessions",
]

#: The client every test sends for: sandbox providers on sms and email.
CLIENT: dict[str, Any] = {
    "api_keys": [],
    "default_channels": ["sms"],
    "timezone": "UTC",
    "channels": {
        "sms": {"provider": "sandbox", "from": ["+14155550100"]},
        "email": {"provider": "sandbox", "from": "Acme <noreply@acme.example>"},
    },
}


#: A window's day names, Monday first (``datetime.weekday()``), whatever the locale.
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


# -- records and events ------------------------------------------------------------------------


@dataclass(frozen=True)
class Produced:
    """One record produced to a :class:`MemoryTopic`."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers

    def json(self) -> Any:
        assert self.value is not None
        return json.loads(self.value)

    def command(self) -> records.SessionCommand:
        """This record of a sessions topic, decoded."""
        assert self.value is not None
        return records.decode_command(self.value)

    def event(self) -> MemoryEvent:
        """This record as the event its consumer would get."""
        return MemoryEvent(
            self.topic, self.partition, self.offset, self.key, self.value, list(self.headers)
        )


@dataclass(frozen=True)
class _Message:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    timestamp: float


class MemoryEvent:
    """What a Faust event offers the handlers: ``key``, ``value``, ``message``, ``ack()``."""

    def __init__(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]] | None = None,
        timestamp: float = 1_800_000_000.0,
    ) -> None:
        self.message = _Message(topic, partition, offset, key, value, headers or [], timestamp)
        self.key = key
        self.value = value
        self.headers = self.message.headers
        self.acked = False

    def ack(self) -> bool:
        self.acked = True
        return True


class MemoryStream:
    """An agent's stream over a list of events: each is made Faust's ``current_event`` while
    the agent handles it (a checkpointed ``put`` stages its row for that event)."""

    def __init__(self, events: Iterable[MemoryEvent]) -> None:
        self._events = list(events)

    def noack(self) -> MemoryStream:
        return self

    async def events(self) -> AsyncIterator[MemoryEvent]:
        for event in self._events:
            token = _current_event.set(weakref.ref(cast(Any, event)))
            try:
                yield event
            finally:
                _current_event.reset(token)


# -- Kafka and RocksDB stand-ins ---------------------------------------------------------------


class MemoryTopic:
    """A topic that keeps what is produced to it; the broker acknowledges every record at once.
    A record without a partition goes to the one its key hashes to."""

    def __init__(self, name: str, partitions: int) -> None:
        self.name = name
        self.partitions = partitions
        self.records: list[Produced] = []
        #: The next offset of each partition (the end offsets).
        self.ends: dict[int, int] = {}
        #: A replicated table following this topic (``streams/replica.py``), if any.
        self.replica: MemoryReplica | None = None

    def get_topic_name(self) -> str:
        return self.name

    def add(
        self, key: bytes | None, value: bytes | None, headers: Headers | None, partition: int | None
    ) -> asyncio.Future[Any]:
        if partition is None:
            partition = zlib.crc32(key or b"") % self.partitions
        offset = self.ends.get(partition, 0)
        self.ends[partition] = offset + 1
        record = Produced(self.name, partition, offset, key, value, list(headers or []))
        self.records.append(record)
        if self.replica is not None and key is not None:
            self.replica.apply(key, value)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.set_result(
            SimpleNamespace(topic=self.name, partition=partition, offset=record.offset)
        )
        return future

    async def send(
        self,
        *,
        key: bytes | None = None,
        value: bytes | None = None,
        headers: Headers | None = None,
        partition: int | None = None,
    ) -> asyncio.Future[Any]:
        return self.add(key, value, headers, partition)

    def take(self) -> list[Produced]:
        """The records produced since the last take."""
        taken, self.records = self.records, []
        return taken


class MemoryStatusProducer:
    """The worker's librdkafka producer (a :class:`~streams.bulk.BulkProducer` in production):
    status events and every agent's outputs, into the harness's topics."""

    def __init__(self, topic: Callable[[str], MemoryTopic]) -> None:
        self.topic = topic

    async def produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes]] | None = None,
        partition: int | None = None,
    ) -> asyncio.Future[Any]:
        return self.topic(topic).add(key, value, list(headers or []), partition)

    def produce_many_nowait(
        self, topic: str, records: Sequence[Keyed], start: int = 0
    ) -> tuple[asyncio.Future[Any] | None, int]:
        future: asyncio.Future[Any] | None = None
        for key, value, headers in records[start:]:
            future = self.topic(topic).add(key, value, list(headers or []), None)
        return future, len(records) - start

    async def produce_located(
        self, topic: str, key: bytes | None, value: bytes | None, partition: int | None = None
    ) -> asyncio.Future[Any]:
        return self.topic(topic).add(key, value, None, partition)

    async def drained(self) -> None:
        return None

    def close(self, timeout: float) -> int:
        return 0


class MemoryReplica:
    """A replicated bytes table (``streams/replica.py``): a write is applied at once."""

    def __init__(self) -> None:
        self.rows: dict[bytes, bytes] = {}
        self.ready = asyncio.Event()
        self.ready.set()

    def get(self, key: bytes) -> bytes | None:
        return self.rows.get(key)

    def apply(self, key: bytes, value: bytes | None) -> None:
        if value is None:
            self.rows.pop(key, None)
        else:
            self.rows[key] = value

    async def put(
        self, key: bytes, value: bytes | None, *, wait_applied: float | None = None
    ) -> bool:
        self.apply(key, value)
        return True

    def close(self) -> None:
        return None


class MemoryBacklog(DispatchBacklog):
    """The fan-out's flow control with a backlog the test sets (never measured with Kafka)."""

    def __init__(self, sb: Switchboard) -> None:
        super().__init__(sb)
        self.waiting = 0

    async def over(self, topics: Sequence[str], limit: int) -> bool:
        return self.waiting > limit


class MemoryApp:
    """What the handlers ask of the Faust app: a topic by name, ``crash``, ``rebalancing``."""

    def __init__(self, topics: dict[str, MemoryTopic], partitions: int) -> None:
        self._topics = topics
        self._partitions = partitions
        self.rebalancing = False
        self.crashed: list[BaseException] = []

    def topic(self, name: str, **_: Any) -> MemoryTopic:
        return self._topics.setdefault(name, MemoryTopic(name, self._partitions))

    async def crash(self, exc: BaseException) -> None:
        self.crashed.append(exc)


# -- the worker --------------------------------------------------------------------------------


@dataclass
class MemorySwitchboard(Switchboard):
    """The shared object over memory (module docs). ``statuses``: every status event published,
    decoded; ``produced``: every topic by name."""

    produced: dict[str, MemoryTopic] = field(default_factory=dict)
    statuses: list[StatusEvent] = field(default_factory=list)
    #: When this worker was built: the timestamp of its instructions, so that each test's
    #: session ids differ (intake derives them from the message's coordinates and timestamp)
    #: and module-level hints keyed by session id never carry over from another test.
    born: float = field(default_factory=time.time)

    def topic(self, name: str) -> MemoryTopic:
        """The topic ``name`` of ``settings.topic`` (e.g. ``"sessions"``, ``"dispatch.sms"``)."""
        return self.produced[self.settings.topic(name)]

    def take(self, name: str) -> list[Produced]:
        return self.topic(name).take()

    def bulk_producer(self) -> BulkProducer:
        return cast(BulkProducer, MemoryStatusProducer(self.produced.__getitem__))

    def output_producer(self) -> BulkProducer:
        return self.bulk_producer()

    async def publish_statuses(self, events: Sequence[StatusEvent]) -> None:
        self.statuses.extend(events)
        await super().publish_statuses(events)

    def committed(self, partitions: Iterable[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """The group's committed offsets (``streams/offsets.py``) when every consumer has
        processed everything produced: each partition's end offset."""
        return self.ends(partitions)

    def ends(self, partitions: Iterable[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """Each partition's end offset: what was produced to it."""
        by_name = {topic.name: topic for topic in self.produced.values()}
        return {(t, p): by_name[t].ends.get(p, 0) for t, p in partitions}

    def table(self, name: str) -> dict[bytes, bytes]:
        return cast(dict[bytes, bytes], getattr(self.tables, name))

    @property
    def sandbox_sent(self) -> Mapping[str, SandboxTransport]:
        return self.transports._sandboxes


def build(
    tmp: Path, clients: Mapping[str, Any] | None = None, **settings: Any
) -> MemorySwitchboard:
    """A worker in memory: ``clients`` is a clients document's ``clients`` mapping (default: one
    client ``acme``, :data:`CLIENT`); ``settings`` override :class:`Settings` fields."""
    config = Settings(**{"data_dir": tmp, "partitions": 2, "sandbox": True, **settings})
    produced: dict[str, MemoryTopic] = {}
    app = MemoryApp(produced, config.partitions)
    topics = declare_topics(cast(Any, app), config)  # production's, on the in-memory app

    def table() -> TableT[bytes, bytes]:
        return cast(TableT[bytes, bytes], {})

    managers = build_managers(config, TwilioLookups())
    registry = ClientRegistry(config, check=managers.check_client)
    for client_id, document in (clients if clients is not None else {"acme": CLIENT}).items():
        registry.apply(client_id.encode(), json.dumps(document).encode())
        assert registry.get(client_id) is not None, f"client {client_id!r} refused"
    registry.ready.set()
    metrics = Metrics()
    sb = MemorySwitchboard(
        settings=config,
        app=cast(Any, app),
        topics=topics,
        tables=Tables(sessions=table(), sends=table(), deliveries=table(), timers=table()),
        clients=registry,
        transports=TransportRegistry(sandbox_all=True, slots=Slots(config.partitions)),
        metrics=metrics,
        table_memory=cast(TableMemory, None),  # no RocksDB
        produced=produced,
    )
    replicas = {name: MemoryReplica() for name in ("optouts", "manager-state", "cancels")}
    for name, replica in replicas.items():
        produced[config.topic(name)].replica = replica
    sb.optouts = cast(KeyValueReplica, replicas["optouts"])
    sb.manager_state = cast(KeyValueReplica, replicas["manager-state"])
    sb.cancels = cast(KeyValueReplica, replicas["cancels"])
    sb.managers = ManagerDesk.over(managers, sb.manager_state)
    sb.flow = MemoryBacklog(sb)
    sb.failover = Failover(
        Breaker(config.circuit_failures, config.circuit_cooldown),
        metrics.circuit,
        metrics.held_sends,
    )
    return sb


# -- driving the agents ------------------------------------------------------------------------


async def run_agent(
    sb: Switchboard,
    stage: str,
    handler: Callable[[EventT[bytes]], Awaitable[None]],
    events: Iterable[MemoryEvent],
) -> None:
    """Run a checkpointed agent's ``handler`` over ``events`` with production's runner: each
    event is committed (outputs, then rows, then its acknowledgement) before the next."""
    await run_checkpointed(sb, cast(StreamT[bytes], MemoryStream(events)), stage, handler)


async def dispatch_event(sb: Switchboard, event: MemoryEvent) -> None:
    """What a dispatcher does with one event of a dispatch topic (its ``run_overlapped`` task:
    the event is Faust's ``current_event``)."""
    token = _current_event.set(weakref.ref(cast(Any, event)))
    try:
        item, _ = dispatch._prepare(cast(EventT[bytes], event))
        await dispatch._handle(sb, item)
    finally:
        _current_event.reset(token)


def command_event(
    sb: MemorySwitchboard, command: records.SessionCommand, offset: int = 0
) -> MemoryEvent:
    """A session command as the session agent would receive it."""
    key = command.session_id.encode()
    topic = sb.topic("sessions")
    return MemoryEvent(
        topic.name, zlib.crc32(key) % topic.partitions, offset, key, records.encode(command)
    )


def instruction(sb: MemorySwitchboard, body: Any, offset: int = 0) -> MemoryEvent:
    """An instruction on the instructions topic (JSON; ``body`` as bytes is sent as is)."""
    value = body if isinstance(body, bytes) else json.dumps(body).encode()
    return MemoryEvent(
        sb.topic("instructions").name,
        0,
        offset,
        b"k",
        value,
        [("content-type", b"application/json")],
        timestamp=sb.born,
    )


async def run_intake(sb: Switchboard, events: Iterable[MemoryEvent]) -> None:
    policy = ValidationPolicy(allow_http_webhooks=sb.settings.allow_http_webhooks)

    async def handle(event: EventT[bytes]) -> None:
        await intake._handle(sb, event, policy)

    await run_agent(sb, "intake", handle, events)


async def run_sessions(sb: Switchboard, events: Iterable[MemoryEvent]) -> None:
    async def handle(event: EventT[bytes]) -> None:
        await sessions._handle(sb, event)

    await run_agent(sb, "sessions", handle, events)


async def run_reports(sb: Switchboard, events: Iterable[MemoryEvent]) -> None:
    async def handle(event: EventT[bytes]) -> None:
        await reports._handle(sb, event)

    await run_agent(sb, "reports", handle, events)


async def run_scheduler(
    sb: Switchboard, index: scheduler.TimerIndex, events: Iterable[MemoryEvent]
) -> None:
    async def handle(event: EventT[bytes]) -> None:
        await scheduler._handle(sb, index, event)

    await run_agent(sb, "scheduler", handle, events)


async def settle_sessions(sb: MemorySwitchboard, rounds: int = 20) -> list[records.SessionCommand]:
    """Feed the session agent its own commands until it produces none; returns them all."""
    handled: list[records.SessionCommand] = []
    for _ in range(rounds):
        batch = sb.take("sessions")
        if not batch:
            return handled
        handled += [record.command() for record in batch]
        await run_sessions(sb, [r.event() for r in batch])
    raise AssertionError(f"the session agent still produces commands after {rounds} rounds")


def jobs_of(produced: Iterable[Produced]) -> list[records.DispatchJob]:
    """The jobs in records of a dispatch topic (batches or single jobs; fences left out)."""
    jobs: list[records.DispatchJob] = []
    for record in produced:
        body = record.json()
        if body.get("kind") == records.JobBatch.KIND:
            jobs += records.JobBatch.decode(body).jobs
        elif "kind" not in body:
            jobs.append(records.decode(records.DispatchJob, body))
    return jobs


def reports_of(produced: Iterable[Produced]) -> list[records.Report]:
    """The reports in records of a reports topic (batches or single reports)."""
    found: list[records.Report] = []
    for record in produced:
        body = record.json()
        if body.get("kind") == records.ReportBatch.KIND:
            found += records.ReportBatch.decode(body).reports
        elif "kind" not in body:
            found.append(records.decode(records.Report, body))
    return found


async def fan_out(sb: MemorySwitchboard, body: Mapping[str, Any]) -> str:
    """An instruction taken by intake and fanned out by the session agent: its jobs wait in the
    dispatch topics, its ``accepted`` events are published. Returns its session id."""
    await run_intake(sb, [instruction(sb, dict(body))])
    assert sb.topic("rejected").records == [], "the instruction was rejected"
    handled = await settle_sessions(sb)
    return handled[0].session_id
