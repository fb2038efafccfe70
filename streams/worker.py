"""Running a worker: prepare Kafka (topics, clients, schemas), then run the Faust app.

:func:`prepare` is synchronous and idempotent, and runs before the Faust worker starts: topics
must exist before Faust subscribes (it does not notice topics created later), the clients file
(when given) is applied so the registry finds the clients, and the output schemas are
registered so every status event can be written in the Confluent format from the first one.

Local tables after a crash. A table row is written to the local RocksDB at once and to its
changelog topic a moment later. A worker killed in between keeps rows that Kafka never got, and
a restart on the same data directory would trust them: it would skip work as done that no other
worker can see, and the partition's next owner would miss it. So the local tables are trusted
only after a clean stop, which flushes every row to its changelog: the worker writes a
``clean-stop`` marker as the very last thing it does, and removes it when it starts. A start
without the marker (after ``kill -9``, a crash, a power cut) discards the local tables, and Faust
rebuilds them from their changelogs.
"""

from __future__ import annotations

import logging
import logging.config
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import faust
import yaml

from streams.app import Switchboard
from streams.clients import publish_clients
from streams.compose import build, table_dir
from streams.kafka_security import check_kafka
from streams.schema_registry import SchemaIds, SchemaRegistry
from streams.topics import ensure_topics
from switchboard.calltool.campaigns import checksum_secret_problems, parse_campaigns, secret_from
from switchboard.clients import parse_clients_document
from switchboard.errors import ConfigError
from switchboard.logs import logging_config
from switchboard.settings import Settings

__all__ = ["CLEAN_STOP", "apply_clients_file", "prepare", "run_worker", "trust_local_tables"]

log = logging.getLogger(__name__)

#: Written by a clean stop, in the data directory (module docs).
CLEAN_STOP = "clean-stop"


def apply_clients_file(settings: Settings, path: Path) -> list[str]:
    """Validate ``path`` and write every client in it to the clients topic. Returns the ids.

    Beyond the file itself, what it names in the environment is checked: every channel's
    transport is built (its secrets' variables are set), and every campaign's checksum secret
    is set and long enough. Raises :class:`ConfigError` listing every problem, writing nothing."""
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    clients = parse_clients_document(document)
    from switchboard.managers import Registry, check_names
    from transports.registry import build as build_transport

    problems = []
    known_managers = Registry().names()
    for client in clients.values():
        if client.service_managers is not None:
            where = f"clients.{client.client_id}.service_managers"
            try:
                check_names(client.service_managers, known_managers, where=where)
            except ConfigError as exc:
                problems.append(str(exc))
        for channel, config in client.channels.items():
            for position, provider in enumerate(config.providers):  # each provider of a list
                where = f"clients.{client.client_id}.channels.{channel}"
                if config.failover is not None:
                    where += f".providers[{position}]"
                try:
                    build_transport(channel, provider)
                except ConfigError as exc:
                    problems.append(f"{where}: {exc}")
        # A checksum secret that is unset or too short would refuse every manual target with
        # only "this campaign does not accept manual targets": refuse it here, with the reason.
        campaigns = parse_campaigns(client.campaigns)  # parse_client checked them already
        problems.extend(
            checksum_secret_problems(client.client_id, campaigns, secret_from(os.environ))
        )
    if problems:
        raise ConfigError("invalid client configuration:\n  " + "\n  ".join(problems))
    publish_clients(settings, clients.values())
    return list(clients)


def prepare(settings: Settings) -> tuple[SchemaIds, SchemaRegistry | None]:
    """Check the connection to Kafka, create the topics, apply the clients file and register
    the output schemas. Raises ``ConfigError`` naming the problem (a refused password, an
    untrusted certificate, an unreachable broker or registry) within a bounded time: Faust
    itself would retry a refused connection forever."""
    check_kafka(settings)
    created = ensure_topics(settings)
    if created:
        log.info("topics created", extra={"topics": created})
    if settings.clients_file is not None:
        applied = apply_clients_file(settings, settings.clients_file)
        log.info("clients applied", extra={"file": str(settings.clients_file), "clients": applied})
    if settings.schema_registry_url:
        registry = SchemaRegistry.for_settings(settings)
        return registry.register_outputs(
            settings.topic("status"), settings.topic("rejected")
        ), registry
    return SchemaIds(), None


class _Worker(faust.Worker):
    on_ready: Callable[[], None] | None = None
    clean_stop: Callable[[], None] | None = None

    async def on_startup_finished(self) -> None:
        await super().on_startup_finished()
        if self.on_ready is not None:
            self.on_ready()

    def stop_and_shutdown(self) -> None:
        # Raises the crash's exception when the worker crashed: no marker then.
        super().stop_and_shutdown()
        if self.clean_stop is not None and self.crash_reason is None:
            self.clean_stop()


def _mark_clean_stop(settings: Settings, sb: Switchboard) -> None:
    """Write the clean-stop marker if every table row reached its changelog."""
    # Records still queued in librdkafka (status events, agents' outputs, the deliveries
    # table's rows) belong to events never acknowledged: the next owner processes them again.
    # A bulk table row among them may be in the local table and not in its changelog, so the
    # local tables are not trusted then.
    left = sb.close_bulk_producers(settings.drain_timeout)
    if left:
        log.warning(
            "stopped with records not confirmed: their events are processed again by the "
            "partitions' next owner, and local tables will be rebuilt",
            extra={"unsent": left},
        )
        return
    producer = sb.app.producer
    failure = getattr(producer, "failure", None)
    unsent = producer.buffer.size + getattr(producer.buffer, "handing_over", 0)
    if failure is not None or unsent:
        log.warning(
            "stopped with table writes not confirmed: local tables will be rebuilt",
            extra={"unsent": unsent, "failure": repr(failure)},
        )
        return
    (settings.data_dir / CLEAN_STOP).write_text("all table rows were in their changelogs\n")


def trust_local_tables(settings: Settings) -> bool:
    """Keep the local tables if the last stop was clean, else discard them (module docs).
    Either way the marker is removed: only this run's clean stop writes it again."""
    marker = settings.data_dir / CLEAN_STOP
    tables = table_dir(settings)
    clean = marker.exists()
    marker.unlink(missing_ok=True)
    if not clean and tables.exists():
        log.warning(
            "the last stop was not clean: local tables are rebuilt from their changelogs",
            extra={"tables": str(tables)},
        )
        shutil.rmtree(tables)
    return clean


def run_worker(settings: Settings, on_ready: Callable[[], None] | None = None) -> None:
    """Prepare Kafka and run a worker until SIGINT/SIGTERM. Raises SystemExit when done."""
    config = logging_config(settings.log_level, settings.log_format)
    logging.config.dictConfig(config)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    trust_local_tables(settings)
    schema_ids, registry = prepare(settings)
    sb: Switchboard = build(settings, schema_ids=schema_ids, registry=registry)
    worker = _Worker(
        sb.app,
        loglevel=settings.log_level,
        logging_config=config,
        quiet=True,
        redirect_stdouts=False,
    )
    worker.on_ready = on_ready
    worker.clean_stop = lambda: _mark_clean_stop(settings, sb)
    log.info(
        "worker starting",
        extra={
            "app_id": settings.app_id,
            "bootstrap": settings.bootstrap_servers,
            "security_protocol": settings.kafka_security_protocol,
            "web": settings.web_url,
            "sandbox": settings.sandbox,
        },
    )
    worker.execute_from_commandline()
