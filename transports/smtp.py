"""Email over SMTP with aiosmtplib, through a small pool of reused connections.

Channel options (``channels.email`` of a client)::

    provider: smtp
    from: "Acme <noreply@acme.example>"     # required
    host: smtp.example.com                   # default localhost
    port: 587                                # default: 465 with tls, 587 with starttls, else 25
    security: starttls | tls | none          # default starttls
    username: apikey                         # optional
    password_env: ACME_SMTP_PASSWORD         # the variable holding the password, never the password
    max_connections: 4                       # connections kept open and used in parallel
    timeout: 30                              # seconds per SMTP command

A message has a plain-text part (``transport.message``), an HTML alternative when
``extras.html`` is given, ``Reply-To`` from ``extras.reply_to``, extra headers from
``extras.headers``, and ``fileUrl`` as a link after the text. Bulk email (not
``options.transactional``) carries ``List-Unsubscribe`` and ``List-Unsubscribe-Post:
List-Unsubscribe=One-Click`` (RFC 8058) when the dispatcher gives it an unsubscribe URL,
unless the client set its own ``List-Unsubscribe`` in ``extras.headers``: the client's then wins
and Switchboard adds neither header (a message with two would leave the mail client to pick one;
a client with its own unsubscribe system keeps it working).

Errors: 4xx replies, timeouts and dropped connections are retryable; 5xx replies are permanent.
The relay's 250 for the message is reported as ``delivered`` (SMTP tells no more), with the
``Message-ID`` as the provider message id.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import Mapping
from email.message import EmailMessage
from email.policy import Policy
from email.utils import formatdate, make_msgid, parseaddr
from typing import Any, Final, TypeVar

import aiosmtplib

from switchboard import unsubscribe
from switchboard.errors import ConfigError
from transports.base import OutboundMessage, SendResult, final_check
from transports.errors import PermanentError, RetryableError, TransportError

__all__ = ["SmtpTransport", "build_email"]

_RESERVED_HEADERS: Final = frozenset(
    {
        "from",
        "to",
        "cc",
        "bcc",
        "subject",
        "date",
        "message-id",
        "content-type",
        "content-transfer-encoding",
        "mime-version",
        "reply-to",
        "x-switchboard-reference",
    }
)
_HEADER_NAME: Final = re.compile(r"[!-9;-~]+")  # RFC 5322 ftext
_N = TypeVar("_N", int, float)


def build_email(message: OutboundMessage, sender: str) -> EmailMessage:
    """The MIME message for one recipient. Pure; raises PermanentError for unusable extras."""
    email = EmailMessage()
    email["From"] = sender
    email["To"] = message.to
    email["Subject"] = message.subject or ""
    email["Date"] = formatdate(localtime=False, usegmt=True)
    domain = parseaddr(sender)[1].rpartition("@")[2] or None
    email["Message-ID"] = make_msgid(domain=domain)
    if message.reference:
        email["X-Switchboard-Reference"] = message.reference
    reply_to = message.extras.get("reply_to")
    if isinstance(reply_to, str) and reply_to:
        email["Reply-To"] = reply_to
    headers = message.extras.get("headers")
    own = isinstance(headers, Mapping) and any(
        isinstance(name, str) and name.lower() == "list-unsubscribe" for name in headers
    )
    ours = (
        unsubscribe.headers(message.unsubscribe_url) if message.unsubscribe_url and not own else {}
    )
    reserved = _RESERVED_HEADERS | {name.lower() for name in ours}
    if isinstance(headers, Mapping):
        for name, value in headers.items():
            if (
                not (isinstance(name, str) and _HEADER_NAME.fullmatch(name))
                or name.lower() in reserved
            ):
                raise PermanentError(f"extras.headers: {name!r} cannot be set", code="bad-header")
            if not isinstance(value, str) or "\r" in value or "\n" in value:
                raise PermanentError(
                    f"extras.headers.{name}: must be one line of text", code="bad-header"
                )
            email[name] = value
    for name, value in ours.items():
        email[name] = _OneLine(name, value)
    text = message.body or ""
    if message.file_url:
        text = f"{text}\n\n{message.file_url}\n" if text else message.file_url
    email.set_content(text)
    html = message.extras.get("html")
    if isinstance(html, str) and html:
        email.add_alternative(html, subtype="html")
    return email


class _OneLine(str):
    """A header sent on one line as given, never folded.

    The email package folds a header longer than 78 characters at its spaces, and a value with
    none (a URL) it turns into RFC 2047 encoded words, which no mail client reads as a
    ``List-Unsubscribe`` URL. The policy hands a header value that has a ``name`` to its own
    ``fold``; this one writes the line whole. RFC 5322 allows 998 characters a line, and an
    unsubscribe line is well within it (a token is a few hundred characters)."""

    name: str

    def __new__(cls, name: str, value: str) -> _OneLine:
        line = super().__new__(cls, value)
        line.name = name
        return line

    def fold(self, *, policy: Policy) -> str:
        return f"{self.name}: {self}{policy.linesep}"


class SmtpTransport:
    name = "smtp"

    def __init__(self, options: Mapping[str, Any]) -> None:
        sender = options.get("from")
        if not isinstance(sender, str) or "@" not in sender:
            raise ConfigError('email over smtp needs `from`, e.g. "Acme <noreply@acme.example>"')
        self.sender = sender
        self.host = str(options.get("host", "localhost"))
        self.security = str(options.get("security", "starttls"))
        if self.security not in ("starttls", "tls", "none"):
            raise ConfigError("smtp `security` must be starttls, tls or none")
        default_port = {"tls": 465, "starttls": 587, "none": 25}[self.security]
        self.port = _number(options, "port", default_port, int)
        self.username = options.get("username")
        password_env = options.get("password_env")
        self._password = os.environ.get(str(password_env)) if password_env else None
        if password_env and self._password is None:
            raise ConfigError(f"smtp password_env names {password_env}, which is not set")
        self.timeout = _number(options, "timeout", 30.0, float)
        self._slots = asyncio.Semaphore(_number(options, "max_connections", 4, int))
        self._idle: list[aiosmtplib.SMTP] = []

    async def send(self, message: OutboundMessage) -> SendResult:
        email = build_email(message, self.sender)
        async with self._slots:
            await final_check(message)  # after the wait for a connection
            for first_try in (True, False):
                pooled = first_try and bool(self._idle)
                client = self._idle.pop() if pooled else await self._connect()
                try:
                    _, reply = await client.send_message(email)
                except aiosmtplib.SMTPServerDisconnected:
                    # An idle pooled connection the server closed: retry once on a fresh one.
                    if pooled:
                        continue
                    raise RetryableError(
                        "the SMTP server closed the connection", code="smtp-disconnected"
                    ) from None
                except aiosmtplib.SMTPException as exc:
                    await _close(client)
                    raise _classify(exc) from None
                except (TimeoutError, OSError) as exc:
                    await _close(client)
                    raise RetryableError(
                        f"SMTP connection failed: {exc}", code="smtp-connection"
                    ) from None
                self._idle.append(client)
                return SendResult(
                    email["Message-ID"], "delivered", {"smtp_reply": reply.strip()[:200]}
                )
        raise RetryableError("the SMTP server closed the connection", code="smtp-disconnected")

    async def _connect(self) -> aiosmtplib.SMTP:
        client = aiosmtplib.SMTP(
            hostname=self.host,
            port=self.port,
            timeout=self.timeout,
            use_tls=self.security == "tls",
            start_tls=self.security == "starttls",
            username=self.username if isinstance(self.username, str) else None,
            password=self._password,
        )
        try:
            await client.connect()
        except aiosmtplib.SMTPException as exc:
            raise _classify(exc) from None
        except (TimeoutError, OSError) as exc:
            raise RetryableError(
                f"cannot connect to SMTP server {self.host}:{self.port}: {exc}",
                code="smtp-connection",
            ) from None
        return client

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for client in idle:
            await _close(client)


def _number(options: Mapping[str, Any], key: str, default: _N, kind: type[_N]) -> _N:
    value = options.get(key, default)
    whole = kind is int
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or value <= 0
        or (whole and value != int(value))
    ):
        raise ConfigError(
            f"smtp `{key}` must be a positive {'whole ' if whole else ''}number, not {value!r}"
        )
    return kind(value)


def _classify(exc: aiosmtplib.SMTPException) -> TransportError:
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused) and exc.recipients:
        first = exc.recipients[0]
        code, text = first.code, first.message
    elif isinstance(exc, aiosmtplib.SMTPResponseException):
        code, text = exc.code, exc.message
    elif isinstance(exc, aiosmtplib.SMTPTimeoutError | aiosmtplib.SMTPConnectError):
        return RetryableError(f"SMTP: {exc}", code="smtp-connection")
    else:
        return RetryableError(f"SMTP: {exc}", code="smtp-error")
    message = f"SMTP {code}: {text}"
    if 400 <= code < 500:
        return RetryableError(message, code=str(code))
    return PermanentError(message, code=str(code))


async def _close(client: aiosmtplib.SMTP) -> None:
    with contextlib.suppress(aiosmtplib.SMTPException, OSError, TimeoutError):
        if client.is_connected:
            await client.quit()
