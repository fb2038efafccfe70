"""Webhooks: every status event of a session with a ``webhookUrl``, POSTed there, signed.

1. :meth:`Switchboard.publish_status` turns each status event of such a session into a
   :class:`~switchboard.records.WebhookJob` on ``<prefix>.webhooks`` (keyed by session id). The
   body is encoded once (``switchboard/webhooks.py``), so every retry sends the same bytes under
   the same ``webhook-id``.
2. The webhook agent sends jobs with many requests in flight, acknowledging them in offset
   order (``streams/inflight.py``), through :class:`transports.webhook.WebhookSender`: https only
   (unless ``SWITCHBOARD_ALLOW_HTTP_WEBHOOKS``), no redirects, short timeouts, and no connection
   to a loopback, private, link-local, CGNAT or metadata address (unless
   ``SWITCHBOARD_ALLOW_PRIVATE_WEBHOOKS``), checked on the address actually connected to.
3. Signatures follow Standard Webhooks with the client's ``webhook_secret`` (and
   ``previous_webhook_secret`` during a rotation: two signatures). The timestamp is the
   attempt's, so headers are rebuilt for every attempt.
4. A retryable failure is retried through the durable scheduler, with exponential backoff and
   jitter, for up to a day since the first attempt; a crash loses no retry. A 410 stops, as
   does a URL that cannot be used.

Delivery is at least once: a receiver de-duplicates by ``webhook-id`` (the event id).
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from typing import TYPE_CHECKING, Any, cast

from faust import Stream

from streams.guard import hand_off, quarantine
from streams.inflight import run_overlapped
from switchboard import records
from switchboard.keys import webhook_timer
from switchboard.records import WebhookJob
from switchboard.webhooks import headers, next_delay
from transports.webhook import WebhookSender

if TYPE_CHECKING:
    from faust.types import EventT, StreamT

    from streams.app import Switchboard

__all__ = ["register"]

log = logging.getLogger(__name__)


def register(sb: Switchboard) -> None:
    sender = WebhookSender(
        allow_http=sb.settings.allow_http_webhooks, allow_private=sb.settings.allow_private_webhooks
    )

    async def webhooks(stream: StreamT[bytes]) -> None:
        await sb.clients.ready.wait()

        async def on_error(event: EventT[bytes], exc: Exception) -> None:
            await quarantine(sb, event, "webhooks", exc)

        async def on_fatal(exc: BaseException) -> None:
            log.critical("webhooks cannot record a failure; stopping the worker", exc_info=exc)
            await sb.app.crash(exc)

        await run_overlapped(
            cast(Stream[bytes], stream).noack().events(),
            lambda event: _deliver(sb, sender, event),
            max_in_flight=sb.settings.max_in_flight,
            drain_timeout=sb.settings.drain_timeout,
            on_error=on_error,
            on_fatal=on_fatal,
            rebalancing=lambda: bool(sb.app.rebalancing),
            hand_off=lambda event: hand_off(sb, sb.topics.webhooks, event),
        )

    sb.app.agent(sb.topics.webhooks, name="switchboard.webhooks")(webhooks)

    async def close_sender(sender_: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        await sender.aclose()

    sb.app.on_before_shutdown.connect(close_sender)


async def _deliver(sb: Switchboard, sender: WebhookSender, event: EventT[bytes]) -> None:
    job = records.decode(WebhookJob, event.value)
    client = sb.clients.get(job.client_id)
    secrets = (
        [s for s in (client.webhook_secret, client.previous_webhook_secret) if s] if client else []
    )
    if not secrets:
        log.error(
            "webhook not sent: the client has no webhook_secret", extra={"client_id": job.client_id}
        )
        sb.metrics.webhooks.labels("no-secret").inc()
        return
    body = job.body.encode()
    now = time.time()
    result = await sender.post(job.url, body, headers(secrets, job.event_id, int(now), body))
    sb.metrics.webhooks.labels(result.outcome).inc()
    if not result.retryable:
        if result.outcome != "delivered":
            log.warning(
                "webhook stopped",
                extra={
                    "session_id": job.session_id,
                    "outcome": result.outcome,
                    "status": result.status,
                    "error": result.error,
                },
            )
        return
    # Seeded by the event and attempt: a replayed job computes the same delay.
    rng = random.Random(f"{job.event_id}#{job.attempt}")  # noqa: S311 - jitter, not secrecy
    delay = next_delay(job.attempt, rng, result.retry_after, elapsed=now - job.first_at)
    if delay is None:
        log.warning(
            "webhook given up after a day of retries",
            extra={"session_id": job.session_id, "attempts": job.attempt},
        )
        sb.metrics.webhooks.labels("given-up").inc()
        return
    retry = dataclasses.replace(job, attempt=job.attempt + 1)
    await sb.schedule_at(
        webhook_timer(job.event_id, retry.attempt),
        now + delay * sb.settings.webhook_backoff_scale,
        sb.topics.webhooks,
        job.session_id.encode(),
        records.encode(retry),
    )
