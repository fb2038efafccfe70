"""Idempotency keys: which session a repeated instruction belongs to. Pure.

A client's ``idempotency_key`` names one session for 24 hours. Its record (the session id,
the instruction's fingerprint, when it was claimed, and a generation) lives under
:func:`anchor` = UUID5(client, key): every worker computes the same anchor, so the record has
one home partition and one writer, and the Send API can read it there.

Session ids are deterministic too: generation *n* of a key opens session
:func:`session_for` (client, key, n). Two identical requests racing each other compute the same
id, and the session agent opens that session once: concurrent repeats create exactly one
session. After 24 hours the key is free again: the next claim is generation *n + 1*, a new
session.
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
    "fingerprint",
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

    def fresh(self, now: float) -> bool:
        """Whether the key still names this session (claimed less than 24 hours ago)."""
        return now - self.claimed_at < WINDOW_SECONDS


@dataclass(frozen=True, slots=True)
class Decision:
    """What a claim of a key means: a ``new`` session (generation ``generation``), a
    ``duplicate`` of the fresh one, or a ``conflict`` (the fresh one had another instruction)."""

    kind: Literal["new", "duplicate", "conflict"]
    session_id: str
    generation: int


def decide(
    record: IdempotencyRecord | None, client_id: str, key: str, fingerprint: str, now: float
) -> Decision:
    if record is not None and record.fresh(now):
        kind: Literal["duplicate", "conflict"] = (
            "duplicate" if record.fingerprint == fingerprint else "conflict"
        )
        return Decision(kind, record.session_id, record.generation)
    generation = record.generation + 1 if record is not None else 0
    return Decision("new", session_for(client_id, key, generation), generation)
