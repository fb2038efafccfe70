"""Submitting an instruction: the one path from a validated envelope to an open session.

Both entry points use it: the Send API (which waits for every write to be confirmed before it
answers 202) and intake (whose event is acknowledged only after Faust flushed its writes).

1. The audience is validated a chunk at a time (:func:`switchboard.validation.audience_chunks`)
   and each chunk is written as an ``AudienceChunk`` command keyed by the session id, so memory
   holds one chunk and no record holds a whole large audience.
2. If a recipient turns out invalid, a ``Discard`` command forgets the chunks written so far,
   and the ``ValidationFailed`` naming every invalid recipient goes up to the caller.
3. Then one small command opens the session: ``OpenSession`` on the session's partition (after
   its chunks, in order); or, with an idempotency key, a ``Claim`` on the key's partition, which
   opens the session unless the key names one already. The chunks are confirmed before a claim
   is written: the session it opens lives on another partition, whose opening must not overtake
   them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Sequence
from typing import Any, Literal

from faust import current_event

from streams.app import Switchboard
from switchboard.errors import ValidationFailed
from switchboard.fanout import CHUNK_SIZE
from switchboard.idempotency import anchor, scoped
from switchboard.instruction import Envelope
from switchboard.records import AudienceChunk, Claim, Discard, OpenSession, SessionCommand
from switchboard.validation import ValidationPolicy, audience_chunks

__all__ = ["submit"]


async def submit(
    sb: Switchboard,
    envelope: Envelope,
    audience: Sequence[Any],
    *,
    session_id: str,
    source: Literal["api", "kafka"],
    origin: str,
    fingerprint: str | None = None,
    confirm: bool,
    policy: ValidationPolicy | None = None,
) -> None:
    """Write ``envelope``'s session under ``session_id`` (see the module docstring).

    Args:
        fingerprint: with an idempotency key, the instruction's fingerprint: the session is
            claimed through the key rather than opened.
        confirm: wait for the broker's acknowledgement of every write.

    Raises:
        ValidationFailed: a recipient is invalid (the chunks written were discarded).
    """
    pending: list[Awaitable[Any]] = []
    written = 0
    lane = envelope.options.priority
    try:
        for chunk, recipients in enumerate(
            audience_chunks(envelope, audience, size=CHUNK_SIZE, policy=policy)
        ):
            pending.append(await _send(sb, AudienceChunk(session_id, chunk, recipients), lane))
            written = chunk + 1
            await asyncio.sleep(0)  # a large audience takes a while: let the other agents run
    except ValidationFailed:
        if written:
            await _send(sb, Discard(session_id, written), lane)
        raise
    record = envelope.to_record(chunks=written)
    now = time.time()
    command: SessionCommand
    if envelope.idempotency_key is not None and fingerprint is not None:
        await asyncio.gather(*pending)
        pending = []
        key = envelope.idempotency_key
        command = Claim(anchor(envelope.client_id, scoped(key, lane)), envelope.client_id, scoped(key, lane), fingerprint, record, now,
                        source, origin, candidate=session_id)  # fmt: skip
    else:
        command = OpenSession(session_id, record, received_at=now, source=source, origin=origin)
    pending.append(await _send(sb, command, lane))
    if confirm:
        await asyncio.gather(*pending)


async def _send(sb: Switchboard, command: SessionCommand, lane: str) -> Awaitable[Any]:
    """Enqueue ``command``; the returned future resolves when the broker acknowledged it.

    Inside an agent's event, ``Topic.send`` attaches the write to the event (it is published
    when the event is acknowledged). Outside one (the Send API), the write is published here
    and its own ``FutureMessage`` returned: ``Topic.send`` would return the producer's future
    and leave the ``FutureMessage``, which receives the same failure, unawaited, and asyncio
    would log every refused write as an exception never retrieved.
    """
    from switchboard import records

    topic = sb.sessions_topic(lane)
    key, value = command.session_id.encode(), records.encode(command)
    if current_event() is not None:
        return await sb.produce(topic, key=key, value=value)
    message = topic.as_future_message(key=key, value=value)
    await topic.publish_message(message)
    return message
