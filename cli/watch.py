"""``switchboard status SESSION --watch``: a session's progress, live, until it completes.

Polls ``GET /v1/sessions/{id}?limit=1`` (the counts, not the recipients) every ``interval``
seconds. On a terminal one line is redrawn in place: a bar of the final deliveries, the
percentage, the counts by status and the rate. Elsewhere (a pipe, a CI log) a plain line is
printed when the progress changed, at most every :data:`LINE_EVERY` seconds, and the last one
always. Ends with exit code 0 once the session is ``completed``; 1 when the API refuses (the
session does not exist, the key is wrong); 130 on Ctrl-C. A worker that does not answer for a
moment (a rebalance's 503, a restart) is polled again, not given up on.

The drawing is pure (:func:`render`); the loop takes its fetch, clock and sleep as arguments,
so it is tested without a server or a wait.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, TextIO

__all__ = ["LINE_EVERY", "Rate", "render", "watch"]

#: Seconds between two plain lines when the output is not a terminal.
LINE_EVERY: Final = 10.0
BAR: Final = 24
#: Statuses shown first, in this order; any other after them, by name.
ORDER: Final = (
    "delivered",
    "read",
    "sent",
    "failed",
    "undelivered",
    "expired",
    "suppressed",
    "rejected",
    "cancelled",
)

Fetch = Callable[[], tuple[int, Any]]


@dataclass
class Rate:
    """Final deliveries per second since the first poll that saw the session."""

    first: tuple[float, int] | None = None

    def update(self, now: float, final: int) -> float | None:
        if self.first is None:
            self.first = (now, final)
            return None
        at, done = self.first
        return (final - done) / (now - at) if now > at else None


def render(doc: Mapping[str, Any], rate: float | None, *, bar: bool = True) -> str:
    """One line for the session document ``doc`` (``GET /v1/sessions/{id}``)."""
    deliveries = int(doc.get("deliveries") or 0)
    final = int(doc.get("final") or 0)
    fraction = final / deliveries if deliveries else 1.0
    counts: Mapping[str, int] = doc.get("counts") or {}
    shown = [s for s in ORDER if counts.get(s)] + sorted(
        s for s in counts if s not in ORDER and counts[s]
    )
    parts = [f"{doc.get('session_id', '')[:8]} {doc.get('status', '?')}"]
    if bar:
        filled = int(fraction * BAR)
        parts.append(f"[{'#' * filled}{'.' * (BAR - filled)}]")
    parts.append(f"{fraction:6.1%} {final:,}/{deliveries:,}")
    if shown:
        parts.append(" ".join(f"{s} {counts[s]:,}" for s in shown))
    if rate is not None:
        parts.append(f"{rate:,.1f}/s")
    return "  ".join(parts)


def watch(
    fetch: Fetch,
    out: TextIO,
    *,
    interval: float = 1.0,
    tty: bool | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Poll until the session completes (0) or the API refuses (1); see the module docs."""
    tty = out.isatty() if tty is None else tty
    rate = Rate()
    last_line, last_at = "", float("-inf")
    try:
        while True:
            status, doc = fetch()
            now = clock()
            if status in (200,) and isinstance(doc, dict):
                done = doc.get("status") == "completed"
                line = render(doc, rate.update(now, int(doc.get("final") or 0)), bar=tty)
                if tty:
                    out.write("\r\x1b[K" + line + ("\n" if done else ""))
                    out.flush()
                elif done or (_steady(line) != _steady(last_line) and now - last_at >= LINE_EVERY):
                    out.write(line + "\n")
                    out.flush()
                    last_line, last_at = line, now
                if done:
                    return 0
            elif status >= 500 or status == 0:
                pass  # a worker restarting or partitions moving: poll again
            else:
                if tty:
                    out.write("\n")
                out.write(f"switchboard: {status}: {doc}\n")
                out.flush()
                return 1
            sleep(interval)
    except KeyboardInterrupt:
        if tty:
            out.write("\n")
        out.flush()
        return 130


def _steady(line: str) -> str:
    """A line without its rate: a change of rate alone is not progress worth a plain line."""
    return line.rsplit("  ", 1)[0] if line.endswith("/s") else line
