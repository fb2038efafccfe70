"""Idempotency keys: which session a repeated instruction belongs to. Pure.

A client's ``idempotency_key`` names one session for 24 hours. Its record (the session id,
the instruction's fingerprint, when it was claimed, and a generation) lives under
:func:`anchor` = UUID5(client, key): every worker computes the same anchor, so the record has
one home partition and one writer, and the Send API can read it there.

Session ids are deterministic too: generation *n* of a key opens session
:func:`session_for` (client, key, n). Two identical requests racing each other compute the same
id, and the session agent opens that session once: concurrent repeats create exactly one
session. After the window (24 hours by default, ``SWITCHBOARD_IDEMPOTENCY_WINDOW``) the key is
free again, and its record is deleted (:func:`expires_at`, ``streams/retention.py``).

Generations never repeat, also once a record is deleted: a generation is the number of the
window the claim falls in since the epoch (:func:`next_generation`), at least one more than the
key's previous one, and a record is kept until the window number has passed its generation. The
previous generation's session may still exist (it is kept for the session retention, 30 days by
default), so reusing its id would make the new instruction a "duplicate" of it, never sent.
Identical requests racing each other compute the same id, except two straddling a window
boundary (a few milliseconds once a window): then the second is answered with an id that never
opens.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from typing import Any, Final, Literal

__all__ = [
    "WINDOW_SECONDS",
    "Decision",
    "IdempotencyRecord",
    "anchor",
    "decide",
    "expires_at",
    "fingerprint",
    "next_generation",
    "scoped",
    "session_for",
    "shown",
]

WINDOW_SECONDS: Final = 24 * 3600
_NAMESPACE: Final = uuid.UUID("0b0c8c36-2f5e-4a8f-9d0f-8d4e3b1f6a27")


def scoped(key: str, priority: str) -> str:
    """A client's key within a lane: a key is scoped to its client and its ``options.priority``,
    since each lane's session agent records its own keys (the same key sent once as ``high``
    and once as ``normal`` opens two sessions). The default lane's keys are unchanged."""
    return key if priority == "normal" else f"{key}\x1f{priority}"


def shown(key: str) -> str:
    """The key as its client sent it (without the lane of :func:`scoped`)."""
    return key.split("\x1f", 1)[0]


def anchor(client_id: str, key: str) -> str:
    """The id under which a client's idempotency key is recorded (also its partition key)."""
    return str(uuid.uuid5(_NAMESPACE, f"{client_id}\x1f{key}"))


def session_for(client_id: str, key: str, generation: int) -> str:
    """The session id generation ``generation`` of a client's key opens."""
    return str(uuid.uuid5(_NAMESPACE, f"{client_id}\x1f{key}\x1f{generation}"))


def fingerprint(instruction: dict[str, Any]) -> str:
    """A digest of an instruction as sent: the same instruction with its keys in another
    order, or other whitespace, has the same fingerprint. The key itself is left out."""
    # client_id is left out too: over HTTP it may be given or implied by the API key.
    body = {k: v for k, v in instruction.items() if k not in ("idempotency_key", "client_id")}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    client_id: str
    session_id: str
    fingerprint: str
    claimed_at: float
    generation: int

    def fresh(self, now: float, window: float = WINDOW_SECONDS) -> bool:
        """Whether the key still names this session (claimed less than ``window`` ago)."""
        return now - self.claimed_at < window


@dataclass(frozen=True, slots=True)
class Decision:
    """What a claim of a key means: a ``new`` session (generation ``generation``), a
    ``duplicate`` of the fresh one, or a ``conflict`` (the fresh one had another instruction)."""

    kind: Literal["new", "duplicate", "conflict"]
    session_id: str
    generation: int


def decide(
    record: IdempotencyRecord | None,
    client_id: str,
    key: str,
    fingerprint: str,
    now: float,
    window: float = WINDOW_SECONDS,
) -> Decision:
    if record is not None and record.fresh(now, window):
        kind: Literal["duplicate", "conflict"] = (
            "duplicate" if record.fingerprint == fingerprint else "conflict"
        )
        return Decision(kind, record.session_id, record.generation)
    generation = next_generation(record, now, window)
    return Decision("new", session_for(client_id, key, generation), generation)


def next_generation(record: IdempotencyRecord | None, now: float, window: float) -> int:
    """The generation a new claim of a key opens: the number of the window ``now`` is in (so
    that a key whose record was deleted never opens an id it opened before), and at least one
    more than the record's (records written before windows were numbered count from 0)."""
    number = int(now // window) if window > 0 else 0
    return max(number, record.generation + 1) if record is not None else number


def expires_at(record: IdempotencyRecord, window: float) -> float:
    """When ``record`` may be deleted: once it is stale, and once the window number has passed
    its generation (a claim after the deletion then opens a higher one, :func:`next_generation`)."""
    return max(record.claimed_at + window, (record.generation + 1) * window)
