"""Bounded state: when a session's rows are deleted, and which rows are its. Pure.

A completed session is kept for ``SWITCHBOARD_RETENTION`` seconds after its completion
(:func:`purge_at`), then every row it has in every table is deleted, each table's rows by the
agent that writes them (``streams/retention.py`` says how the deletion reaches every
partition). This module only answers the questions that need no Kafka or RocksDB:

* is the session due (:func:`purge_due`)? A re-send opens a completed session again, so the
  deletion asks at the time it runs, not only when it was scheduled;
* which rows does it have: in the ``sessions`` table, its row and its audience chunks
  (:func:`session_rows`); in ``deliveries``, a row per delivery, a chunk of recipients at a
  time (:func:`delivery_rows`), and its progress; in ``sends``, the rows a dispatcher finds by
  prefix in its own partition (:func:`is_send_row`), since which partition holds a send
  depends on its dispatch key and its attempts are not known elsewhere.
"""

from __future__ import annotations

from collections.abc import Collection

from switchboard.fanout import CHUNK_SIZE, chunk_count
from switchboard.keys import chunk_row, delivery_key, fence_row, send_row_prefixes, session_row

__all__ = ["chunks_of", "delivery_rows", "is_send_row", "purge_at", "purge_due", "session_rows"]

#: Seconds a purge may run ahead of its due time (the scheduler fires within a tick of it).
SLACK = 1.0


def purge_at(completed_at: float, retention: float) -> float | None:
    """When a session completed at ``completed_at`` is deleted (None: ``retention`` is 0, kept
    forever)."""
    return completed_at + retention if retention > 0 else None


def purge_due(
    completed_at: float | None, retention: float, now: float, resent_at: float | None = None
) -> bool:
    """Whether a session may be deleted now: it is completed (not opened again by a re-send,
    including one asked for at ``resent_at`` whose reports are still on their way) and its
    retention has passed. Never when retention is 0 (set since the timer was)."""
    if completed_at is None or (resent_at is not None and resent_at >= completed_at):
        return False
    due = purge_at(completed_at, retention)
    return due is not None and due <= now + SLACK


def session_rows(session_id: str, chunks: int) -> list[bytes]:
    """The session's rows in the ``sessions`` table: its audience chunks, then the session."""
    return [*(chunk_row(session_id, chunk) for chunk in range(chunks)), session_row(session_id)]


def delivery_rows(session_id: str, chunk: int, recipients: int, channels: list[str]) -> list[bytes]:
    """The ``deliveries`` rows of audience chunk ``chunk``: one per recipient and channel (a
    delivery never reported has none; deleting it is a no-op)."""
    first, last = chunk * CHUNK_SIZE, min(recipients, (chunk + 1) * CHUNK_SIZE)
    return [
        delivery_key(session_id, index, channel).encode()
        for index in range(first, last)
        for channel in channels
    ]


def chunks_of(recipients: int) -> int:
    """How many :class:`~switchboard.records.PurgeDeliveries` steps a session takes (at least
    one: the last step also deletes the progress row)."""
    return max(1, chunk_count(recipients))


def is_send_row(key: bytes, session_id: str, channels: Collection[str] | None) -> bool:
    """Whether ``key`` is a ``sends`` row of the session that a dispatcher of ``channels``
    wrote (None: of any channel). A send row is ``<session>/<index>/<channel>#<attempt>``, a
    batch's ``jobs:<session>/<index>/<channel>[:<part>]``; the cancel fence ``cancelled:<session>``
    is written by every dispatcher of the session, so each deletes it."""
    if key == fence_row(session_id):
        return True
    sends, batches, _ = send_row_prefixes(session_id)
    if key.startswith(sends):
        rest = key[len(sends) :].partition(b"#")[0]
    elif key.startswith(batches):
        rest = key[len(batches) :]
    else:
        return False
    if channels is None:
        return True
    # rest: "<index>/<channel>" (a batch part adds ":<part>"); channel names have no ":".
    channel = rest.partition(b"/")[2].partition(b":")[0]
    return channel.decode(errors="replace") in channels
