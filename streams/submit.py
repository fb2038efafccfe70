"""Submitting an instruction: the one path from a validated envelope to an open session.

Both entry points use it: the Send API (which waits for every write to be confirmed before it
answers 202) and intake (whose event is acknowledged only after Faust flushed its writes).

1. The audience is validated a chunk at a time (:func:`switchboard.validation.audience_chunks`)
   and each chunk is written as an ``AudienceChunk`` command keyed by the session id, so memory
   holds one chunk and no record holds a whole large audience. Validation is CPU-bound (a
   million phone numbers take tens of seconds): it yields to the event loop after every chunk,
   so the worker's agents, heartbeats and other requests keep running meanwhile.
2. If a recipient turns out invalid, a ``Discard`` command forgets the chunks written so far,
   and the ``ValidationFailed`` naming every invalid recipient goes up to the caller.
3. Then one small command opens the session: ``OpenSession`` on the session's partition (after
   its chunks, in order); or, with an idempotency key, a ``Claim`` on the key's partition, which
   opens the session unless the key names one already. The chunks are confirmed before a claim
   is written: the session it opens lives on another partition, whose opening must not overtake
   them.

With a ``deadline`` (the Send API), the deadline bounds Kafka's confirmations only, never the
validation: the chunks must be confirmed within ``deadline`` seconds of the last one being
written, and only then is the opening command written, which must be confirmed within
``deadline`` seconds in turn. :class:`Unconfirmed` says which of the two failed, so the caller
can tell its client whether a retry is safe.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Iterable, Sequence
from typing import Any, Literal

from faust import current_event

from streams.app import Switchboard
from streams.retention import schedule_orphan_check
from switchboard.clients import ClientConfig
from switchboard.errors import ValidationFailed
from switchboard.fanout import CHUNK_SIZE
from switchboard.idempotency import anchor, scoped
from switchboard.instruction import Envelope
from switchboard.records import AudienceChunk, Claim, Discard, OpenSession, SessionCommand
from switchboard.validation import ValidationPolicy, audience_chunks, envelope_steps

__all__ = ["Unconfirmed", "checked_envelope", "submit"]

log = logging.getLogger(__name__)


class Unconfirmed(Exception):
    """Kafka refused a write of :func:`submit` with a deadline, or did not confirm it in time.

    Attributes:
        opening_sent: False: the session's opening command (``OpenSession`` or ``Claim``) was
            never handed to the producer, and never will be: no session opens, and sending the
            instruction again is safe. True: it was, and Kafka may still store it: the session
            may open (for an idempotency key, a repeat with the key answers that session).
        cause: the producer's exception; None when the deadline passed.
    """

    def __init__(self, opening_sent: bool, cause: BaseException | None) -> None:
        super().__init__("opening sent" if opening_sent else "nothing opened")
        self.opening_sent = opening_sent
        self.cause = cause


async def checked_envelope(
    data: Any,
    *,
    client: ClientConfig | None,
    authenticated_client: str | None = None,
    policy: ValidationPolicy | None = None,
) -> Envelope:
    """:func:`switchboard.validation.validate_envelope`, yielding to the event loop between
    slices of the recipients it checks (an invalid envelope has every recipient checked).

    Raises:
        ValidationFailed: with every problem found.
    """
    steps = envelope_steps(
        data,
        client=client,
        authenticated_client=authenticated_client,
        policy=policy,
        size=CHUNK_SIZE,
    )
    while True:
        try:
            next(steps)
        except StopIteration as done:
            envelope: Envelope = done.value
            return envelope
        await asyncio.sleep(0)


async def submit(
    sb: Switchboard,
    envelope: Envelope,
    audience: Sequence[Any],
    *,
    session_id: str,
    source: Literal["api", "kafka"],
    origin: str,
    fingerprint: str | None = None,
    deadline: float | None,
    policy: ValidationPolicy | None = None,
) -> None:
    """Write ``envelope``'s session under ``session_id`` (see the module docstring).

    Args:
        fingerprint: with an idempotency key, the instruction's fingerprint: the session is
            claimed through the key rather than opened.
        deadline: None inside an agent's event (the writes are flushed before the event is
            acknowledged). Otherwise seconds Kafka has to confirm the chunks (counted once the
            last is written, however long validation took), then the opening: when this
            returns, every write is confirmed (``acks=all``).

    Raises:
        ValidationFailed: a recipient is invalid (the chunks written were discarded; nothing
            was opened).
        Unconfirmed: only with a deadline: a write was refused or not confirmed in time.
    """
    pending: list[Awaitable[Any]] = []
    written = 0
    lane = envelope.options.priority
    opening_sent = False
    try:
        for recipients in audience_chunks(envelope, audience, size=CHUNK_SIZE, policy=policy):
            if recipients:  # an empty list: validation only pauses (see audience_chunks)
                command = AudienceChunk(session_id, written, recipients)
                pending.append(await _send(sb, command, lane))
                written += 1
            await asyncio.sleep(0)  # a large audience takes a while: let the other agents run
        opening = _opening(envelope, session_id, written, fingerprint, source, origin)
        if deadline is None:
            if isinstance(opening, Claim):
                await asyncio.gather(*pending)
            await _send(sb, opening, lane)
            return
        # Over HTTP the opening waits for every chunk, whatever its partition: a 503 then means
        # either "nothing opened" (a retry is safe) or "the opening may be stored", never a
        # session opened behind the client's back while it was told the write failed.
        await _confirmed(pending, deadline, opening_sent=False)
        sent = await _send(sb, opening, lane)
        opening_sent = True
        await _confirmed([sent], deadline, opening_sent=True)
    except ValidationFailed:
        if written and deadline is None:
            await _send(sb, Discard(session_id, written), lane)
        elif written:
            _quietly(pending)
            await _discard(sb, session_id, written, lane)  # a Kafka failure must not hide the 422
        raise
    except Unconfirmed:
        _forget(sb, envelope, session_id, written, opening_sent)
        raise
    except Exception as exc:
        if deadline is None:
            raise
        _forget(sb, envelope, session_id, written, opening_sent)
        raise Unconfirmed(opening_sent, exc) from None
    except BaseException:  # cancelled: the client went away, or the worker stops
        if deadline is not None:
            _forget(sb, envelope, session_id, written, opening_sent)
        raise


def _opening(
    envelope: Envelope,
    session_id: str,
    chunks: int,
    fingerprint: str | None,
    source: Literal["api", "kafka"],
    origin: str,
) -> SessionCommand:
    """The command that opens the session: a ``Claim`` through its idempotency key, or else
    an ``OpenSession``."""
    record = envelope.to_record(chunks=chunks)
    now = time.time()
    key = envelope.idempotency_key
    if key is None or fingerprint is None:
        return OpenSession(session_id, record, received_at=now, source=source, origin=origin)
    lane = envelope.options.priority
    return Claim(
        anchor(envelope.client_id, scoped(key, lane)),
        envelope.client_id,
        scoped(key, lane),
        fingerprint,
        record,
        now,
        source,
        origin,
        candidate=session_id,
    )


async def _confirmed(futures: list[Awaitable[Any]], deadline: float, *, opening_sent: bool) -> None:
    """Wait up to ``deadline`` seconds for the broker to confirm every write of ``futures``.

    Not cancelled on timeout: the writes cannot be taken back, and cancelling a producer's
    future only makes it raise when the acknowledgement comes.

    Raises:
        Unconfirmed: one was refused, or not all were confirmed in time.
    """
    waiting = [asyncio.ensure_future(f) for f in futures]
    if not waiting:
        return
    done, late = await asyncio.wait(waiting, timeout=deadline)
    _quietly(late)
    # Every outcome retrieved (asyncio logs an exception never retrieved); the first one said.
    errors = [f.exception() for f in done if not f.cancelled()]
    refused = next((e for e in errors if e is not None), None)
    if refused is not None:
        raise Unconfirmed(opening_sent, refused)
    if late:
        raise Unconfirmed(opening_sent, None)


def _quietly(futures: Iterable[Awaitable[Any]]) -> None:
    """Retrieve the outcome of writes no one awaits any more, when it comes: asyncio would log
    each refused one as an exception never retrieved (the submission's caller heard already)."""
    for future in futures:
        asyncio.ensure_future(future).add_done_callback(lambda f: f.cancelled() or f.exception())


async def _discard(sb: Switchboard, session_id: str, chunks: int, lane: str) -> None:
    """Write a ``Discard`` of the session's first ``chunks`` chunks; best effort (logged when
    refused): unused chunks are only rows that no session reads."""

    def said(future: asyncio.Future[Any]) -> None:
        if not future.cancelled() and future.exception() is not None:
            log.warning(
                "unused audience chunks not discarded",
                extra={"session_id": session_id, "error": type(future.exception()).__name__},
            )

    try:
        sent = await _send(sb, Discard(session_id, chunks), lane)
    except Exception as exc:  # noqa: BLE001 - best effort (above)
        log.warning(
            "unused audience chunks not discarded",
            extra={"session_id": session_id, "error": type(exc).__name__},
        )
        return
    asyncio.ensure_future(sent).add_done_callback(said)


def _forget(
    sb: Switchboard, envelope: Envelope, session_id: str, written: int, opening_sent: bool
) -> None:
    """After a failed submission, forget the chunks written under ``session_id``: at once with
    a ``Discard``, unless the session may open (its opening was sent) or the id is an
    idempotency key's (a retry with the key writes the same chunks under the same id, possibly
    from another worker, and a late ``Discard`` would erase them); those are deleted later,
    if the session never opened (``streams/retention.py``, an orphan check). In the background:
    Kafka may be the reason for the failure."""
    if not written:
        return
    lane = envelope.options.priority
    later = opening_sent or envelope.idempotency_key is not None
    cleanup = (
        _orphan_check(sb, session_id, lane) if later else _discard(sb, session_id, written, lane)
    )
    task = asyncio.ensure_future(cleanup)
    sb.background.add(task)  # held until done (the event loop keeps only a weak reference)
    task.add_done_callback(sb.background.discard)


async def _orphan_check(sb: Switchboard, session_id: str, lane: str) -> None:
    """Set the orphan check of a failed submission's chunks; best effort, as ``_discard``."""
    try:
        await schedule_orphan_check(sb, session_id, sb.sessions_topic(lane))
    except Exception as exc:  # noqa: BLE001 - best effort: logged
        log.warning(
            "no orphan check set for unused audience chunks",
            extra={"session_id": session_id, "error": type(exc).__name__},
        )


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
