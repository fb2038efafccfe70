"""Every topic Switchboard reads or writes, and their creation.

Public topics (README: "Kafka topics and formats") and internal ones share one partition count
(``SWITCHBOARD_PARTITIONS``), and Faust's assignor gives a worker the same partition numbers of
all of them. Session commands, reports and status events are keyed by session id, so a session's
commands, reports and table rows are on one worker, and one agent owns each delivery's state.
Dispatch jobs are keyed by session and a slice of recipients (``switchboard.fanout.
dispatch_key``): a campaign's jobs are spread over every partition, so every worker sends a
share of it; a cancel reaches them through the replicated ``cancels`` topic and a fence in each
dispatch partition (``streams/fences.py``).

Switchboard creates its topics itself, before the worker starts (Faust does not create external
source topics, and would subscribe to a missing one without ever noticing it appear). An
existing topic with another partition count is an error the operator must resolve: Faust
refuses to co-partition tables with it.

    instructions ─► intake ─► sessions ─► session agent ─► dispatch.<channel> ─► dispatch agents
                       │                       │                                        │
                       ▼                       ▼                                        ▼
                   rejected                 reports ◄───────────────────────────────────┘
                                               │
                                               ▼
                                  report agent ─► status

A session with ``options.priority: high`` (a one-time password) has a lane of its own:
``sessions.priority`` (its commands), ``dispatch.priority`` (its jobs, whatever the channel) and
``reports.priority``, each with its
own agent, so it never queues behind a campaign's jobs or reports on the same partition.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from streams.kafka_security import librdkafka_config
from switchboard.errors import ConfigError
from switchboard.instruction import CHANNELS
from switchboard.settings import Settings

__all__ = ["TopicSpec", "ensure_topics", "topic_specs"]

_DAY_MS = 24 * 3600 * 1000
_BIG = str(64 * 1024 * 1024)


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    config: Mapping[str, str] = field(default_factory=dict)
    partitions: int | None = None  # None: SWITCHBOARD_PARTITIONS


def topic_specs(settings: Settings) -> list[TopicSpec]:
    t = settings.topic
    week = {"retention.ms": str(7 * _DAY_MS)}
    return [
        TopicSpec(t("instructions"), {**week, "max.message.bytes": _BIG}),
        TopicSpec(t("status"), week),
        TopicSpec(t("rejected"), {"retention.ms": str(30 * _DAY_MS), "max.message.bytes": _BIG}),
        TopicSpec(t("clients"), {"cleanup.policy": "compact"}, partitions=1),
        TopicSpec(t("optouts"), {"cleanup.policy": "compact"}),
        TopicSpec(t("manager-state"), {"cleanup.policy": "compact"}),
        TopicSpec(t("sessions"), {**week, "max.message.bytes": _BIG}),
        TopicSpec(t("reports"), week),
        TopicSpec(t("schedule"), week),
        TopicSpec(t("webhooks"), week),
        TopicSpec(t("calls"), week),
        *(TopicSpec(t(f"dispatch.{channel}"), week) for channel in CHANNELS),
        # The high-priority lane: jobs of every channel, and their reports.
        TopicSpec(t("cancels"), {"cleanup.policy": "compact"}),
        TopicSpec(t("sessions.priority"), {**week, "max.message.bytes": _BIG}),
        TopicSpec(t("dispatch.priority"), week),
        TopicSpec(t("reports.priority"), week),
    ]


def ensure_topics(settings: Settings, timeout: float = 30.0) -> list[str]:
    """Create the missing topics; check existing ones. Returns the names created.

    Raises:
        ConfigError: a topic exists with another partition count, or cannot be created.
    """
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.cimpl import NewTopic

    admin = AdminClient(librdkafka_config(settings))
    existing = admin.list_topics(timeout=timeout).topics
    missing: list[NewTopic] = []
    problems: list[str] = []
    for spec in topic_specs(settings):
        wanted = spec.partitions or settings.partitions
        if spec.name in existing:
            have = len(existing[spec.name].partitions)
            if have != wanted:
                problems.append(
                    f"topic {spec.name} has {have} partitions, Switchboard needs {wanted}: "
                    f"set SWITCHBOARD_PARTITIONS={have}, or use another SWITCHBOARD_TOPIC_PREFIX"
                )
            continue
        missing.append(
            NewTopic(spec.name, wanted, settings.replication_factor, config=dict(spec.config))
        )
    if problems:
        raise ConfigError("\n".join(problems))
    created = []
    for name, future in (
        admin.create_topics(missing, operation_timeout=timeout).items() if missing else []
    ):
        try:
            future.result(timeout)
        except Exception as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):  # another worker was first
                raise ConfigError(f"cannot create topic {name}: {exc}") from exc
        else:
            created.append(name)
    return created
