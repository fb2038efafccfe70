"""The web console's pure half (README: "The console"): which status events a signed-in client
may see, how a burst of them is folded into one live update, and which sessions are "recent".

The Kafka side (a consumer of the status topic that runs only while a console is open) is in
``streams/console_feed.py``, the HTTP side in ``streams/web/console.py``. Nothing here does I/O.

Guarantees:
    * :func:`visible` is the only gate between the status topic and a client's stream: an event
      of another client, or without a client, is never shown.
    * :class:`Activity` is bounded whatever the rate of events: a count per session and status,
      and at most :data:`RECENT` events kept verbatim. A million-recipient campaign folds into
      one small update per flush, so a slow browser can never make the worker buffer events.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from switchboard.status import STATUSES

__all__ = ["RECENT", "Activity", "parse_statuses", "recent", "visible"]

#: Events kept verbatim in one update (the newest): what the session page lists as "latest".
RECENT: Final = 20


def visible(event: Mapping[str, Any], client_id: str, session_id: str | None = None) -> bool:
    """Whether ``event`` (a decoded status event) may be shown to ``client_id``'s console, and
    concerns ``session_id`` when one is given."""
    if not client_id or event.get("client_id") != client_id:
        return False
    return session_id is None or event.get("session_id") == session_id


@dataclass
class Activity:
    """Status events folded into one update of the live stream, until :meth:`drain`.

    ``sessions`` counts events per session and status (the page re-reads a changed session's
    counts from the API: events tell *that* something changed, the tables *what* it is now);
    ``events`` keeps the newest :data:`RECENT` events."""

    sessions: dict[str, dict[str, int]] = field(default_factory=dict)
    events: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=RECENT))

    def add(self, event: Mapping[str, Any]) -> None:
        session_id = str(event.get("session_id") or "")
        status = str(event.get("status") or "?")
        counts = self.sessions.setdefault(session_id, {})
        counts[status] = counts.get(status, 0) + 1
        self.events.append(_plain(event))

    def __bool__(self) -> bool:
        return bool(self.sessions)

    def drain(self) -> dict[str, Any] | None:
        """The update to send (None when nothing happened), and start afresh."""
        if not self.sessions:
            return None
        update = {
            "sessions": [
                {"session_id": sid, "statuses": counts, "completed": "completed" in counts}
                for sid, counts in self.sessions.items()
            ],
            "events": list(self.events),
        }
        self.sessions = {}
        self.events.clear()
        return update


def _plain(event: Mapping[str, Any]) -> dict[str, Any]:
    """The event in its JSON form (``occurred_at`` ISO 8601 UTC with a ``Z``)."""
    out = dict(event)
    at = out.get("occurred_at")
    if isinstance(at, datetime):
        out["occurred_at"] = at.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return out


def recent(rows: Iterable[tuple[float, str]], limit: int) -> list[str]:
    """The ids of the ``limit`` newest sessions of ``rows`` (created at, session id), newest
    first; ties are broken by id so that every worker orders a merged list alike."""
    return [sid for _, sid in heapq.nlargest(limit, rows)]


def parse_statuses(value: str | None) -> tuple[frozenset[str], list[str]]:
    """The statuses of a ``status=`` filter (a comma list), and the names that are not statuses.

    An empty or absent value is no filter (every status)."""
    names = [part.strip() for part in (value or "").split(",") if part.strip()]
    unknown = [name for name in names if name not in STATUSES or name == "completed"]
    return frozenset(names), unknown
