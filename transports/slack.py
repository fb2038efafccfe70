"""Slack messages: ``chat.postMessage`` with a bot token, or an incoming webhook, via slack_sdk.

Channel options (``channels.slack`` of a client)::

    provider: slack
    token_env: ACME_SLACK_BOT_TOKEN   # the variable holding the bot token (xoxb-...); needed
                                      # for conversation addresses, not for webhook URLs
    timeout: 10                       # seconds per request
    base_url: https://slack.com/api/  # tests only: a local Web API stand-in
    webhook_base: http://127.0.0.1:8080   # tests only: replaces https://hooks.slack.com

The address picks the API. An incoming-webhook URL (``https://hooks.slack.com/...``) is posted to
with :class:`AsyncWebhookClient`; anything else (``C0123456789``, ``#general``, a user id) is a
conversation for ``chat.postMessage`` through :class:`AsyncWebClient`. A webhook URL is a
credential: it never appears in errors or logs.

The text is the body, under the subject in bold when there is one, with ``fileUrl`` as a link
after it. Extras: ``blocks`` (Block Kit; the text stays as the notification fallback),
``thread_ts`` (reply in a thread; Web API only), ``unfurl_links`` and ``unfurl_media``.

Guarantees and failure modes:

* Slack's acceptance is the posting itself, so a send is reported ``delivered``. The provider
  message id is ``<channel id>:<ts>`` for ``chat.postMessage`` (what ``chat.update`` and
  ``chat.delete`` need), and None for a webhook, which returns no id.
* ``ratelimited`` / 429 raise :class:`RetryableError` with ``Retry-After`` as ``retry_after``;
  5xx and Slack's transient errors (``internal_error``, ``fatal_error``,
  ``service_unavailable``, ``request_timeout``) are retryable too. Every other error
  (``channel_not_found``, ``not_in_channel``, ``is_archived``, ``invalid_auth``, a webhook's
  ``no_service``, ``channel_is_archived``, ``invalid_payload``, ...) raises
  :class:`PermanentError`, with Slack's error string as the code.
* A refused or dropped connection, or no answer within ``timeout``, raises
  :class:`RetryableError`; Slack may have posted the message, so it can appear twice.
* slack_sdk's own retry handlers are turned off: retrying is the dispatcher's decision, made
  once, with the client's retry policy, rather than hidden inside a send.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from switchboard.errors import ConfigError
from switchboard.retry import retry_after_seconds
from transports.base import OutboundMessage, SendResult, final_check
from transports.errors import PermanentError, RetryableError, TransportError

__all__ = [
    "SlackTransport",
    "build_payload",
    "classify_api_error",
    "classify_webhook_error",
    "is_webhook",
]

DEFAULT_BASE_URL: Final = "https://slack.com/api/"
WEBHOOK_HOST: Final = "hooks.slack.com"
#: The logger handed to slack_sdk. It writes a request's URL and body at DEBUG whenever its
#: logger's own level is NOTSET or DEBUG, whatever the root's; a webhook URL is a credential and
#: bodies are never logged, so this one stays at INFO.
_SDK_LOG: Final = logging.getLogger("transports.slack.sdk")
_SDK_LOG.setLevel(logging.INFO)
_TRANSIENT: Final = frozenset(
    {
        "ratelimited",
        "rate_limited",
        "internal_error",
        "fatal_error",
        "service_unavailable",
        "request_timeout",
    }
)


def is_webhook(address: str) -> bool:
    """Whether ``address`` is an incoming-webhook URL rather than a conversation."""
    parts = urlsplit(address)
    return parts.scheme == "https" and parts.hostname == WEBHOOK_HOST


def build_payload(message: OutboundMessage, *, webhook: bool) -> dict[str, Any]:
    """The JSON body for either API (without ``channel``). Pure; PermanentError for bad input."""
    lines = []
    if message.subject:
        lines.append(f"*{_escape(message.subject)}*")
    if message.body:
        lines.append(message.body)
    if message.file_url:
        lines.append(f"<{message.file_url}>")
    payload: dict[str, Any] = {}
    if lines:
        payload["text"] = "\n".join(lines)
    extras = message.extras
    blocks = extras.get("blocks")
    if blocks is not None:
        if not isinstance(blocks, list) or not all(isinstance(b, Mapping) for b in blocks):
            raise _bad_extra("blocks", "a list of Block Kit blocks")
        payload["blocks"] = [dict(b) for b in blocks]
    if not payload:
        raise PermanentError("a Slack message needs text or blocks", code="empty-message")
    for flag in ("unfurl_links", "unfurl_media"):
        if flag in extras:
            if not isinstance(extras[flag], bool):
                raise _bad_extra(flag, "true or false")
            payload[flag] = extras[flag]
    thread_ts = extras.get("thread_ts")
    if thread_ts is not None and not webhook:
        if not isinstance(thread_ts, str):
            raise _bad_extra("thread_ts", "a message ts, e.g. 1712345678.000100")
        payload["thread_ts"] = thread_ts
    return payload


def classify_api_error(status: int, error: str | None, retry_after: float | None) -> TransportError:
    """The error for a Web API answer that is not ``ok``."""
    code = error or f"http-{status}"
    text = f"Slack {code} (HTTP {status})"
    if code in _TRANSIENT or status == 429 or status >= 500:
        return RetryableError(text, code=code, retry_after=retry_after)
    return PermanentError(text, code=code)


def classify_webhook_error(status: int, body: str, retry_after: float | None) -> TransportError:
    """The error for a webhook answer other than ``200 ok``: Slack answers a bare error string."""
    word = body.strip()
    code = (
        word if word and len(word) <= 64 and word.replace("_", "").isalnum() else f"http-{status}"
    )
    text = f"Slack webhook {code} (HTTP {status})"
    if code in _TRANSIENT or status == 429 or status >= 500:
        return RetryableError(text, code=code, retry_after=retry_after)
    return PermanentError(text, code=code)


class SlackTransport:
    name = "slack"

    def __init__(self, options: Mapping[str, Any]) -> None:
        token_env = options.get("token_env")
        self._token = os.environ.get(str(token_env)) if token_env else None
        if token_env and not self._token:
            raise ConfigError(f"slack token_env names {token_env}, which is not set")
        self.base_url = str(options.get("base_url") or DEFAULT_BASE_URL)
        webhook_base = options.get("webhook_base")
        self.webhook_base = str(webhook_base).rstrip("/") if webhook_base else None
        self.timeout = float(options.get("timeout", 10))
        self._session: aiohttp.ClientSession | None = None
        self._web: AsyncWebClient | None = None

    def _ensure_session(self) -> aiohttp.ClientSession:
        # Built on first use: an aiohttp session belongs to the loop it was created in. Shared by
        # both APIs, so connections to Slack are reused; slack_sdk leaves a given session open.
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
            self._web = None
        return self._session

    async def send(self, message: OutboundMessage) -> SendResult:
        await final_check(message)
        if is_webhook(message.to):
            return await self._send_webhook(message)
        return await self._post_message(message)

    async def _post_message(self, message: OutboundMessage) -> SendResult:
        if not self._token:
            raise PermanentError(
                "slack needs token_env (a bot token) to post to a conversation", code="config"
            )
        payload = {"channel": message.to, **build_payload(message, webhook=False)}
        session = self._ensure_session()
        if self._web is None:
            self._web = AsyncWebClient(
                token=self._token,
                base_url=self.base_url,
                session=session,
                timeout=max(1, round(self.timeout)),  # unused: the session's timeout applies
                retry_handlers=[],
                logger=_SDK_LOG,
            )
        try:
            # api_call rather than chat_postMessage: the payload is already built, and the
            # helper warns when blocks come without text.
            response = await self._web.api_call("chat.postMessage", json=payload)
        except SlackApiError as exc:
            data = exc.response.data
            error = data.get("error") if isinstance(data, Mapping) else None
            retry_after = retry_after_seconds(exc.response.headers.get("Retry-After"))
            raise classify_api_error(
                exc.response.status_code, error if isinstance(error, str) else None, retry_after
            ) from None
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise _network_error(exc, self.timeout) from None
        channel, ts = response.get("channel"), response.get("ts")
        provider_id = f"{channel}:{ts}" if channel and ts else None
        return SendResult(provider_id, "delivered", {"channel": channel} if channel else {})

    async def _send_webhook(self, message: OutboundMessage) -> SendResult:
        payload = build_payload(message, webhook=True)
        url = message.to
        if self.webhook_base:
            parts = urlsplit(url)
            url = self.webhook_base + parts.path + (f"?{parts.query}" if parts.query else "")
        webhook = AsyncWebhookClient(
            url,
            session=self._ensure_session(),
            timeout=max(1, round(self.timeout)),
            retry_handlers=[],
            logger=_SDK_LOG,
        )
        try:
            response = await webhook.send_dict(payload)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise _network_error(exc, self.timeout) from None
        if response.status_code != 200:
            retry_after = retry_after_seconds(response.headers.get("Retry-After"))
            raise classify_webhook_error(response.status_code, response.body, retry_after)
        return SendResult(None, "delivered")

    async def aclose(self) -> None:
        session, self._session, self._web = self._session, None, None
        if session is not None:
            await session.close()


def _network_error(exc: BaseException, timeout: float) -> RetryableError:
    if isinstance(exc, TimeoutError):
        return RetryableError(f"Slack did not answer within {timeout:g}s", code="slack-timeout")
    return RetryableError(f"cannot reach Slack ({type(exc).__name__})", code="slack-connection")


def _escape(text: str) -> str:
    # Slack's mrkdwn reserves these three; the body is left alone (clients may use links).
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _bad_extra(name: str, expected: str) -> PermanentError:
    return PermanentError(f"extras.{name}: must be {expected}", code="bad-extras")
