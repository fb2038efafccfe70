"""How long the worker's consumer lets the broker hold a fetch: 100 ms, not Faust's 1.5 s.

aiokafka keeps at most one fetch request in flight per broker. A request asks only for the
partitions with nothing buffered when it is sent, and the broker holds it until one of them has
a record or ``fetch_max_wait_ms`` has passed. Faust builds the worker's consumer with
``fetch_max_wait_ms=1500`` (faust-streaming 0.15.3, ``_create_worker_consumer``, not a setting).
So when a request goes out for idle partitions only (a quiet lane, the scheduler's topic, a
cancel topic), every busy partition whose buffered records the agents finish meanwhile waits
for that request to come back: up to 1.5 s with records ready on the broker, on every broker
and at every hop. With a single broker all of a worker's partitions share that one request.

Measured (``make bench``'s sandbox burst, three pairs, README "Benchmarks"): the wait took
2,006-2,555 deliveries/s to 3,659-3,889, and the time to the burst's last delivery from
3.9-5.0 s to 2.6-2.7 s; 20 ms measured the same as 100 ms. The cost of the shorter wait is an
idle worker's empty fetches: about ten a second per broker, a few hundred bytes each.

Failure mode: the wait is set on aiokafka's consumer before it starts, through an attribute
aiokafka reads when it builds its fetcher (``AIOKafkaConsumer._fetch_max_wait_ms``); if a
release renames it, :func:`shorten_fetch_wait` raises at the worker's start rather than
silently keep 1.5 s (``tests/unit/test_fetching.py`` holds it).
"""

from __future__ import annotations

from typing import Any, Final

from aiokafka import AIOKafkaConsumer
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

__all__ = ["FETCH_MAX_WAIT_MS", "ConsumerThread", "shorten_fetch_wait"]

#: Milliseconds the broker may hold a fetch of partitions with nothing new (see module docs).
FETCH_MAX_WAIT_MS: Final = 100


def shorten_fetch_wait(consumer: AIOKafkaConsumer) -> AIOKafkaConsumer:
    """``consumer`` (not started yet) with :data:`FETCH_MAX_WAIT_MS` as its fetch wait.

    Raises:
        RuntimeError: this aiokafka keeps the setting elsewhere (module docs).
    """
    if not isinstance(getattr(consumer, "_fetch_max_wait_ms", None), int):
        raise RuntimeError("aiokafka's consumer has no _fetch_max_wait_ms: see streams/fetching.py")
    consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read by start(), which builds the fetcher
    return consumer


class ConsumerThread(AIOKafkaConsumerThread):
    """Faust's consumer thread, whose aiokafka consumer waits at most :data:`FETCH_MAX_WAIT_MS`
    for a fetch of idle partitions."""

    def _create_worker_consumer(self, transport: Any) -> AIOKafkaConsumer:
        return shorten_fetch_wait(super()._create_worker_consumer(transport))
