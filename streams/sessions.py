"""The session agent: owns sessions, stores their audiences, and fans them out.

Consumes ``<prefix>.sessions`` (keyed by session id) and is the only writer of the ``sessions``
and ``audiences`` tables.

* ``OpenSession``: a session id seen before is ignored (intake's redelivery, the API's retried
  write), so a session is opened once. Otherwise the session and its audience (in chunks) are
  stored and, for an immediate trigger, fan-out starts with chunk 0.
* ``FanOut(chunk)``: each delivery of the chunk gets an ``accepted`` report and a dispatch job
  (or a ``rejected`` report saying why it cannot be made); then the next chunk is queued. One
  chunk per event keeps memory bounded and the partition responsive. A chunk processed twice
  (a crash before the commit) re-emits its jobs; the dispatchers' ``sends`` table makes the
  second copy of a job a no-op, so nobody is sent twice.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from datetime import UTC, datetime

from faust.types import EventT, StreamT

from streams.app import Switchboard
from streams.guard import guarded
from switchboard import records
from switchboard.fanout import CHUNK_SIZE, chunk_count, plan_chunk
from switchboard.records import DispatchJob, FanOut, OpenSession, SessionState
from switchboard.status import StatusEvent

__all__ = ["load_session", "register"]

log = logging.getLogger(__name__)


def register(sb: Switchboard) -> None:
    @sb.app.agent(sb.topics.sessions, name="switchboard.sessions")
    async def sessions(stream: StreamT[bytes]) -> None:
        async for event in stream.events():
            await guarded(sb, event, "sessions", lambda e: _handle(sb, e))


def load_session(sb: Switchboard, session_id: str) -> SessionState | None:
    raw = sb.tables.sessions.get(session_id.encode())
    return records.decode(SessionState, raw) if raw is not None else None


def _save(sb: Switchboard, state: SessionState) -> None:
    sb.tables.sessions[state.session_id.encode()] = records.encode(state)


async def _handle(sb: Switchboard, event: EventT[bytes]) -> None:
    command = records.decode_command(event.value)
    if isinstance(command, OpenSession):
        await _open(sb, command)
    else:
        await _fan_out(sb, command)


async def _open(sb: Switchboard, cmd: OpenSession) -> None:
    if load_session(sb, cmd.session_id) is not None:
        log.info("session already open; duplicate ignored", extra={"session_id": cmd.session_id})
        return
    ins = cmd.instruction
    audience = ins["audience"]
    chunks = chunk_count(len(audience))
    for chunk in range(chunks):
        part = audience[chunk * CHUNK_SIZE : (chunk + 1) * CHUNK_SIZE]
        sb.tables.audiences[f"{cmd.session_id}:{chunk}".encode()] = json.dumps(
            part, separators=(",", ":")
        ).encode()
    options = ins["options"]
    trigger = options.get("trigger", "immediate")
    scheduled = options.get("scheduledTimestamp")
    due_now = trigger == "immediate" or (
        trigger == "scheduled"
        and scheduled is not None
        and datetime.fromisoformat(scheduled) <= datetime.now(UTC)
    )
    state = SessionState(
        session_id=cmd.session_id,
        client_id=ins["client_id"],
        channels=ins["channels"],
        recipients=len(audience),
        deliveries=len(audience) * len(ins["channels"]),
        chunks=chunks,
        trigger=trigger,
        status="dispatching" if due_now else ("scheduled" if trigger == "scheduled" else "waiting"),
        created_at=cmd.received_at,
        source=cmd.source,
        transport=ins["transport"],
        options=options,
        idempotency_key=ins.get("idempotency_key"),
    )
    _save(sb, state)
    sb.metrics.sessions.inc()
    log.info("session opened", extra={"session_id": state.session_id, "client_id": state.client_id,
                                      "deliveries": state.deliveries, "trigger": trigger})  # fmt: skip
    if due_now:
        await sb.command(FanOut(state.session_id, 0))
    else:
        # Scheduled and manual sessions are held here; their release is the scheduler's.
        await sb.publish_status(StatusEvent(state.session_id, state.client_id, "scheduled" if trigger == "scheduled" else "accepted",
                                            detail={"trigger": trigger, **({"scheduled_for": scheduled} if scheduled else {})}))  # fmt: skip


async def _fan_out(sb: Switchboard, cmd: FanOut) -> None:
    state = load_session(sb, cmd.session_id)
    if state is None:
        log.error("fan-out for an unknown session", extra={"session_id": cmd.session_id})
        return
    if state.status == "cancelled" or cmd.chunk < state.fanned_out_chunks:
        return
    raw = sb.tables.audiences.get(f"{cmd.session_id}:{cmd.chunk}".encode())
    recipients = json.loads(raw) if raw is not None else []
    now = time.time()
    accepted_at = datetime.fromtimestamp(now, UTC)
    for item in plan_chunk(state, cmd.chunk, recipients, now=now):
        if isinstance(item, DispatchJob):
            # Straight to the status topic: enqueued on this worker's producer before the job,
            # so it precedes every later event of the delivery on the (same) status partition.
            await sb.publish_status(StatusEvent(
                session_id=item.session_id, client_id=item.client_id, status="accepted",
                recipient=item.address, channel=item.channel, occurred_at=accepted_at,
            ))  # fmt: skip
            await sb.dispatch(item)
        else:
            await sb.report(item)
    _save(sb, dataclasses.replace(state, fanned_out_chunks=cmd.chunk + 1))
    if cmd.chunk + 1 < state.chunks:
        await sb.command(FanOut(state.session_id, cmd.chunk + 1))
