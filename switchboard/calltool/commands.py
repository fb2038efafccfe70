"""The call tool's commands and what they do to a call (README: "The call tool"). Pure.

:mod:`streams.twilio.call_agent` wires this module to Kafka: its agent decodes the commands of
``<prefix>.calls``, applies them with :func:`apply` to the records of its ``calls`` table and
publishes :func:`status_event`. Nothing here does I/O or reads a clock: every instant is passed
in, as epoch seconds. The call's own state machines are :mod:`switchboard.calltool.calls`.

Commands
    A line command (:class:`Reserve`, :class:`Release`, :class:`Abandon`) is keyed by the
    member's line (:func:`line_key`): the calls of one member and campaign, counted against
    :data:`~switchboard.calltool.calls.MAX_CALLS_PER_MEMBER_AND_CAMPAIGN` in a :class:`LineState`. A call
    command (:class:`Open`, :class:`Created`, :class:`CreationFailed`, :class:`Step`,
    :class:`MemberStatus`, :class:`TargetStatus`, :class:`Expire`) is keyed by the call id and
    changes one :class:`CallRecord`. On the topic a command is compact JSON with its ``kind``
    (:func:`encode_command`, :func:`decode_command`).

Applying a call command
    :func:`apply` gives an :class:`Outcome`: the record after the command (None when there is no
    call: a command other than ``Open`` for an unknown call id) and the ``change`` it made, None
    when it changed nothing (a step from the wrong status, an exact duplicate callback, a
    replayed ``Open``). A callback's ``CallSid`` fills in a lost ``Created``. When the silence
    timer fires (:class:`Expire`), a call that was never placed at all (no SID, no callback) for
    the silence limit fails with code :data:`NOT_PLACED` and ``release`` (its slot must be freed);
    otherwise :func:`switchboard.calltool.calls.expire_if_silent` decides, and a call that is not silent
    yet gives the change ``timer`` (the record is written: its timer is gone; nothing is
    published). :func:`silence_deadline` says when the timer must fire next.

Status events
    Every change of a call publishes one :class:`~switchboard.status.StatusEvent`
    (:func:`status_event`) with ``session_id`` = call id, ``channel`` = ``voice``, ``recipient`` =
    the member's number, ``provider_message_id`` = Twilio's CallSid, and ``status`` from
    :func:`delivery_status`:

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
    ``target_id``. Refusals change nothing and publish nothing.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Final

from switchboard import reasons
from switchboard.calltool import calls as machine
from switchboard.calltool.calls import (
    DEFAULT_ANSWERED_LIMIT,
    MEMBER_TERMINAL,
    Call,
    MemberCallEvent,
    TargetCallEvent,
)
from switchboard.status import Status, StatusEvent, event_id

__all__ = [
    "CHANNEL",
    "NOT_PLACED",
    "Abandon",
    "CallCommand",
    "CallRecord",
    "Command",
    "Created",
    "CreationFailed",
    "Expire",
    "LineCommand",
    "LineState",
    "MemberStatus",
    "Open",
    "Outcome",
    "Release",
    "Reserve",
    "Step",
    "TargetStatus",
    "apply",
    "decode_command",
    "delivery_status",
    "encode_command",
    "line_key",
    "silence_deadline",
    "status_event",
]

CHANNEL: Final = "voice"
NOT_PLACED: Final = "not-placed"
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
    STEPS: ClassVar[tuple[str, ...]] = ("start", "connect")
    call_id: str
    step: str
    at: float
    call_sid: str | None = None

    def __post_init__(self) -> None:
        # A step is decoded from a topic: a name other than these must not read as ``connect``.
        if self.step not in self.STEPS:
            raise ValueError(f"unknown step {self.step!r}: one of {', '.join(self.STEPS)}")


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
    for cls in (
        Reserve,
        Release,
        Abandon,
        Open,
        Created,
        CreationFailed,
        Step,
        MemberStatus,
        TargetStatus,
        Expire,
    )
}


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
    except (TypeError, ValueError) as exc:
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
        return json.dumps(
            {
                "call": _call_json(self.call),
                "client_id": self.client_id,
                "target_extension": self.target_extension,
                "target_caller_id": self.target_caller_id,
                "silence_limit": self.silence_limit,
                "error_code": self.error_code,
                "timer_due": self.timer_due,
            },
            separators=(",", ":"),
        ).encode()

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
        call = machine.new_call(
            command.call_id,
            command.campaign_id,
            command.member_number,
            command.target_number,
            _at(command.requested_at),
            target_id=command.target_id,
        )
        return Outcome(
            CallRecord(
                call,
                command.client_id,
                command.target_extension,
                command.target_caller_id,
                command.silence_limit,
            ),
            "created",
        )
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
        change = (
            ("started" if command.step == "start" else "connected")
            if transition.applied
            else "placed"
        )
        return _changed(record, transition.call, change)
    if isinstance(command, MemberStatus):
        status = machine.parse_member_status(command.status)
        updated_call = machine.record_member_status(
            _with_sid(call, command.call_sid),
            status,
            _at(command.at),
            provider_sequence=command.sequence,
        )
        outcome = _changed(record, updated_call, "member_status")
        return dataclasses.replace(outcome, error_code=command.error_code)
    if isinstance(command, TargetStatus):
        target = machine.parse_target_status(command.status)
        updated_call = machine.record_target_status(
            call, target, _at(command.at), dial_call_sid=command.dial_call_sid
        )
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
        "unknown": "expired",
        "busy": "undelivered",
        "no-answer": "undelivered",
        "canceled": "cancelled",
        "completed": "completed",
    }
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
    detail: Mapping[str, Any] = {
        "kind": "call",
        "change": change,
        "call_status": call.status,
        "member_status": call.member_status,
        "target_status": call.target_status,
        "campaign_id": call.campaign_id,
        "target_id": call.target_id,
    }
    if status in reasons.REASONED:  # an unanswered call's expiry, a cancelled call: why
        if status == "expired":
            error = (
                f"no news of the call from Twilio within silence_limit ({record.silence_limit:g} s)"
            )
        code, error, detail = reasons.annotate(status, code, error, detail, provider=True)
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
        event_id=event_id(call.call_id, change, status, at),
        detail=detail,
    )
