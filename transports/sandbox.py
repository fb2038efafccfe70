"""The sandbox: every channel's stand-in for its provider. Nothing leaves the machine.

A sandbox send records what would have been sent (in memory, and as one JSON line in an outbox
file when one is configured) and reports it ``delivered``. The embedded default (``make run``)
and the benchmark use it for every channel.

For demonstrations and tests of retries, an instruction may ask the sandbox to misbehave with
``transport.extras.sandbox``::

    {"fail": "retryable" | "permanent" | "suppressed",   # how to fail
     "fail_attempts": 2,                                 # fail attempts 1..2, then succeed
     "delay_ms": 20}                                     # answer after a delay

These keys are read only by the sandbox; a real provider ignores them.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from transports.base import OutboundMessage, SendResult, final_check
from transports.errors import PermanentError, RetryableError, SuppressedError

__all__ = ["SandboxTransport"]

_FAILURES = {
    "retryable": RetryableError,
    "permanent": PermanentError,
    "suppressed": SuppressedError,
}


class SandboxTransport:
    name = "sandbox"

    def __init__(self, channel: str, outbox: Path | None = None, keep: int = 10_000) -> None:
        self.channel = channel
        self.outbox = outbox
        #: The most recent sends, newest last (bounded).
        self.sent: deque[dict[str, Any]] = deque(maxlen=keep)
        self._ids = uuid.uuid4().hex  # this transport's; each send adds a counter
        self._sent = itertools.count(1)

    async def send(self, message: OutboundMessage) -> SendResult:
        behaviour = message.extras.get("sandbox")
        if isinstance(behaviour, Mapping):
            await self._misbehave(behaviour, message.attempt)
        await final_check(message)  # after the simulated latency, as a real provider call would
        provider_id = f"sandbox-{self._ids}-{next(self._sent)}"  # unique, no syscall per send
        record = {
            "provider_message_id": provider_id,
            "channel": message.channel,
            "to": message.to,
            "from": message.sender,
            "subject": message.subject,
            "body": message.body,
            "file_url": message.file_url,
            "reference": message.reference,
            "messaging_service_sid": message.extras.get("messaging_service_sid"),
            "send_as_mms": message.extras.get("send_as_mms") is True,
            "attempt": message.attempt,
            "at": time.time(),
        }
        if message.unsubscribe_url:  # bulk email: what its List-Unsubscribe header would be
            record["unsubscribe_url"] = message.unsubscribe_url
        self.sent.append(record)
        if self.outbox is not None:
            line = json.dumps(record, ensure_ascii=False) + "\n"
            await asyncio.to_thread(_append, self.outbox, line)
        detail: dict[str, Any] = {"sandbox": True}
        if message.sender:
            detail["from"] = message.sender  # as a provider tells the number it sent from
        return SendResult(provider_id, "delivered", detail)

    async def _misbehave(self, behaviour: Mapping[str, Any], attempt: int) -> None:
        delay = behaviour.get("delay_ms")
        if isinstance(delay, int | float) and delay > 0:
            await asyncio.sleep(delay / 1000)
        kind = behaviour.get("fail")
        fail_attempts = behaviour.get("fail_attempts", 1_000_000)
        if (
            isinstance(kind, str)
            and kind in _FAILURES
            and isinstance(fail_attempts, int)
            and attempt <= fail_attempts
        ):
            raise _FAILURES[kind](f"sandbox: simulated {kind} failure", code=f"sandbox-{kind}")

    async def aclose(self) -> None:
        return None


def _append(path: Path, line: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(line)
