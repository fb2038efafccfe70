"""switchboard/jsonbytes.py reads and writes what the standard library's json does."""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from switchboard import jsonbytes

scalars = (
    st.none()
    | st.booleans()
    | st.integers()  # wider than 64 bits too: the standard library's fallback
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
documents = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.dictionaries(st.text() | st.integers(-10, 10), inner, max_size=5)
    ),
    max_leaves=30,
)


def standard(value: Any) -> Any:
    return json.loads(json.dumps(value, separators=(",", ":"), ensure_ascii=False))


@given(documents)
def test_what_is_written_reads_back_as_the_standard_librarys(value: Any) -> None:
    assert json.loads(jsonbytes.dumps(value)) == standard(value)
    assert jsonbytes.loads(jsonbytes.dumps(value)) == standard(value)


@given(documents)
def test_what_the_standard_library_writes_reads_alike(value: Any) -> None:
    text = json.dumps(value)
    assert jsonbytes.loads(text.encode()) == json.loads(text)
    assert jsonbytes.loads(text) == json.loads(text)


def test_compact_utf8_and_the_odd_cases() -> None:
    assert jsonbytes.dumps({"a": [1, 2], "é": "ü"}) == '{"a":[1,2],"é":"ü"}'.encode()
    assert jsonbytes.dumps({1: "x"}) == b'{"1":"x"}', "keys become strings, as json makes them"
    assert jsonbytes.dumps(2**70) == b"1180591620717411303424", "a wide integer: the fallback"
    assert jsonbytes.dumps(math.nan) == b"null", "not JSON: null"
    assert math.isnan(jsonbytes.loads(b"NaN")), "what json wrote before still reads"
    for wide in (2**63, -(2**63) - 1, 2**64, 10**30):
        assert jsonbytes.loads(str(wide).encode()) == wide, "exact, as json reads it"
        assert jsonbytes.loads(jsonbytes.dumps({"n": [wide]})) == {"n": [wide]}
