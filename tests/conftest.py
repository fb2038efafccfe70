"""Shared fixtures: one real Kafka broker per test session, started only if a test needs it.

The broker is the project's own :class:`cli.kafka.local.LocalBroker` (Maven Central jars,
KRaft, loopback, free ports); its jar cache is the repository's ``.cache/kafka``, so only the
first run on a machine downloads anything. A second broker with a SASL_SSL listener
(``secure_kafka``) is started only for the tests of secured connections.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cli.kafka.local import KafkaDistribution, LocalBroker, SecureListener

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    """A running single-node broker; its bootstrap servers are ``kafka.bootstrap_servers``."""
    broker = LocalBroker(
        tmp_path_factory.mktemp("kafka"),
        distribution=KafkaDistribution(cache_dir=ROOT / ".cache" / "kafka"),
        port=0,
    )
    broker.start(timeout=120)
    try:
        yield broker
    finally:
        broker.stop()


@dataclass(frozen=True)
class KafkaPki:
    """Certificates for a TLS broker, made by ``trustme``: the CA that signed the broker's
    certificate (``ca_file``), another CA that did not (``untrusted_ca_file``), the broker's PEM
    keystore, and a client certificate signed by the CA (mutual TLS)."""

    ca_file: Path
    untrusted_ca_file: Path
    keystore: Path
    client_cert: Path
    client_key: Path


#: The SCRAM-SHA-512 user of ``secure_kafka``, and the password it was created with.
SCRAM_USER = "switchboard"
SCRAM_PASSWORD = "s3cret-scram-password-e2e"  # a throwaway test credential


@pytest.fixture(scope="session")
def kafka_pki(tmp_path_factory: pytest.TempPathFactory) -> KafkaPki:
    import trustme
    from cryptography.hazmat.primitives import serialization

    where = tmp_path_factory.mktemp("pki")
    ca, other = trustme.CA(), trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    # Kafka's PEM keystore reads PKCS#8 keys only; trustme writes EC keys in SEC1 form.
    key = serialization.load_pem_private_key(server.private_key_pem.bytes(), None)
    pkcs8 = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    keystore = where / "broker-keystore.pem"
    keystore.write_bytes(pkcs8 + b"".join(blob.bytes() for blob in server.cert_chain_pems))
    client = ca.issue_cert("switchboard-client")
    pki = KafkaPki(
        where / "ca.pem",
        where / "untrusted-ca.pem",
        keystore,
        where / "client.pem",
        where / "client-key.pem",
    )
    ca.cert_pem.write_to_path(str(pki.ca_file))
    other.cert_pem.write_to_path(str(pki.untrusted_ca_file))
    client.cert_chain_pems[0].write_to_path(str(pki.client_cert))
    client.private_key_pem.write_to_path(str(pki.client_key))
    return pki


@pytest.fixture(scope="session")
def secure_kafka(
    tmp_path_factory: pytest.TempPathFactory, kafka_pki: KafkaPki
) -> Iterator[LocalBroker]:
    """A second broker with a SASL_SSL listener (SCRAM-SHA-512 user :data:`SCRAM_USER`) at
    ``secure_bootstrap_servers``, and a mutual-TLS listener (client certificates signed by
    ``kafka_pki``'s CA) at ``mtls_bootstrap_servers``; its PLAINTEXT listener is for the tests'
    own readers."""
    broker = LocalBroker(
        tmp_path_factory.mktemp("secure-kafka"),
        distribution=KafkaDistribution(cache_dir=ROOT / ".cache" / "kafka"),
        port=0,
        secure=SecureListener(
            kafka_pki.keystore, {SCRAM_USER: SCRAM_PASSWORD}, client_ca=kafka_pki.ca_file
        ),
    )
    broker.start(timeout=120)
    try:
        yield broker
    finally:
        broker.stop()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Every test that uses a broker is marked, so `make unit` can leave them out.
    for item in items:
        if {"kafka", "secure_kafka"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.kafka)
