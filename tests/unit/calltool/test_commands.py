"""switchboard.calltool.commands: the call tool's commands, what each does to a call, and the
status events they publish (the pure core of the calls agent, streams/twilio/call_agent.py)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from switchboard.calltool.calls import (
    CALL_STATUSES,
    DEFAULT_ANSWERED_LIMIT,
    MEMBER_STATUSES,
    MEMBER_TERMINAL,
    TARGET_STATUSES,
    Call,
    CallStatus,
    TargetCallEvent,
    UnknownStatus,
)
from switchboard.calltool.calls import MemberStatus as MemberState
from switchboard.calltool.commands import (
    CHANNEL,
    NOT_PLACED,
    Abandon,
    CallCommand,
    CallRecord,
    Command,
    Created,
    CreationFailed,
    Expire,
    LineState,
    MemberStatus,
    Open,
    Outcome,
    Release,
    Reserve,
    Step,
    TargetStatus,
    apply,
    decode_command,
    delivery_status,
    encode_command,
    line_key,
    silence_deadline,
    status_event,
)
from switchboard.status import STATUSES, Status

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
EPOCH = T0.timestamp()
LIMIT = 600.0
ANSWERED = DEFAULT_ANSWERED_LIMIT.total_seconds()
MEMBER = "+14155552671"
TARGET = "+14155550123"
SID = "CA" + "1" * 32
OTHER_SID = "CA" + "2" * 32
#: Every change :func:`apply` may name.
CHANGES = {
    "created",
    "placed",
    "creation_failed",
    "started",
    "connected",
    "member_status",
    "target_status",
    "expired",
    "timer",
}
TWILIO_MEMBER_STATUSES = [s for s in MEMBER_STATUSES if s != "unknown"]


def t(seconds: float) -> float:
    """Epoch seconds, ``seconds`` after the call was requested."""
    return EPOCH + seconds


def when(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def open_command(**fields: Any) -> Open:
    values: dict[str, Any] = {
        "call_id": "c1",
        "client_id": "acme",
        "campaign_id": "bees",
        "member_number": MEMBER,
        "target_number": TARGET,
        "requested_at": EPOCH,
        "target_id": "mp-smith",
        "target_extension": "123",
        "target_caller_id": "+14155550102",
        "silence_limit": LIMIT,
    }
    return Open(**{**values, **fields})


def opened(**fields: Any) -> CallRecord:
    """A call just opened: ``unstarted``, no SID, no callback."""
    record = apply(None, open_command(**fields), EPOCH).record
    assert record is not None
    return record


def run(record: CallRecord, *commands: CallCommand, now: float | None = None) -> CallRecord:
    """The record after ``commands``; each must apply to an existing call."""
    for command in commands:
        outcome = apply(record, command, t(1) if now is None else now)
        assert outcome.record is not None
        record = outcome.record
    return record


def in_status(status: CallStatus) -> CallRecord:
    """A call in ``status``; placed (with a SID) unless it failed at creation."""
    record = opened()
    if status == "failed":
        return run(record, CreationFailed("c1", "21211", "invalid To", t(1)))
    record = run(record, Created("c1", SID, t(1)))
    if status in ("started", "connected"):
        record = run(record, Step("c1", "start", t(10)))
    if status == "connected":
        record = run(record, Step("c1", "connect", t(20)))
    assert record.call.status == status
    return record


def unchanged(outcome: Outcome, record: CallRecord | None) -> bool:
    """Nothing is written or published: the same record, no change, no release."""
    return outcome.record is record and outcome.change is None and not outcome.release


# -- commands on the wire --------------------------------------------------------------------

EVERY_COMMAND: list[Command] = [
    Reserve("c1", "acme", "bees", MEMBER, TARGET, EPOCH, "mp-smith", "123", "+14155550102", 30.0),
    Reserve("c1", "acme", "bees", MEMBER, TARGET, EPOCH),
    open_command(),
    open_command(target_id=None, target_extension=None, target_caller_id=None),
    Release("c1"),
    Abandon("c1"),
    Created("c1", SID, t(1)),
    CreationFailed("c1", "21211", "The 'To' number is not a valid phone number.", t(1)),
    CreationFailed("c1", NOT_PLACED, "the request timed out", t(1)),
    Step("c1", "start", t(2)),
    Step("c1", "connect", t(3), call_sid=SID),
    MemberStatus("c1", "ringing", t(4)),
    MemberStatus("c1", "failed", t(4), call_sid=SID, sequence=3, error_code="13224"),
    TargetStatus("c1", "busy", t(5)),
    TargetStatus("c1", "completed", t(5), dial_call_sid=OTHER_SID),
    Expire("c1"),
]


@pytest.mark.parametrize("command", EVERY_COMMAND, ids=lambda c: type(c).__name__)
def test_every_command_survives_the_wire(command: Command) -> None:
    data = encode_command(command)
    decoded = decode_command(data)
    assert decoded == command
    assert type(decoded) is type(command)
    body = json.loads(data)
    assert body["kind"] == command.KIND
    assert set(body) == {f.name for f in dataclasses.fields(command)} | {"kind"}
    assert b'": ' not in data and b', "' not in data, "compact"


def test_every_kind_is_distinct_and_known() -> None:
    kinds = {type(c): c.KIND for c in EVERY_COMMAND}
    assert len(kinds) == 10
    assert len(set(kinds.values())) == 10


def test_open_stays_an_open_although_it_is_a_reserve() -> None:
    # The agent tells the two apart by type: an Open is a call command, a Reserve a line one.
    decoded = decode_command(encode_command(open_command()))
    assert isinstance(decoded, Open) and isinstance(decoded, Reserve)
    reserve = decode_command(encode_command(Reserve("c1", "acme", "bees", MEMBER, TARGET, EPOCH)))
    assert not isinstance(reserve, Open)


def test_text_is_utf8_not_escaped() -> None:
    data = encode_command(CreationFailed("c1", "21211", "numéro invalide ☎", t(1)))
    assert "numéro invalide ☎".encode() in data
    decoded = decode_command(data)
    assert isinstance(decoded, CreationFailed) and decoded.error == "numéro invalide ☎"


def test_unknown_fields_are_ignored() -> None:
    # A newer worker may add fields (rolling upgrades).
    body = {"kind": "created", "call_id": "c1", "call_sid": SID, "at": t(1), "region": "ie1"}
    assert decode_command(json.dumps(body).encode()) == Created("c1", SID, t(1))


def test_missing_optional_fields_take_their_defaults() -> None:
    body = {"kind": "member_status", "call_id": "c1", "status": "ringing", "at": t(1)}
    assert decode_command(json.dumps(body).encode()) == MemberStatus("c1", "ringing", t(1))


@pytest.mark.parametrize(
    "data",
    [
        b'{"kind":"ring","call_id":"c1"}',
        b'{"kind":"Expire","call_id":"c1"}',
        b'{"kind":"","call_id":"c1"}',
        b'{"kind":5,"call_id":"c1"}',
        b'{"kind":null,"call_id":"c1"}',
        b'{"kind":["expire"],"call_id":"c1"}',
        b'{"call_id":"c1"}',
        b'["expire","c1"]',
        b'"expire"',
        b"42",
        b"null",
    ],
)
def test_unknown_kinds_are_refused(data: bytes) -> None:
    with pytest.raises(ValueError, match="not a calls command"):
        decode_command(data)


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b'{"kind":"created","call_id":"c1"}', "created"),
        (b'{"kind":"expire"}', "expire"),
        (b'{"kind":"reserve","call_id":"c1","client_id":"acme"}', "reserve"),
        (b'{"kind":"open","call_id":"c1"}', "open"),
    ],
)
def test_missing_fields_are_refused(data: bytes, kind: str) -> None:
    with pytest.raises(ValueError, match=f"invalid {kind} command"):
        decode_command(data)


@pytest.mark.parametrize("step", ["menu", "", "START", "dial-status"])
def test_a_step_other_than_start_or_connect_is_refused(step: str) -> None:
    # Anything else would otherwise apply as ``connect``.
    data = json.dumps({"kind": "step", "call_id": "c1", "step": step, "at": t(1)}).encode()
    with pytest.raises(ValueError, match=f"invalid step command: unknown step {step!r}"):
        decode_command(data)
    with pytest.raises(ValueError, match="one of start, connect"):
        Step("c1", step, t(1))


@pytest.mark.parametrize("data", [b"", b"{", b"not json", b"\xff\xfe"])
def test_what_is_not_json_is_a_value_error(data: bytes) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - json's own errors are ValueErrors
        decode_command(data)


_text = st.text(st.characters(codec="utf-8"), max_size=20)
_times = st.floats(0, 4e9, allow_nan=False)
_optional = st.none() | _text
_opening = (_text,) * 5 + (_times,) + (_optional,) * 3 + (st.floats(1, 1e6),)
_commands = st.one_of(
    st.builds(Reserve, *_opening),
    st.builds(Open, *_opening),
    st.builds(Release, _text),
    st.builds(Abandon, _text),
    st.builds(Created, _text, _text, _times),
    st.builds(CreationFailed, _text, _text, _text, _times),
    st.builds(Step, _text, st.sampled_from(Step.STEPS), _times, _optional),
    st.builds(
        MemberStatus, _text, _text, _times, _optional, st.none() | st.integers(0, 2**31), _optional
    ),
    st.builds(TargetStatus, _text, _text, _times, _optional),
    st.builds(Expire, _text),
)


@given(_commands)
def test_any_command_round_trips(command: Command) -> None:
    assert decode_command(encode_command(command)) == command


def test_a_reservation_is_keyed_by_its_line() -> None:
    reserve = Reserve("c1", "acme", "bees", MEMBER, TARGET, EPOCH)
    assert reserve.line == line_key("acme", "bees", MEMBER) == f"acme/bees/{MEMBER}"
    assert open_command().line == reserve.line


# -- table values ------------------------------------------------------------------------------


def test_line_state_round_trip() -> None:
    assert json.loads(LineState().to_json()) == {"calls": [], "abandoned": []}
    state = LineState(("c1", "c2"), ("c0",))
    assert LineState.from_json(state.to_json()) == state
    assert LineState.from_json(b"{}") == LineState()
    assert LineState.from_json(b'{"calls":["c1"]}') == LineState(("c1",))


def full_record() -> CallRecord:
    """A call with every field set: started, connected, callbacks and two dials."""
    record = run(
        in_status("connected"),
        MemberStatus("c1", "initiated", t(2), sequence=0),
        MemberStatus("c1", "in-progress", t(9), sequence=2),
        MemberStatus("c1", "ringing", t(5), sequence=1),
        TargetStatus("c1", "busy", t(30), dial_call_sid="DA1"),
        TargetStatus("c1", "completed", t(60)),
        MemberStatus("c1", "completed", t(90), sequence=3),
    )
    return dataclasses.replace(record, timer_due=t(1000))


@pytest.mark.parametrize(
    "record",
    [
        opened(),
        opened(target_id=None, target_extension=None, target_caller_id=None),
        in_status("failed"),
        full_record(),
    ],
    ids=["opened", "manual-target", "failed", "full"],
)
def test_call_record_round_trip(record: CallRecord) -> None:
    again = CallRecord.from_json(record.to_json())
    assert again == record
    assert again.call.created_at.tzinfo is not None
    assert again.to_json() == record.to_json()


def test_call_record_defaults_and_unknown_fields() -> None:
    body = json.loads(opened().to_json())
    body["call"]["recording_url"] = "https://example.org/r.mp3"  # a newer worker's field
    body["shard"] = 3
    body = {k: v for k, v in body.items() if k in ("call", "client_id", "shard")}
    record = CallRecord.from_json(json.dumps(body).encode())
    assert record == CallRecord(opened().call, "acme")
    assert record.silence_limit == 600.0


def test_call_record_silence_limit_is_a_float() -> None:
    body = json.loads(opened().to_json())
    body["silence_limit"] = 2
    limit = CallRecord.from_json(json.dumps(body).encode()).silence_limit
    assert limit == 2.0 and isinstance(limit, float)


# -- apply: Open -------------------------------------------------------------------------------


def test_open_creates_the_call() -> None:
    outcome = apply(None, open_command(requested_at=t(-5)), EPOCH)
    assert outcome.change == "created" and not outcome.release and outcome.error_code is None
    record = outcome.record
    assert record is not None
    assert (record.client_id, record.target_extension, record.target_caller_id) == (
        "acme",
        "123",
        "+14155550102",
    )
    assert record.silence_limit == LIMIT and record.error_code is None and record.timer_due is None
    call = record.call
    assert (call.call_id, call.campaign_id, call.member_number, call.target_number) == (
        "c1",
        "bees",
        MEMBER,
        TARGET,
    )
    assert call.target_id == "mp-smith" and call.created_at == when(-5)
    assert call.status == "unstarted" and call.twilio_call_sid is None
    assert call.member_status is None and call.target_status is None


def test_a_replayed_open_changes_nothing() -> None:
    for record in (opened(), in_status("connected"), in_status("failed")):
        assert unchanged(apply(record, open_command(client_id="other"), t(50)), record)


@pytest.mark.parametrize(
    "command",
    [c for c in EVERY_COMMAND if not isinstance(c, Reserve | Release | Abandon)],
    ids=lambda c: type(c).__name__,
)
def test_a_command_for_an_unknown_call_has_no_record(command: CallCommand) -> None:
    assert apply(None, command, t(10_000)) == Outcome(None)


# -- apply: Created and CreationFailed ---------------------------------------------------------


def test_created_records_the_sid() -> None:
    outcome = apply(opened(), Created("c1", SID, t(1)), t(1))
    assert outcome.change == "placed" and not outcome.release
    assert outcome.record is not None and outcome.record.call.twilio_call_sid == SID
    assert outcome.record.call.status == "unstarted"


@pytest.mark.parametrize("sid", [SID, OTHER_SID, ""])
def test_created_again_changes_nothing(sid: str) -> None:
    # The same SID is a duplicate; another one is ignored rather than trusted.
    record = in_status("unstarted")
    assert unchanged(apply(record, Created("c1", sid, t(2)), t(2)), record)


def test_an_empty_sid_is_not_recorded() -> None:
    record = opened()
    assert unchanged(apply(record, Created("c1", "", t(1)), t(1)), record)


def test_a_call_that_failed_at_creation_takes_no_sid() -> None:
    record = in_status("failed")
    assert unchanged(apply(record, Created("c1", SID, t(2)), t(2)), record)
    assert unchanged(apply(record, Step("c1", "start", t(2), call_sid=SID), t(2)), record)


def test_creation_failure_fails_the_call_and_frees_its_slot() -> None:
    outcome = apply(opened(), CreationFailed("c1", "21211", "invalid To", t(1)), t(3))
    assert outcome.change == "creation_failed"
    assert outcome.release and outcome.error_code == "21211"
    record = outcome.record
    assert record is not None and record.error_code == "21211"
    assert record.call.status == "failed" and record.call.error == "invalid To"
    assert record.call.failed_at == when(1), "the command's time, not the agent's"


@pytest.mark.parametrize("status", ["unstarted", "started", "connected", "failed"])
def test_creation_failure_is_refused_once_placed_or_failed(status: CallStatus) -> None:
    # Placed (Twilio gave a SID) or already failed: the slot is released once, at most.
    record = in_status(status)
    assert unchanged(apply(record, CreationFailed("c1", NOT_PLACED, "late", t(5)), t(5)), record)


def test_creation_failure_is_refused_once_a_callback_brought_the_sid() -> None:
    record = run(opened(), MemberStatus("c1", "initiated", t(1), call_sid=SID, sequence=0))
    assert unchanged(apply(record, CreationFailed("c1", "21211", "late", t(2)), t(2)), record)


# -- apply: Step -------------------------------------------------------------------------------

_STEP_APPLIES = {("start", "unstarted"): "started", ("connect", "started"): "connected"}


@pytest.mark.parametrize("status", CALL_STATUSES)
@pytest.mark.parametrize("step", ["start", "connect"])
def test_every_step_from_every_status(step: str, status: CallStatus) -> None:
    record = in_status(status)
    outcome = apply(record, Step("c1", step, t(40), call_sid=SID), t(40))
    target = _STEP_APPLIES.get((step, status))
    if target is None:
        assert unchanged(outcome, record), "a step from the wrong status is refused"
        return
    assert outcome.change == target and not outcome.release
    assert outcome.record is not None and outcome.record.call.status == target
    moment = outcome.record.call.started_at if step == "start" else outcome.record.call.connected_at
    assert moment == when(40)


def test_a_replayed_start_keeps_the_first_start() -> None:
    # Twilio fetches /start again when the member presses 2.
    record = in_status("started")
    assert unchanged(apply(record, Step("c1", "start", t(80)), t(80)), record)
    assert record.call.started_at == when(10)


def test_a_step_brings_the_sid_of_a_lost_created() -> None:
    outcome = apply(opened(), Step("c1", "start", t(5), call_sid=SID), t(5))
    assert outcome.change == "started"
    assert outcome.record is not None and outcome.record.call.twilio_call_sid == SID
    # Created arriving late, after the step, changes nothing.
    record = outcome.record
    assert unchanged(apply(record, Created("c1", SID, t(1)), t(6)), record)


def test_a_refused_step_still_brings_the_sid() -> None:
    outcome = apply(opened(), Step("c1", "connect", t(5), call_sid=SID), t(5))
    assert outcome.change == "placed"
    assert outcome.record is not None
    assert outcome.record.call.status == "unstarted" and outcome.record.call.twilio_call_sid == SID


def test_a_step_never_replaces_the_sid() -> None:
    outcome = apply(in_status("unstarted"), Step("c1", "start", t(5), call_sid=OTHER_SID), t(5))
    assert outcome.change == "started"
    assert outcome.record is not None and outcome.record.call.twilio_call_sid == SID


# -- apply: MemberStatus -----------------------------------------------------------------------


def test_a_member_callback_is_recorded() -> None:
    outcome = apply(opened(), MemberStatus("c1", "Ringing", t(3), call_sid=SID, sequence=1), t(4))
    assert outcome.change == "member_status" and not outcome.release
    call = outcome.record.call if outcome.record else None
    assert call is not None
    assert call.member_status == "ringing" and call.member_status_at == when(3)
    assert call.twilio_call_sid == SID, "a callback brings the SID of a lost Created"
    assert [(e.status, e.provider_sequence) for e in call.member_events] == [("ringing", 1)]


def test_an_exact_duplicate_callback_changes_nothing() -> None:
    record = run(in_status("unstarted"), MemberStatus("c1", "ringing", t(3), sequence=1))
    again = apply(record, MemberStatus("c1", "ringing", t(4), call_sid=SID, sequence=1), t(4))
    assert unchanged(again, record)
    # The same status with another SequenceNumber is another callback.
    other = apply(record, MemberStatus("c1", "ringing", t(4), sequence=2), t(4))
    assert other.change == "member_status"
    assert other.record is not None and len(other.record.call.member_events) == 2


def test_callbacks_out_of_order_never_move_the_member_backwards() -> None:
    record = in_status("unstarted")
    record = run(record, MemberStatus("c1", "completed", t(60), sequence=3))
    late = apply(record, MemberStatus("c1", "ringing", t(5), sequence=1), t(61))
    assert late.change == "member_status", "recorded, so written and published"
    assert late.record is not None
    assert late.record.call.member_status == "completed"
    assert [e.status for e in late.record.call.member_events] == ["completed", "ringing"]
    assert delivery_status(late.record) == "completed"


def test_the_first_terminal_callback_is_final() -> None:
    record = run(
        in_status("unstarted"),
        MemberStatus("c1", "no-answer", t(30), sequence=2),
        MemberStatus("c1", "completed", t(31), sequence=3),
    )
    assert record.call.member_status == "no-answer"
    assert delivery_status(record) == "undelivered"


def test_a_callback_error_code_travels_with_the_outcome_only() -> None:
    command = MemberStatus("c1", "failed", t(3), sequence=1, error_code="13224")
    outcome = apply(in_status("unstarted"), command, t(3))
    assert outcome.change == "member_status" and outcome.error_code == "13224"
    assert not outcome.release, "the call was placed: its slot stays counted"
    assert outcome.record is not None and outcome.record.error_code is None
    assert outcome.record.call.status == "unstarted"
    # A duplicate still carries the code, but changes nothing.
    record = outcome.record
    duplicate = apply(record, command, t(4))
    assert duplicate.record is record and duplicate.change is None
    assert duplicate.error_code == "13224"


def test_a_late_callback_replaces_unknown() -> None:
    record = apply(in_status("unstarted"), Expire("c1"), t(LIMIT)).record
    assert record is not None and record.call.member_status == "unknown"
    outcome = apply(record, MemberStatus("c1", "completed", t(700), sequence=3), t(700))
    assert outcome.change == "member_status"
    assert outcome.record is not None and outcome.record.call.member_status == "completed"


def test_a_failed_call_records_callbacks_but_takes_no_sid() -> None:
    command = MemberStatus("c1", "failed", t(3), call_sid=SID, sequence=0)
    outcome = apply(in_status("failed"), command, t(3))
    assert outcome.change == "member_status"
    assert outcome.record is not None
    assert outcome.record.call.twilio_call_sid is None
    assert outcome.record.call.member_status == "failed"


@pytest.mark.parametrize("status", ["unknown", "voicemail", ""])
def test_an_unknown_member_status_raises(status: str) -> None:
    # `unknown` is Switchboard's own guess, never Twilio's. The agent rejects the command.
    with pytest.raises(UnknownStatus):
        apply(in_status("unstarted"), MemberStatus("c1", status, t(3)), t(3))


# -- apply: TargetStatus -----------------------------------------------------------------------


@pytest.mark.parametrize("status", TARGET_STATUSES)
def test_a_dial_status_is_recorded(status: str) -> None:
    outcome = apply(in_status("connected"), TargetStatus("c1", status.upper(), t(30), "DA1"), t(31))
    assert outcome.change == "target_status" and not outcome.release
    assert outcome.record is not None
    assert outcome.record.call.target_status == status
    assert outcome.record.call.target_events[-1].dial_call_sid == "DA1"
    assert outcome.record.call.target_status_at == when(30)


def test_the_latest_dial_wins_and_a_duplicate_changes_nothing() -> None:
    record = run(in_status("connected"), TargetStatus("c1", "busy", t(30), "DA1"))
    assert unchanged(apply(record, TargetStatus("c1", "busy", t(31), "DA1"), t(31)), record)
    record = run(record, TargetStatus("c1", "completed", t(90), "DA2"))
    assert record.call.target_status == "completed"
    assert [e.status for e in record.call.target_events] == ["busy", "completed"]


def test_an_unknown_dial_status_raises() -> None:
    with pytest.raises(UnknownStatus):
        apply(in_status("connected"), TargetStatus("c1", "ringing", t(30)), t(30))


# -- apply: Expire -----------------------------------------------------------------------------


def with_timer(record: CallRecord) -> CallRecord:
    return dataclasses.replace(record, timer_due=t(12_345))


def test_a_call_never_placed_fails_with_not_placed() -> None:
    outcome = apply(with_timer(opened()), Expire("c1"), t(LIMIT))
    assert outcome.change == "creation_failed"
    assert outcome.release and outcome.error_code == NOT_PLACED
    record = outcome.record
    assert record is not None
    assert record.error_code == NOT_PLACED and record.timer_due is None
    assert record.call.status == "failed" and record.call.failed_at == when(LIMIT)
    assert record.call.error is not None and "never placed" in record.call.error
    assert record.call.member_status is None, "failed, not unknown"
    event = status_event(record, "creation_failed", t(LIMIT), outcome.error_code)
    assert event.status == "failed" and event.error_code == NOT_PLACED


def test_a_call_never_placed_waits_for_the_limit() -> None:
    record = with_timer(opened())
    outcome = apply(record, Expire("c1"), t(LIMIT - 0.001))
    assert outcome.change == "timer" and not outcome.release
    assert outcome.record is not None
    assert outcome.record.timer_due is None, "the timer has fired"
    assert outcome.record.call is record.call


def test_a_placed_call_silent_for_the_limit_is_unknown() -> None:
    outcome = apply(with_timer(in_status("unstarted")), Expire("c1"), t(LIMIT))
    assert outcome.change == "expired"
    assert not outcome.release and outcome.error_code is None, "it was placed: it still counts"
    record = outcome.record
    assert record is not None and record.timer_due is None
    assert record.call.status == "unstarted" and record.call.member_status == "unknown"
    assert record.call.member_status_at == when(LIMIT)
    assert delivery_status(record) == "expired"


def test_a_placed_call_not_silent_yet_sets_the_timer_again() -> None:
    record = with_timer(in_status("unstarted"))
    outcome = apply(record, Expire("c1"), t(LIMIT - 1))
    assert outcome.change == "timer"
    assert outcome.record is not None
    assert outcome.record.call is record.call and outcome.record.timer_due is None


def test_a_call_with_a_callback_but_no_sid_was_placed() -> None:
    # A callback without CallSid: Twilio has the call, so silence makes it unknown, not failed.
    record = run(opened(), MemberStatus("c1", "initiated", t(2), sequence=0))
    assert record.call.twilio_call_sid is None
    outcome = apply(record, Expire("c1"), t(2 + LIMIT))
    assert outcome.change == "expired" and not outcome.release
    assert outcome.record is not None and outcome.record.call.member_status == "unknown"


def test_silence_counts_from_the_last_callback() -> None:
    record = run(in_status("unstarted"), MemberStatus("c1", "ringing", t(100), sequence=1))
    assert apply(record, Expire("c1"), t(100 + LIMIT - 1)).change == "timer"
    assert apply(record, Expire("c1"), t(100 + LIMIT)).change == "expired"


@pytest.mark.parametrize("how", ["in-progress", "answered", "started", "connected"])
def test_an_answered_call_waits_for_the_answered_limit(how: str) -> None:
    if how in ("started", "connected"):
        record, last = in_status("started" if how == "started" else "connected"), 0.0
    else:
        record, last = run(in_status("unstarted"), MemberStatus("c1", how, t(5), sequence=1)), 5.0
    assert apply(record, Expire("c1"), t(last + LIMIT)).change == "timer"
    assert apply(record, Expire("c1"), t(last + ANSWERED - 1)).change == "timer"
    assert apply(record, Expire("c1"), t(last + ANSWERED)).change == "expired"


def test_a_silence_limit_beyond_the_answered_limit_applies_to_answered_calls() -> None:
    long = 5 * 3600.0
    record = run(opened(silence_limit=long), Created("c1", SID, t(1)), Step("c1", "start", t(5)))
    assert apply(record, Expire("c1"), t(ANSWERED)).change == "timer"
    assert apply(record, Expire("c1"), t(long)).change == "expired"


@pytest.mark.parametrize("member", [*sorted(MEMBER_TERMINAL), "unknown"])
def test_a_final_or_unknown_call_never_expires(member: MemberState) -> None:
    if member == "unknown":
        record = run(in_status("unstarted"), Expire("c1"), now=t(LIMIT))
    else:
        record = run(in_status("unstarted"), MemberStatus("c1", member, t(5), sequence=1))
    outcome = apply(with_timer(record), Expire("c1"), t(10 * ANSWERED))
    assert outcome.change == "timer" and not outcome.release
    assert outcome.record is not None and outcome.record.call is record.call


def test_a_failed_call_never_expires() -> None:
    record = in_status("failed")
    outcome = apply(with_timer(record), Expire("c1"), t(10 * ANSWERED))
    assert outcome.change == "timer" and not outcome.release
    assert outcome.record is not None and outcome.record.call is record.call


# -- apply: whole calls ------------------------------------------------------------------------


def test_the_changes_of_a_call_that_connects() -> None:
    """The same sequence as the end-to-end test of a member who talks to the target."""
    commands: list[CallCommand] = [
        Created("c1", SID, t(1)),
        MemberStatus("c1", "initiated", t(2), SID, 0),
        MemberStatus("c1", "ringing", t(3), SID, 1),
        MemberStatus("c1", "in-progress", t(4), SID, 2),
        Step("c1", "start", t(5), SID),
        Step("c1", "start", t(6), SID),  # the menu's replay: refused
        Step("c1", "connect", t(7), SID),
        TargetStatus("c1", "completed", t(60), "DA1"),
        Step("c1", "connect", t(61), SID),  # after the dial: refused
        MemberStatus("c1", "completed", t(62), SID, 3),
    ]
    record = opened()
    seen = [(delivery_status(record), "created")]
    for command in commands:
        outcome = apply(record, command, t(100))
        assert outcome.record is not None and not outcome.release
        record = outcome.record
        if outcome.change is not None:
            seen.append((delivery_status(record), outcome.change))
    assert seen == [
        ("accepted", "created"),
        ("sent", "placed"),
        ("sent", "member_status"),
        ("sent", "member_status"),
        ("delivered", "member_status"),
        ("delivered", "started"),
        ("delivered", "connected"),
        ("delivered", "target_status"),
        ("completed", "member_status"),
    ]
    assert silence_deadline(record) is None


_command_and_time = st.tuples(
    st.one_of(
        st.builds(Created, st.just("c1"), st.sampled_from([SID, OTHER_SID]), st.just(t(1))),
        st.builds(
            CreationFailed,
            st.just("c1"),
            st.sampled_from(["21211", NOT_PLACED]),
            st.just("refused"),
            st.just(t(1)),
        ),
        st.builds(
            Step,
            st.just("c1"),
            st.sampled_from(["start", "connect"]),
            st.just(t(2)),
            st.sampled_from([None, SID, OTHER_SID]),
        ),
        st.builds(
            MemberStatus,
            st.just("c1"),
            st.sampled_from(TWILIO_MEMBER_STATUSES),
            st.integers(0, 20_000).map(t),
            st.sampled_from([None, SID]),
            st.none() | st.integers(0, 4),
            st.none() | st.just("13224"),
        ),
        st.builds(
            TargetStatus,
            st.just("c1"),
            st.sampled_from(TARGET_STATUSES),
            st.just(t(3)),
            st.sampled_from([None, "DA1", "DA2"]),
        ),
        st.builds(Expire, st.just("c1")),
    ),
    st.integers(0, 20_000),
)


@given(st.lists(_command_and_time, max_size=20))
def test_any_sequence_of_commands(commands: list[tuple[CallCommand, int]]) -> None:
    record = opened()
    releases = 0
    for command, now in commands:
        before = record
        outcome = apply(record, command, t(now))
        assert outcome.record is not None
        assert (outcome.change is None) == (outcome.record is before), "nothing, or a change"
        assert outcome.change is None or outcome.change in CHANGES
        record = outcome.record
        releases += outcome.release
        became_failed = before.call.status != "failed" and record.call.status == "failed"
        assert outcome.release == became_failed, "a slot is freed when, and only when, it fails"
        if before.call.status == "failed":
            assert record.call.status == "failed", "failed is final"
        if before.call.twilio_call_sid is not None:
            assert record.call.twilio_call_sid == before.call.twilio_call_sid, "a SID is kept"
        if record.call.status == "failed":
            assert record.call.twilio_call_sid is None
        assert CallRecord.from_json(record.to_json()) == record
        if outcome.change not in (None, "timer"):
            event = status_event(record, outcome.change, t(now), outcome.error_code)
            assert event.status in STATUSES and event.detail["change"] == outcome.change
    assert releases <= 1, "a slot is freed once"


# -- silence_deadline --------------------------------------------------------------------------


def test_the_deadline_of_a_new_call_counts_from_its_creation() -> None:
    assert silence_deadline(opened()) == t(LIMIT)
    assert silence_deadline(in_status("unstarted")) == t(LIMIT)
    assert silence_deadline(opened(silence_limit=2.0, requested_at=t(7))) == t(9)


def test_the_deadline_counts_from_the_latest_callback_time() -> None:
    record = run(
        in_status("unstarted"),
        MemberStatus("c1", "ringing", t(30), sequence=1),
        MemberStatus("c1", "initiated", t(10), sequence=0),  # arrived late, happened earlier
    )
    assert silence_deadline(record) == t(30 + LIMIT)


def test_the_deadline_of_an_answered_call() -> None:
    assert silence_deadline(in_status("started")) == t(ANSWERED)
    assert silence_deadline(in_status("connected")) == t(ANSWERED)
    record = run(in_status("unstarted"), MemberStatus("c1", "answered", t(5), sequence=2))
    assert silence_deadline(record) == t(5 + ANSWERED)
    long = run(opened(silence_limit=5 * 3600.0), Step("c1", "start", t(1), SID))
    assert silence_deadline(long) == t(5 * 3600)


@pytest.mark.parametrize("member", sorted(MEMBER_TERMINAL))
def test_no_deadline_once_the_member_is_final(member: MemberState) -> None:
    record = run(in_status("connected"), MemberStatus("c1", member, t(50), sequence=1))
    assert silence_deadline(record) is None


def test_no_deadline_for_a_failed_or_unknown_call() -> None:
    assert silence_deadline(in_status("failed")) is None
    assert silence_deadline(run(in_status("unstarted"), Expire("c1"), now=t(LIMIT))) is None


@pytest.mark.parametrize(
    "record",
    [
        opened(),
        in_status("unstarted"),
        in_status("started"),
        in_status("connected"),
        in_status("failed"),
        run(opened(), MemberStatus("c1", "ringing", t(42), sequence=1)),
        run(in_status("unstarted"), MemberStatus("c1", "in-progress", t(42), sequence=2)),
        run(in_status("unstarted"), MemberStatus("c1", "busy", t(42), sequence=2)),
        opened(silence_limit=2.0),
    ],
)
def test_the_timer_fires_at_the_deadline_exactly(record: CallRecord) -> None:
    """The agent sets the timer at :func:`silence_deadline`; Expire must then act, not before."""
    deadline = silence_deadline(record)
    if deadline is None:
        assert apply(record, Expire("c1"), t(100 * ANSWERED)).change == "timer"
        return
    assert apply(record, Expire("c1"), deadline - 0.001).change == "timer"
    assert apply(record, Expire("c1"), deadline).change in ("expired", "creation_failed")


# -- delivery_status ---------------------------------------------------------------------------

#: What the member's status alone decides, whatever the call status (unless it failed).
_BY_MEMBER: dict[str, Status] = {
    "failed": "failed",
    "unknown": "expired",
    "busy": "undelivered",
    "no-answer": "undelivered",
    "canceled": "cancelled",
    "completed": "completed",
    "in-progress": "delivered",
    "answered": "delivered",
}


def expected_status(status: CallStatus, member: MemberState | None, sid: str | None) -> Status:
    if status == "failed":
        return "failed"
    if member in _BY_MEMBER:
        return _BY_MEMBER[member]
    if status in ("started", "connected"):
        return "delivered"  # the member heard the message
    if member in ("queued", "initiated", "ringing") or sid is not None:
        return "sent"
    return "accepted"


@pytest.mark.parametrize("sid", [None, SID])
@pytest.mark.parametrize("member", [None, *MEMBER_STATUSES])
@pytest.mark.parametrize("status", CALL_STATUSES)
def test_delivery_status_of_every_combination(
    status: CallStatus, member: MemberState | None, sid: str | None
) -> None:
    # Built directly: some combinations the machines never produce must still map somewhere.
    for target in (None, *TARGET_STATUSES):
        dials = () if target is None else (TargetCallEvent(target, T0, 0),)
        call = Call(
            "c1",
            "bees",
            MEMBER,
            TARGET,
            T0,
            status=status,
            twilio_call_sid=sid,
            member_status=member,
            target_events=dials,
        )
        assert delivery_status(CallRecord(call, "acme")) == expected_status(status, member, sid), (
            "the target's status never matters"
        )


def test_delivery_status_spot_checks() -> None:
    assert delivery_status(opened()) == "accepted"
    assert delivery_status(in_status("unstarted")) == "sent"
    assert delivery_status(in_status("started")) == "delivered"
    assert delivery_status(in_status("failed")) == "failed"
    busy = run(in_status("unstarted"), MemberStatus("c1", "busy", t(9), sequence=2))
    assert delivery_status(busy) == "undelivered"
    hung_up = run(in_status("connected"), MemberStatus("c1", "completed", t(9), sequence=2))
    assert delivery_status(hung_up) == "completed"


# -- status_event ------------------------------------------------------------------------------


def test_the_event_of_a_new_call() -> None:
    event = status_event(opened(), "created", EPOCH, None)
    assert event.session_id == "c1" and event.client_id == "acme"
    assert event.status == "accepted" and event.channel == CHANNEL == "voice"
    assert event.recipient == MEMBER and event.attempt == 0
    assert event.provider_message_id is None
    assert event.error_code is None and event.error is None
    assert event.occurred_at == T0 and event.occurred_at.tzinfo is not None
    assert event.detail == {
        "kind": "call",
        "change": "created",
        "call_status": "unstarted",
        "member_status": None,
        "target_status": None,
        "campaign_id": "bees",
        "target_id": "mp-smith",
    }


def test_the_event_carries_the_sid_and_the_three_machines() -> None:
    record = run(
        in_status("connected"),
        TargetStatus("c1", "no-answer", t(40), "DA1"),
        MemberStatus("c1", "completed", t(45), sequence=4),
    )
    event = status_event(record, "member_status", t(45), None)
    assert event.status == "completed" and event.provider_message_id == SID
    assert event.occurred_at == when(45)
    assert event.detail == {
        "kind": "call",
        "change": "member_status",
        "call_status": "connected",
        "member_status": "completed",
        "target_status": "no-answer",
        "campaign_id": "bees",
        "target_id": "mp-smith",
    }
    assert event.to_json()["occurred_at"] == "2026-03-01T12:00:45Z"


def test_the_event_of_a_manual_target_has_no_target_id() -> None:
    event = status_event(opened(target_id=None), "created", EPOCH, None)
    assert event.detail["target_id"] is None


def test_the_event_of_a_creation_failure() -> None:
    record = in_status("failed")
    event = status_event(record, "creation_failed", t(1), "21211")
    assert event.status == "failed" and event.error == "invalid To"
    assert event.error_code == "21211" and event.provider_message_id is None
    # Without a code of its own, an event of a failed call carries the record's.
    assert status_event(record, "member_status", t(2), None).error_code == "21211"
    # A code given with the change comes first.
    assert status_event(record, "member_status", t(2), "13224").error_code == "13224"


def test_the_event_of_a_failed_member_call() -> None:
    # Twilio placed the call, then reported it failed: no creation error, the callback's code.
    command = MemberStatus("c1", "failed", t(3), sequence=1, error_code="13224")
    outcome = apply(in_status("unstarted"), command, t(3))
    assert outcome.record is not None and outcome.change is not None
    event = status_event(outcome.record, outcome.change, t(3), outcome.error_code)
    assert event.status == "failed" and event.error is None
    assert event.error_code == "13224" and event.provider_message_id == SID
    # The record's code only speaks for a call that failed at creation.
    stale = dataclasses.replace(outcome.record, error_code="21211")
    assert status_event(stale, "member_status", t(3), None).error_code is None


def test_the_event_of_an_expired_call() -> None:
    record = run(in_status("unstarted"), Expire("c1"), now=t(LIMIT))
    event = status_event(record, "expired", t(LIMIT), None)
    assert event.status == "expired" and event.detail["member_status"] == "unknown"
    # It says why (switchboard/reasons.py): no news within the campaign's silence_limit.
    assert (event.error_code, event.detail["reason"]) == ("no-report", "no-report")
    assert event.error is not None and "silence_limit" in event.error


def test_an_event_id_names_its_change_the_same_every_time() -> None:
    """Deterministic: the same change of a call (a replay after a crash) has the same id, and a
    receiver de-duplicates by it; another change, or the same change at another time, does not."""
    record = opened()
    first = status_event(record, "created", EPOCH, None).event_id
    assert status_event(record, "created", EPOCH, None).event_id == first
    assert status_event(record, "started", EPOCH, None).event_id != first
    assert status_event(record, "created", EPOCH + 1, None).event_id != first


# -- purity ------------------------------------------------------------------------------------


def test_the_module_imports_no_io() -> None:
    """Pure core, thin I/O: importing it loads no Kafka, Faust or HTTP library, nor streams."""
    forbidden = ("faust", "mode", "aiokafka", "aiohttp", "streams", "rocksdict", "confluent_kafka")
    code = (
        "import sys, switchboard.calltool.commands\n"
        f"loaded = sorted({{m.split('.')[0] for m in sys.modules}} & set({forbidden!r}))\n"
        "print(','.join(loaded))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == ""
