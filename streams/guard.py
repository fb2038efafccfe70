"""The error policy of the serial agents: nothing is acknowledged silently.

Faust acknowledges an event whose processing raised, logs it, and moves on: the event is gone.
:func:`guarded` runs a handler so that an unexpected exception (a bug, a poison message) instead
puts the event's bytes on the rejected topic with the error, from where it can be inspected and
replayed; only then does the stream move on. If even that write fails, Kafka itself is failing:
the worker stops without acknowledging, and the partition's next owner retries the event.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from switchboard.errors import FieldError
from switchboard.wire import Headers, header_list

if TYPE_CHECKING:
    from faust.types import AppT, EventT, TopicT

    from streams.metrics import Metrics

__all__ = ["Rejecting", "guarded", "hand_off", "quarantine"]

log = logging.getLogger(__name__)


class Rejecting(Protocol):
    """What the error policy needs of the worker (``streams.app.Switchboard`` is one): its
    rejected topic, its producer, its metrics and the app it stops. Typed here, so that this
    module never depends on the shared object's module (which depends on it)."""

    @property
    def app(self) -> AppT: ...

    @property
    def metrics(self) -> Metrics: ...

    async def produce(
        self,
        topic: TopicT,
        *,
        key: bytes | None,
        value: bytes | None,
        headers: Headers | None = None,
        partition: int | None = None,
    ) -> Awaitable[Any]: ...

    async def reject(
        self,
        *,
        errors: list[FieldError],
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        headers: Headers,
        client_id: str | None = None,
    ) -> Awaitable[Any]: ...


async def guarded(
    sb: Rejecting,
    event: EventT[Any],
    stage: str,
    handler: Callable[[EventT[Any]], Awaitable[None]],
) -> bool:
    """Run ``handler(event)``; returns whether it failed (the event is then quarantined)."""
    try:
        await handler(event)
    except Exception as exc:  # noqa: BLE001 - see the module docstring
        await quarantine(sb, event, stage, exc)
        return True
    return False


async def quarantine(sb: Rejecting, event: EventT[Any], stage: str, exc: BaseException) -> None:
    """Put ``event`` on the rejected topic because ``stage`` failed on it with ``exc``."""
    msg = event.message
    log.exception(
        "%s failed on an event; it goes to the rejected topic",
        stage,
        exc_info=exc,
        extra={"topic": msg.topic, "partition": msg.partition, "offset": msg.offset},
    )
    sb.metrics.rejections.labels(f"internal:{stage}").inc()
    try:
        await sb.reject(
            errors=[FieldError("", f"internal error in {stage}: {type(exc).__name__}: {exc}")],
            topic=msg.topic,
            partition=msg.partition,
            offset=msg.offset,
            key=msg.key,
            value=msg.value,
            headers=header_list(msg.headers),
        )
    except BaseException as fatal:
        log.critical("cannot write to the rejected topic; stopping the worker", exc_info=fatal)
        await sb.app.crash(fatal)
        raise


async def hand_off(sb: Rejecting, topic: Any, event: EventT[Any]) -> None:
    """Put a copy of ``event`` back at the end of its partition (the partition's next owner
    processes it), and wait until the broker has it: the original may then be acknowledged
    unfinished (``streams/inflight.py``)."""
    msg = event.message
    log.warning(
        "unfinished at a rebalance; handed off to the partition's next owner",
        extra={"topic": msg.topic, "partition": msg.partition, "offset": msg.offset},
    )
    future = await sb.produce(
        topic,
        key=msg.key,
        value=msg.value,
        headers=header_list(msg.headers),
        partition=msg.partition,
    )
    await future
