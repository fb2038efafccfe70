"""SMS segment counting: limits, boundaries, escape and surrogate pairs, the MMS switch."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from switchboard.segments import (
    GSM7_BASIC,
    GSM7_EXTENSION,
    GSM7_PART,
    GSM7_SINGLE,
    UCS2_PART,
    UCS2_SINGLE,
    count_segments,
    encoding,
    should_send_as_mms,
    split_segments,
)

EMOJI = "\U0001f600"  # 😀: one code point, two UTF-16 units


def septets(part: str) -> int:
    return sum(2 if ch in GSM7_EXTENSION else 1 for ch in part)


def utf16_units(part: str) -> int:
    return len(part.encode("utf-16-le", "surrogatepass")) // 2


# -- encoding --------------------------------------------------------------------------------


def test_tables_have_the_standard_sizes() -> None:
    assert len(GSM7_BASIC) == 127  # 128 codes minus ESC
    assert frozenset("\f^{}\\[~]|€") == GSM7_EXTENSION
    assert not GSM7_BASIC & GSM7_EXTENSION


@pytest.mark.parametrize(
    "text",
    ["", "Hello, world!", "@£$¥èéùìòÇØøÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ¤¡ÄÖÑÜ§¿äöñüà", "{[~]}|^\\€\f", "a\nb\rc"],
)
def test_gsm7_texts(text: str) -> None:
    assert encoding(text) == "GSM-7"


@pytest.mark.parametrize(
    "text",
    ["ç", "Café à l\u2019heure", "hello " + EMOJI, "नमस्ते", "\x1b", "non\u00a0breaking", "`"],
)
def test_anything_else_is_ucs2(text: str) -> None:
    assert encoding(text) == "UCS-2"


# -- GSM-7 boundaries ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("length", "segments"),
    [(0, 1), (1, 1), (160, 1), (161, 2), (306, 2), (307, 3), (459, 3), (460, 4)],
)
def test_gsm7_boundaries(length: int, segments: int) -> None:
    text = "a" * length
    assert count_segments(text) == segments
    assert len(split_segments(text)) == segments


def test_gsm7_parts_are_153_septets() -> None:
    parts = split_segments("a" * 307)
    assert [len(p) for p in parts] == [153, 153, 1]


def test_extension_characters_count_two_septets() -> None:
    assert count_segments("€" * 80) == 1  # 160 septets
    assert count_segments("€" * 80 + "a") == 2  # 161 septets
    assert count_segments("a" * 159 + "{") == 2  # 161 septets, though only 160 characters


def test_escape_pair_is_never_split_at_a_part_boundary() -> None:
    # 152 septets, then "€" would take septets 153 and 154: it moves whole to part two.
    text = "a" * 152 + "€" + "b" * 10
    parts = split_segments(text)
    assert parts == ["a" * 152, "€" + "b" * 10]
    assert septets(parts[0]) == 152


def test_escape_pair_that_ends_exactly_at_the_boundary_stays() -> None:
    text = "a" * 151 + "€" + "b" * 10  # the pair is septets 152-153
    parts = split_segments(text)
    assert parts == ["a" * 151 + "€", "b" * 10]
    assert septets(parts[0]) == GSM7_PART


def test_all_extension_characters_pack_76_per_part() -> None:
    parts = split_segments("^" * 81)  # 162 septets: two parts, 76 pairs (152 septets) then 5
    assert [len(p) for p in parts] == [76, 5]


# -- UCS-2 boundaries ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("length", "segments"),
    [(1, 1), (70, 1), (71, 2), (134, 2), (135, 3), (201, 3), (202, 4)],
)
def test_ucs2_boundaries(length: int, segments: int) -> None:
    text = "ж" * length
    assert encoding(text) == "UCS-2"
    assert count_segments(text) == segments


def test_ucs2_parts_are_67_units() -> None:
    assert [len(p) for p in split_segments("ж" * 135)] == [67, 67, 1]


def test_emoji_counts_two_units() -> None:
    assert count_segments(EMOJI * 35) == 1  # 70 units
    assert count_segments(EMOJI * 35 + "a") == 2  # 71 units


def test_surrogate_pair_is_never_split_at_a_part_boundary() -> None:
    text = "ж" * 66 + EMOJI + "ж" * 10  # the emoji would be units 67-68
    parts = split_segments(text)
    assert parts == ["ж" * 66, EMOJI + "ж" * 10]
    assert utf16_units(parts[0]) == 66


def test_surrogate_pair_that_ends_exactly_at_the_boundary_stays() -> None:
    text = "ж" * 65 + EMOJI + "ж" * 10  # units 66-67
    parts = split_segments(text)
    assert parts == ["ж" * 65 + EMOJI, "ж" * 10]
    assert utf16_units(parts[0]) == UCS2_PART


def test_one_character_switches_the_whole_text_to_ucs2() -> None:
    gsm = "a" * 100
    assert count_segments(gsm) == 1
    mixed = gsm + "é"  # é is GSM-7: still one segment
    assert count_segments(mixed) == 1
    switched = gsm + "ç"  # ç is not: 101 UTF-16 units
    assert encoding(switched) == "UCS-2"
    assert count_segments(switched) == 2
    # The extension characters are one UTF-16 unit each once the text is UCS-2.
    assert count_segments("€" * 69 + "ç") == 1


def test_lone_surrogate_does_not_raise() -> None:
    assert count_segments("\ud83d" * 71) == 2


def test_empty_text_is_one_empty_segment() -> None:
    assert split_segments("") == [""]
    assert count_segments("") == 1


# -- properties ------------------------------------------------------------------------------

_gsm_alphabet = st.sampled_from(sorted(GSM7_BASIC | GSM7_EXTENSION))
_texts = st.one_of(
    st.text(_gsm_alphabet, max_size=700),
    st.text(
        st.one_of(
            _gsm_alphabet,
            st.sampled_from(["ç", "ж", EMOJI, "\U0001f1f3", "\U0001f1f5", "\u200d", "\U00020000"]),
        ),
        max_size=400,
    ),
    st.text(max_size=400),
)


@given(_texts)
def test_split_is_lossless_and_within_limits(text: str) -> None:
    parts = split_segments(text)
    assert "".join(parts) == text
    assert count_segments(text) == len(parts)
    if encoding(text) == "GSM-7":
        size, single, part = septets, GSM7_SINGLE, GSM7_PART
    else:
        size, single, part = utf16_units, UCS2_SINGLE, UCS2_PART
    if len(parts) == 1:
        assert size(parts[0]) <= single
    else:
        assert size(text) > single
        assert all(0 < size(p) <= part for p in parts)
        # Greedy packing: a part is only closed when the next character would not fit.
        for left, right in itertools.pairwise(parts):
            assert size(left) + size(right[0]) > part


@given(_texts)
def test_count_is_the_ceiling_for_single_unit_texts(text: str) -> None:
    if encoding(text) == "GSM-7" and not set(text) & GSM7_EXTENSION:
        expected = 1 if len(text) <= GSM7_SINGLE else math.ceil(len(text) / GSM7_PART)
        assert count_segments(text) == expected


# -- MMS switch ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ratio", "has_media", "expected"),
    [
        ("a" * 306, 2.667, False, False),  # 2 segments
        ("a" * 307, 2.667, False, True),  # 3 segments > 2.667
        ("ж" * 134, 2.667, False, False),  # 2 segments
        ("ж" * 135, 2.667, False, True),  # 3 segments
        ("a" * 307, 3.0, False, False),  # strictly more than the ratio
        ("a" * 460, 3.0, False, True),
        ("a" * 307, 2.667, True, False),  # already an MMS
        ("", 0.5, False, True),
    ],
)
def test_should_send_as_mms(text: str, ratio: float, has_media: bool, expected: bool) -> None:
    assert should_send_as_mms(text, ratio, has_media) is expected


def test_default_ratio() -> None:
    assert should_send_as_mms("ж" * 135)
    assert not should_send_as_mms("ж" * 134)


@pytest.mark.parametrize("ratio", [0.0, -1.0, math.nan, math.inf])
def test_bad_ratio_is_refused(ratio: float) -> None:
    with pytest.raises(ValueError, match="ratio"):
        should_send_as_mms("hello", ratio)
