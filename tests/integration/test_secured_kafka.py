"""Switchboard on a secured cluster, for real: a broker whose only listener the worker is given
speaks SASL_SSL (SCRAM-SHA-512, a certificate signed by a CA the test made with trustme).

* A worker delivers a message end to end through it (Faust's clients, the replicas, the admin
  and producer clients all connect with the same settings), and so do the CLI's
  ``send --via-kafka`` and ``tail``.
* A wrong password and an untrusted CA each stop the worker at start, exiting 1 by itself with
  a message that names the problem (a hang would end in the harness's SIGTERM instead); the
  CLI's Kafka commands (``tail``, ``clients apply``, ``send --via-kafka``) do the same.
* The password appears in no log line of any of these runs.
* Mutual TLS: with its client certificate a client passes the startup check and an aiokafka
  client (as the replicas and Faust make them) reads metadata; without it the check fails with
  a TLS error.

The tests' own readers use the broker's PLAINTEXT listener: they check what the worker wrote,
not how it connected.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from cli.kafka.local import LocalBroker
from streams.kafka_security import aiokafka_connection, check_kafka
from switchboard.errors import ConfigError
from switchboard.settings import Settings
from tests.conftest import SCRAM_PASSWORD, SCRAM_USER, KafkaPki
from tests.integration.conftest import Keys, clients_document
from tests.integration.harness import ROOT, MailSink, Worker, status_reader

pytestmark = pytest.mark.kafka

PASSWORD_VARIABLE = "TEST_KAFKA_SASL_PASSWORD"


def secure_env(pki: KafkaPki, **overrides: str) -> dict[str, str]:
    """What an operator sets for a SASL_SSL cluster with a private CA."""
    return {
        "SWITCHBOARD_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "SWITCHBOARD_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "SWITCHBOARD_KAFKA_SASL_USERNAME": SCRAM_USER,
        "SWITCHBOARD_KAFKA_SASL_PASSWORD_ENV": PASSWORD_VARIABLE,
        PASSWORD_VARIABLE: SCRAM_PASSWORD,
        "SWITCHBOARD_KAFKA_SSL_CA_FILE": str(pki.ca_file),
        **overrides,
    }


@pytest.fixture(scope="module")
def make_secure_worker(
    secure_kafka: LocalBroker, keys: Keys, mail: MailSink, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[dict[str, str]], Worker]]:
    """Build (not start) workers given only the broker's SASL_SSL address."""
    made: list[Worker] = []

    def factory(env: dict[str, str]) -> Worker:
        prefix = f"secure{len(made)}"
        workdir: Path = tmp_path_factory.mktemp(prefix)
        clients_file = workdir / "clients.yaml"
        clients_file.write_text(yaml.safe_dump(clients_document(keys, mail.port)))
        worker = Worker(secure_kafka.secure_bootstrap_servers, prefix, workdir, clients_file, env)
        made.append(worker)
        return worker

    yield factory
    for worker in made:
        worker.stop()


def email(address: str, subject: str) -> dict[str, Any]:
    return {
        "transport": {"type": "email", "subject": subject, "message": "Over TLS."},
        "audience": [address],
    }


def assert_no_password_logged(worker: Worker, password: str) -> None:
    for path in worker.workdir.glob("worker-*.log"):
        assert password not in path.read_text(errors="replace"), f"{path} holds the password"


def cli(worker: Worker, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        cwd=ROOT,
        env=worker.env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_worker_and_the_cli_deliver_through_a_sasl_ssl_broker(
    make_secure_worker: Callable[[dict[str, str]], Worker],
    kafka_pki: KafkaPki,
    secure_kafka: LocalBroker,
    keys: Keys,
    mail: MailSink,
) -> None:
    worker = make_secure_worker(secure_env(kafka_pki)).start()
    statuses = status_reader(secure_kafka.bootstrap_servers, worker.topic("status"))
    try:
        address = f"tls-{uuid.uuid4().hex[:8]}@example.com"
        answer = worker.post(email(address, "Secured"), keys.acme)
        assert answer.status == 202, answer.body
        session = worker.wait_completed(answer.body["session_id"], keys.acme)
        assert session["counts"] == {"delivered": 1}
        [message] = mail.to(address)
        assert message["Subject"] == "Secured"

        # The CLI's producer and consumer, with the worker's environment.
        via_kafka = f"cli-{uuid.uuid4().hex[:8]}@example.com"
        sent = cli(
            worker,
            "send",
            "--via-kafka",
            "--client",
            "acme",
            "--channel",
            "email",
            "--subject",
            "From the CLI",
            "-m",
            "Over TLS.",
            "--to",
            via_kafka,
        )
        assert sent.returncode == 0, sent.stderr
        statuses.wait(lambda r: r["recipient"] == via_kafka and r["status"] == "delivered")
        tailed = cli(
            worker,
            "tail",
            "--from-beginning",
            "--status",
            "delivered",
            "--json",
            "--count",
            "2",
            "--idle-timeout",
            "60",
        )
        assert tailed.returncode == 0, tailed.stderr
        assert address in tailed.stdout and via_kafka in tailed.stdout, tailed.stdout
        assert SCRAM_PASSWORD not in sent.stdout + sent.stderr + tailed.stdout + tailed.stderr
    finally:
        statuses.close()
        worker.stop()
    assert_no_password_logged(worker, SCRAM_PASSWORD)


def start_refused(worker: Worker) -> str:
    """Start a worker that must stop by itself; return its log."""
    with pytest.raises(AssertionError, match="worker did not start"):
        worker.start()
    assert worker.process is not None
    # 1 is the worker's own exit on a ConfigError; a hang would have ended in the harness's
    # SIGTERM (a negative code, or 0 after a clean stop).
    assert worker.process.returncode == 1, worker.log_tail()
    return worker.log_tail(200)


def test_a_wrong_password_stops_the_worker_at_start_naming_the_problem(
    make_secure_worker: Callable[[dict[str, str]], Worker], kafka_pki: KafkaPki
) -> None:
    wrong = "not-the-scram-password"
    worker = make_secure_worker(secure_env(kafka_pki, **{PASSWORD_VARIABLE: wrong}))
    log = start_refused(worker)
    assert "refused the SASL credentials of user 'switchboard'" in log, log
    assert f"the password in ${PASSWORD_VARIABLE}" in log, log
    assert_no_password_logged(worker, wrong)
    # The CLI's Kafka commands check the connection the same way.
    for command in (
        ("tail", "--count", "1"),
        ("clients", "apply", str(worker.clients_file)),
        ("send", "--via-kafka", "--client", "acme", "-m", "x", "--to", "a@example.com"),
    ):
        refused = cli(worker, *command)
        assert refused.returncode == 1, (command, refused.stdout, refused.stderr)
        assert "refused the SASL credentials" in refused.stderr, (command, refused.stderr)
        assert wrong not in refused.stdout + refused.stderr


def test_an_untrusted_certificate_stops_the_worker_at_start_naming_the_problem(
    make_secure_worker: Callable[[dict[str, str]], Worker], kafka_pki: KafkaPki
) -> None:
    env = secure_env(kafka_pki, SWITCHBOARD_KAFKA_SSL_CA_FILE=str(kafka_pki.untrusted_ca_file))
    worker = make_secure_worker(env)
    log = start_refused(worker)
    assert "TLS certificate is not trusted" in log, log
    assert "SWITCHBOARD_KAFKA_SSL_CA_FILE" in log, log
    assert_no_password_logged(worker, SCRAM_PASSWORD)


def test_mutual_tls_clients_connect_with_their_certificate_and_not_without(
    secure_kafka: LocalBroker, kafka_pki: KafkaPki
) -> None:
    settings = Settings.from_env(
        {},
        bootstrap_servers=secure_kafka.mtls_bootstrap_servers,
        kafka_security_protocol="SSL",
        kafka_ssl_ca_file=kafka_pki.ca_file,
        kafka_ssl_cert_file=kafka_pki.client_cert,
        kafka_ssl_key_file=kafka_pki.client_key,
    )
    check_kafka(settings, timeout=60)

    async def topics() -> set[str]:
        from aiokafka import AIOKafkaConsumer

        consumer = AIOKafkaConsumer(**aiokafka_connection(settings))
        await consumer.start()
        try:
            return set(await consumer.topics())
        finally:
            await consumer.stop()

    assert isinstance(asyncio.run(topics()), set)

    anonymous = Settings.from_env(
        {},
        bootstrap_servers=secure_kafka.mtls_bootstrap_servers,
        kafka_security_protocol="SSL",
        kafka_ssl_ca_file=kafka_pki.ca_file,
    )
    with pytest.raises(ConfigError, match="refused this client's TLS certificate") as refused:
        check_kafka(anonymous, timeout=60)
    assert secure_kafka.mtls_bootstrap_servers in str(refused.value)
