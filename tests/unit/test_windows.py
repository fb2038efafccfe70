"""switchboard.windows: time windows across midnight, weekdays and every IANA zone's DST.

The property tests compare the module with an independent oracle built from the documented rule
rather than from the module's code. The rule "a wall time T is the first instant whose wall
clock reads T or later" means an instant t is at or after T exactly when the highest wall-clock
reading up to t (its *high-water mark*) is T or later. So t is open exactly when its high-water
mark lies inside one of the window's wall-clock instances. The high-water mark is t's own wall
time, except in the second pass of a fall-back overlap, where it stays at the reading just
before the clocks went back. The oracle finds transitions by scanning offsets, and it never
converts a wall time to an instant.
"""

from __future__ import annotations

import functools
from datetime import UTC, date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo, available_timezones

import phonenumbers
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from phonenumbers.timezone import time_zones_for_number

from switchboard.clients import ClientConfig, TimeWindow, parse_client
from switchboard.windows import (
    NoCommonOpening,
    _phone_zones,
    common_opening,
    delivery_release,
    is_open,
    next_opening,
    recipient_zones,
    release_time,
)
from switchboard.zones import is_zone_name
from tests.unit.test_e164 import EXAMPLES, _variants

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
ALL_DAYS = DAYS
WEEKDAYS = DAYS[:5]
ZONES = sorted(available_timezones())
# Zones with DST or other offset changes in 2024-2027, including odd ones: 30-minute DST
# (Lord_Howe), a 2-hour DST (Antarctica/Troll), Ramadan's reversed DST (Casablanca), southern
# hemisphere rules, midnight transitions (Havana, Asuncion, Santiago), +12:45/+13:45 (Chatham).
DST_ZONES = [
    "America/New_York",
    "Europe/London",
    "Australia/Lord_Howe",
    "Antarctica/Troll",
    "Africa/Casablanca",
    "America/Santiago",
    "America/Asuncion",
    "America/Havana",
    "Pacific/Chatham",
    "Asia/Gaza",
    "Asia/Beirut",
    "Africa/Cairo",
    "Pacific/Norfolk",
    "Australia/Adelaide",
    "Europe/Dublin",
    "America/Nuuk",
    "America/Scoresbysund",
    "Pacific/Easter",
    "Asia/Jerusalem",
    "America/St_Johns",
]

AT_FROM = datetime(2024, 1, 1, tzinfo=UTC)
AT_TO = datetime(2027, 12, 1, tzinfo=UTC)
# Wider than the instants drawn: the oracle looks two days back, next_opening up to 15 ahead.
SCAN_FROM = AT_FROM - timedelta(days=40)
SCAN_TO = AT_TO + timedelta(days=40)
SECOND = timedelta(seconds=1)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, sec: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, sec, tzinfo=UTC)


def local(
    zone: str,
    year: int,
    month: int,
    day: int,
    hour: int = 0,
    minute: int = 0,
    sec: int = 0,
    *,
    fold: int = 0,
) -> datetime:
    return datetime(year, month, day, hour, minute, sec, tzinfo=ZoneInfo(zone), fold=fold)


def hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def wall(t: datetime, zone: ZoneInfo) -> datetime:
    return t.astimezone(zone).replace(tzinfo=None, fold=0)


# --- the oracle ---------------------------------------------------------------------------------


@functools.cache
def transitions(key: str) -> tuple[datetime, ...]:
    """Every instant in the scan range where the zone's UTC offset changes (to the second)."""
    zone = ZoneInfo(key)
    step = timedelta(hours=12)  # no zone changes its offset twice within 12 hours here
    found: list[datetime] = []
    t = SCAN_FROM
    offset = t.astimezone(zone).utcoffset()
    while t < SCAN_TO:
        later = t + step
        new_offset = later.astimezone(zone).utcoffset()
        if new_offset != offset:
            lo, hi = int(t.timestamp()), int(later.timestamp())
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if datetime.fromtimestamp(mid, UTC).astimezone(zone).utcoffset() == offset:
                    lo = mid
                else:
                    hi = mid
            found.append(datetime.fromtimestamp(hi, UTC))
            offset = new_offset
        t = later
    return tuple(found)


def high_water(t: datetime, zone: ZoneInfo) -> datetime:
    """The highest wall-clock reading at or before ``t`` (looking back two days)."""
    mark = wall(t, zone)
    for tau in transitions(zone.key):
        if t - timedelta(days=2) < tau <= t:
            mark = max(mark, wall(tau - SECOND, zone))
    return mark


def oracle_open(window: TimeWindow, t: datetime, zone: ZoneInfo) -> bool:
    start, end = minutes(window.start), minutes(window.end)
    length = (end - start) % 1440 or 1440
    mark = high_water(t, zone)
    for back in range(3):
        day = mark.date() - timedelta(days=back)
        if DAYS[day.weekday()] in window.days:
            opens = datetime.combine(day, time()) + timedelta(minutes=start)
            if opens <= mark < opens + timedelta(minutes=length):
                return True
    return False


def minutes(text: str) -> int:
    return int(text[:2]) * 60 + int(text[3:])


# --- strategies ---------------------------------------------------------------------------------

zone_keys = st.one_of(st.sampled_from(ZONES), st.sampled_from(DST_ZONES))
day_sets = st.sets(st.sampled_from(DAYS), min_size=1).map(
    lambda s: tuple(d for d in DAYS if d in s)
)
round_minutes = st.sampled_from([0, 60, 90, 120, 150, 180, 360, 540, 1020, 1200, 1320, 1440])


@st.composite
def cases(draw: st.DrawFn) -> tuple[TimeWindow, datetime, ZoneInfo]:
    """A zone, an instant (often within two days of one of its offset changes) and a window
    (often with an edge near that change's wall time, so edges land in gaps and overlaps)."""
    key = draw(zone_keys)
    zone = ZoneInfo(key)
    minute_choices = [st.integers(0, 1440), round_minutes]
    near = transitions(key)
    use_near = draw(st.booleans())
    if near and use_near:
        tau = draw(st.sampled_from(near))
        at = tau + timedelta(seconds=draw(st.integers(-2 * 86400, 2 * 86400)))
        pivots = {wall(tau - SECOND, zone), wall(tau, zone)}
        pivot = draw(st.sampled_from(sorted(pivots)))
        pivot_minute = pivot.hour * 60 + pivot.minute + (1 if pivot.second else 0)
        minute_choices.append(
            st.integers(-45, 45).map(lambda d: min(1440, max(0, pivot_minute + d)))
        )
    else:
        span = int((AT_TO - AT_FROM).total_seconds())
        at = AT_FROM + timedelta(seconds=draw(st.integers(0, span)))
    start = draw(st.one_of(*minute_choices))
    end = draw(st.one_of(*minute_choices))
    window = TimeWindow(draw(day_sets), hhmm(start), hhmm(end), key)
    return window, at, zone


PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- properties ---------------------------------------------------------------------------------


@PROPERTY
@given(cases(), st.lists(st.floats(0, 1), max_size=25))
def test_is_open_follows_the_documented_rule(
    case: tuple[TimeWindow, datetime, ZoneInfo], fractions: list[float]
) -> None:
    window, at, zone = case
    for t in [at] + [at + timedelta(days=2) * (f - 0.5) for f in fractions]:
        assert is_open(window, t, zone) == oracle_open(window, t, zone), t


@PROPERTY
@given(cases(), st.lists(st.floats(0, 1), max_size=40))
def test_next_opening_is_the_earliest_open_instant(
    case: tuple[TimeWindow, datetime, ZoneInfo], fractions: list[float]
) -> None:
    window, at, zone = case
    opening = next_opening(window, at, zone)

    assert opening.tzinfo is UTC
    assert opening >= at
    assert opening - at <= timedelta(days=15)  # a week, or two when a week's instance was empty
    assert is_open(window, opening, zone)
    assert oracle_open(window, opening, zone)
    if is_open(window, at, zone):
        assert opening == at
        assert release_time(window, at, zone) is None
        return
    assert release_time(window, at, zone) == opening
    # Nothing in between is open: random instants, the second before the opening, both sides
    # of every offset change in between, and every minute of the first three hours.
    between = [t for t in (at + (opening - at) * f for f in fractions) if t < opening]
    between += [t for t in (opening - SECOND, opening - timedelta(minutes=1)) if t >= at]
    for tau in transitions(zone.key):
        if at <= tau - SECOND and tau < opening:
            between += [tau - SECOND, tau]
    first_minute = at.replace(second=0, microsecond=0) + timedelta(minutes=1)
    between += [t for t in (first_minute + timedelta(minutes=i) for i in range(180)) if t < opening]
    for t in between:
        assert at <= t < opening
        assert not oracle_open(window, t, zone), t
        assert not is_open(window, t, zone), t


@PROPERTY
@given(cases())
def test_results_do_not_depend_on_how_at_is_expressed(
    case: tuple[TimeWindow, datetime, ZoneInfo],
) -> None:
    window, at, zone = case
    # The same instant as a zone-local datetime (fold set by astimezone) and with a fixed offset.
    for same in (at.astimezone(zone), at.astimezone(timezone(timedelta(hours=-3, minutes=-30)))):
        assert is_open(window, same, zone) == is_open(window, at, zone)
        assert next_opening(window, same, zone) == next_opening(window, at, zone)


@settings(max_examples=100, deadline=None)
@given(zone_keys, day_sets, st.integers(0, int((AT_TO - AT_FROM).total_seconds())))
def test_a_whole_day_window_is_open_on_its_days(key: str, days: tuple[str, ...], s: int) -> None:
    zone = ZoneInfo(key)
    at = AT_FROM + timedelta(seconds=s)
    window = TimeWindow(days, "00:00", "24:00", key)
    assert is_open(window, at, zone) == (DAYS[at.astimezone(zone).weekday()] in days)
    every_day = TimeWindow(ALL_DAYS, "00:00", "24:00", key)
    assert is_open(every_day, at, zone)
    assert release_time(every_day, at, zone) is None


# --- examples: midnight, weekdays, edges ----------------------------------------------------------


def test_a_window_across_midnight_belongs_to_the_day_it_starts() -> None:
    zone = ZoneInfo("Europe/Paris")
    fri_night = TimeWindow(("fri",), "22:00", "06:00", "Europe/Paris")
    # 2025-06-06 is a Friday.
    assert not is_open(fri_night, local("Europe/Paris", 2025, 6, 6, 2, 0), zone)  # thu not in days
    assert not is_open(fri_night, local("Europe/Paris", 2025, 6, 6, 21, 59), zone)
    assert is_open(fri_night, local("Europe/Paris", 2025, 6, 6, 22, 0), zone)
    assert is_open(fri_night, local("Europe/Paris", 2025, 6, 7, 2, 0), zone)  # Saturday 02:00
    assert is_open(fri_night, local("Europe/Paris", 2025, 6, 7, 5, 59), zone)
    assert not is_open(fri_night, local("Europe/Paris", 2025, 6, 7, 6, 0), zone)
    assert not is_open(fri_night, local("Europe/Paris", 2025, 6, 7, 23, 0), zone)
    assert next_opening(fri_night, local("Europe/Paris", 2025, 6, 7, 6, 0), zone) == local(
        "Europe/Paris", 2025, 6, 13, 22, 0
    )

    weeknights = TimeWindow(WEEKDAYS, "22:00", "06:00", "Europe/Paris")
    assert is_open(weeknights, local("Europe/Paris", 2025, 6, 7, 2, 0), zone)  # Friday's night
    assert not is_open(weeknights, local("Europe/Paris", 2025, 6, 8, 2, 0), zone)  # Saturday's
    assert not is_open(weeknights, local("Europe/Paris", 2025, 6, 9, 2, 0), zone)  # Sunday's
    assert next_opening(weeknights, local("Europe/Paris", 2025, 6, 7, 12, 0), zone) == local(
        "Europe/Paris", 2025, 6, 9, 22, 0
    )


def test_weekdays_only_window_on_a_saturday_waits_for_monday() -> None:
    zone = ZoneInfo("America/Los_Angeles")
    office = TimeWindow(WEEKDAYS, "09:00", "20:00", "recipient")
    saturday = local("America/Los_Angeles", 2025, 6, 7, 10, 0)
    assert not is_open(office, saturday, zone)
    monday = next_opening(office, saturday, zone)
    assert monday == local("America/Los_Angeles", 2025, 6, 9, 9, 0)
    assert monday.tzinfo is UTC
    assert monday == utc(2025, 6, 9, 16, 0)
    assert release_time(office, saturday, zone) == monday
    # Friday 19:59 is in, 20:00 is out: the end is exclusive.
    assert is_open(office, local("America/Los_Angeles", 2025, 6, 6, 19, 59), zone)
    assert not is_open(office, local("America/Los_Angeles", 2025, 6, 6, 20, 0), zone)


def test_start_equal_to_end_means_24_hours_from_start() -> None:
    zone = ZoneInfo("UTC")
    window = TimeWindow(("mon",), "09:00", "09:00", "UTC")  # 2025-06-09 is a Monday
    assert not is_open(window, utc(2025, 6, 9, 8, 59), zone)
    assert is_open(window, utc(2025, 6, 9, 9, 0), zone)
    assert is_open(window, utc(2025, 6, 10, 8, 59), zone)
    assert not is_open(window, utc(2025, 6, 10, 9, 0), zone)
    midnight = TimeWindow(("mon",), "00:00", "00:00", "UTC")
    assert is_open(midnight, utc(2025, 6, 9, 23, 59), zone)
    assert not is_open(midnight, utc(2025, 6, 10, 0, 0), zone)


def test_24_00_is_the_midnight_that_ends_the_day() -> None:
    zone = ZoneInfo("UTC")
    all_monday = TimeWindow(("mon",), "00:00", "24:00", "UTC")
    assert is_open(all_monday, utc(2025, 6, 9, 0, 0), zone)
    assert is_open(all_monday, utc(2025, 6, 9, 23, 59, 59), zone)
    assert not is_open(all_monday, utc(2025, 6, 10, 0, 0), zone)
    late = TimeWindow(("mon",), "24:00", "06:00", "UTC")  # Monday's window starts Tuesday 00:00
    assert next_opening(late, utc(2025, 6, 9, 12, 0), zone) == utc(2025, 6, 10, 0, 0)
    assert not is_open(late, utc(2025, 6, 10, 6, 0), zone)
    seamless = TimeWindow(ALL_DAYS, "00:00", "24:00", "UTC")
    assert is_open(seamless, utc(2025, 6, 10, 0, 0), zone)  # instances touch at midnight


def test_open_at_returns_at_itself_in_utc() -> None:
    zone = ZoneInfo("Asia/Tokyo")
    window = TimeWindow(ALL_DAYS, "09:00", "17:00", "Asia/Tokyo")
    at = local("Asia/Tokyo", 2025, 6, 9, 12, 34, 56)
    assert next_opening(window, at, zone) == at
    assert next_opening(window, at, zone).tzinfo is UTC
    assert release_time(window, at, zone) is None
    assert release_time(None, at, zone) is None


# --- examples: DST and odd offsets ----------------------------------------------------------------


def test_new_york_spring_forward() -> None:
    ny = ZoneInfo("America/New_York")  # 2024-03-10 02:00 EST -> 03:00 EDT (07:00Z)
    in_gap = TimeWindow(("sun",), "02:30", "04:00", "America/New_York")
    assert next_opening(in_gap, utc(2024, 3, 9, 12), ny) == utc(2024, 3, 10, 7, 0)  # 03:00 EDT
    assert not is_open(in_gap, utc(2024, 3, 10, 6, 59, 59), ny)
    assert is_open(in_gap, utc(2024, 3, 10, 7, 0), ny)
    assert not is_open(in_gap, utc(2024, 3, 10, 8, 0), ny)  # 04:00 EDT
    # A window wholly inside the gap does not exist that day: next week's is the opening.
    lost = TimeWindow(("sun",), "02:00", "02:30", "America/New_York")
    assert next_opening(lost, utc(2024, 3, 9, 12), ny) == local("America/New_York", 2024, 3, 17, 2)
    # Ending in the gap closes at the transition.
    evening = TimeWindow(("sat",), "22:00", "02:30", "America/New_York")
    assert is_open(evening, utc(2024, 3, 10, 6, 59, 59), ny)
    assert not is_open(evening, utc(2024, 3, 10, 7, 0), ny)
    # An ordinary day window is 8 hours as always, at the new offset.
    office = TimeWindow(("sun",), "09:00", "17:00", "America/New_York")
    assert next_opening(office, utc(2024, 3, 10, 0), ny) == utc(2024, 3, 10, 13, 0)


def test_new_york_fall_back() -> None:
    ny = ZoneInfo("America/New_York")  # 2024-11-03 02:00 EDT -> 01:00 EST (06:00Z)
    starts_in_overlap = TimeWindow(("sun",), "01:30", "05:00", "America/New_York")
    assert next_opening(starts_in_overlap, utc(2024, 11, 2, 12), ny) == utc(2024, 11, 3, 5, 30)
    first_pass = local("America/New_York", 2024, 11, 3, 1, 30, fold=0)
    # (Compared in UTC: PEP 495 makes an instant in a repeated hour unequal to every other zone's.)
    assert next_opening(starts_in_overlap, utc(2024, 11, 2, 12), ny) == first_pass.astimezone(UTC)
    assert is_open(starts_in_overlap, utc(2024, 11, 3, 6, 15), ny)  # 01:15 EST, second pass
    assert not is_open(starts_in_overlap, utc(2024, 11, 3, 10, 0), ny)  # 05:00 EST
    ends_in_overlap = TimeWindow(("sat",), "22:00", "01:30", "America/New_York")
    assert is_open(ends_in_overlap, utc(2024, 11, 3, 5, 29), ny)
    assert not is_open(ends_in_overlap, utc(2024, 11, 3, 5, 30), ny)  # the first 01:30
    assert not is_open(ends_in_overlap, utc(2024, 11, 3, 6, 10), ny)  # 01:10 EST: closed
    # A zone-local `at` with fold=1 is the second pass, not the first.
    second_pass = local("America/New_York", 2024, 11, 3, 1, 10, fold=1)
    assert not is_open(ends_in_overlap, second_pass, ny)
    assert is_open(ends_in_overlap, local("America/New_York", 2024, 11, 3, 1, 10, fold=0), ny)


def test_london_on_its_dst_days() -> None:
    london = ZoneInfo("Europe/London")
    # 2024-03-31 01:00 GMT -> 02:00 BST: 01:00-02:00 does not exist that day.
    lost = TimeWindow(("sun",), "01:00", "02:00", "Europe/London")
    assert next_opening(lost, utc(2024, 3, 30, 12), london) == utc(2024, 4, 7, 0, 0)
    nights = TimeWindow(ALL_DAYS, "00:30", "01:30", "Europe/London")
    assert is_open(nights, utc(2024, 3, 31, 0, 59, 59), london)
    assert not is_open(nights, utc(2024, 3, 31, 1, 0), london)  # 02:00 BST: past 01:30
    # 2024-10-27 02:00 BST -> 01:00 GMT: 01:00-02:00 happens twice; the window is the first.
    once = TimeWindow(("sun",), "01:00", "01:30", "Europe/London")
    assert next_opening(once, utc(2024, 10, 26, 12), london) == utc(2024, 10, 27, 0, 0)
    assert is_open(once, utc(2024, 10, 27, 0, 29), london)
    assert not is_open(once, utc(2024, 10, 27, 1, 15), london)  # 01:15 GMT, the second pass
    always = TimeWindow(ALL_DAYS, "00:00", "24:00", "Europe/London")
    for hour in range(-3, 4):
        assert is_open(always, utc(2024, 10, 27, 1) + timedelta(hours=hour), london)
        assert is_open(always, utc(2024, 3, 31, 1) + timedelta(hours=hour), london)


def test_lord_howe_half_hour_dst() -> None:
    lh = ZoneInfo("Australia/Lord_Howe")
    # 2024-10-06 02:00 +10:30 -> 02:30 +11 (2024-10-05 15:30Z).
    gap = TimeWindow(("sun",), "02:00", "03:00", "Australia/Lord_Howe")
    assert next_opening(gap, utc(2024, 10, 5, 0), lh) == utc(2024, 10, 5, 15, 30)
    # 2024-04-07 02:00 +11 -> 01:30 +10:30 (2024-04-06 15:00Z): 01:30-02:00 happens twice.
    overlap = TimeWindow(("sun",), "01:45", "02:15", "Australia/Lord_Howe")
    assert next_opening(overlap, utc(2024, 4, 6, 0), lh) == utc(2024, 4, 6, 14, 45)
    assert is_open(overlap, utc(2024, 4, 6, 15, 5), lh)  # 01:35 second pass: still open
    assert is_open(overlap, utc(2024, 4, 6, 15, 44), lh)
    assert not is_open(overlap, utc(2024, 4, 6, 15, 45), lh)  # 02:15 +10:30


def test_kathmandu_quarter_hour_offset() -> None:
    ktm = ZoneInfo("Asia/Kathmandu")  # +05:45, no DST
    office = TimeWindow(WEEKDAYS, "09:00", "17:00", "Asia/Kathmandu")
    assert next_opening(office, utc(2025, 6, 9, 0, 0), ktm) == utc(2025, 6, 9, 3, 15)
    assert is_open(office, utc(2025, 6, 9, 11, 14), ktm)
    assert not is_open(office, utc(2025, 6, 9, 11, 15), ktm)


def test_a_skipped_day() -> None:
    apia = ZoneInfo("Pacific/Apia")  # 2011-12-30 did not happen: Thursday 23:59:59 -> Saturday
    friday = TimeWindow(("fri",), "09:00", "17:00", "Pacific/Apia")
    assert next_opening(friday, utc(2011, 12, 28), apia) == local("Pacific/Apia", 2012, 1, 6, 9)
    fri_night = TimeWindow(("fri",), "22:00", "06:00", "Pacific/Apia")
    opening = next_opening(fri_night, utc(2011, 12, 28), apia)
    assert opening == local("Pacific/Apia", 2011, 12, 31, 0, 0)  # the rest of Friday's night
    assert not is_open(fri_night, local("Pacific/Apia", 2011, 12, 31, 6, 0), apia)


# --- failure modes --------------------------------------------------------------------------------


def test_naive_instants_are_refused() -> None:
    window = TimeWindow(ALL_DAYS, "09:00", "17:00", "UTC")
    naive = datetime(2025, 6, 9, 12)  # naive: the point of the test
    zone = ZoneInfo("UTC")
    for call in (is_open, next_opening, release_time):
        with pytest.raises(ValueError, match="naive"):
            call(window, naive, zone)
    with pytest.raises(ValueError, match="naive"):
        release_time(None, naive, zone)


@pytest.mark.parametrize(
    ("days", "start", "end", "message"),
    [
        (("mon", "funday"), "09:00", "17:00", "unknown day"),
        (("mon",), "9:00", "17:00", "HH:MM"),
        (("mon",), "09:00", "24:01", "HH:MM"),
        (("mon",), "09:60", "17:00", "HH:MM"),
        (("mon",), "25:00", "17:00", "HH:MM"),
    ],
)
def test_malformed_windows_are_refused(
    days: tuple[str, ...], start: str, end: str, message: str
) -> None:
    window = TimeWindow(days, start, end, "UTC")
    with pytest.raises(ValueError, match=message):
        is_open(window, utc(2025, 6, 9), ZoneInfo("UTC"))


def test_a_window_without_days_never_opens() -> None:
    window = TimeWindow((), "09:00", "17:00", "UTC")
    assert not is_open(window, utc(2025, 6, 9, 12), ZoneInfo("UTC"))
    with pytest.raises(ValueError, match="no days"):
        next_opening(window, utc(2025, 6, 9, 12), ZoneInfo("UTC"))
    with pytest.raises(ValueError, match="no days"):
        release_time(window, utc(2025, 6, 9, 12), ZoneInfo("UTC"))


# --- recipient_zones -------------------------------------------------------------------------------


def zone_of(window_zone: str, recipient_tz: str | None, phone: str | None, client_tz: str) -> str:
    """The one zone ``recipient_zones`` answers (the test fails when there are several)."""
    [zone] = recipient_zones(window_zone, recipient_tz, phone, client_tz)
    return zone.key


def test_a_fixed_zone_is_used_as_is() -> None:
    assert zone_of("Asia/Tokyo", "Europe/Paris", "+14155550100", "UTC") == "Asia/Tokyo"


def test_recipient_zone_prefers_the_profile_then_the_phone_then_the_client() -> None:
    assert zone_of("recipient", "Europe/Paris", "+14155550100", "UTC") == "Europe/Paris"
    assert zone_of("recipient", None, "+14155550100", "UTC") == "America/Los_Angeles"
    assert zone_of("recipient", None, "+9779812345678", "UTC") in {
        "Asia/Kathmandu",
        "Asia/Katmandu",  # phonenumbers still answers the old name; tzdata keeps it as a link
    }
    assert zone_of("recipient", None, None, "Europe/Berlin") == "Europe/Berlin"
    # An unknown profile zone is skipped rather than failing the delivery.
    assert zone_of("recipient", "Mars/Olympus", "+14155550100", "UTC") == ("America/Los_Angeles")


def test_a_phone_without_a_zone_falls_back_to_the_client() -> None:
    # 555-01xx numbers are fictional: phonenumbers answers Etc/Unknown for them.
    assert zone_of("recipient", None, "+15555550100", "Asia/Tokyo") == "Asia/Tokyo"
    assert zone_of("recipient", None, "not a number", "Asia/Tokyo") == "Asia/Tokyo"
    assert zone_of("recipient", None, "+80012345678", "Asia/Tokyo") == "Asia/Tokyo"


def test_a_phone_with_several_zones_gives_every_zone_in_sorted_order() -> None:
    # A UK mobile maps to Guernsey, Isle of Man, Jersey and London, whatever the client's zone.
    uk = ["Europe/Guernsey", "Europe/Isle_of_Man", "Europe/Jersey", "Europe/London"]
    for client_zone in ("UTC", "Europe/London"):
        assert [
            z.key for z in recipient_zones("recipient", None, "+447911123456", client_zone)
        ] == uk
    # A Moscow mobile maps to sixteen zones, from Kaliningrad's offset to Kamchatka's: all of
    # them count (a message must not land before 08:00 in Anadyr because the client is in Moscow).
    russia = [z.key for z in recipient_zones("recipient", None, "+79161234567", "Europe/Moscow")]
    assert len(russia) == 16 and russia == sorted(russia)
    assert {"Europe/Moscow", "Asia/Kamchatka", "Asia/Anadyr"} <= set(russia)
    # The profile's zone, when given, is the only one.
    assert zone_of("recipient", "Asia/Vladivostok", "+79161234567", "UTC") == "Asia/Vladivostok"


def test_a_numbers_zones_are_those_phonenumbers_gives_from_its_parser() -> None:
    # The zones are found from the tables of switchboard/e164.py for an E.164 address: the
    # same as phonenumbers' own, over every region's example numbers and their neighbours.
    checked = 0
    for example in EXAMPLES:
        for digits in _variants(example):
            phone = "+" + digits
            try:
                number = phonenumbers.parse(phone, None)
            except phonenumbers.NumberParseException:
                continue
            expected = frozenset(
                name
                for name in time_zones_for_number(number)
                if name != "Etc/Unknown" and is_zone_name(name)
            )
            assert _phone_zones(phone) == expected, phone
            checked += 1
    assert checked > 4_000


def test_an_invalid_configured_zone_raises() -> None:
    with pytest.raises((KeyError, ValueError)):
        recipient_zones("Mars/Olympus", None, None, "UTC")
    with pytest.raises((KeyError, ValueError)):
        recipient_zones("recipient", None, None, "Mars/Olympus")


# --- several zones --------------------------------------------------------------------------


def sms_window(start: str, end: str) -> ClientConfig:
    """A client whose sms window is ``start``-``end`` in the recipient's zones, every day."""
    windows = {"sms": {"start": start, "end": end}}
    return parse_client(
        "acme", {"channels": {"sms": {"provider": "sandbox"}}, "time_windows": windows}
    )


#: Numbers phonenumbers places in several zones: Russia (16, UTC+2 to +12), Australia (8),
#: the UK (4, one offset), Idaho (Boise and Los Angeles, an hour apart).
SPANNING_NUMBERS = ("+79161234567", "+61412345678", "+447911123456", "+12085551234")


@st.composite
def multi_zone_cases(draw: st.DrawFn) -> tuple[TimeWindow, datetime, tuple[ZoneInfo, ...]]:
    """A window, an instant, and 2 to 5 zones (often far apart, with DST of their own)."""
    keys = draw(st.lists(zone_keys, min_size=2, max_size=5, unique=True))
    span = int((AT_TO - AT_FROM).total_seconds())
    at = AT_FROM + timedelta(seconds=draw(st.integers(0, span)))
    start = draw(st.one_of(st.integers(0, 1440), round_minutes))
    end = draw(st.one_of(st.integers(0, 1440), round_minutes))
    window = TimeWindow(draw(day_sets), hhmm(start), hhmm(end), "recipient")
    return window, at, tuple(ZoneInfo(k) for k in keys)


@PROPERTY
@given(multi_zone_cases(), st.lists(st.floats(0, 1), max_size=40))
def test_common_opening_is_the_first_instant_open_in_every_zone(
    case: tuple[TimeWindow, datetime, tuple[ZoneInfo, ...]], fractions: list[float]
) -> None:
    window, at, zones = case
    opening = common_opening(window, at, zones)
    if opening is None:
        # The zones' windows never overlap: no instant of the next two weeks is open in all.
        probes = [at + timedelta(days=14) * f for f in fractions]
        for t in probes:
            assert not all(oracle_open(window, t, zone) for zone in zones), t
        return
    assert opening.tzinfo is UTC and opening >= at
    for zone in zones:  # the oracle reads the local wall clock, not the module's conversion
        assert oracle_open(window, opening, zone), (zone.key, opening)
    if all(is_open(window, at, zone) for zone in zones):
        assert opening == at
    # Nothing earlier is open in every zone: random instants, the second before, and each
    # zone's own next opening before it (where the intersection could have begun).
    between = [t for t in (at + (opening - at) * f for f in fractions) if t < opening]
    between += [t for t in (opening - SECOND,) if t >= at]
    between += [o for o in (next_opening(window, at, zone) for zone in zones) if o < opening]
    for t in between:
        assert not all(oracle_open(window, t, zone) for zone in zones), t


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(SPANNING_NUMBERS),
    st.integers(0, int((AT_TO - AT_FROM).total_seconds())),
    st.sampled_from([(480, 1260), (540, 1200), (420, 1380), (600, 780), (1320, 480)]),
)
def test_a_number_in_several_zones_is_sent_only_inside_the_window_everywhere(
    number: str, offset: int, edges: tuple[int, int]
) -> None:
    """Quiet hours (issue 14): whenever the rule lets a delivery go, the local time in every
    zone the number may be in is inside the window; a held one is released at such an instant."""
    start, end = edges
    client = sms_window(hhmm(start), hhmm(end))
    window = client.time_windows["sms"]
    zones = recipient_zones("recipient", None, number, client.timezone)
    at = AT_FROM + timedelta(seconds=offset)

    def inside_everywhere(t: datetime) -> bool:
        for zone in zones:
            clock = t.astimezone(zone)
            minute = clock.hour * 60 + clock.minute
            inside = start <= minute < end if start < end else (minute >= start or minute < end)
            if not (inside and oracle_open(window, t, zone)):
                return False
        return True

    try:
        release = delivery_release(client, "sms", at, recipient_tz=None, address=number)
    except NoCommonOpening:
        # Never open in all at once: no instant of the coming two weeks is inside everywhere.
        for hour in range(0, 14 * 24, 1):
            assert not inside_everywhere(at + timedelta(hours=hour, minutes=7))
        return
    assert inside_everywhere(release if release is not None else at)


def test_a_moscow_mobile_waits_for_8_am_in_its_easternmost_zone() -> None:
    """The issue's example: 08:00-21:00 for a Russian mobile is open only while it is 08:00 or
    later in Anadyr (UTC+12) and before 21:00 in Kaliningrad's offset (Bucharest, UTC+2)."""
    client = sms_window("08:00", "21:00")
    # 04:00 UTC is 07:00 in Moscow and 16:00 in Anadyr: Moscow is not open yet.
    release = delivery_release(
        client, "sms", utc(2026, 12, 5, 4), recipient_tz=None, address="+79161234567"
    )
    assert release == utc(2026, 12, 5, 6)  # 08:00 in Bucharest's offset, 18:00 in Anadyr
    assert (
        delivery_release(
            client, "sms", utc(2026, 12, 5, 7), recipient_tz=None, address="+79161234567"
        )
        is None
    )
    # 09:30 UTC is 21:30 in Anadyr: closed there, so it waits for the next day's 06:00 UTC.
    assert delivery_release(
        client, "sms", utc(2026, 12, 5, 9, 30), recipient_tz=None, address="+79161234567"
    ) == utc(2026, 12, 6, 6)
    # The profile's zone, when given, is the only one read (14:00 in Vladivostok).
    assert (
        delivery_release(
            client,
            "sms",
            utc(2026, 12, 5, 4),
            recipient_tz="Asia/Vladivostok",
            address="+79161234567",
        )
        is None
    )
    # A window of three hours never fits a number spanning ten: refused, never sent outside it.
    narrow = sms_window("09:00", "12:00")
    with pytest.raises(NoCommonOpening, match="never open in all"):
        delivery_release(
            narrow, "sms", utc(2026, 12, 5, 4), recipient_tz=None, address="+79161234567"
        )


def test_an_australian_mobile_is_held_until_perth_is_awake() -> None:
    client = sms_window("08:00", "21:00")
    # 22:00 UTC on 2026-12-06 is 09:00 in Sydney (AEDT) but 06:00 in Perth (AWST, UTC+8).
    release = delivery_release(
        client, "sms", utc(2026, 12, 6, 22), recipient_tz=None, address="+61412345678"
    )
    assert release is not None
    for zone in recipient_zones("recipient", None, "+61412345678", "UTC"):
        assert 8 <= release.astimezone(zone).hour < 21, zone.key


def test_oracle_sanity() -> None:
    # The oracle's transition scan finds New York's 2024 changes to the second.
    found = [t for t in transitions("America/New_York") if t.year == 2024]
    assert found == [utc(2024, 3, 10, 7), utc(2024, 11, 3, 6)]
    assert high_water(utc(2024, 11, 3, 6, 30), ZoneInfo("America/New_York")) == datetime(
        2024, 11, 3, 1, 59, 59
    )
    assert date(2025, 6, 9).weekday() == 0  # the examples' Monday
