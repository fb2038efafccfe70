"""switchboard.retry: the contract's retry intervals, Retry-After as a floor, invalid inputs."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from switchboard.retry import max_attempts, next_attempt_at, parse_retry_after, retry_delay

CONTRACT_INTERVALS = (60.0, 180.0, 600.0)  # "60,180,600" as validation parses it
FAILED_AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def minutes(m: float) -> timedelta:
    return timedelta(minutes=m)


def test_the_contract_example() -> None:
    # retries: 3, retryIntervalMinutes: "60,180,600": four attempts in all.
    delays = [retry_delay(n, 3, CONTRACT_INTERVALS) for n in range(1, 5)]
    assert delays == [minutes(60), minutes(180), minutes(600), None]
    assert max_attempts(3) == 4


def test_the_last_interval_repeats() -> None:
    delays = [retry_delay(n, 5, CONTRACT_INTERVALS) for n in range(1, 7)]
    assert delays == [minutes(60), minutes(180), minutes(600), minutes(600), minutes(600), None]


def test_the_defaults_send_once() -> None:
    # retries: 0 (default), retryIntervalMinutes: "60" (default).
    assert retry_delay(1, 0, (60.0,)) is None
    assert next_attempt_at(FAILED_AT, 1, 0, (60.0,)) is None
    assert max_attempts(0) == 1


def test_fractional_minutes() -> None:
    assert retry_delay(1, 1, (0.5,)) == timedelta(seconds=30)


def test_next_attempt_at_adds_the_interval() -> None:
    assert next_attempt_at(FAILED_AT, 1, 3, CONTRACT_INTERVALS) == FAILED_AT + minutes(60)
    assert next_attempt_at(FAILED_AT, 2, 3, CONTRACT_INTERVALS) == FAILED_AT + minutes(180)
    assert next_attempt_at(FAILED_AT, 4, 3, CONTRACT_INTERVALS) is None


def test_retry_after_is_a_floor() -> None:
    # Larger than the interval: Retry-After wins.
    assert next_attempt_at(FAILED_AT, 1, 3, CONTRACT_INTERVALS, retry_after=7200) == (
        FAILED_AT + timedelta(hours=2)
    )
    # Smaller: the interval wins (Retry-After is when the provider will take it at the earliest).
    assert next_attempt_at(FAILED_AT, 1, 3, CONTRACT_INTERVALS, retry_after=5) == (
        FAILED_AT + minutes(60)
    )
    # It never adds an attempt that retries does not allow.
    assert next_attempt_at(FAILED_AT, 4, 3, CONTRACT_INTERVALS, retry_after=5) is None
    assert next_attempt_at(FAILED_AT, 1, 3, CONTRACT_INTERVALS, retry_after=0) == (
        FAILED_AT + minutes(60)
    )


def test_next_attempt_at_answers_in_utc() -> None:
    paris_summer = timezone(timedelta(hours=2))
    failed_at = datetime(2026, 7, 1, 14, 0, tzinfo=paris_summer)
    due = next_attempt_at(failed_at, 1, 1, (60.0,))
    assert due is not None
    assert due.tzinfo is UTC
    assert due == datetime(2026, 7, 1, 13, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("attempt", "retries", "intervals"),
    [
        (0, 3, (60.0,)),  # attempts count from 1
        (-1, 3, (60.0,)),
        (1, -1, (60.0,)),
        (True, 3, (60.0,)),  # a bool is not an attempt number
        (1, False, (60.0,)),
        (1.0, 3, (60.0,)),
        (1, 3, ()),
        (1, 3, (60.0, 0.0)),
        (1, 3, (-5.0,)),
        (1, 3, (math.nan,)),
        (1, 3, (math.inf,)),
        (1, 3, ("60",)),
        (1, 3, "60"),
    ],
)
def test_invalid_inputs_are_refused(attempt: object, retries: object, intervals: object) -> None:
    with pytest.raises(ValueError, match=r"attempt|retries|interval"):
        retry_delay(attempt, retries, intervals)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"attempt|retries|interval"):
        next_attempt_at(FAILED_AT, attempt, retries, intervals)  # type: ignore[arg-type]


def test_invalid_intervals_are_refused_even_when_no_retry_is_left() -> None:
    # A bad configuration shows on the first failure, not only on the failures that retry.
    with pytest.raises(ValueError, match="interval"):
        retry_delay(4, 3, ())


@pytest.mark.parametrize("retry_after", [-1.0, math.nan, math.inf])
def test_invalid_retry_after_is_refused(retry_after: float) -> None:
    with pytest.raises(ValueError, match="retry_after"):
        next_attempt_at(FAILED_AT, 1, 3, CONTRACT_INTERVALS, retry_after=retry_after)


def test_naive_failed_at_is_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        next_attempt_at(datetime(2026, 3, 1, 12), 1, 3, CONTRACT_INTERVALS)


def test_max_attempts_refuses_negative_retries() -> None:
    with pytest.raises(ValueError, match="retries"):
        max_attempts(-1)


# --- properties ---------------------------------------------------------------------------------

intervals = st.lists(st.floats(min_value=0.001, max_value=10080), min_size=1, max_size=8)


@settings(max_examples=300)
@given(st.integers(0, 20), intervals)
def test_exactly_retries_delays_then_none(retries: int, given_intervals: list[float]) -> None:
    delays = [retry_delay(n, retries, given_intervals) for n in range(1, retries + 3)]
    assert all(d is not None and d > timedelta(0) for d in delays[:retries])
    assert delays[retries:] == [None, None]
    # The n-th retry waits the n-th interval, then the last one.
    for n, delay in enumerate(delays[:retries], start=1):
        expected = given_intervals[min(n, len(given_intervals)) - 1]
        assert delay == timedelta(minutes=expected)


@settings(max_examples=300)
@given(
    st.integers(1, 25),
    st.integers(0, 20),
    intervals,
    st.one_of(st.none(), st.floats(min_value=0, max_value=30 * 86400)),
)
def test_next_attempt_is_never_before_either_bound(
    attempt: int, retries: int, given_intervals: list[float], retry_after: float | None
) -> None:
    due = next_attempt_at(FAILED_AT, attempt, retries, given_intervals, retry_after)
    delay = retry_delay(attempt, retries, given_intervals)
    if delay is None:
        assert due is None
        return
    assert due is not None
    assert due - FAILED_AT >= delay
    if retry_after is not None:
        assert due - FAILED_AT >= timedelta(seconds=retry_after)
    # ...and it is exactly the larger of the two.
    assert due - FAILED_AT == max(delay, timedelta(seconds=retry_after or 0))


# --- parse_retry_after --------------------------------------------------------------------------

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("120", 120.0),
        (" 0 ", 0.0),
        ("Sun, 01 Mar 2026 12:02:00 GMT", 120.0),  # an HTTP-date: seconds from now
        ("Sun, 01 Mar 2026 11:00:00 GMT", 0.0),  # in the past: go now
        ("Sun, 01 Mar 2026 12:00:30 -0000", 30.0),
        (None, None),
        ("", None),
        ("soon", None),
        ("-5", None),
        ("1.5", None),  # RFC 9110 delta-seconds are whole numbers
        ("٣", None),  # a non-ASCII digit
        ("9" * 400, None),  # too large for a float
    ],
)
def test_parse_retry_after(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header, NOW) == seconds


def test_parse_retry_after_needs_an_aware_now() -> None:
    with pytest.raises(ValueError, match="aware"):
        parse_retry_after("120", datetime(2026, 3, 1, 12))


@given(st.integers(0, 10**9))
def test_parse_retry_after_reads_any_delta_seconds(seconds: int) -> None:
    assert parse_retry_after(str(seconds), NOW) == float(seconds)
