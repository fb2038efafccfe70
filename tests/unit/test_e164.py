"""The E.164 fast path answers exactly what libphonenumber answers (switchboard/e164.py)."""

from __future__ import annotations

import random

import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from phonenumbers import COUNTRY_CODE_TO_REGION_CODE, PhoneMetadata

from switchboard.addresses import AddressError, _library_phone, normalize_phone
from switchboard.e164 import typed, valid_e164

_TYPES = (
    "fixed_line",
    "mobile",
    "toll_free",
    "premium_rate",
    "shared_cost",
    "voip",
    "personal_number",
    "pager",
    "uan",
    "voicemail",
)


def _library(digits: str) -> str | None:
    """What ``normalize_phone`` answered before the fast path: the E.164 form, or None."""
    try:
        return _library_phone("+" + digits)
    except AddressError:
        return None


def _examples() -> list[str]:
    """Every region's example number of every type, behind its calling code (the digits after
    the ``+``), and the same numbers one digit shorter, longer and changed."""
    found: list[str] = []
    for code, regions in COUNTRY_CODE_TO_REGION_CODE.items():
        for region in regions:
            metadata = PhoneMetadata.metadata_for_region_or_calling_code(code, region)
            if metadata is None:
                continue
            for name in _TYPES:
                desc = getattr(metadata, name)
                if desc is not None and desc.example_number:
                    found.append(f"{code}{desc.example_number}")
    return found


EXAMPLES = _examples()


def _variants(digits: str) -> list[str]:
    last = str((int(digits[-1]) + 1) % 10)
    return [digits, digits[:-1], digits + "7", digits[:-1] + last]


def test_every_example_number_and_its_neighbours_get_the_librarys_answer() -> None:
    checked = answered = 0
    for example in EXAMPLES:
        for digits in _variants(example):
            fast = valid_e164("+" + digits)
            checked += 1
            if fast is not None:
                answered += 1
                assert fast == _library(digits), digits
    assert checked > 4_000
    # The fast path is worth having only if it answers for most valid numbers: every number
    # it leaves (a national prefix, a leading zero, an invalid one) costs the library's time.
    valid = [e for e in EXAMPLES if _library(e) is not None]
    covered = [e for e in valid if valid_e164("+" + e) is not None]
    assert len(covered) > 0.8 * len(valid), (len(covered), len(valid))


def test_generated_numbers_of_every_calling_code_get_the_librarys_answer() -> None:
    rng = random.Random(164)
    answered = 0
    for code in COUNTRY_CODE_TO_REGION_CODE:
        for _ in range(40):
            size = rng.randint(1, 16)
            digits = f"{code}{rng.randint(1, 9)}" + "".join(
                rng.choice("0123456789") for _ in range(size - 1)
            )
            fast = valid_e164("+" + digits)
            if fast is not None:
                answered += 1
                assert fast == _library(digits), digits
    assert answered > 100  # random digits are mostly invalid; some must still be answered


@settings(max_examples=2_000, deadline=None)
@given(st.text(alphabet="0123456789", min_size=0, max_size=22))
def test_any_digits_get_the_librarys_answer(digits: str) -> None:
    fast = valid_e164("+" + digits)
    assert fast is None or fast == _library(digits)


@pytest.mark.parametrize(
    "digits",
    [
        "14155550123",  # NANP: the United States, found among 25 regions sharing +1
        "447911123456",  # the United Kingdom's mobile, among GB, GG, IM and JE
        "4915112345678",
        "33612345678",
        "919876543210",
        "5511987654321",
        "61412345678",
    ],
)
def test_the_usual_numbers_are_answered_without_the_library(digits: str) -> None:
    assert valid_e164("+" + digits) == "+" + digits == _library(digits)


@pytest.mark.parametrize(
    "digits",
    [
        "",
        "1",
        "12",
        "0014155550123",  # no calling code starts with 0
        "11415555012",  # NANP's national prefix 1 after the calling code: the library decides
        "4407911123456",  # the UK's trunk 0 written after +44: the library decides
        "3906123456",  # Italy's leading zero
        "14155550",  # too short for NANP
        "999123456789",  # no such calling code
    ],
)
def test_what_the_fast_path_leaves_to_the_library(digits: str) -> None:
    assert valid_e164("+" + digits) is None


@pytest.mark.parametrize(
    "text",
    ["14155550123", "+1 415 555 0123", "+1-415-555-0123", "+1415555012३", "+", "", "whatsapp:+1"],
)
def test_anything_but_a_plus_and_ascii_digits_is_left_to_the_library(text: str) -> None:
    assert valid_e164(text) is None
    assert typed(text) is None


@pytest.mark.parametrize(
    "given",
    ["+4407911123456", "+1 415 555 0123", "+14155550", "+999123", "whatsapp:+14155550123"],
)
def test_normalize_phone_answers_as_the_library_alone(given: str) -> None:
    text = given.removeprefix("whatsapp:")
    try:
        expected: str | None = _library_phone(text)
        message = None
    except AddressError as exc:
        expected, message = None, str(exc)
    if expected is not None:
        assert normalize_phone(given) == expected
    else:
        with pytest.raises(AddressError) as raised:
            normalize_phone(given)
        assert str(raised.value) == message


def test_the_library_is_what_the_tables_were_built_from() -> None:
    # A sanity check of the comparison itself: the library's own parse agrees with _library.
    number = phonenumbers.parse("+14155550123", None)
    assert phonenumbers.is_valid_number(number)
    assert _library("14155550123") == "+14155550123"


def test_the_parts_and_the_type_are_the_librarys() -> None:
    checked = 0
    for example in EXAMPLES:
        for digits in _variants(example):
            found = typed("+" + digits)
            assert (found is None) == (valid_e164("+" + digits) is None)
            if found is None:
                continue
            checked += 1
            number = phonenumbers.parse("+" + digits, None)
            code, nsn, kind = found
            assert (code, int(nsn)) == (number.country_code, number.national_number), digits
            assert kind == phonenumbers.number_type(number), digits
    assert checked > 2_000


def test_a_calling_code_whose_tables_cannot_be_built_is_left_to_the_library(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Metadata of a shape the table build does not foresee (here: the build raising) leaves
    that calling code to the library for good; normalize_phone answers exactly as before."""
    from switchboard import e164

    def unforeseen(code: int) -> None:
        raise KeyError(code)

    monkeypatch.setattr(e164, "_PLANS", {})
    monkeypatch.setattr(e164, "_NO_PLAN", set())
    monkeypatch.setattr(e164, "_build", unforeseen)
    assert valid_e164("+14155550123") is None
    assert {1} == e164._NO_PLAN
    assert typed("+14155550123") is None
    assert normalize_phone("+14155550123") == "+14155550123"  # the library's answer
    with pytest.raises(AddressError):
        normalize_phone("+1415555012")
