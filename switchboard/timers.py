"""The scheduler's commands, as bytes on the schedule topic (``streams/scheduler.py``). Pure.

A timer is set (or set again: the same id replaces it) with the record to produce when it is
due, cancelled by id, and fired by the scheduler itself. Keys and values are base64 in JSON, so
any bytes travel unchanged.
"""

from __future__ import annotations

import base64
import json
from typing import Any

__all__ = ["b64", "cancel_command", "fire_command", "set_command", "unb64"]


def set_command(
    timer_id: str, due: float, topic: str, key: bytes, value: bytes, at: float | None = None
) -> bytes:
    """Produce ``(key, value)`` to ``topic`` at ``due`` (epoch seconds), once. ``at``: when the
    timer was asked for (kept with it: the age of what it holds, ``switchboard/backlog.py``)."""
    return _json(
        {
            "kind": "set",
            "id": timer_id,
            "due": due,
            "topic": topic,
            "key": b64(key),
            "value": b64(value),
            "at": at,
        }
    )


def cancel_command(timer_id: str) -> bytes:
    return _json({"kind": "cancel", "id": timer_id})


def fire_command(timer_id: str) -> bytes:
    return _json({"kind": "fire", "id": timer_id})


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text)


def _json(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()
