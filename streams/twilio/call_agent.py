"""The call tool's state (README: "The call tool"): the calls agent and its two tables.

The commands, the table values and what a command does to a call are pure, in
:mod:`switchboard.calltool.commands`; this module wires them to Kafka. Everything that changes a call
goes through ``<prefix>.calls`` and is applied by one agent, ``switchboard.calls``, the only
writer of two RocksDB tables:

* ``calls``: call id -> :class:`~switchboard.calltool.commands.CallRecord` (the
  :class:`switchboard.calltool.calls.Call` plus what the TwiML steps need: the client, the target's
  extension and caller id, the silence limit);
* ``call_lines``: line key (``<client>/<campaign>/<member E.164>``) ->
  :class:`~switchboard.calltool.commands.LineState`, the calls counted against the limit of
  :data:`~switchboard.calltool.calls.MAX_CALLS_PER_MEMBER_AND_CAMPAIGN`.

Commands are keyed by what they change, so each table row is owned by one partition::

    key = line         Reserve ─► grant (count < 5): Open(call) ─► key = call id
                       Release   (a call failed: its slot is free again)
                       Abandon   (the API gave up waiting: refuse/free the call)
    key = call id      Open, Created (Twilio's SID), CreationFailed, Step (start, connect),
                       MemberStatus (CallStatus), TargetStatus (DialCallStatus), Expire (timer)

The limit
    Every reservation of one member and campaign is decided by the agent owning the line's
    partition, one at a time, from the ``call_lines`` table: concurrent requests cannot exceed
    the limit, whichever worker they reach, and the count survives restarts (it is a changelogged
    table). ``POST /api/call`` waits for the decision through :class:`CallDesk` on the worker that
    owns the line (the web layer forwards the request there): the agent resolves the request's
    future after the table write and after the broker acknowledged the call's ``Open`` (so
    everything the API sends about the call afterwards is ordered after it). A call that fails
    at creation sends ``Release``; an API request that timed out sends ``Abandon``, so a slot is
    never kept for a call that was not placed.

The silence limit (``unknown``)
    While a call may still hear from Twilio, one durable timer (``sb.schedule_at``, id
    ``call-silence:<call id>``) is pending. When it fires, :func:`switchboard.calltool.calls.expire_if_silent`
    decides; if the call was never placed at all (no SID, no callback: the API died between the
    reservation and Twilio) it becomes ``failed`` (code ``not-placed``) and frees its slot.
    Otherwise, if the call is not silent yet, the timer is set again for the new deadline. The
    timer is cancelled once the member's call is final.

Status events
    Every change of a call publishes one :class:`~switchboard.status.StatusEvent`, built by
    :func:`switchboard.calltool.commands.status_event` (its module docs list the statuses and the
    ``detail``). Refusals (a step from the wrong status, an exact duplicate callback) change
    nothing and publish nothing.

Failure modes: a command that cannot be decoded or applied goes to the rejected topic
(:func:`streams.guard.guarded`); a command for a call that does not exist is logged and dropped
(the call was never opened, e.g. a forged id behind a valid Twilio signature).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Final

from streams import checkpoint
from streams.checkpoint import StagedRows, put, run_checkpointed
from streams.tablestore import declare_table
from switchboard.calltool.calls import MAX_CALLS_PER_MEMBER_AND_CAMPAIGN
from switchboard.calltool.commands import (
    NOT_PLACED,
    Abandon,
    CallCommand,
    CallRecord,
    Command,
    CreationFailed,
    Expire,
    LineCommand,
    LineState,
    Open,
    Release,
    Reserve,
    apply,
    decode_command,
    encode_command,
    line_key,
    silence_deadline,
    status_event,
)
from switchboard.keys import call_silence_timer

if TYPE_CHECKING:
    from faust.types import EventT, StreamT, TableT, TopicT

    from streams.app import Switchboard

__all__ = ["CallDesk", "register"]

log = logging.getLogger(__name__)

#: Abandoned call ids remembered per line, to refuse their reservation if it arrives late.
_ABANDONED_KEPT: Final = 16


# -- the agent -------------------------------------------------------------------------------


@dataclass
class CallDesk:
    """What the web layer needs from the calls agent: its topic and tables, and the decisions
    on reservations made on this worker (``expect`` before producing, then await the future)."""

    topic: TopicT
    calls: TableT[bytes, bytes]
    lines: TableT[bytes, bytes]
    #: The worker's staged rows (``Switchboard.staged``): the calls and lines as it sees them.
    staged: StagedRows
    _waiting: dict[str, asyncio.Future[bool]] = field(default_factory=dict)

    def load(self, call_id: str) -> CallRecord | None:
        """The call, when this worker holds its partition (None otherwise, or if unknown)."""
        raw = self.staged.get(self.calls, call_id.encode())  # with the rows this worker has staged
        return CallRecord.from_json(raw) if raw is not None else None

    def expect(self, call_id: str) -> asyncio.Future[bool]:
        """A future resolved with the reservation's decision when this worker's agent makes it."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting[call_id] = future
        return future

    def forget(self, call_id: str) -> None:
        self._waiting.pop(call_id, None)

    def resolve(self, call_id: str, granted: bool) -> None:
        future = self._waiting.pop(call_id, None)
        if future is not None and not future.done():
            future.set_result(granted)

    async def send(self, key: str, command: Command, *, wait: bool = False) -> None:
        """Produce ``command`` keyed by ``key``; with ``wait``, until the broker acknowledges it."""
        pending = await self.topic.send(key=key.encode(), value=encode_command(command))
        checkpoint.output(pending)
        if wait:
            await pending


def register(sb: Switchboard) -> CallDesk:
    """Declare the ``calls`` and ``call_lines`` tables and the calls agent; return the desk the
    web views use. ``sb.topics.calls`` must be declared (``streams.app.Topics``)."""
    app, partitions, memory = sb.app, sb.settings.partitions, sb.table_memory
    table = partial(declare_table, app, partitions=partitions, memory=memory)
    desk = CallDesk(
        topic=sb.topics.calls,
        calls=table("calls", help_text="call id -> call record (call tool)"),
        lines=table(
            "call_lines", help_text="client/campaign/member -> calls counted against the limit"
        ),
        staged=sb.staged,
    )

    @app.agent(sb.topics.calls, name="switchboard.calls")
    async def calls(stream: StreamT[bytes]) -> None:
        await run_checkpointed(sb, stream, "calls", lambda e: _handle(sb, desk, e))

    return desk


async def _handle(sb: Switchboard, desk: CallDesk, event: EventT[bytes]) -> None:
    command = decode_command(event.value)
    if isinstance(command, Open) or not isinstance(command, Reserve | Release | Abandon):
        await _on_call(sb, desk, command)
        return
    key = event.key
    if not isinstance(key, bytes):
        raise ValueError("a line command needs its line as the key")
    await _on_line(desk, key.decode(), command)


async def _on_line(desk: CallDesk, line: str, command: LineCommand) -> None:
    raw = desk.staged.get(desk.lines, line.encode())
    state = LineState.from_json(raw) if raw is not None else LineState()
    call_id = command.call_id
    if isinstance(command, Release):
        if call_id in state.calls:
            calls = tuple(c for c in state.calls if c != call_id)
            put(desk.lines, line.encode(), dataclasses.replace(state, calls=calls).to_json())
        return
    if isinstance(command, Abandon):
        kept = (*state.abandoned, call_id)[-_ABANDONED_KEPT:]
        calls = tuple(c for c in state.calls if c != call_id)
        put(desk.lines, line.encode(), LineState(calls, kept).to_json())
        if call_id in state.calls:  # granted after all: its slot is freed, and the call fails
            at = datetime.now(UTC).timestamp()
            await desk.send(
                call_id,
                CreationFailed(
                    call_id, NOT_PLACED, "the request timed out before the call was placed", at
                ),
            )
        return
    granted = call_id in state.calls  # a replayed reservation is granted again
    if not granted and call_id not in state.abandoned:
        granted = len(state.calls) < MAX_CALLS_PER_MEMBER_AND_CAMPAIGN
        if granted:
            put(
                desk.lines,
                line.encode(),
                dataclasses.replace(state, calls=(*state.calls, call_id)).to_json(),
            )
    if granted:
        fields = {f.name: getattr(command, f.name) for f in dataclasses.fields(Reserve)}
        # Acknowledged before the API hears of it: whatever the API then sends about the call
        # lands after its Open on the call's partition.
        await desk.send(call_id, Open(**fields), wait=True)
    log.info(
        "call reservation",
        extra={"call_id": call_id, "granted": granted, "counted": len(state.calls)},
    )
    desk.resolve(call_id, granted)


async def _on_call(sb: Switchboard, desk: CallDesk, command: CallCommand) -> None:
    key = command.call_id.encode()
    raw = desk.staged.get(desk.calls, key)
    record = CallRecord.from_json(raw) if raw is not None else None
    now = datetime.now(UTC).timestamp()
    outcome = apply(record, command, now)
    if outcome.record is None:
        log.warning(
            "command for an unknown call dropped",
            extra={"call_id": command.call_id, "kind": command.KIND},
        )
        return
    if outcome.change is None:
        return
    updated = await _keep_timer(sb, desk, outcome.record)
    put(desk.calls, key, updated.to_json())
    if outcome.change != "timer":
        at = getattr(command, "at", None) or getattr(command, "requested_at", None) or now
        await sb.publish_status(status_event(updated, outcome.change, at, outcome.error_code))
    if outcome.release:
        call = updated.call
        await desk.send(
            line_key(updated.client_id, call.campaign_id, call.member_number), Release(call.call_id)
        )


async def _keep_timer(sb: Switchboard, desk: CallDesk, record: CallRecord) -> CallRecord:
    """Set the silence timer when one is needed and none is pending; cancel it when the call can
    no longer fall silent. The record says which timer is pending."""
    due = silence_deadline(record)
    timer_id = call_silence_timer(record.call.call_id)
    key = record.call.call_id.encode()
    if due is not None and record.timer_due is None:
        value = encode_command(Expire(record.call.call_id))
        await sb.schedule_at(timer_id, due, desk.topic, key, value)
        return dataclasses.replace(record, timer_due=due)
    if due is None and record.timer_due is not None:
        await sb.cancel_timer(timer_id, key)
        return dataclasses.replace(record, timer_due=None)
    return record
