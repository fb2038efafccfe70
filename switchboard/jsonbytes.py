"""JSON bytes for records and table rows: orjson where it can, the standard library where not.

Every delivery is encoded and decoded as JSON several times on its way (its job, its report,
its state row, in batches of up to 100): the standard library's encoder costs about 3 µs per
record, orjson's about a tenth of that. The output is the same JSON document (compact, UTF-8;
keys that are not strings become strings, as the standard library makes them), except that a
float that is not a number (``NaN``, infinities: not JSON) becomes ``null``.

Failure modes: a value orjson cannot encode (an integer wider than 64 bits, a type it does not
know) is encoded by the standard library instead, as before; a document orjson refuses to read
(``NaN``, which the standard library writes and reads) is read by the standard library, and so
is one with a run of 19 digits or more anywhere, since orjson reads an integer beyond 64 bits as
a float (the standard library keeps it exact). Neither raises anything the standard library
would not.
"""

from __future__ import annotations

import json
from typing import Any, Final

import orjson

__all__ = ["dumps", "dumps_records", "loads"]

_OPTIONS: Final = orjson.OPT_NON_STR_KEYS
#: Digits enough to be an integer orjson would read as a float (2**63 has 19), found by mapping
#: every digit to ``1`` and everything else to a space, then looking for 19 ones in a row: two
#: passes in C (a regular expression takes longer than reading the document).
_WIDE: Final = b"1" * 19
_DIGITS: Final = bytes(0x31 if 0x30 <= i <= 0x39 else 0x20 for i in range(256))


def dumps(value: Any) -> bytes:
    """``value`` as compact UTF-8 JSON bytes."""
    try:
        return orjson.dumps(value, option=_OPTIONS)
    except TypeError:  # orjson.JSONEncodeError: a wide integer, an unknown type
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def dumps_records(value: Any) -> bytes | None:
    """``value`` (a dataclass record, or a list of them, whose fields hold JSON values) as
    compact JSON bytes of each record's fields, written by orjson from the records themselves
    (no dict built per record); None when orjson cannot (a wide integer, an unknown type):
    :func:`dumps` the records' dicts then."""
    try:
        return orjson.dumps(value, option=_OPTIONS)
    except TypeError:
        return None


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    """The JSON document in ``data``."""
    if isinstance(data, str):
        try:
            raw = data.encode()
        except UnicodeEncodeError:  # a lone surrogate, which only the standard library reads
            return json.loads(data)
    else:
        raw = bytes(data)
    if _WIDE not in raw.translate(_DIGITS):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    return json.loads(raw)
