"""A local webhook receiver: verifies Standard Webhooks signatures and records every delivery.

Every ``POST`` (any path) is verified with the official library,
``standardwebhooks.Webhook(secret).verify(body, headers)``, against each of the receiver's
secrets (a receiver mid-rotation may know the old secret or the new one), and recorded as a
:class:`ReceivedWebhook` in :attr:`WebhookReceiver.requests`, in arrival order. A delivery that
does not verify is answered ``401`` (as a careful receiver does) unless a script says otherwise.

Answers are scriptable per path (:meth:`WebhookReceiver.script`), in order; when a path's
script is used up it answers ``204``::

    receiver.script("/flaky", Reply.fail(2))            # 500, 500, then 204
    receiver.script("/gone", Reply.gone())              # 410 forever
    receiver.script("/slow", Reply.slow(5.0))           # answers 204 after 5 s
    receiver.script("/moved", Reply.redirect("/new"))   # 308 Location: /new, forever
    receiver.script("/busy", Reply(status=429, retry_after="7", times=1))

It runs in a test's loop (``async with WebhookReceiver(secret) as receiver``) or, for
synchronous tests, in a thread of its own::

    with BackgroundServer(lambda: WebhookReceiver(secret)) as receiver:
        receiver.script("/hook", Reply.fail(2))
        ... receiver.url + "/hook" ...
        receiver.wait_records(lambda r: r.verified, count=3)

It listens on 127.0.0.1, over HTTP, or HTTPS with ``ssl_context`` (see ``tests.fakes.tls``).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from tests.fakes.local_http import serve, take_scripted

__all__ = ["ReceivedWebhook", "Reply", "WebhookReceiver"]


@dataclass
class Reply:
    """One scripted answer, given ``times`` times (``None``: forever)."""

    status: int = 204
    delay: float = 0.0
    location: str | None = None
    retry_after: str | None = None
    drop: bool = False  # close the connection instead of answering
    times: int | None = 1

    @classmethod
    def fail(cls, times: int, status: int = 500) -> Reply:
        return cls(status=status, times=times)

    @classmethod
    def gone(cls) -> Reply:
        return cls(status=410, times=None)

    @classmethod
    def slow(cls, seconds: float, times: int | None = None) -> Reply:
        return cls(delay=seconds, times=times)

    @classmethod
    def redirect(cls, location: str, status: int = 308) -> Reply:
        return cls(status=status, location=location, times=None)


@dataclass(frozen=True)
class ReceivedWebhook:
    """One delivery as received: ``payload`` is the parsed body when it verified."""

    path: str
    headers: dict[str, str]
    body: bytes
    verified: bool
    payload: Any
    error: str | None
    status: int | None  # what was answered; None when the connection was dropped or timed out

    @property
    def webhook_id(self) -> str | None:
        return self.headers.get("webhook-id")


@dataclass
class WebhookReceiver:
    secrets: Sequence[str] | str
    ssl_context: ssl.SSLContext | None = None
    requests: list[ReceivedWebhook] = field(default_factory=list)
    url: str = ""
    _scripts: dict[str, list[Reply]] = field(default_factory=dict)
    _runner: web.AppRunner | None = None

    def __post_init__(self) -> None:
        if isinstance(self.secrets, str):
            self.secrets = (self.secrets,)
        # Built once: each Webhook decodes its secret.
        self._verifiers = [Webhook(secret) for secret in self.secrets]

    async def __aenter__(self) -> WebhookReceiver:
        app = web.Application()
        app.router.add_post("/{path:.*}", self._receive)
        self._runner, self.url = await serve(app, self.ssl_context)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def script(self, path: str, *replies: Reply) -> None:
        """Answer posts to ``path`` with ``replies``, in order, after any already scripted."""
        self._scripts.setdefault(path, []).extend(replies)

    def received(self, path: str | None = None) -> list[ReceivedWebhook]:
        """The deliveries to ``path`` (all of them when None)."""
        return [r for r in self.requests if path is None or r.path == path]

    def _next_reply(self, path: str) -> Reply | None:
        return take_scripted(self._scripts, path)

    def _verify(self, body: bytes, headers: dict[str, str]) -> tuple[Any, str | None]:
        error = "no secret"
        for verifier in self._verifiers:
            try:
                return verifier.verify(body, headers), None
            except WebhookVerificationError as exc:
                error = str(exc)
            except ValueError as exc:  # a malformed signature list or a body that is not JSON
                error = f"{type(exc).__name__}: {exc}"
        return None, error

    async def _receive(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        payload, error = self._verify(body, headers)
        reply = self._next_reply(request.path)
        status: int | None = None

        def record() -> None:
            self.requests.append(
                ReceivedWebhook(
                    path=request.path,
                    headers=headers,
                    body=body,
                    verified=error is None,
                    payload=payload,
                    error=error,
                    status=status,
                )
            )

        try:
            if reply is None:
                status = 204 if error is None else 401
                return web.Response(status=status)
            if reply.delay:
                await asyncio.sleep(reply.delay)
            if reply.drop:
                assert request.transport is not None
                request.transport.close()
                return web.Response(status=204)  # never sent: the transport is closed
            response_headers = {}
            if reply.location is not None:
                response_headers["Location"] = reply.location
            if reply.retry_after is not None:
                response_headers["Retry-After"] = reply.retry_after
            status = reply.status
            return web.Response(status=status, headers=response_headers)
        finally:
            # Recorded also when the sender gave up waiting (the handler is cancelled then):
            # a test of a timeout wants to see the delivery arrived.
            record()
