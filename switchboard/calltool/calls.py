"""The call tool's state (README: "The call tool"): pure functions over immutable values.

A call's state combines three machines. Nothing here reads a clock: every instant is passed in,
must be timezone-aware (a naive datetime raises :class:`ValueError`) and is stored in UTC. Every
function returns a new :class:`Call`, or the very same object when nothing changed, so a caller can
skip the write with ``new is old``.

1. Call status (:data:`CallStatus`), moved by the call tool itself::

       new_call ─► unstarted ──start──► started ──connect──► connected
                       │
                       └──creation_failed──► failed   (Twilio refused to create the call)

   ``creation_failed`` applies only while Twilio has not given the call a SID. A transition from
   any other state is refused: :func:`advance` (and :func:`start`, :func:`connect`,
   :func:`creation_failed`) never raises for it but returns a :class:`Transition` with
   ``applied=False``, the unchanged call and the reason. Refusals are normal, not bugs: Twilio
   fetches ``/start`` again when the member presses 2, and ``/connect`` again after a dial ends.
   ``unstarted`` covers a call placed but never answered (busy, no answer, unreachable): the member
   status says which.

2. Member call status (:data:`MemberStatus`), from Twilio's ``CallStatus`` callbacks. Every
   callback is kept in arrival order (:class:`MemberCallEvent`: status, time, arrival sequence and
   Twilio's ``SequenceNumber``), except an exact duplicate (same status and same
   ``SequenceNumber``), which changes nothing. ``member_status`` is the latest *meaningful* one:
   progress only moves forward (``queued`` < ``initiated`` < ``ringing`` < ``in-progress`` =
   ``answered`` < terminal); the first terminal status (:data:`MEMBER_TERMINAL`) is final, and
   statuses arriving after it, earlier or terminal, are recorded without changing it.
   ``unknown`` is Switchboard's own status, set by :func:`expire_if_silent` when Twilio has been
   silent too long; it is a guess, so any real callback that arrives later replaces it.

3. Target call status (:data:`TargetStatus`), the ``DialCallStatus`` Twilio posts to the
   ``<Dial action>`` when a dial ends. Each dial ends once, and a member may dial again (press 1
   after a busy target), so the target status is the most recently received one; an exact
   duplicate (same status and ``DialCallSid``) changes nothing.

:func:`combined_state` is the JSON answer of ``GET /v1/calls/{id}``.

Also here, for ``POST /api/call``: :func:`normalize_member_number` (E.164 or
:class:`InvalidMemberNumber`, a ``ValueError``), :func:`may_call` (at most
:data:`MAX_CALLS_PER_MEMBER_AND_CAMPAIGN` calls that did not fail) and the HMAC checksum of a
manual target, :func:`target_checksum` / :func:`verify_target_checksum`.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal, get_args

import phonenumbers

from switchboard.addresses import AddressError

__all__ = [
    "CALL_STATUSES",
    "CHECKSUM_LENGTH",
    "DEFAULT_ANSWERED_LIMIT",
    "MAX_CALLS_PER_MEMBER_AND_CAMPAIGN",
    "MEMBER_STATUSES",
    "MEMBER_TERMINAL",
    "MIN_MEMBER_DIGITS",
    "MIN_SECRET_BYTES",
    "TARGET_STATUSES",
    "TRANSITIONS",
    "Call",
    "CallStatus",
    "InvalidMemberNumber",
    "MemberCallEvent",
    "MemberStatus",
    "Step",
    "TargetCallEvent",
    "TargetStatus",
    "Transition",
    "UnknownStatus",
    "advance",
    "combined_state",
    "connect",
    "creation_failed",
    "expire_if_silent",
    "may_call",
    "new_call",
    "normalize_member_number",
    "parse_member_status",
    "parse_target_status",
    "record_call_sid",
    "record_member_status",
    "record_target_status",
    "start",
    "target_checksum",
    "verify_target_checksum",
]

CallStatus = Literal["failed", "unstarted", "started", "connected"]
CALL_STATUSES: Final[tuple[CallStatus, ...]] = get_args(CallStatus)

MemberStatus = Literal[
    "queued",
    "initiated",
    "ringing",
    "in-progress",
    "answered",
    "completed",
    "busy",
    "no-answer",
    "failed",
    "canceled",
    "unknown",
]
MEMBER_STATUSES: Final[tuple[MemberStatus, ...]] = get_args(MemberStatus)
MEMBER_TERMINAL: Final[frozenset[MemberStatus]] = frozenset(
    {"completed", "busy", "no-answer", "failed", "canceled"}
)
_MEMBER_RANK: Final[Mapping[MemberStatus, int]] = {
    "queued": 0,
    "initiated": 1,
    "ringing": 2,
    "in-progress": 3,
    "answered": 3,
    **dict.fromkeys(MEMBER_TERMINAL, 4),
}
_MEMBER_ANSWERED: Final[frozenset[MemberStatus]] = frozenset({"in-progress", "answered"})

TargetStatus = Literal["completed", "answered", "busy", "no-answer", "failed", "canceled"]
TARGET_STATUSES: Final[tuple[TargetStatus, ...]] = get_args(TargetStatus)

Step = Literal["start", "connect", "creation_failed"]
#: Each step of the call status machine: the statuses it applies from, and the one it leads to.
TRANSITIONS: Final[Mapping[Step, tuple[frozenset[CallStatus], CallStatus]]] = {
    "creation_failed": (frozenset({"unstarted"}), "failed"),
    "start": (frozenset({"unstarted"}), "started"),
    "connect": (frozenset({"started"}), "connected"),
}

MAX_CALLS_PER_MEMBER_AND_CAMPAIGN: Final = 5
#: Silence allowed once the member has answered: Twilio ends a call after its ``timeLimit``
#: (4 hours by default) and only then sends ``completed``; five minutes of slack for the callback.
DEFAULT_ANSWERED_LIMIT: Final = timedelta(hours=4, minutes=5)
MIN_MEMBER_DIGITS: Final = 6
_MAX_NUMBER_LENGTH: Final = 40
_NUMBER_CHARS: Final = re.compile(r"\+?[0-9 .()\-]+")
#: A checksum is the first 32 hex digits (128 bits) of the HMAC: enough against forgery, short
#: enough for a form field.
CHECKSUM_LENGTH: Final = 32
MIN_SECRET_BYTES: Final = 16
#: Domain separation: the same secret may sign other things without their MACs being interchangeable.
_CHECKSUM_CONTEXT: Final = b"switchboard/call-target/v1\x00"


class UnknownStatus(ValueError):
    """A callback carried a status this module does not know."""


class InvalidMemberNumber(AddressError):
    """The phone number is not acceptable; the message says why, ready for the member."""


@dataclass(frozen=True, slots=True)
class MemberCallEvent:
    """One ``CallStatus`` callback of the member call (or Switchboard's own ``unknown``).

    ``sequence`` is the arrival order within the call, from 0; ``provider_sequence`` is Twilio's
    ``SequenceNumber``, when the callback had one (``unknown`` never has).
    """

    status: MemberStatus
    at: datetime
    sequence: int
    provider_sequence: int | None = None


@dataclass(frozen=True, slots=True)
class TargetCallEvent:
    """One ``DialCallStatus`` callback: how a dial to the target ended."""

    status: TargetStatus
    at: datetime
    sequence: int
    dial_call_sid: str | None = None


@dataclass(frozen=True, slots=True)
class Call:
    """One call-tool call. Build it with :func:`new_call`; change it only with this module."""

    call_id: str
    campaign_id: str
    member_number: str
    target_number: str
    created_at: datetime
    target_id: str | None = None
    status: CallStatus = "unstarted"
    twilio_call_sid: str | None = None
    error: str | None = None
    failed_at: datetime | None = None
    started_at: datetime | None = None
    connected_at: datetime | None = None
    member_events: tuple[MemberCallEvent, ...] = ()
    member_status: MemberStatus | None = None
    member_status_at: datetime | None = None
    target_events: tuple[TargetCallEvent, ...] = ()

    @property
    def target_status(self) -> TargetStatus | None:
        return self.target_events[-1].status if self.target_events else None

    @property
    def target_status_at(self) -> datetime | None:
        return self.target_events[-1].at if self.target_events else None


@dataclass(frozen=True, slots=True)
class Transition:
    """The outcome of a call status step: the call after it, whether it applied, and if not why."""

    call: Call
    applied: bool
    reason: str | None = None


def _utc(at: datetime) -> datetime:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"a naive datetime is not an instant: {at!r}; attach a time zone")
    return at.astimezone(UTC)


# -- call status -----------------------------------------------------------------------------


def new_call(
    call_id: str,
    campaign_id: str,
    member_number: str,
    target_number: str,
    now: datetime,
    *,
    target_id: str | None = None,
) -> Call:
    """A call just created: ``unstarted``, before Twilio is asked to place it."""
    if not call_id:
        raise ValueError("the call id must not be empty")
    return Call(
        call_id=call_id,
        campaign_id=campaign_id,
        member_number=member_number,
        target_number=target_number,
        created_at=_utc(now),
        target_id=target_id,
    )


def advance(call: Call, step: Step, now: datetime, *, error: str | None = None) -> Transition:
    """Apply ``step`` at ``now``; refused (``applied=False``, same call) from a status the step
    does not apply from. ``error`` is recorded by ``creation_failed`` only."""
    at = _utc(now)
    sources, target = TRANSITIONS[step]
    if call.status not in sources:
        return Transition(call, False, f"{step} does not apply to a call that is {call.status}")
    if step == "creation_failed":
        if call.twilio_call_sid is not None:
            return Transition(call, False, "Twilio already created this call")
        return Transition(replace(call, status=target, failed_at=at, error=error), True)
    if step == "start":
        return Transition(replace(call, status=target, started_at=at), True)
    return Transition(replace(call, status=target, connected_at=at), True)


def creation_failed(call: Call, now: datetime, error: str) -> Transition:
    """Twilio answered the create-call request with an error: ``unstarted`` → ``failed``."""
    return advance(call, "creation_failed", now, error=error)


def start(call: Call, now: datetime) -> Transition:
    """Twilio fetched the start TwiML (the member answered): ``unstarted`` → ``started``."""
    return advance(call, "start", now)


def connect(call: Call, now: datetime) -> Transition:
    """Twilio fetched the connect TwiML (the member pressed 1): ``started`` → ``connected``."""
    return advance(call, "connect", now)


def record_call_sid(call: Call, call_sid: str) -> Call:
    """Twilio created the call under ``call_sid``. The same SID again changes nothing; a different
    one, or one for a call that failed at creation, is a bug and raises :class:`ValueError`."""
    if call.twilio_call_sid == call_sid:
        return call
    if call.twilio_call_sid is not None:
        raise ValueError(f"call {call.call_id} already has the Twilio SID {call.twilio_call_sid}")
    if call.status == "failed":
        raise ValueError(f"call {call.call_id} failed at creation: Twilio cannot have created it")
    return replace(call, twilio_call_sid=call_sid)


# -- member and target call statuses ---------------------------------------------------------


def parse_member_status(value: str) -> MemberStatus:
    """A ``CallStatus`` value as Twilio posts it; :class:`UnknownStatus` for anything else."""
    status = value.strip().lower()
    for known in MEMBER_STATUSES:
        if known == status and known != "unknown":  # ``unknown`` is ours, never Twilio's
            return known
    raise UnknownStatus(f"unknown CallStatus {value!r}")


def parse_target_status(value: str) -> TargetStatus:
    """A ``DialCallStatus`` value as Twilio posts it; :class:`UnknownStatus` for anything else."""
    status = value.strip().lower()
    for known in TARGET_STATUSES:
        if known == status:
            return known
    raise UnknownStatus(f"unknown DialCallStatus {value!r}")


def _supersedes(new: MemberStatus, latest: MemberStatus | None) -> bool:
    if latest is None:
        return True
    if latest == "unknown":
        return new != "unknown"  # a real callback beats our guess, whatever it says
    if latest in MEMBER_TERMINAL:
        return False
    if new == "unknown":
        return True
    return _MEMBER_RANK[new] > _MEMBER_RANK[latest]


def record_member_status(
    call: Call, status: MemberStatus, at: datetime, *, provider_sequence: int | None = None
) -> Call:
    """Record a ``CallStatus`` callback (see the module rules); an exact duplicate is a no-op."""
    when = _utc(at)
    if any(
        e.status == status and e.provider_sequence == provider_sequence for e in call.member_events
    ):
        return call
    event = MemberCallEvent(status, when, len(call.member_events), provider_sequence)
    events = (*call.member_events, event)
    if _supersedes(status, call.member_status):
        return replace(call, member_events=events, member_status=status, member_status_at=when)
    return replace(call, member_events=events)


def expire_if_silent(
    call: Call,
    now: datetime,
    limit: timedelta,
    *,
    answered_limit: timedelta = DEFAULT_ANSWERED_LIMIT,
) -> Call:
    """Record ``unknown`` when Twilio has sent no member callback for ``limit``.

    Silence is counted from the last sign of life: the latest member callback's time, else the
    call's creation. A call that has been answered (member status ``in-progress``/``answered``,
    or a call status of ``started``/``connected``, which Twilio's TwiML requests prove) sends
    nothing until it ends, so it waits ``max(limit, answered_limit)`` instead. Nothing changes for a
    call that failed at creation (there is no Twilio call), whose member status is terminal or
    already ``unknown``, or that has been silent for less than the limit. Expiry is due at
    exactly ``limit`` of silence. A ``limit`` that is not positive raises :class:`ValueError`.
    """
    at = _utc(now)
    if limit <= timedelta(0):
        raise ValueError(f"the silence limit must be positive, not {limit}")
    if call.status == "failed" or call.member_status == "unknown":
        return call
    if call.member_status in MEMBER_TERMINAL:
        return call
    answered = call.member_status in _MEMBER_ANSWERED or call.status in ("started", "connected")
    allowed = max(limit, answered_limit) if answered else limit
    last_sign = max([call.created_at, *(e.at for e in call.member_events)])
    if at - last_sign < allowed:
        return call
    # Not through record_member_status: an earlier ``unknown`` that a late callback replaced must
    # not make this one look like a duplicate.
    event = MemberCallEvent("unknown", at, len(call.member_events))
    return replace(
        call,
        member_events=(*call.member_events, event),
        member_status="unknown",
        member_status_at=at,
    )


def record_target_status(
    call: Call, status: TargetStatus, at: datetime, *, dial_call_sid: str | None = None
) -> Call:
    """Record a ``DialCallStatus`` callback; it becomes the target status unless it is an exact
    duplicate of one already recorded (same status and ``DialCallSid``), which is a no-op."""
    when = _utc(at)
    if any(e.status == status and e.dial_call_sid == dial_call_sid for e in call.target_events):
        return call
    event = TargetCallEvent(status, when, len(call.target_events), dial_call_sid)
    return replace(call, target_events=(*call.target_events, event))


# -- the combined view -----------------------------------------------------------------------


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def combined_state(call: Call) -> dict[str, Any]:
    """The JSON-ready view of a call for ``GET /v1/calls/{id}``: the three machines and their
    times (ISO 8601, UTC, ``Z``); ``updated_at`` is the latest time anywhere in the call."""
    times = [
        call.created_at,
        call.failed_at,
        call.started_at,
        call.connected_at,
        *(e.at for e in call.member_events),
        *(e.at for e in call.target_events),
    ]
    return {
        "call_id": call.call_id,
        "campaign_id": call.campaign_id,
        "target_id": call.target_id,
        "member_number": call.member_number,
        "target_number": call.target_number,
        "status": call.status,
        "error": call.error,
        "twilio_call_sid": call.twilio_call_sid,
        "created_at": _iso(call.created_at),
        "failed_at": _iso(call.failed_at),
        "started_at": _iso(call.started_at),
        "connected_at": _iso(call.connected_at),
        "updated_at": _iso(max(t for t in times if t is not None)),
        "member": {
            "status": call.member_status,
            "updated_at": _iso(call.member_status_at),
            "final": call.member_status in MEMBER_TERMINAL,
            "events": [
                {
                    "status": e.status,
                    "at": _iso(e.at),
                    "sequence": e.sequence,
                    "provider_sequence": e.provider_sequence,
                }
                for e in call.member_events
            ],
        },
        "target": {
            "status": call.target_status,
            "updated_at": _iso(call.target_status_at),
            "events": [
                {
                    "status": e.status,
                    "at": _iso(e.at),
                    "sequence": e.sequence,
                    "dial_call_sid": e.dial_call_sid,
                }
                for e in call.target_events
            ],
        },
    }


# -- POST /api/call: the member's number, the limit, manual targets --------------------------


def normalize_member_number(value: str, default_region: str | None = None) -> str:
    """The member's number in E.164, or :class:`InvalidMemberNumber` saying why.

    Accepted: at most 40 characters of ASCII digits, spaces, ``-``, ``.``, parentheses and one
    leading ``+``; at least :data:`MIN_MEMBER_DIGITS` digits; a number libphonenumber finds both
    possible (its length) and valid (an assigned range). Without a leading ``+`` the number is
    read as national (or with an international prefix such as ``00``) in ``default_region``
    (ISO 3166 alpha-2); without a region it is refused. An unknown ``default_region`` is a
    configuration error: plain :class:`ValueError`.
    """
    region = default_region.upper() if default_region else None
    if region is not None and region not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(f"unknown default region {default_region!r}")
    text = value.strip()
    if not text:
        raise InvalidMemberNumber("the phone number is empty")
    if len(text) > _MAX_NUMBER_LENGTH:
        raise InvalidMemberNumber(
            f"the phone number is longer than {_MAX_NUMBER_LENGTH} characters"
        )
    if not _NUMBER_CHARS.fullmatch(text):
        raise InvalidMemberNumber(
            "the phone number may contain only digits, spaces, -, ., parentheses and a leading +"
        )
    if sum(ch.isdigit() for ch in text) < MIN_MEMBER_DIGITS:
        raise InvalidMemberNumber(
            f"the phone number has too few digits (at least {MIN_MEMBER_DIGITS})"
        )
    if not text.startswith("+") and region is None:
        raise InvalidMemberNumber("the phone number must start with + and the country code")
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException as exc:
        raise InvalidMemberNumber(f"not a valid phone number: {exc._msg}") from None
    if not phonenumbers.is_possible_number(number):
        raise InvalidMemberNumber(
            "not a valid phone number: wrong number of digits for its country"
        )
    if not phonenumbers.is_valid_number(number):
        raise InvalidMemberNumber("not a valid phone number: no such number range in its country")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def may_call(
    previous_calls: Iterable[Call], limit: int = MAX_CALLS_PER_MEMBER_AND_CAMPAIGN
) -> bool:
    """Whether one more call is allowed, given the member's previous calls for this campaign (the
    caller selects them): fewer than ``limit`` of them did not fail. Calls that ``failed`` never
    reached the member, so they do not count; unanswered (``unstarted``) calls do."""
    return sum(1 for call in previous_calls if call.status != "failed") < limit


def _check_secret(secret: bytes) -> None:
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(f"the checksum secret must be at least {MIN_SECRET_BYTES} bytes")


def target_checksum(number: str, secret: bytes) -> str:
    """The checksum of a manual target: the first :data:`CHECKSUM_LENGTH` lower-case hex digits of
    HMAC-SHA256(secret, context + E.164 number). ``number`` must be international (``+`` and
    country code); any formatting of the same number gives the same checksum.

    Raises :class:`InvalidMemberNumber` for a number :func:`normalize_member_number` refuses and
    :class:`ValueError` for a secret shorter than :data:`MIN_SECRET_BYTES`.
    """
    _check_secret(secret)
    e164 = normalize_member_number(number)
    mac = hmac.new(secret, _CHECKSUM_CONTEXT + e164.encode("ascii"), hashlib.sha256)
    return mac.hexdigest()[:CHECKSUM_LENGTH]


def verify_target_checksum(number: str, checksum: str, secret: bytes) -> bool:
    """Whether ``checksum`` is ``number``'s (hex, any case, surrounding spaces ignored), compared
    in constant time. An invalid number or a malformed checksum is ``False``, never an error; a
    secret shorter than :data:`MIN_SECRET_BYTES` raises :class:`ValueError` (misconfiguration)."""
    _check_secret(secret)
    try:
        expected = target_checksum(number, secret)
    except InvalidMemberNumber:
        return False
    provided = checksum.strip().lower()
    if not provided.isascii():  # compare_digest takes ASCII strings only
        return False
    return hmac.compare_digest(expected, provided)
