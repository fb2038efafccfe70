"""The call tool's state (CONTRACT.md section 7): the calls agent, its two tables and its commands.

Everything that changes a call goes through ``<prefix>.calls`` and is applied by one agent,
``switchboard.calls``, the only writer of two RocksDB tables:

* ``calls``: call id -> :class:`CallRecord` (the :class:`switchboard.calls.Call` plus what the
  TwiML steps need: the client, the target's extension and caller id, the silence limit);
* ``call_lines``: line key (``<client>/<campaign>/<member E.164>``) -> :class:`LineState`, the
  calls counted against the limit of :data:`~switchboard.calls.MAX_CALLS_PER_MEMBER_AND_CAMPAIGN`.

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
    ``call-silence:<call id>``) is pending. When it fires, :func:`switchboard.calls.expire_if_silent`
    decides; if the call was never placed at all (no SID, no callback: the API died between the
    reservation and Twilio) it becomes ``failed`` (code ``not-placed``) and frees its slot.
    Otherwise, if the call is not silent yet, the timer is set again for the new deadline. The
    timer is cancelled once the member's call is final.

Status events
    Every change of a call publishes one :class:`~switchboard.status.StatusEvent` with
    ``session_id`` = call id, ``channel`` = ``voice``, ``recipient`` = the member's number,
    ``provider_message_id`` = Twilio's CallSid, and ``status`` from :func:`delivery_status`:

    ===============  ==============================================================
    ``accepted``     the call exists; Twilio has not confirmed it yet
    ``sent``         Twilio accepted it (SID), or the member's phone is queued/ringing
    ``delivered``    the member answered (``in-progress``/``answered``, or the call is
                     ``started``/``connected``: the member heard the message)
    ``completed``    the member's call ended after being answered
    ``undelivered``  the member was ``busy`` or did not answer (``no-answer``)
    ``failed``       Twilio refused the call at creation (its error code), or ``failed``
    ``cancelled``    the member's call was ``canceled``
    ``expired``      no callback within the silence limit: the member status is ``unknown``
    ===============  ==============================================================

    ``detail`` carries the three machines (``call_status``, ``member_status``,
    ``target_status``), ``change`` (``created``, ``placed``, ``creation_failed``, ``started``,
    ``connected``, ``member_status``, ``target_status``, ``expired``), ``campaign_id`` and
    ``target_id``. Refusals (a step from the wrong status, an exact duplicate callback) change
    nothing and publish nothing.

Failure modes: a command that cannot be decoded or applied goes to the rejected topic
(:func:`streams.guard.guarded`); a command for a call that does not exist is logged and dropped
(the call was never opened, e.g. a forged id behind a valid Twilio signature).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Final

from streams.guard import guarded
from switchboard import calls as machine
from switchboard.calls import (
    DEFAULT_ANSWERED_LIMIT,
    MAX_CALLS_PER_MEMBER_AND_CAMPAIGN,
    MEMBER_TERMINAL,
    Call,
    MemberCallEvent,
    TargetCallEvent,
)
from switchboard.status import Status, StatusEvent

if TYPE_CHECKING:
    from faust.types import EventT, StreamT, TableT, TopicT

    from streams.app import Switchboard

__all__ = [
    "Abandon",
    "CallDesk",
    "CallRecord",
    "Created",
    "CreationFailed",
    "Expire",
    "LineState",
    "MemberStatus",
    "Open",
    "Release",
    "Reserve",
    "Step",
    "TargetStatus",
    "apply",
    "decode_command",
    "delivery_status",
    "line_key",
    "register",
    "silence_deadline",
]

log = logging.getLogger(__name__)

CHANNEL: Final = "voice"
NOT_PLACED: Final = "not-placed"
#: Abandoned call ids remembered per line, to refuse their reservation if it arrives late.
_ABANDONED_KEPT: Final = 16
_ANSWERED: Final = frozenset({"in-progress", "answered"})


def line_key(client_id: str, campaign_id: str, member_number: str) -> str:
    """The key of one member's calls for one campaign: the unit of the limit."""
    return f"{client_id}/{campaign_id}/{member_number}"


# -- commands --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reserve:
    """Ask for one of the member's calls for a campaign (key: the line). Everything the call
    needs travels with it, so a granted reservation can open the call by itself."""

    KIND: ClassVar[str] = "reserve"
    call_id: str
    client_id: str
    campaign_id: str
    member_number: str
    target_number: str
    requested_at: float
    target_id: str | None = None
    target_extension: str | None = None
    target_caller_id: str | None = None
    silence_limit: float = 600.0

    @property
    def line(self) -> str:
        return line_key(self.client_id, self.campaign_id, self.member_number)


@dataclass(frozen=True, slots=True)
class Open(Reserve):
    """Create the call record (key: the call id); sent by the agent for a granted reservation."""

    KIND: ClassVar[str] = "open"


@dataclass(frozen=True, slots=True)
class Release:
    """The call failed: it no longer counts against its line's limit (key: the line)."""

    KIND: ClassVar[str] = "release"
    call_id: str


@dataclass(frozen=True, slots=True)
class Abandon:
    """The API gave up waiting for the reservation (key: the line): refuse it, or undo it."""

    KIND: ClassVar[str] = "abandon"
    call_id: str


@dataclass(frozen=True, slots=True)
class Created:
    """Twilio created the member's call under ``call_sid``."""

    KIND: ClassVar[str] = "created"
    call_id: str
    call_sid: str
    at: float


@dataclass(frozen=True, slots=True)
class CreationFailed:
    """Twilio refused to create the call (``error_code`` is Twilio's code), or it was never
    asked (:data:`NOT_PLACED`)."""

    KIND: ClassVar[str] = "creation_failed"
    call_id: str
    error_code: str
    error: str
    at: float


@dataclass(frozen=True, slots=True)
class Step:
    """Twilio fetched a TwiML step that moves the call status: ``start`` or ``connect``."""

    KIND: ClassVar[str] = "step"
    call_id: str
    step: str
    at: float
    call_sid: str | None = None


@dataclass(frozen=True, slots=True)
class MemberStatus:
    """A ``CallStatus`` callback of the member's call, as Twilio posted it."""

    KIND: ClassVar[str] = "member_status"
    call_id: str
    status: str
    at: float
    call_sid: str | None = None
    sequence: int | None = None
    error_code: str | None = None


@dataclass(frozen=True, slots=True)
class TargetStatus:
    """The ``DialCallStatus`` Twilio posted when a dial to the target ended."""

    KIND: ClassVar[str] = "target_status"
    call_id: str
    status: str
    at: float
    dial_call_sid: str | None = None


@dataclass(frozen=True, slots=True)
class Expire:
    """The silence timer of the call fired."""

    KIND: ClassVar[str] = "expire"
    call_id: str


LineCommand = Reserve | Release | Abandon
CallCommand = Open | Created | CreationFailed | Step | MemberStatus | TargetStatus | Expire
Command = LineCommand | CallCommand

_KINDS: Final[Mapping[str, type[Any]]] = {
    cls.KIND: cls
    for cls in (Reserve, Release, Abandon, Open, Created, CreationFailed, Step, MemberStatus,
                TargetStatus, Expire)
}  # fmt: skip


def encode_command(command: Command) -> bytes:
    body = {f.name: getattr(command, f.name) for f in dataclasses.fields(command)}
    body["kind"] = command.KIND
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def decode_command(data: bytes) -> Command:
    """A command from its JSON; unknown fields are ignored (rolling upgrades), an unknown kind
    or missing fields raise ``ValueError``."""
    body = json.loads(data)
    kind = body.get("kind") if isinstance(body, dict) else None
    cls = _KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ValueError("not a calls command")
    names = {f.name for f in dataclasses.fields(cls)}
    try:
        command: Command = cls(**{k: v for k, v in body.items() if k in names})
    except TypeError as exc:
        raise ValueError(f"invalid {cls.KIND} command: {exc}") from None
    return command


# -- table values ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LineState:
    """The calls of one member and campaign that count against the limit (all but failed ones),
    and the ids the API abandoned (their reservation is refused if it arrives late)."""

    calls: tuple[str, ...] = ()
    abandoned: tuple[str, ...] = ()

    def to_json(self) -> bytes:
        return json.dumps({"calls": list(self.calls), "abandoned": list(self.abandoned)}).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> LineState:
        body = json.loads(raw)
        return cls(tuple(body.get("calls", ())), tuple(body.get("abandoned", ())))


@dataclass(frozen=True, slots=True)
class CallRecord:
    """A call and what its TwiML steps need; ``timer_due`` is the pending silence timer's due
    time (epoch seconds), None when none is pending."""

    call: Call
    client_id: str
    target_extension: str | None = None
    target_caller_id: str | None = None
    silence_limit: float = 600.0
    error_code: str | None = None
    timer_due: float | None = None

    def to_json(self) -> bytes:
        return json.dumps({
            "call": _call_json(self.call), "client_id": self.client_id,
            "target_extension": self.target_extension, "target_caller_id": self.target_caller_id,
            "silence_limit": self.silence_limit, "error_code": self.error_code,
            "timer_due": self.timer_due,
        }, separators=(",", ":")).encode()  # fmt: skip

    @classmethod
    def from_json(cls, raw: bytes) -> CallRecord:
        body = json.loads(raw)
        return cls(
            call=_call_from_json(body["call"]),
            client_id=body["client_id"],
            target_extension=body.get("target_extension"),
            target_caller_id=body.get("target_caller_id"),
            silence_limit=float(body.get("silence_limit", 600.0)),
            error_code=body.get("error_code"),
            timer_due=body.get("timer_due"),
        )


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat()


def _dt(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def _call_json(call: Call) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for f in dataclasses.fields(call):
        value = getattr(call, f.name)
        body[f.name] = _iso(value) if isinstance(value, datetime) else value
    body["member_events"] = [
        [e.status, e.at.isoformat(), e.sequence, e.provider_sequence] for e in call.member_events
    ]
    body["target_events"] = [
        [e.status, e.at.isoformat(), e.sequence, e.dial_call_sid] for e in call.target_events
    ]
    return body


def _call_from_json(body: Mapping[str, Any]) -> Call:
    times = ("created_at", "failed_at", "started_at", "connected_at", "member_status_at")
    values: dict[str, Any] = {k: (_dt(v) if k in times else v) for k, v in body.items()}
    values["member_events"] = tuple(
        MemberCallEvent(s, datetime.fromisoformat(at), n, p)
        for s, at, n, p in body["member_events"]
    )
    values["target_events"] = tuple(
        TargetCallEvent(s, datetime.fromisoformat(at), n, d)
        for s, at, n, d in body["target_events"]
    )
    names = {f.name for f in dataclasses.fields(Call)}
    return Call(**{k: v for k, v in values.items() if k in names})


# -- the pure core: what a command does to a call ---------------------------------------------


@dataclass(frozen=True, slots=True)
class Outcome:
    """What applying a call command gives: the record after it (``None``: there is no call),
    ``change`` naming what changed (``None``: nothing did, so nothing is written or published),
    and ``release`` when the call has just failed and its slot must be freed."""

    record: CallRecord | None
    change: str | None = None
    release: bool = False
    error_code: str | None = None


def _at(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def apply(record: CallRecord | None, command: CallCommand, now: float) -> Outcome:
    """Apply ``command`` to ``record`` (pure). Never raises for a command that does not apply:
    the outcome then has no ``change``."""
    if isinstance(command, Open):
        if record is not None:
            return Outcome(record)  # a replayed reservation re-sends its Open
        call = machine.new_call(command.call_id, command.campaign_id, command.member_number,
                                command.target_number, _at(command.requested_at),
                                target_id=command.target_id)  # fmt: skip
        return Outcome(CallRecord(call, command.client_id, command.target_extension,
                                  command.target_caller_id, command.silence_limit), "created")  # fmt: skip
    if record is None:
        return Outcome(None)
    call = record.call
    if isinstance(command, Created):
        return _changed(record, _with_sid(call, command.call_sid), "placed")
    if isinstance(command, CreationFailed):
        transition = machine.creation_failed(call, _at(command.at), command.error)
        if not transition.applied:
            return Outcome(record)
        updated = dataclasses.replace(record, call=transition.call, error_code=command.error_code)
        return Outcome(updated, "creation_failed", release=True, error_code=command.error_code)
    if isinstance(command, Step):
        with_sid = _with_sid(call, command.call_sid)
        step = machine.start if command.step == "start" else machine.connect
        transition = step(with_sid, _at(command.at))
        change = ("started" if command.step == "start" else "connected") if transition.applied else "placed"  # fmt: skip
        return _changed(record, transition.call, change)
    if isinstance(command, MemberStatus):
        status = machine.parse_member_status(command.status)
        updated_call = machine.record_member_status(
            _with_sid(call, command.call_sid), status, _at(command.at),
            provider_sequence=command.sequence,
        )  # fmt: skip
        outcome = _changed(record, updated_call, "member_status")
        return dataclasses.replace(outcome, error_code=command.error_code)
    if isinstance(command, TargetStatus):
        target = machine.parse_target_status(command.status)
        updated_call = machine.record_target_status(call, target, _at(command.at),
                                                    dial_call_sid=command.dial_call_sid)  # fmt: skip
        return _changed(record, updated_call, "target_status")
    return _expire(record, now)


def _changed(record: CallRecord, call: Call, change: str) -> Outcome:
    if call is record.call:
        return Outcome(record)
    return Outcome(dataclasses.replace(record, call=call), change)


def _with_sid(call: Call, sid: str | None) -> Call:
    # A SID from a callback fills in a lost `Created`; a failed call keeps none (Twilio cannot
    # have created it), and a second, different SID is ignored rather than trusted.
    if not sid or call.twilio_call_sid is not None or call.status == "failed":
        return call
    return machine.record_call_sid(call, sid)


def _expire(record: CallRecord, now: float) -> Outcome:
    call = record.call
    record = dataclasses.replace(record, timer_due=None)  # the timer has fired
    never_placed = (
        call.status == "unstarted" and call.twilio_call_sid is None and not call.member_events
    )
    limit = timedelta(seconds=record.silence_limit)
    if never_placed and _at(now) - call.created_at >= limit:
        error = "the call was never placed: the request stopped before Twilio was asked"
        transition = machine.creation_failed(call, _at(now), error)
        updated = dataclasses.replace(record, call=transition.call, error_code=NOT_PLACED)
        return Outcome(updated, "creation_failed", release=True, error_code=NOT_PLACED)
    expired = machine.expire_if_silent(call, _at(now), limit)
    if expired is call:
        return Outcome(record, "timer")  # written (the timer is gone), not published
    return Outcome(dataclasses.replace(record, call=expired), "expired")


def silence_deadline(record: CallRecord) -> float | None:
    """When the silence timer must fire next (epoch seconds), or None when the call can no
    longer fall silent: failed at creation, member status final or already ``unknown``."""
    call = record.call
    if call.status == "failed" or call.member_status == "unknown":
        return None
    if call.member_status in MEMBER_TERMINAL:
        return None
    limit = timedelta(seconds=record.silence_limit)
    answered = call.member_status in _ANSWERED or call.status in ("started", "connected")
    allowed = max(limit, DEFAULT_ANSWERED_LIMIT) if answered else limit
    last_sign = max([call.created_at, *(e.at for e in call.member_events)])
    return (last_sign + allowed).timestamp()


def delivery_status(record: CallRecord) -> Status:
    """The contract's status of a call (see the module docs for the table)."""
    call = record.call
    member = call.member_status
    if call.status == "failed" or member == "failed":
        return "failed"
    by_member: dict[str | None, Status] = {
        "unknown": "expired", "busy": "undelivered", "no-answer": "undelivered",
        "canceled": "cancelled", "completed": "completed",
    }  # fmt: skip
    if member in by_member:
        return by_member[member]
    if call.status in ("started", "connected") or member in _ANSWERED:
        return "delivered"
    if call.twilio_call_sid is not None or member is not None:
        return "sent"
    return "accepted"


def status_event(record: CallRecord, change: str, at: float, error_code: str | None) -> StatusEvent:
    """The status event of one change of a call."""
    call = record.call
    status = delivery_status(record)
    error = call.error if status == "failed" and call.status == "failed" else None
    code = error_code or (record.error_code if call.status == "failed" else None)
    return StatusEvent(
        session_id=call.call_id,
        client_id=record.client_id,
        status=status,
        recipient=call.member_number,
        channel=CHANNEL,
        provider_message_id=call.twilio_call_sid,
        error_code=code,
        error=error,
        occurred_at=_at(at),
        detail={
            "kind": "call",
            "change": change,
            "call_status": call.status,
            "member_status": call.member_status,
            "target_status": call.target_status,
            "campaign_id": call.campaign_id,
            "target_id": call.target_id,
        },
    )


# -- the agent -------------------------------------------------------------------------------


@dataclass
class CallDesk:
    """What the web layer needs from the calls agent: its topic and tables, and the decisions
    on reservations made on this worker (``expect`` before producing, then await the future)."""

    topic: TopicT
    calls: TableT[bytes, bytes]
    lines: TableT[bytes, bytes]
    _waiting: dict[str, asyncio.Future[bool]] = field(default_factory=dict)

    def load(self, call_id: str) -> CallRecord | None:
        """The call, when this worker holds its partition (None otherwise, or if unknown)."""
        raw = self.calls.get(call_id.encode())
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
        if wait:
            await pending


def register(sb: Switchboard) -> CallDesk:
    """Declare the ``calls`` and ``call_lines`` tables and the calls agent; return the desk the
    web views use. ``sb.topics.calls`` must be declared (``streams.app.Topics``)."""
    app, partitions = sb.app, sb.settings.partitions
    desk = CallDesk(
        topic=sb.topics.calls,
        calls=app.Table("calls", key_type=bytes, value_type=bytes, partitions=partitions,
                        help="call id -> call record (call tool)"),
        lines=app.Table("call_lines", key_type=bytes, value_type=bytes, partitions=partitions,
                        help="client/campaign/member -> calls counted against the limit"),
    )  # fmt: skip

    @app.agent(sb.topics.calls, name="switchboard.calls")
    async def calls(stream: StreamT[bytes]) -> None:
        async for event in stream.events():
            await guarded(sb, event, "calls", lambda e: _handle(sb, desk, e))

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
    raw = desk.lines.get(line.encode())
    state = LineState.from_json(raw) if raw is not None else LineState()
    call_id = command.call_id
    if isinstance(command, Release):
        if call_id in state.calls:
            calls = tuple(c for c in state.calls if c != call_id)
            desk.lines[line.encode()] = dataclasses.replace(state, calls=calls).to_json()
        return
    if isinstance(command, Abandon):
        kept = (*state.abandoned, call_id)[-_ABANDONED_KEPT:]
        calls = tuple(c for c in state.calls if c != call_id)
        desk.lines[line.encode()] = LineState(calls, kept).to_json()
        if call_id in state.calls:  # granted after all: its slot is freed, and the call fails
            at = datetime.now(UTC).timestamp()
            await desk.send(call_id, CreationFailed(call_id, NOT_PLACED, "the request timed out before the call was placed", at))  # fmt: skip
        return
    granted = call_id in state.calls  # a replayed reservation is granted again
    if not granted and call_id not in state.abandoned:
        granted = len(state.calls) < MAX_CALLS_PER_MEMBER_AND_CAMPAIGN
        if granted:
            desk.lines[line.encode()] = dataclasses.replace(state, calls=(*state.calls, call_id)).to_json()  # fmt: skip
    if granted:
        fields = {f.name: getattr(command, f.name) for f in dataclasses.fields(Reserve)}
        # Acknowledged before the API hears of it: whatever the API then sends about the call
        # lands after its Open on the call's partition.
        await desk.send(call_id, Open(**fields), wait=True)
    log.info("call reservation", extra={"call_id": call_id, "granted": granted, "counted": len(state.calls)})  # fmt: skip
    desk.resolve(call_id, granted)


async def _on_call(sb: Switchboard, desk: CallDesk, command: CallCommand) -> None:
    key = command.call_id.encode()
    raw = desk.calls.get(key)
    record = CallRecord.from_json(raw) if raw is not None else None
    now = datetime.now(UTC).timestamp()
    outcome = apply(record, command, now)
    if outcome.record is None:
        log.warning("command for an unknown call dropped", extra={"call_id": command.call_id, "kind": command.KIND})  # fmt: skip
        return
    if outcome.change is None:
        return
    updated = await _keep_timer(sb, desk, outcome.record)
    desk.calls[key] = updated.to_json()
    if outcome.change != "timer":
        at = getattr(command, "at", None) or getattr(command, "requested_at", None) or now
        await sb.publish_status(status_event(updated, outcome.change, at, outcome.error_code))
    if outcome.release:
        call = updated.call
        await desk.send(line_key(updated.client_id, call.campaign_id, call.member_number), Release(call.call_id))  # fmt: skip


async def _keep_timer(sb: Switchboard, desk: CallDesk, record: CallRecord) -> CallRecord:
    """Set the silence timer when one is needed and none is pending; cancel it when the call can
    no longer fall silent. The record says which timer is pending."""
    due = silence_deadline(record)
    timer_id = f"call-silence:{record.call.call_id}"
    key = record.call.call_id.encode()
    if due is not None and record.timer_due is None:
        value = encode_command(Expire(record.call.call_id))
        await sb.schedule_at(timer_id, due, desk.topic, key, value)
        return dataclasses.replace(record, timer_due=due)
    if due is None and record.timer_due is not None:
        await sb.cancel_timer(timer_id, key)
        return dataclasses.replace(record, timer_due=None)
    return record
