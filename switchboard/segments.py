"""Exact SMS segment counting (GSM 03.38 / 3GPP TS 23.038 and TS 23.040). Pure.

The ``mms-when-cheaper`` service manager (README: "Service managers") asks how many SMS segments a
text costs; this module answers exactly, the way a handset or Twilio splits it.

Encoding
    A text is ``GSM-7`` when every character is in the GSM 03.38 basic character set
    (:data:`GSM7_BASIC`, one septet each) or its extension table (:data:`GSM7_EXTENSION`:
    ``^ { } \\ [ ~ ] | €`` and form feed, two septets each: the escape ``0x1B`` and the
    character). Any other character makes the whole text ``UCS-2``, measured in UTF-16 code
    units: one per character of the Basic Multilingual Plane, two (a surrogate pair) for an
    astral character such as most emoji. A literal ESC character (``\\x1b``) is not text: it is
    the escape prefix, so it makes the text ``UCS-2``. Only the exact characters of the table
    count; lookalikes (``ç`` for ``Ç``, curly quotes, non-breaking space) do not, as on the air.
    National language shift tables (Turkish, Portuguese, Indian, ...) are not used, and a
    provider's transliteration (Twilio's Smart Encoding) is not applied: count the text as it
    will actually be sent.

Segments
    ======== ============ =====================
    encoding single part each concatenated part
    ======== ============ =====================
    GSM-7    160 septets  153 septets
    UCS-2    70 units     67 units
    ======== ============ =====================

    A text that fits the single-part limit is one segment. A longer one is split greedily into
    concatenated parts (the user data header takes the difference), and greedy packing gives the
    fewest parts because no character is larger than the smaller limit. A split never falls
    between an escape and its extension character, nor between the two halves of a surrogate
    pair: such a character moves whole to the next part, which can leave a part one unit short.
    Splits happen between code points, so a multi-code-point grapheme (a flag, a ZWJ family emoji,
    a letter and its combining accent) may be divided, as carriers do.

    The empty text is one segment (``split_segments("") == [""]``): an SMS with an empty body
    still takes one message on the air and is billed as one.

Guarantees (property-tested): ``"".join(split_segments(t)) == t``; every part fits its limit;
``count_segments(t) == len(split_segments(t))``; no part is empty unless the text is. Nothing here
raises for any ``str``, including lone surrogates (counted as one UTF-16 unit each).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Final, Literal

__all__ = [
    "GSM7_BASIC",
    "GSM7_EXTENSION",
    "GSM7_PART",
    "GSM7_SINGLE",
    "MMS_COST_RATIO",
    "UCS2_PART",
    "UCS2_SINGLE",
    "Encoding",
    "count_segments",
    "encoding",
    "should_send_as_mms",
    "split_segments",
]

Encoding = Literal["GSM-7", "UCS-2"]

#: The GSM 03.38 default alphabet in code order, without 0x1B (the escape to the extension table).
#: 0x09 is ``Ç``: the standard's table shows a capital C cedilla, and that is what carriers map.
GSM7_BASIC: Final[frozenset[str]] = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ"
    "ÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
#: Characters of the default extension table: each costs two septets (ESC + the character).
GSM7_EXTENSION: Final[frozenset[str]] = frozenset("\f^{}\\[~]|€")

GSM7_SINGLE: Final = 160
GSM7_PART: Final = 153
UCS2_SINGLE: Final = 70
UCS2_PART: Final = 67

#: Price of one MMS in SMS segments (US carrier rates at the time Spoke's extension was written):
#: a text of more segments than this is cheaper as an MMS.
MMS_COST_RATIO: Final = 2.667

_GSM7: Final[frozenset[str]] = GSM7_BASIC | GSM7_EXTENSION


def encoding(text: str) -> Encoding:
    """``GSM-7`` when every character is in the basic set or the extension table, else ``UCS-2``."""
    return "GSM-7" if _GSM7.issuperset(text) else "UCS-2"


def _sizes(text: str, enc: Encoding) -> Iterator[int]:
    """The size of each character, in the encoding's units (septets or UTF-16 code units)."""
    if enc == "GSM-7":
        return (2 if ch in GSM7_EXTENSION else 1 for ch in text)
    # A lone surrogate (possible in a Python str) is one code unit, like any BMP character.
    return (2 if ord(ch) > 0xFFFF else 1 for ch in text)


def _limits(enc: Encoding) -> tuple[int, int]:
    return (GSM7_SINGLE, GSM7_PART) if enc == "GSM-7" else (UCS2_SINGLE, UCS2_PART)


def _part_starts(text: str) -> list[int]:
    """Index in ``text`` where each part begins; ``[0]`` for a single-segment text."""
    enc = encoding(text)
    single, part = _limits(enc)
    sizes = list(_sizes(text, enc))
    if sum(sizes) <= single:
        return [0]
    starts = [0]
    used = 0
    for index, size in enumerate(sizes):
        # A character that does not fit whole starts the next part: this is what keeps an
        # escape pair or a surrogate pair in one part.
        if used + size > part:
            starts.append(index)
            used = 0
        used += size
    return starts


def count_segments(text: str) -> int:
    """The number of SMS segments ``text`` is sent as (1 for the empty text)."""
    return len(_part_starts(text))


def split_segments(text: str) -> list[str]:
    """The parts ``text`` is sent as, in order; ``[text]`` when it fits one segment."""
    starts = _part_starts(text)
    ends = [*starts[1:], len(text)]
    return [text[start:end] for start, end in zip(starts, ends, strict=True)]


def should_send_as_mms(text: str, ratio: float = MMS_COST_RATIO, has_media: bool = False) -> bool:
    """Whether ``text`` is cheaper as one MMS: its segments strictly exceed ``ratio`` (the price of
    an MMS in SMS segments) and it carries no media already (a message with media is an MMS
    anyway, so there is nothing to switch).

    Raises :class:`ValueError` when ``ratio`` is not a finite positive number: a NaN would make
    every comparison false and silently disable the service manager.
    """
    if not math.isfinite(ratio) or ratio <= 0:
        raise ValueError(f"the MMS cost ratio must be a finite positive number, not {ratio!r}")
    return not has_media and count_segments(text) > ratio
