"""Shared fixtures: one real Kafka broker per test session, started only if a test needs it.

The broker is the project's own :class:`switchboard.kafka.local.LocalBroker` (Maven Central jars,
KRaft, loopback, free ports); its jar cache is the repository's ``.cache/kafka``, so only the
first run on a machine downloads anything.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from switchboard.kafka.local import KafkaDistribution, LocalBroker

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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Every test that uses the broker is marked, so `make unit` can leave them out.
    for item in items:
        if "kafka" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.kafka)
