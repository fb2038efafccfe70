"""The status topic, live, for the web console's open pages (README: "The console").

One :class:`StatusFeed` per worker. It reads ``<prefix>.status`` only while at least one
console stream is open:

1. the first :meth:`StatusFeed.subscribe` starts a consumer that joins no group (it is assigned
   every partition, commits nothing, and so never disturbs the workers' group), positioned at
   the end offsets read at that moment: a page sees what happens from when it opened (it reads
   the present state from the API);
2. each record's session is looked up in a small cache of session -> client; a record is decoded
   only when its client has a stream open (or when its session is not in the cache yet), so the
   events of other clients' campaigns cost a dictionary lookup each;
3. a decoded event is folded into the :class:`~switchboard.console.Activity` of every stream of
   its client that :func:`~switchboard.console.visible` allows, and the stream is woken;
4. the last :meth:`Subscription.close` stops the consumer. No page open: no consumer, no fetch,
   no cost.

It never blocks the worker's agents: the consumer is aiokafka's, in the event loop, and the loop
yields after every batch of at most :data:`BATCH` records. A slow or stalled browser costs
memory bounded by its Activity (counts per session and :data:`~switchboard.console.RECENT`
events), never a queue of events.

Failure modes: the consumer failing (the broker unreachable) is logged and retried after a
second while streams are open; the streams stay open and resume. An event the feed cannot
decode is counted in the log and skipped (``switchboard tail`` shows it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any, Final

from streams.replica import _partitions
from switchboard.console import Activity, visible
from switchboard.errors import DecodeFailed
from switchboard.settings import Settings
from switchboard.status_avro import decode_status

__all__ = ["StatusFeed", "Subscription"]

log = logging.getLogger(__name__)

#: Records handled before the feed yields to the event loop.
BATCH: Final = 500
#: Sessions whose client is remembered (cleared when full: a miss costs one decode).
CACHE: Final = 50_000


@dataclass(eq=False)
class Subscription:
    """One open console stream: a client's, optionally narrowed to one session."""

    client_id: str
    session_id: str | None = None
    activity: Activity = field(default_factory=Activity)
    woken: asyncio.Event = field(default_factory=asyncio.Event)
    _feed: StatusFeed | None = None

    def offer(self, event: dict[str, Any]) -> None:
        if visible(event, self.client_id, self.session_id):
            self.activity.add(event)
            self.woken.set()

    async def next_update(self, wait: float) -> dict[str, Any] | None:
        """The events since the last call, folded; None when none came within ``wait`` seconds."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.woken.wait(), wait)
        self.woken.clear()
        return self.activity.drain()

    def close(self) -> None:
        if self._feed is not None:
            self._feed.unsubscribe(self)
            self._feed = None


class StatusFeed:
    """See the module docs. ``ready`` is set once the consumer is positioned (a stream waits
    for it before it says hello, so nothing that happens after the hello is missed)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topic = settings.topic("status")
        self._subscriptions: set[Subscription] = set()
        self._clients: dict[str, int] = {}  # client id -> open streams
        self._session_client: dict[bytes, str] = {}
        self._task: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()
        self.undecodable = 0

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def subscribe(self, client_id: str, session_id: str | None = None) -> Subscription:
        sub = Subscription(client_id, session_id, _feed=self)
        self._subscriptions.add(sub)
        self._clients[client_id] = self._clients.get(client_id, 0) + 1
        if not self.running:
            self.ready.clear()
            self._task = asyncio.ensure_future(self._run())
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        if sub not in self._subscriptions:
            return
        self._subscriptions.discard(sub)
        left = self._clients.get(sub.client_id, 0) - 1
        if left > 0:
            self._clients[sub.client_id] = left
        else:
            self._clients.pop(sub.client_id, None)
        if not self._subscriptions:
            self.stop()

    def stop(self) -> None:
        """Stop the consumer (the last stream closed, or the worker stops: the streams still
        open are woken, to see that the worker stops and end)."""
        for sub in self._subscriptions:
            sub.woken.set()
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self.ready.clear()

    async def _run(self) -> None:
        while self._subscriptions:
            try:
                await self._follow()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the broker away: retry while pages are open
                log.warning(
                    "console feed: status topic unreadable; retrying",
                    extra={"error": type(exc).__name__},
                )
                await asyncio.sleep(1.0)

    async def _follow(self) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        from streams.kafka_security import aiokafka_connection

        consumer = AIOKafkaConsumer(
            **aiokafka_connection(self.settings),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="latest",
        )
        await consumer.start()
        try:
            partitions = await _partitions(consumer, self.topic)
            tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
            consumer.assign(tps)
            # Explicit positions, read now: "latest" would be resolved lazily, after the hello.
            for tp, end in (await consumer.end_offsets(tps)).items():
                consumer.seek(tp, end)
            self.ready.set()
            log.info(
                "console feed started",
                extra={"topic": self.topic, "streams": len(self._subscriptions)},
            )
            while True:
                batches = await consumer.getmany(timeout_ms=1000, max_records=BATCH)
                for batch in batches.values():
                    for message in batch:
                        self._handle(message.key, message.value, message.headers)
                await asyncio.sleep(0)  # let the agents run between batches
        finally:
            self.ready.clear()
            await consumer.stop()
            log.info("console feed stopped", extra={"topic": self.topic})

    def _handle(self, key: bytes | None, value: bytes | None, headers: Any) -> None:
        client = self._session_client.get(key) if key is not None else None
        if client is not None and client not in self._clients:
            return  # nobody of this client is watching: not even decoded
        try:
            event = decode_status(value, headers)
        except DecodeFailed:
            self.undecodable += 1
            return
        client_id = str(event.get("client_id") or "")
        if key is not None:
            if len(self._session_client) >= CACHE:
                self._session_client.clear()
            self._session_client[key] = client_id
        if client_id not in self._clients:
            return
        for sub in list(self._subscriptions):
            sub.offer(event)
