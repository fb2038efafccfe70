"""The E.164 numbers almost every SMS audience is made of, validated without parsing. Pure.

libphonenumber's Python port takes about 45 µs to parse and validate one number written as
``+`` and digits (``timeit``, a NANP number): parsing walks the generic paths for every way a
number may be written, and validation finds the number's region by trying each type of number
(fixed line, mobile, toll free ...) of each region sharing its calling code, then tries them
again for that region, each through a few Python calls around one regular expression. Every
recipient of an SMS campaign pays it, on the worker's one core: 45 s of a million-recipient
campaign's six minutes before its first message.

:func:`valid_e164` gives the library's answer from tables built once per calling code out of
the library's own metadata (the same patterns and lengths, compiled once), in a few
microseconds: per number only the calling code's lookup, a length check and the region's
patterns. It answers only "valid, and this is its E.164 form"; for anything else it answers
None and the caller asks the library, whose answer (and error message) is the one given:

* not ``+`` and ASCII digits only (spaces, dashes, letters ...): the library's parser decides;
* a number whose national part starts with a national prefix the parser might strip (``0`` in
  most of Europe, ``1`` in NANP countries) or with a zero (Italy's leading zeros);
* a number the tables find impossible or invalid (the error message is the library's).

:func:`typed` gives the parts (calling code, national number) and the type of such a number as the library's parser and ``number_type`` would, for what else reads them (a
recipient's time zones, ``switchboard/windows.py``).

Guarantee: whenever :func:`valid_e164` answers a number, ``phonenumbers.parse`` with
``is_possible_number``, ``is_valid_number`` and ``format_number(E164)`` answers the same;
``tests/unit/test_e164.py`` compares the two (and the parts and types) over every region's
example numbers and generated numbers of every calling code. The tables follow the installed
library's metadata: an upgrade of ``phonenumbers`` changes both alike.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from phonenumbers import (
    COUNTRY_CODE_TO_REGION_CODE,
    REGION_CODE_FOR_NON_GEO_ENTITY,
    PhoneMetadata,
    PhoneNumberDesc,
    PhoneNumberType,
    country_code_for_valid_region,
    region_code_for_country_code,
)

__all__ = ["typed", "valid_e164"]

#: The library's bounds: a national significant number of 2 to 17 digits, a calling code of
#: at most 3, and more than 2 digits after the ``+``.
_MIN_NSN: Final = 2
_MAX_NSN: Final = 17
_MAX_CALLING_CODE: Final = 3


@dataclass(frozen=True, slots=True)
class _Desc:
    """A ``PhoneNumberDesc`` as the library matches a number against it: its possible lengths
    (empty: any) and its pattern, matched in full."""

    lengths: frozenset[int]
    pattern: re.Pattern[str]

    def matches(self, nsn: str) -> bool:
        if self.lengths and len(nsn) not in self.lengths:
            return False
        return self.pattern.fullmatch(nsn) is not None


@dataclass(frozen=True, slots=True)
class _Region:
    """A region's check that a number is of a known type (the library's ``number type`` is not
    ``UNKNOWN``): it matches the general description, then any one of the types'."""

    general: _Desc | None
    types: tuple[_Desc, ...]
    #: What it was built from (the same region's validation and search share one check).
    metadata: PhoneMetadata
    #: The types other than fixed line and mobile, in the library's order (for :meth:`kind`).
    special: tuple[tuple[int, _Desc], ...]
    fixed: _Desc | None
    mobile: _Desc | None

    def knows(self, nsn: str) -> bool:
        if self.general is None or not self.general.matches(nsn):
            return False
        return any(desc.matches(nsn) for desc in self.types)

    def kind(self, nsn: str) -> int:
        """The library's number type (``PhoneNumberType``), found in its order."""
        if self.general is None or not self.general.matches(nsn):
            return PhoneNumberType.UNKNOWN
        for kind, desc in self.special:
            if desc.matches(nsn):
                return kind
        same = self.metadata.same_mobile_and_fixed_line_pattern
        mobile = self.mobile is not None and (same or self.mobile.matches(nsn))
        if self.fixed is not None and self.fixed.matches(nsn):
            if same or mobile:
                return PhoneNumberType.FIXED_LINE_OR_MOBILE
            return PhoneNumberType.FIXED_LINE
        if not same and mobile:
            return PhoneNumberType.MOBILE
        return PhoneNumberType.UNKNOWN


@dataclass(frozen=True, slots=True)
class _Candidate:
    """One region of a calling code shared by several (the first of them that claims a number
    is its region): by its leading digits when it has them, else by a known type."""

    code: str
    leading: re.Pattern[str] | None
    region: _Region | None  # None: no metadata, never claims a number


@dataclass(frozen=True, slots=True)
class _CallingCode:
    """What a number of one calling code is checked against."""

    #: The national prefix the parser may strip (the main region's), matched at the start.
    national_prefix: re.Pattern[str] | None
    #: The lengths the main region's general description allows (possible or local only).
    possible: frozenset[int]
    #: The candidate regions, in the library's order; one alone is the number's region.
    candidates: tuple[_Candidate, ...]
    #: The region each candidate is validated as (None: that region's validation fails).
    validators: dict[str, _Region | None]


def valid_e164(text: str) -> str | None:
    """``text`` when libphonenumber parses it as that very number (``+`` and ASCII digits) and
    finds it possible and valid; None when the library must answer (module docs)."""
    return None if _checked(text) is None else text


def typed(text: str) -> tuple[int, str, int] | None:
    """For a number :func:`valid_e164` answers: the calling code and national number
    ``phonenumbers.parse`` gives (its ``PhoneNumber(country_code=code,
    national_number=int(nsn))``: no leading zero) and the library's ``number_type`` of it (a
    ``PhoneNumberType``). None when :func:`valid_e164` does not answer (ask the library)."""
    checked = _checked(text)
    if checked is None:
        return None
    code, nsn, region = checked
    return code, nsn, region.kind(nsn)


def _checked(text: str) -> tuple[int, str, _Region] | None:
    """The calling code, national number and region tables of a number the library would
    parse, find possible and valid as ``text``; None when the library must answer."""
    digits = text[1:]
    if not text.startswith("+") or not (digits.isascii() and digits.isdigit()):
        return None
    if len(digits) <= _MIN_NSN or digits[0] == "0":
        return None
    for size in range(1, _MAX_CALLING_CODE + 1):
        code = int(digits[:size])
        if code in COUNTRY_CODE_TO_REGION_CODE:
            break
    else:
        return None
    nsn = digits[size:]
    if not _MIN_NSN <= len(nsn) <= _MAX_NSN or nsn[0] == "0":
        return None
    plan = _PLANS.get(code)
    if plan is None:
        if code in _NO_PLAN:
            return None
        plan = _plan(code)
        if plan is None:
            return None
    if plan.national_prefix is not None and plan.national_prefix.match(nsn):
        return None  # the parser may read this prefix as a national one: the library decides
    if len(nsn) not in plan.possible:
        return None
    region, known = _region_of(plan, nsn)
    if region is None:
        return None
    validator = plan.validators.get(region)
    if validator is None or (validator is not known and not validator.knows(nsn)):
        return None
    return code, nsn, validator


def _region_of(plan: _CallingCode, nsn: str) -> tuple[str | None, _Region | None]:
    """The library's ``region_code_for_number``: the only region of the calling code, else the
    first whose leading digits start the number or, without leading digits, that knows it;
    and the check that knew it (the region's validation, found true already), if one did."""
    candidates = plan.candidates
    if len(candidates) == 1:
        return candidates[0].code, None
    for candidate in candidates:
        if candidate.leading is not None:
            if candidate.leading.match(nsn):
                return candidate.code, None
        elif candidate.region is not None and candidate.region.knows(nsn):
            return candidate.code, candidate.region
    return None, None


#: The tables of the calling codes seen so far (a few hundred at most, built on first use):
#: pure memoisation of the installed library's metadata, the same for every caller.
_PLANS: dict[int, _CallingCode] = {}
#: Calling codes whose metadata the tables do not cover: always the library's answer.
_NO_PLAN: set[int] = set()


def _plan(code: int) -> _CallingCode | None:
    try:
        plan = _build(code)
    except Exception:  # noqa: BLE001  # metadata of a shape not foreseen: the library answers
        plan = None
    if plan is None:
        _NO_PLAN.add(code)
    else:
        _PLANS[code] = plan
    return plan


def _build(code: int) -> _CallingCode | None:
    regions = COUNTRY_CODE_TO_REGION_CODE[code]
    main = PhoneMetadata.metadata_for_region_or_calling_code(
        code, region_code_for_country_code(code)
    )
    if main is None or main.general_desc is None:
        return None
    general = main.general_desc
    prefix = main.national_prefix_for_parsing
    candidates: list[_Candidate] = []
    validators: dict[str, _Region | None] = {}
    for name in regions:
        validator = validators[name] = _validator(code, name)
        metadata = PhoneMetadata.metadata_for_region(name.upper(), None)
        if metadata is None:
            candidates.append(_Candidate(name, None, None))
        elif metadata.leading_digits is not None:
            candidates.append(_Candidate(name, re.compile(metadata.leading_digits), None))
        elif validator is not None and validator.metadata is metadata:
            candidates.append(_Candidate(name, None, validator))  # one check for both
        else:
            candidates.append(_Candidate(name, None, _region(metadata)))
    return _CallingCode(
        national_prefix=re.compile(prefix) if prefix else None,
        possible=frozenset(general.possible_length) | frozenset(general.possible_length_local_only),
        candidates=tuple(candidates),
        validators=validators,
    )


def _validator(code: int, name: str) -> _Region | None:
    """The library's ``is_valid_number_for_region`` for region ``name`` of calling code
    ``code``, as a table (None: it answers False whatever the number)."""
    metadata = PhoneMetadata.metadata_for_region_or_calling_code(code, name.upper())
    if metadata is None:
        return None
    if name != REGION_CODE_FOR_NON_GEO_ENTITY and code != country_code_for_valid_region(name):
        return None
    return _region(metadata)


def _region(metadata: PhoneMetadata) -> _Region:
    # Any one type will do, so the order is the likeliest first (the library's is another:
    # it answers which type). A mobile is looked at only when its pattern is not the fixed
    # line's, as the library does.
    types = [] if metadata.same_mobile_and_fixed_line_pattern else [metadata.mobile]
    types += [
        metadata.fixed_line,
        metadata.toll_free,
        metadata.premium_rate,
        metadata.shared_cost,
        metadata.voip,
        metadata.personal_number,
        metadata.pager,
        metadata.uan,
        metadata.voicemail,
    ]
    described = (_desc(desc) for desc in types)
    special = (
        (PhoneNumberType.PREMIUM_RATE, metadata.premium_rate),
        (PhoneNumberType.TOLL_FREE, metadata.toll_free),
        (PhoneNumberType.SHARED_COST, metadata.shared_cost),
        (PhoneNumberType.VOIP, metadata.voip),
        (PhoneNumberType.PERSONAL_NUMBER, metadata.personal_number),
        (PhoneNumberType.PAGER, metadata.pager),
        (PhoneNumberType.UAN, metadata.uan),
        (PhoneNumberType.VOICEMAIL, metadata.voicemail),
    )
    return _Region(
        general=_desc(metadata.general_desc),
        types=tuple(d for d in described if d is not None),
        metadata=metadata,
        special=tuple((kind, d) for kind, desc in special if (d := _desc(desc)) is not None),
        fixed=_desc(metadata.fixed_line),
        mobile=_desc(metadata.mobile),
    )


def _desc(desc: PhoneNumberDesc | None) -> _Desc | None:
    """None for a description that never matches (absent, or without a pattern)."""
    if desc is None or not desc.national_number_pattern:
        return None
    return _Desc(frozenset(desc.possible_length), re.compile(desc.national_number_pattern))
