"""What every agent and view shares: :class:`Switchboard` (the Faust app, its topics and tables,
the client registry, the transports, the encoders of the public topics) and the ways to produce.

It imports no agent: :mod:`streams.compose` builds a :class:`Switchboard` and registers the
agents and views on it (the composition root). Nothing is global: tests and the benchmark build
as many as they like.

Every topic and table here carries raw bytes; the pure core (:mod:`switchboard.records`,
:mod:`switchboard.wire`) does the encoding, so what is on the wire is explicit and typed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import faust
from faust.transport.producer import ProducerBuffer
from faust.types import TableT, TopicT

from streams import checkpoint, offsets
from streams.bulk import BulkProducer, Keyed, Located
from streams.changelog import BulkRows
from streams.clients import ClientRegistry
from streams.kafka_security import librdkafka_config
from streams.managers import ManagerDesk
from streams.metrics import Metrics
from streams.replica import KeyValueReplica
from streams.schema_registry import SchemaIds, SchemaRegistry
from streams.tablestore import TableMemory
from switchboard import records
from switchboard.backlog import OpenSessions, TimerTally
from switchboard.errors import FieldError
from switchboard.fanout import dispatch_key
from switchboard.settings import Settings
from switchboard.status import StatusEvent
from switchboard.status_avro import encode_event
from switchboard.timers import cancel_command, set_command
from switchboard.webhooks import encode as webhook_body
from switchboard.wire import Headers, encode_record
from transports.registry import TransportRegistry

if TYPE_CHECKING:
    from streams.failover import Failover
    from streams.flow import DispatchBacklog

__all__ = ["BIG_MESSAGE", "Switchboard", "Tables", "Topics"]

log = logging.getLogger(__name__)

BIG_MESSAGE = 64 * 1024 * 1024
_REJECTIONS = uuid.UUID("0b5e8a57-4f0e-4a8e-9d59-2a3c6f0e7d11")


@dataclass
class Topics:
    instructions: TopicT
    status: TopicT
    rejected: TopicT
    sessions: TopicT
    reports: TopicT
    schedule: TopicT
    calls: TopicT
    optouts: TopicT
    manager_state: TopicT
    webhooks: TopicT
    dispatch: Mapping[str, TopicT]
    #: The high-priority lane (``options.priority: high``): jobs of every channel, and reports.
    #: Cancelled sessions (compacted), replicated on every worker: every dispatcher withdraws
    #: their jobs, whichever partition it works on.
    cancels: TopicT
    priority_sessions: TopicT
    priority_dispatch: TopicT
    priority_reports: TopicT


@dataclass
class Tables:
    """Changelogged RocksDB tables. Each has exactly one writing agent, and each agent writes one
    table: the rows one event writes then reach the changelog in the order written (a crash
    leaves a prefix of them, see :mod:`streams.checkpoint`)."""

    #: session agent: session id -> SessionState; "<session id>:<chunk>" -> that audience chunk;
    #: "idem:<anchor>" -> IdempotencyRecord; "purged:<session id>" -> Purged (a session deleted
    #: after its retention, ``streams/retention.py``)
    sessions: TableT[bytes, bytes]
    #: dispatch agents: "<delivery key>#<attempt>" -> the send's claim, then its outcome
    sends: TableT[bytes, bytes]
    #: report agent: delivery key -> DeliveryState; session id -> Progress
    deliveries: TableT[bytes, bytes]
    #: scheduler agent: timer id -> due time, target topic, record
    timers: TableT[bytes, bytes]


@dataclass
class Switchboard:
    settings: Settings
    app: faust.App
    topics: Topics
    tables: Tables
    clients: ClientRegistry
    transports: TransportRegistry
    metrics: Metrics
    #: The RocksDB memory every table shares (``SWITCHBOARD_TABLE_MEMORY_MB``).
    table_memory: TableMemory
    schema_ids: SchemaIds = field(default_factory=SchemaIds)
    registry: SchemaRegistry | None = None
    #: The sends ("<delivery key>#<attempt>") being made on this worker right now: a second copy
    #: of a job in flight is dropped, never sent (streams/dispatch.py).
    claims: set[bytes] = field(default_factory=set)
    #: Opted-out numbers per client, replicated on every worker (switchboard/optout.py).
    optouts: KeyValueReplica = field(init=False)
    #: Service managers' memory, replicated on every worker (streams/managers.py).
    manager_state: KeyValueReplica = field(init=False)
    #: Cancelled sessions, replicated on every worker (``streams/sessions.py``, cancel).
    cancels: KeyValueReplica = field(init=False)
    #: The service managers and their hooks (streams/managers.py).
    managers: ManagerDesk = field(init=False)
    _webhook_urls: dict[str, str | None] = field(default_factory=dict)
    #: This worker's circuit breakers of providers-list channels (streams/failover.py).
    failover: Failover = field(init=False)
    #: Jobs waiting in the dispatch topics (the fan-out's flow control, streams/flow.py).
    flow: DispatchBacklog = field(init=False)
    #: Deferred deliveries and webhook retries in this worker's timers (the scheduler keeps it).
    timer_tally: TimerTally = field(default_factory=TimerTally)
    #: Sessions of this worker's partitions not completed (the session and report agents).
    open_sessions: OpenSessions = field(default_factory=OpenSessions)
    #: session id -> (stored bytes, decoded state), at most 10,000: the session agent's and
    #: every reader's memo of the last decoding (``streams.sessions.load_session``).
    decoded_sessions: dict[str, tuple[bytes, records.SessionState]] = field(default_factory=dict)
    #: session id -> when (monotonic) this worker saw its expiry timer armed, at most 100,000: a
    #: hint trusted for a minute and cleared at every revocation of partitions (the report agent,
    #: ``streams/reports.py``; ``Progress`` is the truth).
    armed_expiry: dict[str, float] = field(default_factory=dict)
    #: Background tasks nobody awaits (a failed submission's clean-up, ``streams/submit.py``),
    #: held until done so that the event loop's weak reference is not their only one.
    background: set[asyncio.Task[None]] = field(default_factory=set)
    #: The tables whose rows go through librdkafka (``streams/changelog.py``).
    bulk_rows: BulkRows | None = None
    #: The rows this worker's checkpoints have staged, as every reader here sees them
    #: (``streams/checkpoint.py``): read the tables through ``staged.get``.
    staged: checkpoint.StagedRows = field(default_factory=checkpoint.StagedRows)
    _admin: Any = None
    _bulk_producer: BulkProducer | None = None
    _output_producer: BulkProducer | None = None
    _crash: asyncio.Future[None] | None = None

    def admin(self) -> Any:
        """This worker's confluent-kafka admin client (made on first use)."""
        if self._admin is None:
            from confluent_kafka.admin import AdminClient

            self._admin = AdminClient(self.kafka_config())
        return self._admin

    # -- producing ---------------------------------------------------------------------------

    async def produce(
        self,
        topic: TopicT,
        *,
        key: bytes | None,
        value: bytes | None,
        headers: Headers | None = None,
        partition: int | None = None,
    ) -> Awaitable[Any]:
        """Produce one record; the returned future resolves when the broker acknowledged it
        (and every record produced in the same turn of the event loop: :mod:`streams.bulk`).

        Every record an agent produces goes through here, so that a checkpointed agent writes
        no row before the broker has its outputs (:mod:`streams.checkpoint`), and through this
        worker's librdkafka producer, whose acknowledgements Faust's commit awaits too
        (``streams/commits.py``): an agent without checkpoints (a dispatcher) never has an
        offset committed before its outputs are in Kafka."""
        future = await self.output_producer().produce(
            topic.get_topic_name(), key, value, headers, partition
        )
        checkpoint.output(future)
        return future

    async def produce_located(
        self, topic: TopicT, *, key: bytes | None, value: bytes | None, partition: int | None
    ) -> Awaitable[Located]:
        """:meth:`produce`, for a record whose place is needed: the future resolves with its
        topic, partition and offset."""
        future = await self.output_producer().produce_located(
            topic.get_topic_name(), key, value, partition
        )
        checkpoint.output(future)
        return future

    async def publish_status(self, event: StatusEvent) -> None:
        """Publish ``event`` on the status topic, and to its session's webhook URL if it has one.

        Called by agents working on the session's partition, whose tables are local here."""
        await self.publish_statuses((event,))

    async def publish_statuses(self, events: Sequence[StatusEvent]) -> None:
        """Publish ``events`` (in order) as :meth:`publish_status` publishes each: paid per
        batch where it can be (a chunk's ``accepted`` events, a report batch's ``sent`` and
        ``delivered``). Each is still one record of the status topic, enqueued in the order
        given on this worker's one status producer, so a session's events stay in order; then
        the webhook jobs of those whose session has a webhook URL, in the same order."""
        producer = self.bulk_producer()
        topic = self._status_topic
        schema_id = self.schema_ids.status_event
        counted: dict[tuple[str, str], int] = {}
        hooked: list[tuple[StatusEvent, str]] = []
        records: list[Keyed] = []
        key: bytes = b""
        session_id: str | None = None
        url: str | None = None
        for event in events:
            value, headers = encode_event(event, schema_id)
            if event.session_id != session_id:  # a batch's events are of one session, mostly
                session_id, key = event.session_id, event.session_id.encode()
                url = self._webhook_url(session_id)
            if url is not None:
                hooked.append((event, url))
            records.append((key, value, headers or None))
            labels: tuple[str, str] = (event.channel or "session", event.status)
            counted[labels] = counted.get(labels, 0) + 1
        done = 0
        while done < len(records):
            future, handed = producer.produce_many_nowait(topic, records, done)
            done += handed
            if future is not None:
                checkpoint.output(future)
            if done < len(records):  # librdkafka's queue is full: wait for room
                checkpoint.output(await producer.produce(topic, *records[done]))
                done += 1
        for labels, count in counted.items():
            self.metrics.child(self.metrics.status_events, *labels).inc(count)
        for event, url in hooked:
            await self._to_webhook(event, url)

    async def _to_webhook(self, event: StatusEvent, url: str) -> None:
        """``event``'s webhook job, to its session's webhook URL ``url``."""
        job = records.WebhookJob(
            event.session_id,
            event.client_id,
            url,
            event.event_id,
            webhook_body(event).decode(),
            first_at=time.time(),
        )
        await self.produce(
            self.topics.webhooks, key=event.session_id.encode(), value=records.encode(job)
        )

    @property
    def _status_topic(self) -> str:
        return self.topics.status.get_topic_name()

    def bulk_producer(self) -> BulkProducer:
        """This worker's librdkafka producer of status events and bulk table rows (made on first
        use, in the event loop)."""
        if self._bulk_producer is None:
            self._bulk_producer = BulkProducer(self.kafka_config(), self._failed, "status-producer")
        return self._bulk_producer

    def output_producer(self) -> BulkProducer:
        """This worker's librdkafka producer of the agents' other outputs (jobs, reports,
        commands, timers): a producer of its own, so that a command on the way to the next
        agent never queues behind a burst of status events (librdkafka sends at most five
        requests at a time per broker and producer)."""
        if self._output_producer is None:
            self._output_producer = BulkProducer(self.kafka_config(), self._failed, "outputs")
        return self._output_producer

    def _failed(self, exc: BaseException) -> None:
        self._crash = asyncio.ensure_future(self.app.crash(exc))

    def producers(self) -> list[BulkProducer]:
        """The librdkafka producers made so far."""
        return [p for p in (self._output_producer, self._bulk_producer) if p is not None]

    def close_bulk_producers(self, timeout: float) -> int:
        """Deliver the records still queued; returns how many could not be."""
        return sum(producer.close(timeout) for producer in self.producers())

    def kafka_config(self) -> dict[str, Any]:
        """What every confluent-kafka client of this worker is given to reach the cluster."""
        return librdkafka_config(self.settings)

    def _webhook_url(self, session_id: str) -> str | None:
        # A session's webhook URL never changes: remember it (bounded) rather than read and
        # decode the session for every one of its events.
        if session_id in self._webhook_urls:
            return self._webhook_urls[session_id]
        raw = self.staged.get(self.tables.sessions, session_id.encode())
        url = json.loads(raw).get("options", {}).get("webhookUrl") if raw is not None else None
        url = url if isinstance(url, str) else None
        if raw is not None:  # an unknown session may be opened later: not remembered
            if len(self._webhook_urls) >= 10_000:
                self._webhook_urls.clear()
            self._webhook_urls[session_id] = url
        return url

    async def report(self, report: records.Report) -> Awaitable[Any]:
        topic = self.topics.priority_reports if report.priority == "high" else self.topics.reports
        return await self.produce(
            topic, key=report.session_id.encode(), value=records.encode(report)
        )

    def ends(self, partitions: Sequence[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """Each partition's end offset (``streams/offsets.py``; blocking: call from a thread)."""
        return offsets.ends(self, partitions)

    def committed(self, partitions: Sequence[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """The group's committed offset of each partition (``streams/offsets.py``; blocking)."""
        return offsets.committed(self, partitions)

    def sessions_topic(self, priority: str) -> TopicT:
        """The session commands topic of a lane (``options.priority``)."""
        return self.topics.priority_sessions if priority == "high" else self.topics.sessions

    async def command(
        self, command: records.SessionCommand, *, priority: str = "normal", confirm: bool = False
    ) -> None:
        """Send a session command in the session's lane; with ``confirm``, wait for the broker's
        acknowledgement. Every command of a session must travel in its lane (the session agent
        of each lane writes its own sessions' rows)."""
        future = await self.produce(
            self.sessions_topic(priority),
            key=command.session_id.encode(),
            value=records.encode(command),
        )
        if confirm:
            await future

    async def schedule_at(
        self, timer_id: str, due: float, topic: TopicT, key: bytes, value: bytes
    ) -> None:
        """Produce ``(key, value)`` to ``topic`` at ``due`` (epoch seconds), once; durable across
        restarts (see :mod:`streams.scheduler`). ``topic`` must have the same partition count as
        the schedule topic, and ``key`` decides the partition of both. Setting an existing
        ``timer_id`` again replaces it."""
        command = set_command(timer_id, due, topic.get_topic_name(), key, value, at=time.time())
        await self.produce(self.topics.schedule, key=key, value=command)

    async def cancel_timer(self, timer_id: str, key: bytes) -> None:
        """Cancel a timer set with ``key`` (a no-op when it already fired or never existed)."""
        await self.produce(self.topics.schedule, key=key, value=cancel_command(timer_id))

    def dispatch_topic(self, job: records.DispatchJob) -> TopicT:
        """Where ``job`` waits for a dispatcher: its lane's topic."""
        if job.priority == "high":
            return self.topics.priority_dispatch
        return self.topics.dispatch[job.channel]

    async def report_batch(
        self, reports: list[records.Report], items: bytes | None = None
    ) -> Awaitable[Any] | None:
        """Produce ``reports`` (all of one session and lane) as one record (None when empty);
        ``items``: their :func:`~switchboard.records.encode_items`, when the caller has it."""
        if not reports:
            return None
        first = reports[0]
        topic = self.topics.priority_reports if first.priority == "high" else self.topics.reports
        value = records.encode_batch(records.ReportBatch(reports), items)
        return await self.produce(topic, key=first.session_id.encode(), value=value)

    async def dispatch_batch(self, jobs: list[records.DispatchJob]) -> None:
        """Produce ``jobs`` (one session, channel and lane, one dispatch key) as one record."""
        first = jobs[0]
        topic = self.dispatch_topic(first)
        value = records.encode_batch(records.JobBatch(jobs))
        await self.produce(topic, key=dispatch_key(first.session_id, first.index), value=value)
        self.flow.added(topic.get_topic_name(), 1)  # the fan-out's flow control counts records

    async def dispatch(self, job: records.DispatchJob) -> None:
        topic = self.dispatch_topic(job)
        await self.produce(
            topic, key=dispatch_key(job.session_id, job.index), value=records.encode(job)
        )
        self.flow.added(topic.get_topic_name(), 1)  # the fan-out's flow control counts records

    async def reject(
        self,
        *,
        errors: list[FieldError],
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        headers: Headers,
        client_id: str | None = None,
    ) -> Awaitable[Any]:
        """Put an unusable input on the rejected topic, with its bytes and every error. Returns
        the future of the broker's acknowledgement."""
        # The same input rejected again (a replay after a crash) keeps its id.
        rejection_id = (
            uuid.uuid5(_REJECTIONS, f"{topic}/{partition}/{offset}")
            if offset >= 0
            else uuid.uuid4()
        )
        record: dict[str, Any] = {
            "rejection_id": str(rejection_id),
            "client_id": client_id,
            "topic": topic,
            "partition": partition,
            "offset": offset,
            "key": key,
            "headers": [{"key": k, "value": v} for k, v in headers],
            "value": value,
            "errors": [e.as_dict() for e in errors],
            "rejected_at": int(time.time() * 1000),
        }
        encoded, out_headers = encode_record("rejection", record, self.schema_ids.rejection)
        future = await self.produce(
            self.topics.rejected, key=key, value=encoded, headers=out_headers
        )
        self.metrics.rejections.labels("kafka").inc()
        log.warning(
            "instruction rejected",
            extra={
                "topic": topic,
                "partition": partition,
                "offset": offset,
                "errors": [e.as_dict() for e in errors[:10]],
            },
        )
        return future


# Table writes are synchronous, so Faust queues their changelog records in a buffer, and stops
# delivering to every agent while it holds more than ``max_messages`` (100 by default). With
# three table writes per delivery, 100 throttles the whole worker; the buffer drains quickly,
# so a larger bound only trades a little memory for fewer stalls.
ProducerBuffer.max_messages = 2000
