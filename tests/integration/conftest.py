"""Fixtures for end-to-end tests against the real broker: SMTP sink, clients, workers."""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from cli.kafka.local import LocalBroker
from switchboard.clients import api_key_digest
from tests.fakes.background import BackgroundServer
from tests.fakes.twilio_server import FakeTwilioServer
from tests.integration.harness import MailSink, TopicReader, Worker, rejection_reader, status_reader

_prefixes = itertools.count(1)


@dataclass(frozen=True)
class Keys:
    """API keys of the test clients: ``acme`` (email over SMTP, the rest sandbox) and ``other``."""

    acme: str
    other: str


@pytest.fixture(scope="session")
def keys() -> Keys:
    return Keys(acme=f"acme-{secrets.token_hex(8)}", other=f"other-{secrets.token_hex(8)}")


@pytest.fixture(scope="module")
def twilio() -> Iterator[BackgroundServer[FakeTwilioServer]]:
    """A fake Twilio of the module's own, serving its API and calling the worker back."""
    with BackgroundServer(FakeTwilioServer) as server:
        yield server


@pytest.fixture(scope="module")
def mail() -> Iterator[MailSink]:
    sink = MailSink()
    yield sink
    sink.stop()


def clients_document(keys: Keys, smtp_port: int, **acme_overrides: Any) -> dict[str, Any]:
    acme: dict[str, Any] = {
        "api_keys": [api_key_digest(keys.acme)],
        "webhook_secret": "whsec_dGVzdC13ZWJob29rLXNlY3JldC0wMDAx",
        "default_channels": ["email"],
        "channels": {
            "email": {
                "provider": "smtp",
                "from": "Acme <noreply@acme.example>",
                "host": "127.0.0.1",
                "port": smtp_port,
                "security": "none",
                "max_connections": 4,
            },
            "sms": {"provider": "sandbox", "from": ["+14155550100"]},
            "push": {"provider": "sandbox"},
            "slack": {"provider": "sandbox"},
        },
    }
    acme.update(acme_overrides)
    other = {
        "api_keys": [api_key_digest(keys.other)],
        "default_channels": ["sms"],
        "channels": {"sms": {"provider": "sandbox"}},
    }
    return {"clients": {"acme": acme, "other": other}}


def sandbox_sms_clients(keys: Keys, **other_overrides: Any) -> dict[str, Any]:
    """Two clients, acme and other, each sending sms (their default channel) to the sandbox."""
    clients = {
        name: {
            "api_keys": [api_key_digest(key)],
            "default_channels": ["sms"],
            "channels": {"sms": {"provider": "sandbox"}},
        }
        for name, key in (("acme", keys.acme), ("other", keys.other))
    }
    clients["other"].update(other_overrides)
    return {"clients": clients}


WorkerFactory = Callable[..., Worker]


@pytest.fixture(scope="module")
def make_worker(
    kafka: LocalBroker, keys: Keys, mail: MailSink, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerFactory]:
    """Build (not start) workers with a topic prefix of their own."""
    made: list[Worker] = []

    def factory(
        extra_env: dict[str, str] | None = None,
        prefix: str | None = None,
        document: dict[str, Any] | None = None,
    ) -> Worker:
        prefix = prefix or f"t{next(_prefixes)}"
        workdir: Path = tmp_path_factory.mktemp(prefix)
        clients_file = workdir / "clients.yaml"
        clients_file.write_text(yaml.safe_dump(document or clients_document(keys, mail.port)))
        worker = Worker(
            kafka.bootstrap_servers, prefix, workdir, clients_file, dict(extra_env or {})
        )
        made.append(worker)
        return worker

    yield factory
    for worker in made:
        worker.stop()


@pytest.fixture(scope="module")
def worker(make_worker: WorkerFactory) -> Worker:
    """A started worker shared by the tests of one module."""
    return make_worker().start()


@pytest.fixture(scope="module")
def statuses(kafka: LocalBroker, worker: Worker) -> Iterator[TopicReader]:
    reader = status_reader(kafka.bootstrap_servers, worker.topic("status"))
    yield reader
    reader.close()


@pytest.fixture(scope="module")
def rejections(kafka: LocalBroker, worker: Worker) -> Iterator[TopicReader]:
    reader = rejection_reader(kafka.bootstrap_servers, worker.topic("rejected"))
    yield reader
    reader.close()
