"""``switchboard send``'s options flags, as the instruction's ``options``. Pure.

The flags map one to one onto the contract's fields (README: "The Send API"); the worker
validates them (a 422 names a bad one, or the rejected topic with ``--via-kafka``), so nothing
here second-guesses the rules beyond what a flag's form says:

- ``--schedule TIME`` (ISO 8601 with an offset): ``trigger: scheduled`` and
  ``scheduledTimestamp``; ``--manual``: ``trigger: manual``.
- ``--retries N``, ``--retry-interval MINUTES`` (``"60,180,600"``): ``retries``,
  ``retryIntervalMinutes``.
- ``--webhook-url URL``: ``webhookUrl``. ``--priority high|normal``: ``priority``.
- ``--transactional``: ``transactional: true``.
- ``--ttl SECONDS`` or ``--expires-at TIME`` (ISO 8601 with an offset): the send-by deadline,
  ``ttlSeconds`` or ``expiresAt`` (``switchboard/deadline.py``).
- ``--fallback CHANNELS`` (``sms,email``), ``--fallback-after SECONDS``: the channel fallback,
  ``fallback: {"channels": [...], "afterSeconds": N}`` (``switchboard/fallback.py``).
"""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import Any

__all__ = ["add_arguments", "options_from"]

#: Flags (their argparse names) given to the instruction as they are: the option they set.
_PLAIN = (
    ("retries", "retries"),
    ("retry_interval", "retryIntervalMinutes"),
    ("webhook_url", "webhookUrl"),
    ("priority", "priority"),
    ("ttl", "ttlSeconds"),
    ("expires_at", "expiresAt"),
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options flags of ``switchboard send``."""
    when = p.add_mutually_exclusive_group()
    when.add_argument(
        "--schedule",
        metavar="TIME",
        type=_timestamp,
        help="send at this time (ISO 8601 with an offset, e.g. 2026-12-31T09:00:00Z)",
    )
    when.add_argument(
        "--manual", action="store_true", help="wait for POST /v1/sessions/{id}/trigger"
    )
    p.add_argument(
        "--retries", type=int, metavar="N", help="attempts after a retryable failure (0 to 20)"
    )
    p.add_argument(
        "--retry-interval",
        metavar="MINUTES",
        help="minutes between attempts: one number or a comma list (60,180,600)",
    )
    p.add_argument(
        "--webhook-url",
        metavar="URL",
        help="POST the session's status events here (Standard Webhooks)",
    )
    p.add_argument(
        "--priority",
        choices=["normal", "high"],
        help="high: the lane of small transactional sends (at most 100 recipients)",
    )
    p.add_argument(
        "--transactional",
        action="store_true",
        help="a message the recipient asked for: email without List-Unsubscribe",
    )
    by = p.add_mutually_exclusive_group()
    by.add_argument(
        "--ttl",
        type=int,
        metavar="SECONDS",
        help="send-by deadline, seconds from acceptance (else expired, never late)",
    )
    by.add_argument(
        "--expires-at",
        metavar="TIME",
        type=_timestamp,
        help="send-by deadline, ISO 8601 with an offset (else expired, never late)",
    )
    p.add_argument(
        "--fallback",
        metavar="CHANNELS",
        type=_channels,
        help="channels tried in order per recipient, e.g. sms,email: the next when one is not "
        "delivered (failed for good, or not delivered within --fallback-after)",
    )
    p.add_argument(
        "--fallback-after",
        type=int,
        metavar="SECONDS",
        help="with --fallback: move on when a sent message is not delivered within this time",
    )


def options_from(args: argparse.Namespace) -> dict[str, Any]:
    """The instruction's ``options`` for the flags given (empty when none is)."""
    options: dict[str, Any] = {}
    if args.schedule is not None:
        options["trigger"] = "scheduled"
        options["scheduledTimestamp"] = args.schedule
    elif args.manual:
        options["trigger"] = "manual"
    for flag, field in _PLAIN:
        value = getattr(args, flag)
        if value is not None:
            options[field] = value
    if args.transactional:
        options["transactional"] = True
    if args.fallback is not None or args.fallback_after is not None:
        fallback: dict[str, Any] = {"channels": args.fallback or []}
        if args.fallback_after is not None:
            fallback["afterSeconds"] = args.fallback_after
        options["fallback"] = fallback  # --fallback-after alone: a 422 names the missing list
    return options


def _channels(text: str) -> list[str]:
    """A comma list of channels, as given (the worker says which one is unknown)."""
    return [part.strip() for part in text.split(",") if part.strip()]


def _timestamp(text: str) -> str:
    """An ISO 8601 time with an offset, as given (the worker reads it the same way)."""
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 time, e.g. 2026-12-31T09:00:00Z"
        ) from None
    if at.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no offset: add Z or +HH:MM")
    return text
