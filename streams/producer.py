"""Faust's producer, with a flush that keeps its promise: offsets are committed only after it.

Faust commits an offset after ``producer.flush()``, so that whatever the processed events wrote
is in Kafka first. Two things break that promise in faust-streaming 0.15:

* Table writes go through a buffer (:class:`faust.transport.producer.ProducerBuffer`) that a
  background task hands to aiokafka one record at a time. Its ``flush`` gives up as soon as
  one record takes more than 0.1 s to be handed over (aiokafka's accumulator is full, the
  broker is slow), and returns with records still waiting; and a record being handed over is
  neither in the buffer nor in aiokafka. The commit then goes ahead without them.
* A record the broker refuses (after aiokafka's retries) only sets its future's exception,
  which nobody awaits: the offsets of the events that wrote it are committed all the same.

:class:`DurableProducer` fixes both: its flush waits until the buffer is empty *and* nothing is
being handed over, then flushes aiokafka; and the first refused record makes every later flush
raise (so no offset is committed again) and stops the worker. The partition's next owner
processes the events again from the last offset committed before the failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import faust
from faust.transport.drivers.aiokafka import Producer
from faust.transport.producer import ProducerBuffer
from faust.types import ProducerT

__all__ = ["DurableProducer", "ProducerFailed", "SwitchboardApp"]

log = logging.getLogger(__name__)


class ProducerFailed(RuntimeError):
    """The broker refused a record: nothing may be committed any more."""


class _DurableBuffer(ProducerBuffer):
    """The table-write buffer, counting the record being handed to aiokafka."""

    handing_over: int = 0

    async def _send_pending(self, fut: Any) -> None:
        self.handing_over += 1
        try:
            await super()._send_pending(fut)
        finally:
            self.handing_over -= 1

    async def flush(self) -> None:
        """Wait until every buffered record is with aiokafka (however long that takes)."""
        while self.size or self.handing_over:
            if self.state != "running":
                raise ProducerFailed(
                    f"the producer stopped with {self.size + self.handing_over} table writes "
                    "not yet sent"
                )
            self.message_sent.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.message_sent.wait(), timeout=1.0)


class DurableProducer(Producer):
    """The aiokafka producer of Faust, whose flush means every record is acknowledged."""

    failure: BaseException | None = None
    _crashing: asyncio.Future[None] | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        buffer = _DurableBuffer(loop=self.loop, beacon=self.beacon)
        buffer.app = self.app
        self.buffer = buffer

    async def send(self, *args: Any, **kwargs: Any) -> Any:
        future: asyncio.Future[Any] = await super().send(*args, **kwargs)  # type: ignore[assignment]
        future.add_done_callback(self._sent)
        return future

    def _sent(self, future: asyncio.Future[Any]) -> None:
        error = None if future.cancelled() else future.exception()
        if error is None or self.failure is not None:
            return
        self.failure = error
        log.critical("the broker refused a record; stopping the worker without committing",
                     exc_info=error)  # fmt: skip
        self._crashing = asyncio.ensure_future(self.app.crash(error))

    async def flush(self) -> None:
        await super().flush()
        if self.failure is not None:
            raise ProducerFailed("a record was refused by the broker") from self.failure


class SwitchboardApp(faust.App):
    """Faust's app with the :class:`DurableProducer`."""

    def _new_producer(self) -> ProducerT:
        return DurableProducer(self.transport, loop=self.loop, beacon=self.beacon)
