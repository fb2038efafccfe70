"""The composition root: builds one :class:`~streams.app.Switchboard` and registers every agent
and web view on it. The only module that imports them all; none of them imports it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from faust.types import AppT, TableT, TopicT

from streams.app import BIG_MESSAGE, Switchboard, Tables, Topics
from streams.changelog import BulkRows
from streams.clients import ClientRegistry
from streams.commits import DurableProducer, SwitchboardApp
from streams.failover import Failover
from streams.flow import DispatchBacklog
from streams.kafka_security import faust_credentials
from streams.managers import ManagerDesk, build_managers
from streams.metrics import Metrics
from streams.replica import KeyValueReplica
from streams.schema_registry import SchemaIds, SchemaRegistry
from streams.tablestore import STORE_URL, TableMemory, declare_table
from switchboard.circuit import Breaker
from switchboard.instruction import CHANNELS
from switchboard.settings import Settings
from transports.ratelimit import Slots
from transports.registry import TransportRegistry
from transports.twilio_lookup import TwilioLookups

__all__ = ["build", "declare_topics", "table_dir"]

log = logging.getLogger(__name__)


def table_dir(settings: Settings) -> Path:
    """The directory of this worker's local copies of the tables (a cache of their changelogs)."""
    return settings.data_dir.resolve() / "tables"


def declare_topics(app: AppT, settings: Settings) -> Topics:
    """Declare every topic the agents read and write on ``app`` (raw bytes, the worker's
    partition count). The agents' fast tier (``tests/unit/agents/harness.py``) declares them
    through this too, on its in-memory app, so it cannot drift from production's."""

    def topic(name: str) -> TopicT:
        return app.topic(
            settings.topic(name),
            key_type=bytes,
            value_type=bytes,
            partitions=settings.partitions if name != "clients" else 1,
            internal=False,
        )

    return Topics(
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
        # TLS and SASL of Faust's consumer, producer and topic creation (README, "Connecting
        # to a managed cluster"); None for PLAINTEXT.
        broker_credentials=faust_credentials(settings),
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

    topics = declare_topics(app, settings)

    memory = TableMemory.of(settings.table_memory_mb)

    def table(name: str, help_text: str) -> TableT[bytes, bytes]:
        return declare_table(
            app, name, partitions=settings.partitions, memory=memory, help_text=help_text
        )

    tables = Tables(
        sessions=table(
            "sessions",
            "session id -> session; session id:chunk -> recipients; idem:anchor -> record; "
            "purged:session id -> marker",
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
        table_memory=memory,
        schema_ids=schema_ids or SchemaIds(),
        registry=registry,
    )

    sb.optouts = KeyValueReplica(
        settings,
        settings.topic("optouts"),
        settings.data_dir / "replicas" / "optouts",
        topics.optouts,
    )
    sb.manager_state = KeyValueReplica(
        settings,
        settings.topic("manager-state"),
        settings.data_dir / "replicas" / "manager-state",
        topics.manager_state,
    )
    sb.managers = ManagerDesk.over(managers, sb.manager_state)
    sb.flow = DispatchBacklog(sb)
    # Every table's rows go through librdkafka in bulk (streams/changelog.py): the deliveries
    # take a row per delivery (twice, as it is sent and reported), the sends a claim and the
    # outcomes of every batch, the sessions and timers a few rows per session. Through Faust's
    # aiokafka producer each row was a Python record, a task turn and a socket write on the
    # event loop.
    sb.bulk_rows = BulkRows(
        sb.bulk_producer,
        [sb.tables.deliveries, sb.tables.sessions, sb.tables.sends, sb.tables.timers],
    )
    # What the agents produce goes through librdkafka too (Switchboard.produce): Faust's commit
    # of offsets waits for it as for its own producer's records.
    producer = app.producer
    if isinstance(producer, DurableProducer):
        producer.flush_also(lambda: sb.output_producer().drained())
        producer.flush_also(lambda: sb.bulk_producer().drained())
    sb.failover = Failover(
        Breaker(settings.circuit_failures, settings.circuit_cooldown),
        sb.metrics.circuit,
        sb.metrics.held_sends,
    )
    sb.cancels = KeyValueReplica(
        settings,
        settings.topic("cancels"),
        settings.data_dir / "replicas" / "cancels",
        topics.cancels,
    )

    from streams import dispatch, gauges, intake, reports, scheduler, sessions, webhooks
    from streams.twilio import call_agent, call_views, message_views
    from streams.web import api

    # The replicated tables follow their topics for the life of the worker.
    for replica in (sb.clients, sb.optouts, sb.manager_state, sb.cancels):
        app.task(replica.run)

    intake.register(sb)
    sessions.register(sb)
    dispatch.register(sb)
    reports.register(sb)
    scheduler.register(sb)
    webhooks.register(sb)
    sb.timer_tally.dispatch_topics = frozenset(
        t.get_topic_name() for t in (*topics.dispatch.values(), topics.priority_dispatch)
    )
    gauges.register(sb)
    api.register(sb)
    # What Twilio calls (streams/twilio/): message status callbacks and inbound SMS, and the
    # call tool (its agent, its API and Twilio's steps during a call).
    message_views.register(sb)
    call_views.register(sb, call_agent.register(sb))

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

    async def forget_handled(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        # How far each partition's events were handled here (streams/checkpoint.py, read by the
        # report agent's wait for a session's opening) says nothing once partitions move: one
        # taken back is read again from its committed offset, and rows staged before were dropped.
        sb.staged.forget_handled()

    app.on_partitions_revoked.connect(forget_handled)

    return sb
