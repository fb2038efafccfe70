"""The Faust application and everything its agents and views share.

:func:`build` makes one :class:`Switchboard`: the Faust app (RocksDB tables through rocksdict,
at-least-once), its topics and tables, the client registry, the transports and the encoders of
the public topics; then it registers the agents and the web views. Nothing is global: tests
and the benchmark build as many as they like.

Every topic and table here carries raw bytes; the pure core (:mod:`switchboard.records`,
:mod:`switchboard.wire`) does the encoding, so what is on the wire is explicit and typed.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faust
from faust.transport.producer import ProducerBuffer
from faust.types import TableT, TopicT

from streams import checkpoint
from streams.clients import ClientRegistry
from streams.commits import SwitchboardApp
from streams.flow import DispatchBacklog
from streams.inflight import SessionSends
from streams.managers import ManagerDesk, build_managers
from streams.metrics import Metrics
from streams.replica import KeyValueReplica
from streams.schema_registry import SchemaIds, SchemaRegistry
from streams.tablestore import STORE_URL
from switchboard import records
from switchboard.errors import FieldError
from switchboard.fanout import dispatch_key
from switchboard.instruction import CHANNELS
from switchboard.settings import Settings
from switchboard.status import StatusEvent
from switchboard.webhooks import encode as webhook_body
from switchboard.wire import Headers, encode_record
from transports.ratelimit import Slots
from transports.registry import TransportRegistry
from transports.twilio_lookup import TwilioLookups

__all__ = ["Switchboard", "Tables", "Topics", "build"]

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
    #: "idem:<anchor>" -> IdempotencyRecord
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
    schema_ids: SchemaIds = field(default_factory=SchemaIds)
    registry: SchemaRegistry | None = None
    #: Sends in flight per session on this worker (cancel waits for them).
    inflight: SessionSends = field(default_factory=SessionSends)
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
    #: Jobs waiting in the dispatch topics (the fan-out's flow control, streams/flow.py).
    flow: DispatchBacklog = field(init=False)
    _admin: Any = None

    def admin(self) -> Any:
        """This worker's confluent-kafka admin client (made on first use)."""
        if self._admin is None:
            from confluent_kafka.admin import AdminClient

            self._admin = AdminClient({"bootstrap.servers": self.settings.bootstrap_servers})
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
        """Produce one record; the returned future resolves when the broker acknowledged it.

        Every record an agent produces goes through here, so that a checkpointed agent writes
        no row before the broker has its outputs (:mod:`streams.checkpoint`)."""
        future = await topic.send(key=key, value=value, headers=headers, partition=partition)
        checkpoint.output(future)
        return future

    async def publish_status(self, event: StatusEvent) -> None:
        """Publish ``event`` on the status topic, and to its session's webhook URL if it has one.

        Called by agents working on the session's partition, whose tables are local here."""
        value, headers = encode_record(
            "status_event", event.to_avro(), self.schema_ids.status_event
        )
        await self.produce(self.topics.status, key=event.session_id.encode(), value=value,
                           headers=headers)  # fmt: skip
        self.metrics.status_events.labels(event.channel or "session", event.status).inc()
        url = self._webhook_url(event.session_id)
        if url is not None:
            job = records.WebhookJob(event.session_id, event.client_id, url, event.event_id,
                                     webhook_body(event).decode(), first_at=time.time())  # fmt: skip
            await self.produce(
                self.topics.webhooks, key=event.session_id.encode(), value=records.encode(job)
            )

    def _webhook_url(self, session_id: str) -> str | None:
        # A session's webhook URL never changes: remember it (bounded) rather than read and
        # decode the session for every one of its events.
        if session_id in self._webhook_urls:
            return self._webhook_urls[session_id]
        raw = checkpoint.get(self.tables.sessions, session_id.encode())
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
        from streams.scheduler import set_command

        command = set_command(timer_id, due, topic.get_topic_name(), key, value)
        await self.produce(self.topics.schedule, key=key, value=command)

    async def cancel_timer(self, timer_id: str, key: bytes) -> None:
        """Cancel a timer set with ``key`` (a no-op when it already fired or never existed)."""
        from streams.scheduler import cancel_command

        await self.produce(self.topics.schedule, key=key, value=cancel_command(timer_id))

    def dispatch_topic(self, job: records.DispatchJob) -> TopicT:
        """Where ``job`` waits for a dispatcher: its lane's topic."""
        if job.priority == "high":
            return self.topics.priority_dispatch
        return self.topics.dispatch[job.channel]

    async def dispatch(self, job: records.DispatchJob) -> None:
        await self.produce(
            self.dispatch_topic(job),
            key=dispatch_key(job.session_id, job.index),
            value=records.encode(job),
        )

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
        log.warning("instruction rejected", extra={
            "topic": topic, "partition": partition, "offset": offset,
            "errors": [e.as_dict() for e in errors[:10]]})  # fmt: skip
        return future


# Table writes are synchronous, so Faust queues their changelog records in a buffer, and stops
# delivering to every agent while it holds more than ``max_messages`` (100 by default). With
# three table writes per delivery, 100 throttles the whole worker; the buffer drains quickly,
# so a larger bound only trades a little memory for fewer stalls.
ProducerBuffer.max_messages = 2000


def table_dir(settings: Settings) -> Path:
    """The directory of this worker's local copies of the tables (a cache of their changelogs)."""
    return settings.data_dir.resolve() / "tables"


def build(
    settings: Settings,
    *,
    schema_ids: SchemaIds | None = None,
    registry: SchemaRegistry | None = None,
) -> Switchboard:
    """Build the Faust app with all its agents and views (nothing is started)."""
    app = SwitchboardApp(
        settings.app_id,
        broker=[f"kafka://{server.strip()}" for server in settings.bootstrap_servers.split(",")],
        store=STORE_URL,  # Faust's RocksDB store, keeping revoked partitions open
        datadir=str(settings.data_dir),
        # Where the RocksDB tables live: discarded after a crash (``streams/worker.py``).
        tabledir=str(table_dir(settings)),
        autodiscover=False,
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        topic_allow_declare=True,
        processing_guarantee="at_least_once",
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        # Batch what the agents produce into fewer requests: with no linger every record is its
        # own produce request. 5 ms per hop is the latency this costs.
        producer_linger=0.005,
        producer_max_request_size=BIG_MESSAGE,
        consumer_max_fetch_size=BIG_MESSAGE,
        broker_commit_interval=1.0,
        # How fast a dead worker's partitions move (README, "Scaling out"): the group evicts a
        # member after the session timeout; live members learn of a rebalance at their next
        # heartbeat and have the rebalance timeout to finish in-flight work and rejoin.
        broker_session_timeout=settings.session_timeout,
        broker_heartbeat_interval=settings.heartbeat_interval,
        broker_rebalance_timeout=settings.rebalance_timeout,
        web_enabled=True,
        web_bind=settings.web_host,
        web_host=settings.web_host,
        web_port=settings.web_port,
        canonical_url=settings.web_url,
        web_tables_enabled=False,  # /table/ would expose every client's data unauthenticated
        web_graph_enabled=False,
        web_stats_enabled=False,
        web_metrics_enabled=False,
        worker_redirect_stdouts=False,
    )

    def topic(name: str) -> TopicT:
        return app.topic(
            settings.topic(name),
            key_type=bytes,
            value_type=bytes,
            partitions=settings.partitions if name != "clients" else 1,
            internal=False,
        )

    topics = Topics(
        instructions=topic("instructions"),
        status=topic("status"),
        rejected=topic("rejected"),
        sessions=topic("sessions"),
        reports=topic("reports"),
        schedule=topic("schedule"),
        calls=topic("calls"),
        optouts=topic("optouts"),
        manager_state=topic("manager-state"),
        webhooks=topic("webhooks"),
        dispatch={channel: topic(f"dispatch.{channel}") for channel in CHANNELS},
        cancels=topic("cancels"),
        priority_sessions=topic("sessions.priority"),
        priority_dispatch=topic("dispatch.priority"),
        priority_reports=topic("reports.priority"),
    )

    def table(name: str, help_text: str) -> TableT[bytes, bytes]:
        return app.Table(
            name, key_type=bytes, value_type=bytes, partitions=settings.partitions, help=help_text
        )

    tables = Tables(
        sessions=table(
            "sessions",
            "session id -> session; session id:chunk -> recipients; idem:anchor -> record",
        ),
        sends=table("sends", "delivery key#attempt -> the send's claim and outcome"),
        deliveries=table("deliveries", "delivery key -> delivery state; session id -> progress"),
        timers=table("timers", "timer id -> due time and the record to produce"),
    )
    managers = build_managers(settings, lookups := TwilioLookups())
    sb = Switchboard(
        settings=settings,
        app=app,
        topics=topics,
        tables=tables,
        clients=ClientRegistry(settings, check=managers.check_client),
        transports=TransportRegistry(
            sandbox_all=settings.sandbox,
            outbox=settings.sandbox_outbox,
            slots=Slots(settings.partitions),
        ),
        metrics=Metrics(),
        schema_ids=schema_ids or SchemaIds(),
        registry=registry,
    )

    sb.optouts = KeyValueReplica(settings, settings.topic("optouts"), settings.data_dir / "replicas" / "optouts",
                                 topics.optouts)  # fmt: skip
    sb.manager_state = KeyValueReplica(settings, settings.topic("manager-state"),
                                       settings.data_dir / "replicas" / "manager-state", topics.manager_state)  # fmt: skip
    sb.managers = ManagerDesk.over(managers, sb.manager_state)
    sb.flow = DispatchBacklog(sb)
    sb.cancels = KeyValueReplica(settings, settings.topic("cancels"), settings.data_dir / "replicas" / "cancels",
                                 topics.cancels)  # fmt: skip

    from streams import calls, dispatch, intake, reports, scheduler, sessions, webhooks
    from streams.web import api
    from streams.web import calls as call_views

    async def follow_clients() -> None:
        await sb.clients.run()

    app.task(follow_clients)

    async def follow_optouts() -> None:
        await sb.optouts.run()

    app.task(follow_optouts)

    async def follow_manager_state() -> None:
        await sb.manager_state.run()

    app.task(follow_manager_state)

    async def follow_cancels() -> None:
        await sb.cancels.run()

    app.task(follow_cancels)

    intake.register(sb)
    sessions.register(sb)
    dispatch.register(sb)
    reports.register(sb)
    scheduler.register(sb)
    webhooks.register(sb)
    api.register(sb)
    call_views.register(sb, calls.register(sb))

    async def close_transports(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        await sb.transports.aclose()
        await lookups.aclose()
        sb.optouts.close()
        sb.manager_state.close()
        sb.cancels.close()

    app.on_before_shutdown.connect(close_transports)

    async def share_pacing(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        # A sender's rate is shared by the workers in proportion to the dispatch partitions
        # each owns (transports/ratelimit.py, Slots): all dispatch topics are co-partitioned.
        lanes = {t.get_topic_name() for t in (*topics.dispatch.values(), topics.priority_dispatch)}
        owned = frozenset(tp.partition for tp in app.consumer.assignment() if tp.topic in lanes)
        assert sb.transports.slots is not None
        sb.transports.slots.assign(owned)
        log.info("pacing slots assigned", extra={"partitions": sorted(owned)})

    app.on_partitions_assigned.connect(share_pacing)

    return sb
