"""Every key Switchboard builds: table rows, Kafka record keys and timer ids, in one place. Pure.

A key names one thing for the life of the deployment (a row written by one version is read by
the next, a timer set before a restart is replaced by the same id after it), so each is built by
exactly one function here, never by an f-string at the call site.

Tables (their agents are the only writers):

* ``sessions``: :func:`session_row` (a session), :func:`chunk_row` (its audience chunks),
  :func:`idempotency_row` (a client's key), :func:`purged_row` (a deleted session's marker);
* ``sends``: :func:`send_row` (one attempt of one delivery), :func:`batch_row` and
  :func:`batch_part_row` (a job batch), :func:`fence_row` (a cancel fence);
* ``deliveries``: :func:`delivery_key` (one delivery), the session id (its progress).

Timers (``switchboard/timers.py``) are replaced when set again under the same id, so an id says
what is scheduled: a session's release, a job's attempt, a chunk's window opening...
"""

from __future__ import annotations

__all__ = [
    "batch_part_row",
    "batch_row",
    "call_silence_timer",
    "cancel_check_timer",
    "chunk_row",
    "chunk_rows_prefix",
    "delivery_key",
    "expire_timer",
    "fanout_timer",
    "fence_row",
    "forget_key_timer",
    "gone_timer",
    "idempotency_row",
    "job_timer",
    "orphan_timer",
    "purge_timer",
    "purged_row",
    "release_timer",
    "send_row",
    "send_row_prefixes",
    "session_row",
    "webhook_timer",
    "window_timer",
]


def delivery_key(session_id: str, index: int, channel: str) -> str:
    """One (recipient, channel) delivery of a session: ``<session>/<index>/<channel>``."""
    return f"{session_id}/{index}/{channel}"


# -- table rows -----------------------------------------------------------------------------


def session_row(session_id: str) -> bytes:
    return session_id.encode()


def chunk_row(session_id: str, chunk: int) -> bytes:
    """The sessions table's row of one audience chunk."""
    return f"{session_id}:{chunk}".encode()


def idempotency_row(anchor: str) -> bytes:
    """The sessions table's row of an idempotency key, by its anchor."""
    return f"idem:{anchor}".encode()


def send_row(delivery: str, attempt: int) -> bytes:
    """The sends table's row of one attempt of one delivery: its claim, then its outcome."""
    return f"{delivery}#{attempt}".encode()


def batch_row(batch: str) -> bytes:
    """The sends table's row of a job batch (by its key, ``JobBatch.key``): its claim, then
    how many outcome parts it wrote once every job of it is done."""
    return f"jobs:{batch}".encode()


def batch_part_row(batch: str, part: int) -> bytes:
    """Outcome part ``part`` of a job batch: the reports (and retries) of the jobs that
    finished together."""
    return f"jobs:{batch}:{part}".encode()


def fence_row(session_id: str) -> bytes:
    """The sends table's row a dispatcher writes when it reaches a session's cancel fence."""
    return f"cancelled:{session_id}".encode()


def purged_row(session_id: str) -> bytes:
    """The sessions table's marker of a session deleted after its retention (what ``410 Gone``
    answers from), on the session's own partition."""
    return f"purged:{session_id}".encode()


def send_row_prefixes(session_id: str) -> tuple[bytes, ...]:
    """What every ``sends`` row of a session starts with: :func:`send_row` (``<session>/``),
    :func:`batch_row` and :func:`batch_part_row` (``jobs:<session>/``), and :func:`fence_row`
    (the whole key). A session id is a UUID (fixed length, no ``/``), so no other session's
    rows share these prefixes."""
    return (f"{session_id}/".encode(), f"jobs:{session_id}/".encode(), fence_row(session_id))


# -- timer ids -------------------------------------------------------------------------------


def release_timer(session_id: str) -> str:
    """A scheduled session's release."""
    return f"release:{session_id}"


def job_timer(delivery: str, attempt: int) -> str:
    """Attempt ``attempt`` of one delivery (a retry, or a job held by its window)."""
    return f"job:{delivery}#{attempt}"


def window_timer(session_id: str, chunk: int, channel: str, due: float) -> str:
    """A chunk's deliveries on ``channel`` held until their window opens at ``due``."""
    return f"window:{session_id}:{chunk}:{channel}:{due:.0f}"


def fanout_timer(session_id: str, chunk: int) -> str:
    """A session's next chunk, waiting for the dispatch backlog (``streams/flow.py``)."""
    return f"fanout:{session_id}:{chunk}"


def cancel_check_timer(session_id: str) -> str:
    """A cancelled session's next look at its fences (``streams/fences.py``)."""
    return f"cancel-check:{session_id}"


def expire_timer(session_id: str) -> str:
    """A session's next expiry sweep."""
    return f"expire:{session_id}"


def purge_timer(session_id: str) -> str:
    """A completed session's deletion, once its retention has passed."""
    return f"purge:{session_id}"


def gone_timer(session_id: str) -> str:
    """The end of a deleted session's ``410 Gone`` (its :func:`purged_row` is deleted)."""
    return f"gone:{session_id}"


def orphan_timer(session_id: str) -> str:
    """The deletion of audience chunks written for a session that never opened."""
    return f"orphan:{session_id}"


def chunk_rows_prefix(session_id: str) -> bytes:
    """What every :func:`chunk_row` of the session starts with (and no other row does)."""
    return f"{session_id}:".encode()


def forget_key_timer(anchor: str) -> str:
    """The deletion of an idempotency key's record, once its window has passed."""
    return f"forget-key:{anchor}"


def webhook_timer(event_id: str, attempt: int) -> str:
    """Attempt ``attempt`` of one webhook delivery."""
    return f"webhook:{event_id}#{attempt}"


def call_silence_timer(call_id: str) -> str:
    """A call that Twilio has not reported on for too long."""
    return f"call-silence:{call_id}"
