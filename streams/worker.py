"""Running a worker: prepare Kafka (topics, clients, schemas), then run the Faust app.

:func:`prepare` is synchronous and idempotent, and runs before the Faust worker starts: topics
must exist before Faust subscribes (it does not notice topics created later), the clients file
(when given) is applied so the registry finds the clients, and the output schemas are
registered so every status event can be written in the Confluent format from the first one.
"""

from __future__ import annotations

import logging
import logging.config
from collections.abc import Callable
from pathlib import Path

import faust
import yaml

from streams.app import Switchboard, build
from streams.clients import publish_clients
from streams.schema_registry import SchemaIds, SchemaRegistry
from streams.topics import ensure_topics
from switchboard.clients import parse_clients_document
from switchboard.errors import ConfigError
from switchboard.logs import logging_config
from switchboard.settings import Settings

__all__ = ["apply_clients_file", "prepare", "run_worker"]

log = logging.getLogger(__name__)


def apply_clients_file(settings: Settings, path: Path) -> list[str]:
    """Validate ``path`` and write every client in it to the clients topic. Returns the ids."""
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
            try:
                build_transport(channel, config)
            except ConfigError as exc:
                problems.append(f"clients.{client.client_id}.channels.{channel}: {exc}")
    if problems:
        raise ConfigError("invalid client configuration:\n  " + "\n  ".join(problems))
    publish_clients(settings, clients.values())
    return list(clients)


def prepare(settings: Settings) -> tuple[SchemaIds, SchemaRegistry | None]:
    created = ensure_topics(settings)
    if created:
        log.info("topics created", extra={"topics": created})
    if settings.clients_file is not None:
        applied = apply_clients_file(settings, settings.clients_file)
        log.info("clients applied", extra={"file": str(settings.clients_file), "clients": applied})
    if settings.schema_registry_url:
        registry = SchemaRegistry(settings.schema_registry_url)
        return registry.register_outputs(
            settings.topic("status"), settings.topic("rejected")
        ), registry
    return SchemaIds(), None


class _Worker(faust.Worker):
    on_ready: Callable[[], None] | None = None

    async def on_startup_finished(self) -> None:
        await super().on_startup_finished()
        if self.on_ready is not None:
            self.on_ready()


def run_worker(settings: Settings, on_ready: Callable[[], None] | None = None) -> None:
    """Prepare Kafka and run a worker until SIGINT/SIGTERM. Raises SystemExit when done."""
    config = logging_config(settings.log_level, settings.log_format)
    logging.config.dictConfig(config)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    schema_ids, registry = prepare(settings)
    sb: Switchboard = build(settings, schema_ids=schema_ids, registry=registry)
    worker = _Worker(sb.app, loglevel=settings.log_level, logging_config=config, quiet=True,
                     redirect_stdouts=False)  # fmt: skip
    worker.on_ready = on_ready
    log.info("worker starting", extra={"app_id": settings.app_id, "bootstrap": settings.bootstrap_servers,
                                       "web": settings.web_url, "sandbox": settings.sandbox})  # fmt: skip
    worker.execute_from_commandline()
