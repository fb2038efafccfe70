"""Send-by deadlines (``options.expiresAt`` / ``options.ttlSeconds``). Pure.

A delivery with a deadline that has not been handed to a provider by then ends ``expired``
(``error_code`` and ``detail.reason``: ``deadline``, ``error`` saying which
deadline passed before what, ``detail.expires_at``) instead of being sent late. Where it is checked:

* the dispatcher, before it claims a job and again at the transport's last check, after the
  wait for the sender's rate-limit slot (``streams/dispatch.py``): so a job that waited in a
  backlog, a paused channel's topic, a retry timer or a window timer is never sent late;
* a retryable failure whose next attempt would be due at or after the deadline ends
  ``expired`` at once rather than waiting for a retry that could not be sent;
* a window that opens at or after the deadline expires the delivery at once rather than
  deferring it (``streams/sessions.py``).

A deadline does not reach past the hand-off: a message the provider accepted before it is not
recalled, and its later callbacks (``delivered``, ``undelivered``) are recorded as usual.

``ttlSeconds`` counts from the session's acceptance (the 202), or from ``scheduledTimestamp``
for a scheduled session; ``expiresAt`` is absolute. Giving both is refused (422): two deadlines
would leave it unclear which one the sender meant.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

__all__ = ["MAX_TTL_SECONDS", "deadline_of", "iso", "passed_before", "reason"]

#: The longest ``ttlSeconds``: 30 days, past which a message is no longer time-critical.
MAX_TTL_SECONDS: Final = 30 * 24 * 3600


def deadline_of(options: Mapping[str, Any] | None, accepted_at: float) -> float | None:
    """The epoch second by which a session's deliveries must be handed to a provider (None:
    no deadline). ``options`` is the contract form stored with the session (validated at
    intake); ``accepted_at`` is when the session was accepted."""
    if not options:
        return None
    expires_at = options.get("expiresAt")
    if isinstance(expires_at, str):
        return _epoch(expires_at)
    ttl = options.get("ttlSeconds")
    if isinstance(ttl, int) and not isinstance(ttl, bool):
        scheduled = options.get("scheduledTimestamp")
        start = _epoch(scheduled) if isinstance(scheduled, str) else accepted_at
        return start + ttl
    return None


def passed_before(expires_at: float | None, at: float) -> bool:
    """Whether a hand-off at ``at`` would be too late (the deadline itself is too late)."""
    return expires_at is not None and at >= expires_at


def reason(expires_at: float, what: str = "hand-off") -> str:
    """The reason an expired delivery gives, e.g. ``deadline 2026-12-06T10:00:00Z passed
    before hand-off``."""
    return f"deadline {iso(expires_at)} passed before {what}"


def iso(at: float) -> str:
    """An epoch second as RFC 3339 UTC with a ``Z``, to the second."""
    return datetime.fromtimestamp(int(at), UTC).isoformat().replace("+00:00", "Z")


def _epoch(value: str) -> float:
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:  # never stored so (validation requires an offset); UTC if it were
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()
