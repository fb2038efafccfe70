"""The call tool's state: the three machines, expiry, the combined view, numbers, limit, checksums."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from switchboard.addresses import AddressError
from switchboard.calltool.calls import (
    CALL_STATUSES,
    CHECKSUM_LENGTH,
    DEFAULT_ANSWERED_LIMIT,
    MEMBER_STATUSES,
    MEMBER_TERMINAL,
    TARGET_STATUSES,
    Call,
    CallStatus,
    InvalidMemberNumber,
    MemberStatus,
    Step,
    UnknownStatus,
    advance,
    combined_state,
    connect,
    creation_failed,
    expire_if_silent,
    may_call,
    new_call,
    normalize_member_number,
    parse_member_status,
    parse_target_status,
    record_call_sid,
    record_member_status,
    record_target_status,
    start,
    target_checksum,
    verify_target_checksum,
)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SECRET = b"0123456789abcdef-call-tool-secret"
LIMIT = timedelta(minutes=10)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def fresh() -> Call:
    return new_call("c1", "camp1", "+14155552671", "+14155550123", T0, target_id="t1")


def in_status(status: CallStatus) -> Call:
    call = fresh()
    if status == "failed":
        return creation_failed(call, at(1), "21211 invalid To").call
    if status in ("started", "connected"):
        call = start(call, at(10)).call
    if status == "connected":
        call = connect(call, at(20)).call
    assert call.status == status
    return call


def members(call: Call, *statuses: MemberStatus) -> Call:
    for i, status in enumerate(statuses):
        call = record_member_status(call, status, at(i), provider_sequence=i)
    return call


# -- call status machine ---------------------------------------------------------------------


def test_a_new_call_is_unstarted() -> None:
    call = fresh()
    assert call.status == "unstarted"
    assert call.created_at == T0
    assert call.member_status is None
    assert call.target_status is None


def test_creation_failure() -> None:
    result = creation_failed(fresh(), at(1), "21211 invalid To")
    assert result.applied
    assert result.reason is None
    assert result.call.status == "failed"
    assert result.call.error == "21211 invalid To"
    assert result.call.failed_at == at(1)


def test_creation_failure_is_refused_once_twilio_created_the_call() -> None:
    call = record_call_sid(fresh(), "CA123")
    result = creation_failed(call, at(1), "late error")
    assert not result.applied
    assert result.call is call
    assert result.reason == "Twilio already created this call"


def test_start_then_connect() -> None:
    started = start(fresh(), at(10))
    assert started.applied
    assert started.call.status == "started"
    assert started.call.started_at == at(10)
    connected = connect(started.call, at(20))
    assert connected.applied
    assert connected.call.status == "connected"
    assert connected.call.connected_at == at(20)
    assert connected.call.started_at == at(10)


_ALLOWED: set[tuple[CallStatus, Step]] = {
    ("unstarted", "creation_failed"),
    ("unstarted", "start"),
    ("started", "connect"),
}


@pytest.mark.parametrize("status", CALL_STATUSES)
@pytest.mark.parametrize("step", ["start", "connect", "creation_failed"])
def test_every_transition(status: CallStatus, step: Step) -> None:
    call = in_status(status)
    result = advance(call, step, at(100), error="boom")
    if (status, step) in _ALLOWED:
        assert result.applied
        assert result.call is not call
        assert (
            result.call.status
            == {"creation_failed": "failed", "start": "started", "connect": "connected"}[step]
        )
    else:
        assert not result.applied
        assert result.call is call  # unchanged: not even a timestamp moves
        assert result.reason == f"{step} does not apply to a call that is {status}"


def test_replayed_start_keeps_the_first_start_time() -> None:
    call = in_status("started")
    again = start(call, at(500))
    assert not again.applied
    assert again.call.started_at == at(10)


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        new_call("c1", "camp1", "+1", "+1", datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="naive"):
        start(fresh(), datetime(2026, 1, 1))


def test_times_are_stored_in_utc() -> None:
    nepal = timezone(timedelta(hours=5, minutes=45))
    call = start(fresh(), datetime(2026, 3, 1, 17, 45, 10, tzinfo=nepal)).call
    assert call.started_at == at(10)
    assert call.started_at is not None
    assert call.started_at.tzinfo is UTC


def test_call_sid() -> None:
    call = record_call_sid(fresh(), "CA123")
    assert call.twilio_call_sid == "CA123"
    assert record_call_sid(call, "CA123") is call
    with pytest.raises(ValueError, match="already has"):
        record_call_sid(call, "CA999")
    with pytest.raises(ValueError, match="failed at creation"):
        record_call_sid(in_status("failed"), "CA123")


# -- member call status ----------------------------------------------------------------------


def test_member_events_in_order() -> None:
    call = members(fresh(), "queued", "initiated", "ringing", "in-progress", "completed")
    assert call.member_status == "completed"
    assert call.member_status_at == at(4)
    assert [e.status for e in call.member_events] == [
        "queued",
        "initiated",
        "ringing",
        "in-progress",
        "completed",
    ]
    assert [e.sequence for e in call.member_events] == [0, 1, 2, 3, 4]
    assert [e.provider_sequence for e in call.member_events] == [0, 1, 2, 3, 4]


def test_duplicate_callback_changes_nothing() -> None:
    call = members(fresh(), "initiated", "ringing")
    again = record_member_status(call, "ringing", at(60), provider_sequence=1)
    assert again is call


def test_duplicate_without_sequence_numbers_changes_nothing() -> None:
    call = record_member_status(fresh(), "ringing", at(1))
    assert record_member_status(call, "ringing", at(2)) is call


def test_progress_never_moves_backwards() -> None:
    call = members(fresh(), "initiated", "in-progress")
    late = record_member_status(call, "ringing", at(30), provider_sequence=1)
    assert late.member_status == "in-progress"
    assert late.member_status_at == at(1)
    assert [e.status for e in late.member_events] == ["initiated", "in-progress", "ringing"]


def test_answered_and_in_progress_rank_alike() -> None:
    call = members(fresh(), "answered")
    assert record_member_status(call, "in-progress", at(5)).member_status == "answered"


@pytest.mark.parametrize("terminal", sorted(MEMBER_TERMINAL))
def test_earlier_statuses_after_a_terminal_one_are_recorded_only(terminal: MemberStatus) -> None:
    call = record_member_status(fresh(), terminal, at(50), provider_sequence=3)
    earlier: list[MemberStatus] = ["queued", "initiated", "ringing", "in-progress", "answered"]
    for i, late in enumerate(earlier):
        call = record_member_status(call, late, at(60 + i), provider_sequence=i)
        assert call.member_status == terminal
        assert call.member_status_at == at(50)
    assert len(call.member_events) == 6


def test_first_terminal_status_wins() -> None:
    call = members(fresh(), "ringing", "no-answer")
    late = record_member_status(call, "completed", at(90), provider_sequence=9)
    assert late.member_status == "no-answer"
    assert late.member_events[-1].status == "completed"


@given(
    st.lists(
        st.tuples(
            st.sampled_from([s for s in MEMBER_STATUSES if s != "unknown"]), st.integers(0, 5)
        ),
        max_size=12,
    )
)
def test_latest_never_leaves_a_terminal_status(callbacks: list[tuple[MemberStatus, int]]) -> None:
    call = fresh()
    first_terminal: MemberStatus | None = None
    for i, (status, seq) in enumerate(callbacks):
        call = record_member_status(call, status, at(i), provider_sequence=seq)
        if first_terminal is None and call.member_status in MEMBER_TERMINAL:
            first_terminal = call.member_status
        if first_terminal is not None:
            assert call.member_status == first_terminal
    assert len(call.member_events) == len(set(callbacks))
    assert [e.sequence for e in call.member_events] == list(range(len(call.member_events)))


def test_parse_statuses() -> None:
    assert parse_member_status(" In-Progress ") == "in-progress"
    assert parse_member_status("no-answer") == "no-answer"
    assert parse_target_status("BUSY") == "busy"
    with pytest.raises(UnknownStatus, match="CallStatus"):
        parse_member_status("unknown")  # ours, never Twilio's
    with pytest.raises(UnknownStatus, match="CallStatus"):
        parse_member_status("exploded")
    with pytest.raises(UnknownStatus, match="DialCallStatus"):
        parse_target_status("ringing")
    assert {parse_target_status(s) for s in TARGET_STATUSES} == set(TARGET_STATUSES)


# -- expiry to unknown -----------------------------------------------------------------------


def test_silent_call_expires_to_unknown() -> None:
    call = fresh()
    assert expire_if_silent(call, T0 + LIMIT - timedelta(seconds=1), LIMIT) is call
    expired = expire_if_silent(call, T0 + LIMIT, LIMIT)
    assert expired.member_status == "unknown"
    assert expired.member_status_at == T0 + LIMIT
    assert expired.member_events[-1].status == "unknown"
    assert expired.member_events[-1].provider_sequence is None
    assert expire_if_silent(expired, T0 + 3 * LIMIT, LIMIT) is expired


def test_silence_counts_from_the_last_callback() -> None:
    call = record_member_status(fresh(), "ringing", at(300))
    assert expire_if_silent(call, T0 + LIMIT, LIMIT) is call
    assert expire_if_silent(call, at(300) + LIMIT, LIMIT).member_status == "unknown"


def test_answered_call_gets_the_longer_limit() -> None:
    call = record_member_status(fresh(), "in-progress", at(5))
    assert expire_if_silent(call, at(5) + timedelta(hours=1), LIMIT) is call
    assert expire_if_silent(call, at(5) + DEFAULT_ANSWERED_LIMIT, LIMIT).member_status == "unknown"
    assert (
        expire_if_silent(call, at(5) + LIMIT, LIMIT, answered_limit=LIMIT).member_status
        == "unknown"
    )


def test_a_started_call_counts_as_answered_even_without_a_callback() -> None:
    call = in_status("started")
    assert expire_if_silent(call, T0 + timedelta(hours=1), LIMIT) is call


@pytest.mark.parametrize("terminal", sorted(MEMBER_TERMINAL))
def test_terminal_calls_never_expire(terminal: MemberStatus) -> None:
    call = record_member_status(fresh(), terminal, at(1))
    assert expire_if_silent(call, T0 + timedelta(days=2), LIMIT) is call


def test_failed_calls_never_expire() -> None:
    call = in_status("failed")
    assert expire_if_silent(call, T0 + timedelta(days=2), LIMIT) is call


def test_a_late_callback_replaces_unknown_and_expiry_can_happen_again() -> None:
    expired = expire_if_silent(fresh(), T0 + LIMIT, LIMIT)
    late = record_member_status(expired, "ringing", T0 + LIMIT + timedelta(seconds=5))
    assert late.member_status == "ringing"
    again = expire_if_silent(late, T0 + 3 * LIMIT, LIMIT)
    assert again.member_status == "unknown"
    assert [e.status for e in again.member_events] == ["unknown", "ringing", "unknown"]
    final = record_member_status(again, "completed", T0 + 3 * LIMIT)
    assert final.member_status == "completed"


@pytest.mark.parametrize("limit", [timedelta(0), timedelta(seconds=-1)])
def test_non_positive_limit_is_refused(limit: timedelta) -> None:
    with pytest.raises(ValueError, match="positive"):
        expire_if_silent(fresh(), T0, limit)


# -- target call status ----------------------------------------------------------------------


def test_target_status_is_the_latest_dial() -> None:
    call = in_status("connected")
    busy = record_target_status(call, "busy", at(30), dial_call_sid="CA1")
    assert busy.target_status == "busy"
    assert busy.target_status_at == at(30)
    assert record_target_status(busy, "busy", at(31), dial_call_sid="CA1") is busy
    second = record_target_status(busy, "completed", at(200), dial_call_sid="CA2")
    assert second.target_status == "completed"
    assert [(e.status, e.sequence) for e in second.target_events] == [("busy", 0), ("completed", 1)]


# -- combined view ---------------------------------------------------------------------------


def test_combined_state_of_a_full_call() -> None:
    call = record_call_sid(fresh(), "CA123")
    call = members(call, "initiated", "ringing", "in-progress")
    call = start(call, at(10)).call
    call = connect(call, at(20)).call
    call = record_target_status(call, "completed", at(300), dial_call_sid="CA456")
    call = record_member_status(call, "completed", at(301), provider_sequence=3)
    state = combined_state(call)
    assert json.loads(json.dumps(state)) == state  # JSON-ready as is
    assert state["call_id"] == "c1"
    assert state["target_id"] == "t1"
    assert state["status"] == "connected"
    assert state["twilio_call_sid"] == "CA123"
    assert state["created_at"] == "2026-03-01T12:00:00Z"
    assert state["started_at"] == "2026-03-01T12:00:10Z"
    assert state["connected_at"] == "2026-03-01T12:00:20Z"
    assert state["failed_at"] is None
    assert state["updated_at"] == "2026-03-01T12:05:01Z"
    assert state["member"]["status"] == "completed"
    assert state["member"]["final"] is True
    assert state["member"]["updated_at"] == "2026-03-01T12:05:01Z"
    assert [e["status"] for e in state["member"]["events"]] == [
        "initiated",
        "ringing",
        "in-progress",
        "completed",
    ]
    assert state["member"]["events"][0] == {
        "status": "initiated",
        "at": "2026-03-01T12:00:00Z",
        "sequence": 0,
        "provider_sequence": 0,
    }
    assert state["target"]["status"] == "completed"
    assert state["target"]["events"] == [
        {
            "status": "completed",
            "at": "2026-03-01T12:05:00Z",
            "sequence": 0,
            "dial_call_sid": "CA456",
        }
    ]


def test_combined_state_of_a_failed_call() -> None:
    state = combined_state(in_status("failed"))
    assert state["status"] == "failed"
    assert state["error"] == "21211 invalid To"
    assert state["member"] == {"status": None, "updated_at": None, "final": False, "events": []}
    assert state["target"] == {"status": None, "updated_at": None, "events": []}
    assert state["updated_at"] == state["failed_at"] == "2026-03-01T12:00:01Z"


# -- member numbers --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "region", "e164"),
    [
        ("+14155552671", None, "+14155552671"),
        (" +1 (415) 555-2671 ", None, "+14155552671"),
        ("+1.415.555.2671", None, "+14155552671"),
        ("(415) 555-2671", "US", "+14155552671"),
        ("(415) 555-2671", "us", "+14155552671"),
        ("020 7946 0958", "GB", "+442079460958"),
        ("0044 20 7946 0958", "GB", "+442079460958"),
        ("+977 981-2345678", "US", "+9779812345678"),  # the + wins over the region
    ],
)
def test_good_numbers(raw: str, region: str | None, e164: str) -> None:
    assert normalize_member_number(raw, region) == e164


@pytest.mark.parametrize(
    ("raw", "region", "message"),
    [
        ("", None, "empty"),
        ("   ", None, "empty"),
        ("+1 415", None, "too few digits"),
        ("12345", "US", "too few digits"),
        ("+1 415 CALL NOW", None, "only digits"),
        ("+1-415-555-2671 ext 5", None, "only digits"),
        ("+1/415/555/2671", None, "only digits"),
        ("1+4155552671", "US", "only digits"),
        ("+١٤١٥٥٥٥٢٦٧١", None, "only digits"),  # non-ASCII digits
        ("+" + "1" * 45, None, "longer than"),
        ("4155552671", None, "must start with +"),
        ("+999 1234567", None, "not a valid phone number"),
        ("+1 415 555 267", None, "wrong number of digits"),
        ("+1 000 000 0000", None, "no such number range"),
        ("+44 7700 900123", None, "no such number range"),
    ],
)
def test_bad_numbers(raw: str, region: str | None, message: str) -> None:
    with pytest.raises(InvalidMemberNumber, match=message):
        normalize_member_number(raw, region)


def test_invalid_number_is_a_value_error_and_an_address_error() -> None:
    assert issubclass(InvalidMemberNumber, ValueError)
    assert issubclass(InvalidMemberNumber, AddressError)


def test_unknown_region_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="unknown default region") as info:
        normalize_member_number("4155552671", "XX")
    assert not isinstance(info.value, InvalidMemberNumber)


# -- call limit ------------------------------------------------------------------------------


def test_limit_of_five_calls_that_did_not_fail() -> None:
    ok = [in_status("unstarted"), in_status("started"), in_status("connected")]
    failed = [in_status("failed")] * 10
    assert may_call([])
    assert may_call(ok + failed)
    assert may_call([*ok, in_status("unstarted"), *failed])  # 4
    assert not may_call([*ok, in_status("unstarted"), in_status("connected")])  # 5
    assert not may_call(tuple([*ok, *ok]))
    assert may_call(ok, limit=4)
    assert not may_call(ok, limit=3)


# -- checksums -------------------------------------------------------------------------------


def test_checksum_round_trip() -> None:
    checksum = target_checksum("+14155550123", SECRET)
    assert len(checksum) == CHECKSUM_LENGTH
    assert all(c in "0123456789abcdef" for c in checksum)
    assert verify_target_checksum("+14155550123", checksum, SECRET)
    assert verify_target_checksum("+1 (415) 555-0123", checksum, SECRET)  # same number
    assert verify_target_checksum("+14155550123", f" {checksum.upper()} ", SECRET)


def test_checksum_is_stable() -> None:
    assert target_checksum("+14155550123", SECRET) == target_checksum("+1 415 555 0123", SECRET)


def test_tampered_number_or_checksum_fails() -> None:
    checksum = target_checksum("+14155550123", SECRET)
    assert not verify_target_checksum("+14155550124", checksum, SECRET)
    flipped = ("0" if checksum[0] != "0" else "1") + checksum[1:]
    assert not verify_target_checksum("+14155550123", flipped, SECRET)
    assert not verify_target_checksum("+14155550123", checksum[:-1], SECRET)
    assert not verify_target_checksum("+14155550123", "", SECRET)
    assert not verify_target_checksum("+14155550123", "é" * CHECKSUM_LENGTH, SECRET)
    assert not verify_target_checksum("not a number", checksum, SECRET)


def test_other_secret_fails() -> None:
    checksum = target_checksum("+14155550123", SECRET)
    other = b"another-secret-of-enough-bytes"
    assert target_checksum("+14155550123", other) != checksum
    assert not verify_target_checksum("+14155550123", checksum, other)


def test_short_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        target_checksum("+14155550123", b"short")
    with pytest.raises(ValueError, match="at least 16 bytes"):
        verify_target_checksum("+14155550123", "00", b"")


def test_checksum_needs_a_valid_international_number() -> None:
    with pytest.raises(InvalidMemberNumber):
        target_checksum("4155550123", SECRET)
