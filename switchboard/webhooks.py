"""Webhooks for status events, following Standard Webhooks (https://www.standardwebhooks.com/). Pure.

Nothing here performs I/O or reads the clock: the caller passes the attempt's timestamp and the
random generator. :mod:`transports.webhook` posts what this module builds.

The request
===========

One status event is one webhook: a ``POST`` whose body is :func:`encode` of the event and whose
headers are :func:`headers`:

``webhook-id``
    The status event's ``event_id``. It is the same on every retry of that event, so a receiver
    can use it as an idempotency key and drop duplicates (a delivery whose answer was lost is
    sent again).
``webhook-timestamp``
    The *attempt's* Unix time in whole seconds, not the event's: receivers (the official
    libraries included) reject a timestamp more than five minutes away from their clock, as
    replay protection. Every attempt is therefore signed afresh with the time it is made.
``webhook-signature``
    ``v1,`` + base64 of HMAC-SHA256 over ``{webhook-id}.{webhook-timestamp}.{body}``, keyed with
    the client's secret (``whsec_`` + base64 key). During a secret rotation the header carries
    one signature per secret, space separated, the current secret first; a receiver that knows
    either secret verifies the request (:func:`sign`).
``content-type``
    ``application/json``.

The body
========

Standard Webhooks' recommended envelope, compact JSON, ASCII only (``\\uXXXX`` escapes), so a
receiver that mishandles encodings still verifies the exact bytes that were signed::

    {
      "type": "message.delivered",
      "timestamp": "2025-03-01T12:00:00.123456Z",
      "data": { ...StatusEvent.to_json()... }
    }

``type`` is ``<subject>.<status>`` (:func:`event_type`): ``session`` for a session's own event
(``completed``, or any event without a recipient, e.g. ``session.cancelled``), ``message`` for
one recipient's delivery (``message.sent``, ``message.delivered``, ``message.failed``, ...).
``timestamp`` is when the event occurred (``data.occurred_at``), which stays the same across
retries. ``data`` is the status event exactly as the HTTP API shows it (README: "Following what happened"),
``event_id`` included.

The retry schedule
==================

:func:`next_delay` is Standard Webhooks' "exponential backoff with jitter", for one day. After
attempt ``n`` (from 1) fails retryably, attempt ``n + 1`` waits the ``n``-th of
:data:`BASE_DELAYS` (the last repeats), shortened by a random jitter of up to
:data:`JITTER` (25 %), so the delay lies in ``(0.75 * base, base]``:

======= ============ ==================================
attempt base delay   nominal start (sum of the bases)
======= ============ ==================================
1       --           0:00:00
2       5 s          0:00:05
3       30 s         0:00:35
4       2 min        0:02:35
5       10 min       0:12:35
6       30 min       0:42:35
7       1 h          1:42:35
8       2 h          3:42:35
9-13    4 h each     7:42:35, 11:42:35, ... 23:42:35
======= ============ ==================================

Each base is at least twice the one before it, so with the jitter only shortening, a delay is
always longer than the one before it until the 4-hour plateau. The jitter spreads the retries
of many events that failed together (a receiver's outage) instead of hammering it in waves.

A receiver's ``Retry-After`` is a floor, never a ceiling: the delay is
``max(jittered, retry_after)``.

The window: no attempt starts more than :data:`WINDOW` (24 h) after the first one. When the
caller passes ``elapsed`` (seconds from the first attempt's start to now, which the agent knows
from its retry record) the rule is exact: ``None`` when ``elapsed + delay > WINDOW``. Without it,
the nominal start of the failed attempt stands in for ``elapsed``; as the jitter only shortens
delays, that is an upper bound of the real elapsed time for a history without ``Retry-After``,
so the window still holds then; pass ``elapsed`` whenever a ``Retry-After`` lengthened a delay.
A ``Retry-After`` that points past the window ends the retries (``None``) rather than calling
earlier than the receiver asked.

Failure modes
=============

``ValueError`` for inputs no caller should produce: no secrets, a secret that is not
``whsec_`` + base64 of a non-empty key, a message id that is empty, longer than 256 characters
or contains a ``.``, whitespace, a control or non-ASCII character (it is signed with ``.`` as the
delimiter, and travels in a header), a negative or non-integer timestamp, an attempt below 1,
a negative or non-finite ``retry_after`` / ``elapsed``. :func:`encode` raises ``ValueError`` /
``TypeError`` when the event's ``detail`` holds a value JSON cannot carry (NaN, an object).
Error messages never contain a secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import random
import re
from collections.abc import Sequence
from typing import Any, Final

from yarl import URL

from switchboard.status import StatusEvent

__all__ = [
    "BASE_DELAYS",
    "JITTER",
    "MAX_URL_LENGTH",
    "WINDOW",
    "encode",
    "event_type",
    "headers",
    "next_delay",
    "nominal_start",
    "payload",
    "sign",
    "url_problem",
]

SECRET_PREFIX: Final = "whsec_"  # noqa: S105 (the format's prefix, not a secret)
#: Seconds to wait after attempt n failed (index n - 1); the last one repeats.
BASE_DELAYS: Final[tuple[float, ...]] = (5, 30, 120, 600, 1800, 3600, 7200, 14400)
#: The largest fraction the jitter takes off a base delay.
JITTER: Final = 0.25
#: No attempt starts later than this many seconds after the first attempt.
WINDOW: Final = 24 * 3600.0
#: Longer webhook URLs are refused: they are stored with every session and logged (the origin).
MAX_URL_LENGTH: Final = 2048

_MSG_ID: Final = re.compile(r"[\x21-\x2d\x2f-\x7e]{1,256}")  # printable ASCII, no space, no "."


# -- payload ------------------------------------------------------------------------------------


def event_type(event: StatusEvent) -> str:
    """``session.<status>`` for a session's own event, else ``message.<status>``.

    A session event is ``completed`` or any event without a recipient; every other event is one
    recipient's delivery. The status names are the README's (``message.delivered``,
    ``message.undelivered``, ``session.completed``, ...), already ``[a-z]`` as the
    specification recommends for type identifiers.
    """
    subject = "session" if event.status == "completed" or event.recipient is None else "message"
    return f"{subject}.{event.status}"


def payload(event: StatusEvent) -> dict[str, Any]:
    """The webhook body of ``event`` as a mapping: ``type``, ``timestamp``, ``data``."""
    data = event.to_json()
    return {"type": event_type(event), "timestamp": data["occurred_at"], "data": data}


def encode(event: StatusEvent) -> bytes:
    """The exact bytes to send and sign: :func:`payload` as compact ASCII JSON.

    Deterministic: the same event always encodes to the same bytes (key order is fixed), so a
    retry built again from the event carries the same body.
    """
    text = json.dumps(payload(event), separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return text.encode("ascii")


# -- signing ------------------------------------------------------------------------------------


def sign(secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header: ``v1,<base64 HMAC-SHA256>`` per secret, space separated.

    ``secrets`` are ``whsec_`` + base64 keys, the current one first (a receiver tries each
    signature in turn, so the order only matters for speed); a secret listed twice is signed
    once. The signed content is ``{msg_id}.{timestamp}.`` followed by ``body`` byte for byte.
    """
    if isinstance(secrets, str):
        # A bare string is a Sequence[str] of characters: a caller's slip, not a rotation.
        raise ValueError("secrets must be a sequence of whsec_ secrets, not one string")
    if not secrets:
        raise ValueError("a webhook needs at least one secret to be signed with")
    _check_msg_id(msg_id)
    _check_timestamp(timestamp)
    signed = f"{msg_id}.{timestamp}.".encode("ascii") + body
    keys: list[bytes] = []
    for position, secret in enumerate(secrets):
        key = _key(secret, position)
        if key not in keys:
            keys.append(key)
    return " ".join(
        "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode("ascii")
        for key in keys
    )


def headers(secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The Standard Webhooks headers of one attempt (lower-case names, as the specification
    writes them; HTTP header names are case-insensitive)."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secrets, msg_id, timestamp, body),
        "content-type": "application/json",
    }


def _key(secret: str, position: int) -> bytes:
    # The position, never the secret, goes into the error: messages end up in logs.
    where = f"secret #{position + 1}"
    if not isinstance(secret, str) or not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"{where} must be a string starting with {SECRET_PREFIX}")
    encoded = secret[len(SECRET_PREFIX) :]
    try:
        # Unpadded base64 is accepted, as the official libraries do; anything else is not.
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{where} is not {SECRET_PREFIX} followed by base64") from None
    if not key:
        raise ValueError(f"{where} has an empty key")
    return key


def _check_msg_id(msg_id: str) -> None:
    if not isinstance(msg_id, str) or not _MSG_ID.fullmatch(msg_id):
        raise ValueError(
            "a webhook id must be 1-256 printable ASCII characters without spaces or '.' "
            f"(it is signed with '.' as the delimiter), got {msg_id!r}"
        )


def _check_timestamp(timestamp: int) -> None:
    if isinstance(timestamp, bool) or not isinstance(timestamp, int) or timestamp < 0:
        raise ValueError(f"a webhook timestamp is whole Unix seconds >= 0, got {timestamp!r}")


# -- retry schedule -----------------------------------------------------------------------------


def nominal_start(attempt: int) -> float:
    """When attempt ``attempt`` (from 1) starts if every delay is its full base, in seconds after
    the first attempt: the latest it can start without ``Retry-After``."""
    _check_attempt(attempt)
    plateau = BASE_DELAYS[-1]
    head = sum(BASE_DELAYS[: attempt - 1])
    return float(head + max(0, attempt - 1 - len(BASE_DELAYS)) * plateau)


def next_delay(
    attempt: int,
    rng: random.Random,
    retry_after: float | None = None,
    *,
    elapsed: float | None = None,
) -> float | None:
    """Seconds to wait after attempt ``attempt`` (from 1) failed retryably; ``None``: give up.

    The jittered base delay, raised to ``retry_after`` when that is longer, unless the next
    attempt would start more than :data:`WINDOW` after the first (see the module docs).
    ``elapsed`` is the seconds from the first attempt's start to now; by default the failed
    attempt's :func:`nominal_start`. Draws exactly one number from ``rng`` per call, so a
    seeded generator gives a reproducible schedule.
    """
    _check_attempt(attempt)
    if retry_after is not None:
        _check_seconds("retry_after", retry_after)
    if elapsed is not None:
        _check_seconds("elapsed", elapsed)
    base = BASE_DELAYS[min(attempt, len(BASE_DELAYS)) - 1]
    # 1 - JITTER * [0, 1): the jitter only shortens, so the bases are upper bounds (the window
    # reasoning above) and each delay stays above the previous base (bases at least double).
    delay = base * (1.0 - JITTER * rng.random())
    if retry_after is not None:
        delay = max(delay, retry_after)
    since_first = nominal_start(attempt) if elapsed is None else elapsed
    if since_first + delay > WINDOW:
        return None
    return delay


def _check_attempt(attempt: int) -> None:
    # bool is an int subclass; True as an attempt number is a bug, not attempt 1.
    if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1:
        raise ValueError(f"attempt must be a whole number >= 1, got {attempt!r}")


def _check_seconds(name: str, value: float) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
    ):
        raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value!r}")


# -- URLs ---------------------------------------------------------------------------------------


def url_problem(url: str, *, allow_http: bool = False) -> str | None:
    """Why ``url`` cannot be a webhook URL, from its text alone; ``None`` when it can.

    https only (http too with ``allow_http``, the ``SWITCHBOARD_ALLOW_HTTP_WEBHOOKS`` setting),
    a host, no ``user:password@`` (credentials would be sent to, and logged by, whatever is on
    the way), no whitespace or control characters, at most :data:`MAX_URL_LENGTH` characters.
    The URL is parsed with yarl, the parser aiohttp connects with, so the host checked is the
    host connected to. Where the host resolves is :mod:`transports.webhook`'s check, made when
    connecting: an intake check here can only reject early, never approve.
    """
    if not isinstance(url, str) or not url:
        return "the webhook URL is empty"
    if len(url) > MAX_URL_LENGTH:
        return f"the webhook URL is longer than {MAX_URL_LENGTH} characters"
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in url):
        return "the webhook URL contains whitespace or control characters"
    try:
        parsed = URL(url)
        port = parsed.port
    except (ValueError, TypeError):
        return "the webhook URL cannot be parsed"
    scheme = parsed.scheme.lower()
    if scheme == "http" and not allow_http:
        return "the webhook URL must be https (http:// is allowed only by setting)"
    if scheme not in ("https", "http"):
        return "the webhook URL must be https"
    if parsed.raw_user is not None or parsed.raw_password is not None:
        return "the webhook URL must not contain credentials (user:password@)"
    if not parsed.raw_host:
        return "the webhook URL has no host"
    if port is None or not 0 < port < 65536:
        return "the webhook URL has an invalid port"
    return None
