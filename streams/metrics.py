"""Prometheus metrics of one worker, served at ``GET /metrics``.

Each :class:`Metrics` has its own registry, so several apps in one process (tests, the
benchmark) never collide on metric names.
"""

from __future__ import annotations

from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics import MetricWrapperBase

_M = TypeVar("_M", bound=MetricWrapperBase)

__all__ = ["LoopCount", "Metrics"]


class LoopCount:
    """A count changed only on the event loop's thread (so without a lock) and read by a
    gauge's callback when ``/metrics`` is scraped: a read of one integer needs no lock either."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def read(self) -> float:
        return self.value


class Metrics:
    """Every metric of one worker. Counters and histograms are updated where things happen;
    the state gauges (lag, deferred, webhook backlog, sessions open) by a periodic refresh."""

    def __init__(self) -> None:
        #: Label children already made: ``labels()`` takes a lock and builds a key every call,
        #: and the hot path asks for the same few children for every delivery.
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        #: Provider calls in flight by channel, read by ``in_flight`` when it is scraped.
        self._in_flight: dict[str, LoopCount] = {}
        self.registry = CollectorRegistry()
        r = self.registry
        self.instructions = Counter(
            "switchboard_instructions_total",
            "Instructions received, by source and outcome.",
            ["source", "outcome"],
            registry=r,
        )
        self.rejections = Counter(
            "switchboard_rejections_total", "Inputs refused, by source.", ["source"], registry=r
        )
        self.sessions = Counter("switchboard_sessions_opened_total", "Sessions opened.", registry=r)
        self.idempotent_repeats = Counter(
            "switchboard_idempotent_repeats_total",
            "Instructions whose idempotency key named a session already.",
            ["source", "outcome"],
            registry=r,
        )
        self.status_events = Counter(
            "switchboard_status_events_total",
            "Status events published, by channel and status.",
            ["channel", "status"],
            registry=r,
        )
        self.sends = Counter(
            "switchboard_provider_sends_total",
            "Provider calls, by channel, provider and outcome.",
            ["channel", "provider", "outcome"],
            registry=r,
        )
        self.send_seconds = Histogram(
            "switchboard_provider_send_seconds",
            "Provider call latency.",
            ["channel", "provider"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.in_flight = Gauge(
            "switchboard_provider_in_flight",
            "Provider calls in flight, by channel.",
            ["channel"],
            registry=r,
        )
        self.circuit = Gauge(
            "switchboard_provider_circuit",
            "Circuit of each provider of a channel that lists providers, by client, channel and "
            "position in the list (0 closed, 1 half-open, 2 open), on this worker.",
            ["client", "channel", "position"],
            registry=r,
        )
        self.held_sends = Gauge(
            "switchboard_provider_held_sends",
            "Sends held because every provider of their channel has an open circuit, by channel.",
            ["channel"],
            registry=r,
        )
        self.timer_lateness = Histogram(
            "switchboard_timer_lateness_seconds",
            "How late scheduled records were produced.",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 30, 300),
            registry=r,
        )
        self.provider_callbacks = Counter(
            "switchboard_provider_callbacks_total",
            "Delivery callbacks from providers, by provider and status.",
            ["provider", "status"],
            registry=r,
        )
        self.optouts = Counter(
            "switchboard_optouts_total",
            "Opt-outs and opt-ins by SMS keyword (opt-out, opt-in), and email unsubscribes (unsubscribe).",
            ["kind"],
            registry=r,
        )
        self.webhooks = Counter(
            "switchboard_webhooks_total", "Webhook attempts, by outcome.", ["outcome"], registry=r
        )
        self.checkpoints = Histogram(
            "switchboard_checkpoint_seconds",
            "From a batch's first event to its rows written and acknowledged, by agent.",
            ["agent"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
            registry=r,
        )
        self.sends_in_doubt = Counter(
            "switchboard_sends_in_doubt_total",
            "Sends claimed by a worker that stopped or died before recording the provider's answer; "
            "sent again (the provider may have had the first).",
            ["channel"],
            registry=r,
        )
        self.duplicate_jobs = Counter(
            "switchboard_duplicate_jobs_total",
            "Dispatch jobs whose send was already claimed or recorded, by what was found.",
            ["channel", "found"],
            registry=r,
        )
        self.withdrawn = Counter(
            "switchboard_jobs_withdrawn_total",
            "Dispatch jobs dropped unsent because their session was cancelled (its unsent "
            "deliveries are reported once it is fenced).",
            ["channel", "why"],
            registry=r,
        )
        self.missing_state = Counter(
            "switchboard_missing_state_total",
            "State an agent expected and did not find (an error, reported on the rejected topic).",
            ["what"],
            registry=r,
        )
        self.purged_rows = Counter(
            "switchboard_purged_rows_total",
            "Table rows deleted (a tombstone on the changelog) because their session's retention, "
            "or their idempotency key's window, passed.",
            ["table"],
            registry=r,
        )
        self.after_purge = Counter(
            "switchboard_after_purge_total",
            "Commands and reports for a session deleted after its retention, ignored (a late "
            "provider callback, an expiry sweep).",
            ["stage"],
            registry=r,
        )
        self.clients = Gauge(
            "switchboard_clients", "Configured clients known to this worker.", registry=r
        )
        # State gauges, refreshed every few seconds by streams/gauges.py (definitions there).
        self.consumer_lag = Gauge(
            "switchboard_consumer_lag",
            "Records not yet committed by the consumer group, per partition this worker is assigned.",
            ["topic", "partition"],
            registry=r,
        )
        self.deferred = Gauge(
            "switchboard_deferred_deliveries",
            "Deliveries held by a channel's time window in this worker's timers.",
            registry=r,
        )
        self.deferred_oldest = Gauge(
            "switchboard_deferred_oldest_age_seconds",
            "Seconds since the oldest delivery still held by a time window was deferred (0: none).",
            registry=r,
        )
        self.webhook_backlog = Gauge(
            "switchboard_webhook_backlog",
            "Webhooks waiting: queued (on the webhooks topic) or retrying (in a timer).",
            ["state"],
            registry=r,
        )
        self.sessions_open = Gauge(
            "switchboard_sessions_open",
            "Sessions of this worker's partitions opened and not completed.",
            registry=r,
        )
        self.replica_position = Gauge(
            "switchboard_replica_position",
            "Per partition of a replicated topic, the offset of the next record this worker "
            "applies: every record before it is applied here.",
            ["topic", "partition"],
            registry=r,
        )

    def child(self, metric: _M, *labels: str) -> _M:
        """``metric.labels(*labels)``, made once per worker."""
        key = (id(metric), labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def in_flight_cell(self, channel: str) -> LoopCount:
        """The count of ``channel``'s provider calls in flight, which the caller adds to and
        takes from around each call; ``switchboard_provider_in_flight`` reads it when scraped.
        A gauge's ``inc``/``dec`` take a lock each, twice per send; this is two integer
        operations on the event loop, where every send is made."""
        cell = self._in_flight.get(channel)
        if cell is None:
            cell = self._in_flight[channel] = LoopCount()
            self.in_flight.labels(channel).set_function(cell.read)
        return cell

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def sample_names(self) -> frozenset[str]:
        """Every series name ``GET /metrics`` can show (``_total`` of a counter, ``_bucket``,
        ``_sum`` and ``_count`` of a histogram...), whether or not it has a sample yet: what a
        dashboard's queries may name."""
        suffixes = {
            "counter": ("_total", "_created"),
            "gauge": ("",),
            "histogram": ("_bucket", "_sum", "_count", "_created"),
        }
        return frozenset(
            family.name + suffix
            for family in self.registry.collect()
            for suffix in suffixes.get(family.type, ("",))
        )
