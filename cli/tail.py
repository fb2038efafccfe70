"""``switchboard tail``: what it shows of a status event, and which events it shows. Pure.

The Kafka side (a consumer with no group, assigned every partition of the status topic) is in
``cli.main``; here are the parts worth testing on their own: reading a value in any of
the status topic's framings, the filter, and the one-line rendering.

A value the tool cannot read is shown as such (``?`` and the reason), never skipped in silence
and never fatal: ``tail`` is a diagnostic tool, and an unreadable event is a finding.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

# Reading a status event in any framing is the status topic's codec, shared with the worker's
# console (streams/console_feed.py): it lives in the core.
from switchboard.status_avro import decode_status

__all__ = ["Filter", "decode_status", "render"]


@dataclass(frozen=True, slots=True)
class Filter:
    """Which events to show: all conditions given must hold."""

    client_id: str | None = None
    session_id: str | None = None
    statuses: frozenset[str] = frozenset()

    def __call__(self, event: dict[str, Any]) -> bool:
        return (
            (self.client_id is None or event.get("client_id") == self.client_id)
            and (self.session_id is None or event.get("session_id") == self.session_id)
            and (not self.statuses or event.get("status") in self.statuses)
        )


def render(event: dict[str, Any], *, as_json: bool = False) -> str:
    """One line for ``event``: JSON (for ``jq``), or columns for a person.

    The columns: time (UTC), session, status, channel and recipient (``-`` for session
    events), the attempt, then the error or, for ``completed``, the counts.
    """
    if as_json:
        return json.dumps(event, sort_keys=True, default=_json_default, ensure_ascii=False)
    when = _when(event.get("occurred_at"))
    parts = [
        when,
        str(event.get("session_id", "?")),
        f"{event.get('status', '?'):<11}",
        f"{event.get('channel') or '-':<8}",
        str(event.get("recipient") or "-"),
    ]
    if event.get("attempt"):
        parts.append(f"attempt {event['attempt']}")
    detail = event.get("detail") or {}
    if event.get("error_code") or event.get("error"):
        # Held or not sent is not an error: its reason (switchboard/reasons.py) says why.
        label = "why" if isinstance(detail, dict) and detail.get("reason") else "error"
        parts.append(
            " ".join(str(e) for e in (label, event.get("error_code"), event.get("error")) if e)
        )
    if event.get("status") == "completed" and isinstance(detail.get("counts"), dict):
        counts = detail["counts"]
        parts.append(" ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    return "  ".join(parts)


def _json_default(value: Any) -> str:
    # The same form as webhook bodies and the HTTP API: ISO 8601 UTC with a Z.
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return str(value)


def _when(at: Any) -> str:
    """``HH:MM:SS.mmm`` UTC, from Avro's datetime or JSON's milliseconds or ISO text."""
    if isinstance(at, (int, float)):
        at = datetime.fromtimestamp(at / 1000, UTC)
    elif isinstance(at, str):
        try:
            at = datetime.fromisoformat(at)
        except ValueError:
            return str(at)
    if isinstance(at, datetime):
        return at.astimezone(UTC).strftime("%H:%M:%S.%f")[:-3]
    return "--:--:--.---"
