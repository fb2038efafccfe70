"""The worker consumer's fetch wait (streams/fetching.py): 100 ms, not Faust's 1.5 s, on the
consumer aiokafka actually builds its fetcher from."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer

from streams import compose
from streams.fetching import FETCH_MAX_WAIT_MS, ConsumerThread, shorten_fetch_wait
from switchboard.settings import Settings


async def test_the_workers_consumer_waits_at_most_100_ms_for_a_fetch(tmp_path: Path) -> None:
    sb = compose.build(Settings(data_dir=tmp_path))
    thread = sb.app.consumer._thread  # type: ignore[attr-defined]
    assert isinstance(thread, ConsumerThread)
    consumer = thread._create_worker_consumer(sb.app.transport)
    assert consumer._fetch_max_wait_ms == FETCH_MAX_WAIT_MS == 100  # Faust passes 1500
    await consumer.stop()


def test_aiokafka_builds_its_fetcher_from_the_attribute_that_is_set() -> None:
    # The private contract streams/fetching.py relies on: start() hands this attribute to the
    # Fetcher. A release that reads the wait from elsewhere fails here, not in production.
    assert "fetch_max_wait_ms=self._fetch_max_wait_ms" in inspect.getsource(AIOKafkaConsumer.start)


def test_an_aiokafka_without_the_attribute_stops_the_worker_at_start() -> None:
    class Renamed:
        pass

    with pytest.raises(RuntimeError, match="_fetch_max_wait_ms"):
        shorten_fetch_wait(Renamed())
