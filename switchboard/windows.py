"""Time windows (README: "Configuration"): is a channel open now, and when does it next open. Pure.

A message outside its channel's window is not dropped: the scheduler defers it to the window's
next opening (:func:`release_time`). Nothing here reads the clock; every instant is passed in.

The window's rule
=================

A :class:`~switchboard.clients.TimeWindow` is a set of weekly *instances*. For every local
calendar date D whose weekday is in ``days``, there is one instance. It opens at the wall time
``D start`` and stays open until the wall clock next reads ``end``, i.e. for
``(end - start) mod 24 h``, or 24 hours when that is zero:

- ``end`` after ``start``: the same day (``"00:00"``-``"24:00"`` is the whole of D);
- ``end`` before ``start``: the window crosses midnight and the part after midnight belongs to
  the day it **started**. ``fri 22:00-06:00`` is open on Saturday 02:00 but not on Friday 02:00
  (unless ``thu`` is in ``days`` too), nor on Monday 02:00 (unless ``sun`` is).
- ``start == end`` (also ``"24:00"``-``"00:00"``) means **24 hours from start**, not "never": a
  window that can never open would hold messages forever, which is the worse misreading.

``"24:00"`` is the midnight that ends the day, so ``start: "24:00"`` starts at the next
midnight (still D's instance). An instance is the half-open interval of instants
``[opening, closing)``: open at its opening, closed at its closing. Instances never overlap;
consecutive ones may touch (every-day ``00:00``-``24:00``), and then the window stays open
across the seam.

Daylight-saving time and other offset changes
=============================================

Wall times become instants by one rule, for any IANA zone: **a wall time T is the first instant
whose local wall clock reads T or later.**

- T exists once: that instant.
- T is ambiguous (a fall-back overlap, when the clock reads T twice): the **first** occurrence.
  A window opening in the overlap opens at the first pass; one closing in it closes at the first
  pass (so it is never longer than its wall-clock length suggests).
- T does not exist (a spring-forward gap, or a skipped day such as Pacific/Apia on 2011-12-30):
  the first valid instant after the gap, i.e. the transition itself. ``02:30`` on the day New
  York jumps from 02:00 to 03:00 is 03:00 EDT. An instance lying wholly inside a gap (e.g.
  ``02:00``-``02:30`` that day) is empty: it never opens, and the next instance is the opening.

The rule is monotone (a later wall time never maps to an earlier instant), so instances stay
ordered and :func:`next_opening` can return the first non-empty instance that starts after
``at``. Half-hour (Australia/Lord_Howe) and odd offsets (Asia/Kathmandu, +05:45) need no special
case: the conversion is exact to the second.

Guarantees and failure modes
============================

- ``is_open(w, at, z)`` is true exactly when ``at`` lies in one of the window's instances.
- ``next_opening(w, at, z)`` is ``at`` (in UTC) when the window is open at ``at``; otherwise the
  earliest instant after ``at`` at which it is open. It is always an aware UTC datetime. The
  search visits at most 17 instance dates (2 days back, for instances that started earlier and
  are still running, and 14 ahead) and normally stops within 8 days ahead: a window with at
  least one day opens within a week, and the second week is only reached when that week's
  instance fell entirely inside a DST gap.
- ``ValueError``: ``at`` is naive; ``days`` is empty, names an unknown day, or ``start``/``end``
  is not ``HH:MM`` from 00:00 to 24:00 (validated configuration never does this, so these are
  programming errors); ``next_opening`` found no non-empty instance within 14 days, which real
  tz data cannot produce (it would take a window inside a DST gap three weeks in a row).
- ``OverflowError``: ``at`` within two weeks of :data:`datetime.min` / :data:`datetime.max`.
- The module's only state is ``functools.lru_cache`` on pure functions of values
  (:func:`_common_opening`, :func:`_last_to_open`, :func:`_parse_fields`, :func:`_instances`,
  :func:`_phone_zone_infos`; bounded): pure memoisation, whose cached answer is the one the
  function computes, so the process-wide caches are shared by every app in a process without
  either seeing the other.

:func:`recipient_zones` picks the zones a ``recipient`` window is read in (documented there).

Several zones
=============

A number may be in several zones (a Russian mobile: eleven offsets from Kaliningrad to
Kamchatka; an Australian one: Perth to Lord Howe). A delivery is sent only at an instant when
the window is open in **every** zone the number may be in (:func:`common_opening`), so it never
lands outside the window wherever the recipient is. The release of a held delivery is the first
such instant. When the window is never open in all of them at once (a window of three hours for
a number spanning ten), there is no such instant: :func:`delivery_release` raises
:class:`NoCommonOpening` and the delivery is ``rejected`` (code ``no-common-window``) rather than
sent outside the window somewhere or held forever. A recipient profile's ``timezone`` names one
zone and avoids the question.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Final
from zoneinfo import ZoneInfo

import phonenumbers
from phonenumbers.timezone import time_zones_for_geographical_number, time_zones_for_number

from switchboard.clients import ClientConfig, TimeWindow
from switchboard.e164 import typed
from switchboard.reasons import WINDOW_CLOSED
from switchboard.zones import is_zone_name

__all__ = [
    "Hold",
    "NoCommonOpening",
    "common_opening",
    "deferred",
    "delivery_hold",
    "delivery_release",
    "is_open",
    "next_opening",
    "recipient_zones",
    "release_time",
]

_DAYS: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # index == date.weekday()
_MINUTES_PER_DAY: Final = 24 * 60
_HHMM: Final = re.compile(r"([01][0-9]|2[0-4]):([0-5][0-9])")  # as clients.py validates it
# Instances that started up to two local dates before `at` may still be running: an instance
# spans at most from D 00:00 to D+2 00:00 ("24:00"-"24:00"), and a gap can push `at`'s local
# date one more day forward (Pacific/Apia skipped a whole day).
_LOOK_BACK_DAYS: Final = 2
# One week finds the next instance of any window with a day; the second covers the case where
# that instance is empty because it falls inside a DST gap. The loop stops at the first hit.
_LOOK_AHEAD_DAYS: Final = 14
# phonenumbers answers this for numbers it cannot place (non-geographic, unassigned ranges).
_UNKNOWN_ZONE: Final = "Etc/Unknown"


def is_open(window: TimeWindow, at: datetime, zone: ZoneInfo) -> bool:
    """Whether ``window``, read in ``zone``, is open at the instant ``at`` (aware)."""
    at_utc = _utc(at)
    days, start, end = _parse(window)
    local_day = at_utc.astimezone(zone).date()
    for opening, closing in _instances(
        days, start, end, zone, local_day - timedelta(days=_LOOK_BACK_DAYS), local_day
    ):
        if opening <= at_utc < closing:
            return True
    return False


def next_opening(window: TimeWindow, at: datetime, zone: ZoneInfo) -> datetime:
    """The earliest instant at or after ``at`` when ``window`` is open: ``at`` itself (in UTC)
    when it is open now. Always an aware UTC datetime."""
    at_utc = _utc(at)
    days, start, end = _parse(window)
    if not days:
        raise ValueError("a time window with no days never opens")
    local_day = at_utc.astimezone(zone).date()
    for opening, closing in _instances(
        days,
        start,
        end,
        zone,
        local_day - timedelta(days=_LOOK_BACK_DAYS),
        local_day + timedelta(days=_LOOK_AHEAD_DAYS),
    ):
        # Instances come in time order and never overlap, so the first one that has not closed
        # yet either contains `at` or is the next opening.
        if closing > at_utc:
            return max(opening, at_utc)
    raise ValueError(
        f"time window {window!r} does not open within {_LOOK_AHEAD_DAYS} days of {at_utc.isoformat()} in {zone.key}"
    )


def release_time(window: TimeWindow | None, at: datetime, zone: ZoneInfo) -> datetime | None:
    """When a message due at ``at`` may go out: ``None`` to send now (no window, or the window is
    open), else the window's next opening (aware UTC), which the scheduler defers it to."""
    if window is None:
        _utc(at)  # the same contract as with a window: a naive instant is a bug either way
        return None
    opening = next_opening(window, at, zone)
    return None if opening == _utc(at) else opening


class NoCommonOpening(ValueError):
    """The window is never open in all of a delivery's candidate zones at once (within the
    search horizon of two weeks, which covers every weekly window); the message says which."""


def recipient_zones(
    window_zone: str, recipient_tz: str | None, phone: str | None, client_tz: str
) -> tuple[ZoneInfo, ...]:
    """The zones a window is read in: the delivery may be sent only when it is open in all.

    A fixed ``window_zone`` (an IANA name) is that zone. ``"recipient"`` is, in order:

    1. the recipient profile's ``timezone``, when it is a zone this machine knows;
    2. every zone ``phone`` (E.164) may be in, from ``phonenumbers``' prefix data, in sorted
       order. Its ``Etc/Unknown`` answer and names this machine's tz database lacks are ignored.
       A UK mobile is Guernsey, Isle of Man, Jersey and London (one offset); a Russian mobile
       is sixteen zones, and the window must be open in each (the module docs);
    3. the client's ``timezone``.

    Raises :class:`zoneinfo.ZoneInfoNotFoundError` (a ``KeyError``) or ``ValueError`` when the
    fixed ``window_zone`` or ``client_tz`` (validated configuration) is not a zone.
    """
    if window_zone != "recipient":
        return (ZoneInfo(window_zone),)
    if recipient_tz is not None and is_zone_name(recipient_tz):
        return (ZoneInfo(recipient_tz),)
    if phone:
        candidates = _phone_zone_infos(phone)
        if candidates:
            return candidates
    return (ZoneInfo(client_tz),)


@functools.lru_cache(maxsize=16_384)
def _phone_zone_infos(phone: str) -> tuple[ZoneInfo, ...]:
    """:func:`_phone_zones` as sorted zones, remembered: a recipient held by a window in its own
    time zone is checked at the fan-out and again at its send, a few thousand deliveries later
    (the dispatch backlog's bound, ``streams/flow.py``), so the second check finds it here."""
    return tuple(ZoneInfo(name) for name in sorted(_phone_zones(phone)))


def common_opening(window: TimeWindow, at: datetime, zones: Sequence[ZoneInfo]) -> datetime | None:
    """The earliest instant at or after ``at`` when ``window`` is open in every one of ``zones``
    (``at`` itself, in UTC, when it is open in all now); ``None`` when no instant within two
    weeks is (the windows of the zones never overlap). Always an aware UTC datetime.

    Each step moves to the latest of the zones' next openings: before it, the zone that opens
    last is closed throughout, so no instant is skipped; the step is exact when every zone is
    open there. The instants stepped to are openings of some zone, so the loop ends within the
    horizon. Raises as :func:`next_opening` does (``ValueError`` for a naive ``at``).
    """
    if not zones:
        raise ValueError("a window read in no zone at all")
    start = _utc(at)
    # Chunks of 500 recipients are planned with one `now`: their zone sets repeat, and a set
    # whose windows never overlap costs hundreds of steps, so the answer is cached.
    keys = tuple(zone.key for zone in zones)
    return _common_opening(tuple(window.days), window.start, window.end, keys, start)


@functools.lru_cache(maxsize=4096)
def _common_opening(
    days: tuple[str, ...], start: str, end: str, zones: tuple[str, ...], at: datetime
) -> datetime | None:
    window = TimeWindow(days, start, end, "UTC")
    infos = [ZoneInfo(name) for name in zones]
    horizon = at + timedelta(days=_LOOK_AHEAD_DAYS)
    instant = at
    while instant <= horizon:
        latest = max(next_opening(window, instant, zone) for zone in infos)
        if latest == instant:
            return instant
        instant = latest
    return None


def delivery_release(
    client: ClientConfig,
    channel: str,
    at: datetime,
    *,
    recipient_tz: str | None,
    address: str | None,
) -> datetime | None:
    """When a delivery on ``client``'s ``channel`` to ``address`` may be sent: ``None`` when it
    may be sent at ``at`` (no window, or the window is open in every zone), else the first
    instant the window is open in every zone (:func:`delivery_hold`'s ``release``).

    Raises:
        NoCommonOpening: the number's zones are never all inside the window at once.
    """
    hold = delivery_hold(client, channel, at, recipient_tz=recipient_tz, address=address)
    return None if hold is None else hold.release


@dataclass(frozen=True, slots=True)
class Hold:
    """What holds a delivery outside its window until ``release``: the ``window``, the ``zone``
    whose opening comes last (the one that keeps it held until then), and every zone it is
    read in (``zones``, sorted)."""

    window: TimeWindow
    zone: str
    zones: tuple[str, ...]
    release: datetime


def delivery_hold(
    client: ClientConfig,
    channel: str,
    at: datetime,
    *,
    recipient_tz: str | None,
    address: str | None,
) -> Hold | None:
    """Whether a delivery on ``client``'s ``channel`` to ``address`` is held at ``at``: None
    when it may be sent (no window, or the window is open in every zone), else what holds it and
    until when (its status event says so, ``switchboard/reasons.py``).

    The zones are :func:`recipient_zones`: the window's, or for ``timezone: recipient`` the
    recipient's, else every zone the phone number may be in (``address`` when the channel's
    addresses are phone numbers), else the client's. The zone named is found only for a held
    delivery, and cached per window, zones and instant like :func:`common_opening`.

    Raises:
        NoCommonOpening: the number's zones are never all inside the window at once.
    """
    window = client.time_windows.get(channel)  # type: ignore[call-overload]
    if window is None:
        return None
    phone = address if channel in ("sms", "voice", "whatsapp") else None
    zones = recipient_zones(window.timezone, recipient_tz, phone, client.timezone)
    if len(zones) == 1:
        release = release_time(window, at, zones[0])
        return None if release is None else Hold(window, zones[0].key, (zones[0].key,), release)
    opening = common_opening(window, at, zones)
    if opening is None:
        raise NoCommonOpening(
            f"the {channel} window {window.start}-{window.end} ({','.join(window.days)}) is never "
            f"open in all of the number's {len(zones)} time zones at once "
            f"({', '.join(zone.key for zone in zones)}); give the recipient's timezone in its profile"
        )
    if opening == _utc(at):
        return None
    keys = tuple(zone.key for zone in zones)
    zone = _last_to_open(tuple(window.days), window.start, window.end, keys, _utc(at))
    return Hold(window, zone, keys, opening)


@functools.lru_cache(maxsize=4096)
def _last_to_open(
    days: tuple[str, ...], start: str, end: str, zones: tuple[str, ...], at: datetime
) -> str:
    window = TimeWindow(days, start, end, "UTC")
    # max() keeps the first of equals: zones come sorted, so the answer is stable.
    return max(zones, key=lambda name: next_opening(window, at, ZoneInfo(name)))


def _phone_zones(phone: str | None) -> frozenset[str]:
    """The zones phonenumbers places ``phone`` in (its ``time_zones_for_number``), those this
    machine's tz database knows. An address is E.164 already (validated at intake): its parts
    and type come from the tables of ``switchboard/e164.py`` in a few microseconds, instead of
    the parser's and the type search's 45 (asked at the fan-out and again at the send of every
    recipient held by a window in its own time zone); any other is the library's alone."""
    if not phone:
        return frozenset()
    parts = typed(phone)
    if parts is not None:
        code, nsn, kind = parts
        number = phonenumbers.PhoneNumber(country_code=code, national_number=int(nsn))
        # What time_zones_for_number answers once it found the number's type: a geographical
        # number's zones by its prefix; any other (toll free, ...: rare) it answers itself.
        if phonenumbers.is_number_type_geographical(kind, code):
            names = time_zones_for_geographical_number(number)
        else:
            names = time_zones_for_number(number)
    else:
        try:
            names = time_zones_for_number(phonenumbers.parse(phone, None))
        except phonenumbers.NumberParseException:
            return frozenset()
    return frozenset(name for name in names if name != _UNKNOWN_ZONE and is_zone_name(name))


def _utc(at: datetime) -> datetime:
    # Aware datetimes sharing a tzinfo compare by wall clock, ignoring `fold`; converting every
    # instant to UTC first makes all comparisons below compare instants.
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"a naive datetime is not an instant: {at!r}; attach a time zone")
    return at.astimezone(UTC)


def _parse(window: TimeWindow) -> tuple[frozenset[int], int, int]:
    """Weekday numbers (Monday 0) and start/end in minutes after midnight (0 to 1440)."""
    # tuple(): a window rebuilt from its JSON form may carry a list, which cannot be a cache key.
    return _parse_fields(tuple(window.days), window.start, window.end)


# A client has a handful of windows, and the scheduler asks about one for every recipient.
@functools.lru_cache(maxsize=1024)
def _parse_fields(days: tuple[str, ...], start: str, end: str) -> tuple[frozenset[int], int, int]:
    unknown = [d for d in days if d not in _DAYS]
    if unknown:
        raise ValueError(f"unknown day(s) {unknown!r} in time window; use {', '.join(_DAYS)}")
    return frozenset(_DAYS.index(d) for d in days), _minutes(start), _minutes(end)


def _minutes(hhmm: str) -> int:
    match = _HHMM.fullmatch(hhmm)
    if match is None or (hhmm.startswith("24") and hhmm != "24:00"):
        raise ValueError(f"time {hhmm!r} is not HH:MM between 00:00 and 24:00")
    return int(match[1]) * 60 + int(match[2])


@functools.lru_cache(maxsize=1024)
def _instances(
    days: frozenset[int], start: int, end: int, zone: ZoneInfo, first: date, last: date
) -> tuple[tuple[datetime, datetime], ...]:
    """The non-empty instances starting on local dates ``first``..``last``, in time order, as
    ``[opening, closing)`` UTC instants. Remembered: every recipient of a campaign in one zone
    asks for the same days' instances, at its fan-out and again at its send (about 60 µs of
    date arithmetic each time, where the window is read in the recipient's zone)."""
    return tuple(_instances_of(days, start, end, zone, first, last))


def _instances_of(
    days: frozenset[int], start: int, end: int, zone: ZoneInfo, first: date, last: date
) -> Iterator[tuple[datetime, datetime]]:
    # Until the clock next reads `end`: the next day when end is at or before start, and never
    # zero minutes (24 hours when both read the same, even as "24:00" and "00:00").
    length = (end - start) % _MINUTES_PER_DAY or _MINUTES_PER_DAY
    day = first
    while day <= last:
        if day.weekday() in days:
            midnight = datetime.combine(day, time())  # naive: a wall time in `zone`
            opening = _instant(midnight + timedelta(minutes=start), zone)
            closing = _instant(midnight + timedelta(minutes=start + length), zone)
            if opening < closing:  # empty when the whole instance falls in a gap
                yield opening, closing
        day += timedelta(days=1)


def _instant(wall: datetime, zone: ZoneInfo) -> datetime:
    """The first instant (UTC) whose wall clock in ``zone`` reads ``wall`` or later."""
    # zoneinfo reads an ambiguous wall time with the offset before the transition for fold=0
    # and after it for fold=1; for a time that exists, one or both round-trip.
    readings = [wall.replace(tzinfo=zone, fold=fold).astimezone(UTC) for fold in (0, 1)]
    existing = [u for u in readings if _wall(u, zone) == wall]
    if existing:
        return min(existing)  # the first occurrence in an overlap
    # A gap: the transition lies between the two readings (the offset after it maps `wall`
    # before it, the one before maps it after). Transitions are whole seconds in tz data, so a
    # binary search over seconds for the first instant reading `wall` or later is exact.
    lo, hi = min(readings), max(readings)
    if _wall(hi, zone) < wall or _wall(lo, zone) >= wall:  # pragma: no cover -- not in tz data
        return hi
    lo_s, hi_s = int(lo.timestamp()), int(hi.timestamp())
    # Invariant: the instant lo_s reads before `wall`, hi_s reads `wall` or later.
    while hi_s - lo_s > 1:
        mid = (lo_s + hi_s) // 2
        if _wall(datetime.fromtimestamp(mid, UTC), zone) >= wall:
            hi_s = mid
        else:
            lo_s = mid
    return datetime.fromtimestamp(hi_s, UTC)


def _wall(instant: datetime, zone: ZoneInfo) -> datetime:
    return instant.astimezone(zone).replace(tzinfo=None, fold=0)


def deferred(channel: str, hold: Hold) -> tuple[str, dict[str, Any]]:
    """``(error, detail)`` of a delivery that ``hold`` keeps outside ``channel``'s window
    (:func:`delivery_hold`): the text and detail of its ``deferred`` status event, whose reason
    codes are :mod:`switchboard.reasons`'.

    ``detail`` holds ``reason`` (``window-closed``), ``release_at`` (ISO 8601, UTC), ``window``
    (``{days, start, end, timezone}`` as configured, ``timezone`` being a zone name or
    ``recipient``), ``zone`` (the zone whose window opens last: the one that holds the delivery
    until ``release_at``) and, when the window is read in several, ``zones`` (every one)."""
    at = hold.release.astimezone(UTC).isoformat().replace("+00:00", "Z")
    window = hold.window
    days = ",".join(window.days)
    detail: dict[str, Any] = {
        "reason": WINDOW_CLOSED,
        "release_at": at,
        "zone": hold.zone,
        "window": {
            "days": days,
            "start": window.start,
            "end": window.end,
            "timezone": window.timezone,
        },
    }
    where = f"in {hold.zone}"
    if len(hold.zones) > 1:
        detail["zones"] = list(hold.zones)
        where += f", the last to open of the number's {len(hold.zones)} time zones"
    error = f"outside the {channel} window {window.start}-{window.end} ({days}) {where}; released at {at}"
    return error, detail
