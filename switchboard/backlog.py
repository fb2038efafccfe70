"""What the worker's gauges count, as pure functions and in-memory tallies. No I/O.

:mod:`streams.gauges` refreshes the Prometheus gauges from these every few seconds; the agents
keep the tallies up to date as they work (a dict operation per timer set or session opened,
never per delivery sent).

* **Consumer lag** (:func:`consumer_lag`): per partition, the records after the consumer
  group's committed offset, up to the end of the partition. Nothing committed yet counts
  every record from offset 0 (the group reads from the earliest), as the fan-out's flow
  control does (``streams/flow.py``).
* **Deferred deliveries** (:class:`TimerTally`): deliveries held by a channel's time window,
  counted from the durable timers that will dispatch them. A fan-out holds a chunk's
  deliveries of one channel and window opening with one ``window:`` timer whose
  :class:`~switchboard.records.Release` lists their indexes (each index is one delivery);
  a single delivery held (a retry, a resend, a job found outside its window) has a ``job:``
  timer whose target is a dispatch topic. A ``job:`` timer targeting the session commands
  topic is a retry waiting for its backoff, not a deferral, and is not counted. Scheduled
  sessions (``trigger: scheduled``) are not deferred deliveries either. A cancelled session's
  held deliveries are counted until their timer fires (which then drops them).
* **Oldest deferred age**: seconds since the earliest of those timers was set (its ``set_at``,
  recorded by the scheduler since this gauge exists; a timer set before has none and is left
  out of the age, never of the count).
* **Webhook retries waiting** (:class:`TimerTally`): ``webhook:`` timers, one per status event
  whose webhook failed and waits for its next attempt.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from switchboard.timers import unb64

__all__ = ["OpenSessions", "TimerTally", "consumer_lag", "timer_weight"]

TP = tuple[str, int]

#: What a timer holds, for the gauges: deliveries held by a window, or a webhook retry.
DEFERRED: Final = "deferred"
WEBHOOK: Final = "webhook"


def consumer_lag(ends: Mapping[TP, int], committed: Mapping[TP, int]) -> dict[TP, int]:
    """Records not yet committed, per partition of ``ends`` (its end offsets). A committed
    offset below 0 (nothing committed) counts from 0; a commit past the end (a stale end
    offset read a moment earlier) is no lag, never a negative one."""
    return {tp: max(0, end - max(0, committed.get(tp, -1))) for tp, end in ends.items()}


def timer_weight(
    timer_id: str, row: Mapping[str, Any], dispatch_topics: frozenset[str]
) -> tuple[str, int] | None:
    """What the timer ``timer_id`` (its row in the ``timers`` table, or its ``set`` command)
    counts for: ``(DEFERRED, deliveries)``, ``(WEBHOOK, 1)``, or None (anything else: a
    retry's backoff, a scheduled session, an expiry sweep...). Only ``window:`` timers decode
    their value, to count the indexes of their release."""
    if timer_id.startswith("window:"):
        try:
            release = json.loads(unb64(str(row["value"])))
            return DEFERRED, len(release.get("indexes", ()))
        except (KeyError, ValueError, TypeError, AttributeError):
            return DEFERRED, 0  # unreadable: still a held chunk, counted as none
    if timer_id.startswith("job:") and row.get("topic") in dispatch_topics:
        return DEFERRED, 1
    if timer_id.startswith("webhook:"):
        return WEBHOOK, 1
    return None


@dataclass
class TimerTally:
    """The deferred deliveries and webhook retries held by this worker's timers.

    Mirrors the ``timers`` table of the worker's active partitions: the scheduler agent calls
    :meth:`set` and :meth:`remove` as it writes rows, and :meth:`rebuild` whenever it rebuilds
    its time index (after every change of its partitions). Only timers that count are kept,
    so its size is the number of held chunks, single held deliveries and webhook retries."""

    dispatch_topics: frozenset[str] = frozenset()
    #: timer id -> (kind, weight, set at or None)
    _timers: dict[str, tuple[str, int, float | None]] = field(default_factory=dict)
    _totals: dict[str, int] = field(default_factory=dict)

    def set(self, timer_id: str, row: Mapping[str, Any]) -> None:
        self.remove(timer_id)
        weight = timer_weight(timer_id, row, self.dispatch_topics)
        if weight is None:
            return
        kind, count = weight
        at = row.get("set_at")
        self._timers[timer_id] = (kind, count, float(at) if isinstance(at, int | float) else None)
        self._totals[kind] = self._totals.get(kind, 0) + count

    def remove(self, timer_id: str) -> None:
        found = self._timers.pop(timer_id, None)
        if found is not None:
            self._totals[found[0]] -= found[1]

    def rebuild(self, rows: Iterable[tuple[str, Mapping[str, Any]]]) -> None:
        self._timers.clear()
        self._totals.clear()
        for timer_id, row in rows:
            self.set(timer_id, row)

    def total(self, kind: str) -> int:
        """Deliveries (``DEFERRED``) or retries (``WEBHOOK``) held."""
        return self._totals.get(kind, 0)

    def oldest(self, kind: str) -> float | None:
        """When the earliest timer of ``kind`` still held was set (None: none known). A scan of
        the tally: called by the gauges' refresh every few seconds, never per event."""
        times = [at for k, n, at in self._timers.values() if k == kind and n and at is not None]
        return min(times) if times else None


@dataclass
class OpenSessions:
    """Sessions of this worker's partitions opened and not completed (a re-send opens a
    completed one again). The session agent calls :meth:`opened`, the report agent
    :meth:`progressed` when a session's progress changes, and the gauges' refresh recounts
    them from the tables whenever the worker's partitions change: :meth:`start_recount`, a scan
    that may yield to the event loop, then :meth:`finish_recount`. What the agents report
    during the scan is applied on top of it, so a session opened or completed meanwhile is not
    lost."""

    _open: set[str] = field(default_factory=set)
    #: During a recount: session id -> open, as the agents reported it since the recount began.
    _during: dict[str, bool] | None = None

    def opened(self, session_id: str) -> None:
        self.progressed(session_id, completed=False)

    def progressed(self, session_id: str, completed: bool) -> None:
        if completed:
            self._open.discard(session_id)
        else:
            self._open.add(session_id)
        if self._during is not None:
            self._during[session_id] = not completed

    def start_recount(self) -> None:
        self._during = {}

    def finish_recount(self, open_ids: Iterable[str]) -> None:
        counted = set(open_ids)
        for session_id, is_open in (self._during or {}).items():
            if is_open:
                counted.add(session_id)
            else:
                counted.discard(session_id)
        self._open, self._during = counted, None

    def __len__(self) -> int:
        return len(self._open)
