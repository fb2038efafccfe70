"""Retry timing (README: "The Send API": ``retries``, ``retryIntervalMinutes``). Pure.

The rule
========

A delivery makes at most ``1 + retries`` attempts, numbered from 1. When attempt ``n`` fails
retryably, attempt ``n + 1`` waits the ``n``-th interval of ``retryIntervalMinutes``; past the end
of the list the last interval repeats. With ``retries: 3`` and ``"60,180,600"`` the retries wait
60, 180 and 600 minutes; with ``retries: 5`` they wait 60, 180, 600, 600, 600. After attempt
``1 + retries`` there is no next attempt (``None``). Permanent failures are never retried; that
is the caller's decision (``transports.errors``), not this module's.

A provider's ``Retry-After`` is a floor, never a ceiling: the next attempt is at
``failed_at + max(interval, Retry-After)``. It does not create an attempt that ``retries`` does
not allow. :func:`parse_retry_after` reads the HTTP header (delta-seconds or an HTTP-date) into
the seconds :func:`next_attempt_at` takes.

Parsing ``"60,180,600"`` is :mod:`switchboard.validation`'s job (it yields
:attr:`switchboard.instruction.Options.retry_intervals_minutes`); this module takes the parsed
tuple. Nothing here reads the clock.

Failure modes
=============

``ValueError`` for inputs no validated instruction produces: ``attempt`` below 1, ``retries``
below 0 (or either not an ``int``, ``bool`` included), an empty interval list, an interval that
is not a finite number above 0, a ``retry_after`` that is negative or not finite, a naive
``failed_at`` or ``now``. A malformed ``Retry-After`` header is not an error: it reads as ``None``.
``OverflowError`` when the next attempt would fall past :data:`datetime.max`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

__all__ = [
    "max_attempts",
    "next_attempt_at",
    "next_attempt_of_session",
    "parse_retry_after",
    "retry_after_seconds",
    "retry_delay",
]


def max_attempts(retries: int) -> int:
    """How many attempts a delivery may make in all: the first and ``retries`` more."""
    _check_count("retries", retries, minimum=0)
    return 1 + retries


def retry_delay(attempt: int, retries: int, intervals_minutes: Sequence[float]) -> timedelta | None:
    """How long to wait after attempt ``attempt`` (from 1) failed retryably before the next one;
    ``None`` when ``attempt`` was the last one ``retries`` allows."""
    _check_count("attempt", attempt, minimum=1)
    _check_count("retries", retries, minimum=0)
    _check_intervals(intervals_minutes)
    if attempt > retries:  # attempt + 1 would exceed the 1 + retries attempts allowed
        return None
    return timedelta(minutes=intervals_minutes[min(attempt, len(intervals_minutes)) - 1])


def next_attempt_at(
    failed_at: datetime,
    attempt: int,
    retries: int,
    intervals_minutes: Sequence[float],
    retry_after: float | None = None,
) -> datetime | None:
    """When attempt ``attempt + 1`` is due (aware UTC): ``failed_at`` plus the interval, but
    never earlier than the provider's ``retry_after`` seconds; ``None`` when no retry is left."""
    if failed_at.tzinfo is None or failed_at.utcoffset() is None:
        raise ValueError(f"failed_at must be timezone-aware, got {failed_at!r}")
    if retry_after is not None and not (math.isfinite(retry_after) and retry_after >= 0):
        raise ValueError(
            f"retry_after must be a finite number of seconds >= 0, got {retry_after!r}"
        )
    delay = retry_delay(attempt, retries, intervals_minutes)
    if delay is None:
        return None
    if retry_after is not None:
        delay = max(delay, timedelta(seconds=retry_after))
    return failed_at.astimezone(UTC) + delay


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from an HTTP ``Retry-After`` header (RFC 9110 section 10.2.3), read at
    ``now`` (aware): delta-seconds as given, an HTTP-date as the seconds from ``now`` (0 when it
    is past). ``None`` when the header is absent or unreadable: a provider's malformed header
    must not fail the send's bookkeeping, the configured interval still applies."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"now must be timezone-aware, got {now!r}")
    if value is None:
        return None
    text = value.strip()
    try:
        if text.isascii() and text.isdigit():
            return float(int(text))
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000" in an HTTP-date still means GMT (RFC 9110 5.6.7)
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def _check_count(name: str, value: int, *, minimum: int) -> None:
    # bool is an int subclass; True as an attempt number is a bug, not attempt 1.
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be a whole number >= {minimum}, got {value!r}")


def _check_intervals(intervals_minutes: Sequence[float]) -> None:
    if len(intervals_minutes) == 0:
        raise ValueError(
            "intervals_minutes must be a non-empty sequence of minutes, e.g. (60.0, 180.0, 600.0)"
        )
    for minutes in intervals_minutes:
        if (
            isinstance(minutes, bool)
            or not isinstance(minutes, int | float)
            or not math.isfinite(minutes)
            or minutes <= 0
        ):
            raise ValueError(
                f"each retry interval must be a finite number of minutes > 0, got {minutes!r}"
            )


def retry_after_seconds(value: str | None) -> float | None:
    """:func:`parse_retry_after` read now: what a transport calls on a provider's answer."""
    return parse_retry_after(value, datetime.now(UTC))


def next_attempt_of_session(
    options: Mapping[str, Any], attempt: int, failed_at: datetime, retry_after: float | None = None
) -> float | None:
    """:func:`next_attempt_at` from a session's stored (validated) options, as epoch seconds:
    ``retries`` (default 0) and ``retryIntervalMinutes`` (default ``"60"``)."""
    intervals = [float(m) for m in str(options.get("retryIntervalMinutes", "60")).split(",")]
    at = next_attempt_at(failed_at, attempt, int(options.get("retries", 0)), intervals, retry_after)
    return at.timestamp() if at is not None else None
