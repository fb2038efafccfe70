"""A local Slack: the Web API's ``chat.postMessage`` and incoming webhooks, as an aiohttp app.

* ``POST /api/chat.postMessage`` (JSON or form): ``Authorization: Bearer <bot token>`` must be
  one of :attr:`FakeSlackServer.bot_tokens` (else ``not_authed`` / ``invalid_auth``, with HTTP
  200 as Slack does); the message needs ``channel`` and ``text`` or ``blocks``. Answers
  ``{"ok": true, "channel": <id>, "ts": <ts>, "message": {...}}`` or ``{"ok": false, "error"}``;
  ``ratelimited`` comes with HTTP 429 and ``Retry-After``. ``#name`` addresses resolve to ids.
* ``POST /services/...``: an incoming webhook. Answers ``200 ok``, or Slack's bare error
  strings with their statuses (``invalid_payload`` 400, ``action_prohibited`` 403,
  ``no_service`` 404, ``channel_is_archived`` 410, ``rollup_error`` 500, 429 with Retry-After).

Tests script replies per channel or per webhook path (:meth:`FakeSlackServer.script`): an error,
a delay, ``Retry-After``, or dropping the connection. Requests are recorded.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes.local_http import serve, take_scripted

__all__ = ["WEBHOOK_STATUS", "FakeSlackServer", "SlackReply"]

#: Incoming-webhook error string -> HTTP status, as Slack answers them.
WEBHOOK_STATUS: dict[str, int] = {
    "invalid_payload": 400,
    "no_text": 400,
    "too_many_attachments": 400,
    "user_not_found": 400,
    "action_prohibited": 403,
    "posting_to_general_channel_denied": 403,
    "invalid_token": 403,
    "channel_not_found": 404,
    "no_service": 404,
    "no_service_id": 404,
    "channel_is_archived": 410,
    "rate_limited": 429,
    "rollup_error": 500,
}


@dataclass
class SlackReply:
    """How to answer a scripted channel or webhook path. ``times=None``: every request."""

    error: str | None = None
    status: int | None = None  # default: Web API 200 (429 for ratelimited); webhooks per error
    delay: float = 0.0
    retry_after: str | None = None
    drop: bool = False  # close the connection instead of answering
    times: int | None = None


@dataclass
class FakeSlackServer:
    bot_tokens: set[str] = field(default_factory=lambda: {"xoxb-test-token"})
    posts: list[dict[str, Any]] = field(default_factory=list)  # chat.postMessage bodies
    webhooks: list[dict[str, Any]] = field(default_factory=list)  # {"path", "body"}
    url: str = ""
    _scripts: dict[str, list[SlackReply]] = field(default_factory=dict)
    _runner: web.AppRunner | None = None
    _ts: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/"

    async def __aenter__(self) -> FakeSlackServer:
        app = web.Application()
        app.router.add_post("/api/chat.postMessage", self._post_message)
        app.router.add_post("/services/{path:.+}", self._webhook)
        self._runner, self.url = await serve(app)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    def script(self, key: str, reply: SlackReply) -> None:
        """Answer posts to channel ``key`` (or webhook path ``/services/...``) with ``reply``."""
        self._scripts.setdefault(key, []).append(reply)

    def _reply_for(self, key: str) -> SlackReply | None:
        return take_scripted(self._scripts, key)

    async def _post_message(self, request: web.Request) -> web.StreamResponse:
        if request.content_type == "application/json":
            body: dict[str, Any] = await request.json()
        else:
            body = dict(await request.post())
        self.posts.append(body)
        authorization = request.headers.get("Authorization", "")
        if not authorization:
            return _api_error("not_authed")
        if authorization.removeprefix("Bearer ") not in self.bot_tokens:
            return _api_error("invalid_auth")
        channel = body.get("channel")
        if not channel:
            return _api_error("channel_not_found")
        if not body.get("text") and not body.get("blocks"):
            return _api_error("no_text")
        scripted = await self._scripted(request, channel, _api_reply)
        if scripted is not None:
            return scripted
        channel_id = _channel_id(channel)
        ts = f"{int(time.time())}.{next(self._ts):06d}"
        message = {"type": "message", "text": body.get("text", ""), "user": "U0FAKEBOT", "ts": ts}
        if body.get("blocks"):
            message["blocks"] = body["blocks"]
        return web.json_response({"ok": True, "channel": channel_id, "ts": ts, "message": message})

    async def _webhook(self, request: web.Request) -> web.StreamResponse:
        text = await request.text()
        try:
            body = json.loads(text)
        except ValueError:
            body = None
        self.webhooks.append({"path": request.path, "body": body})
        if not isinstance(body, dict):
            return _webhook_error("invalid_payload")
        if not body.get("text") and not body.get("blocks"):
            return _webhook_error("no_text")
        scripted = await self._scripted(request, request.path, _webhook_reply)
        if scripted is not None:
            return scripted
        return web.Response(text="ok", content_type="text/html")

    async def _scripted(
        self, request: web.Request, key: str, error: Callable[[SlackReply], web.Response]
    ) -> web.StreamResponse | None:
        """The scripted answer for ``key``, if any (None: answer normally, maybe after a delay)."""
        reply = self._reply_for(key)
        if reply is None:
            return None
        if reply.drop:
            assert request.transport is not None
            request.transport.close()
            return web.Response()  # never written: the connection is gone
        if reply.delay:
            await asyncio.sleep(reply.delay)
        if reply.error is not None:
            return error(reply)
        if reply.status is not None:
            # A bare status without Slack's body: what a load balancer in front would send.
            return web.Response(
                status=reply.status, text="upstream error", content_type="text/html"
            )
        return None


def _channel_id(channel: str) -> str:
    if channel.startswith("#"):
        return "C" + hashlib.sha256(channel.encode()).hexdigest()[:10].upper()
    return channel


def _api_reply(reply: SlackReply) -> web.Response:
    status = reply.status or (429 if reply.error == "ratelimited" else 200)
    return _api_error(reply.error or "", status, reply.retry_after)


def _webhook_reply(reply: SlackReply) -> web.Response:
    return _webhook_error(reply.error or "", reply.status, reply.retry_after)


def _api_error(error: str, status: int = 200, retry_after: str | None = None) -> web.Response:
    headers = {"Retry-After": retry_after} if retry_after else None
    return web.json_response({"ok": False, "error": error}, status=status, headers=headers)


def _webhook_error(
    error: str, status: int | None = None, retry_after: str | None = None
) -> web.Response:
    headers = {"Retry-After": retry_after} if retry_after else None
    return web.Response(
        status=status or WEBHOOK_STATUS.get(error, 400),
        text=error,
        headers=headers,
        content_type="text/html",
    )
