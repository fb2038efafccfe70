"""scrub-bad-mobilenums and its line type lookups (switchboard.managers.lookup)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from switchboard.clients import ClientConfig
from switchboard.managers import LineType, LookupFailed, MemoryState
from switchboard.managers.builtin import (
    LINE_TYPE_NAMESPACE,
    SCRUB_REASONS,
    ScrubBadMobileNums,
    line_type_key,
)
from switchboard.managers.lookup import (
    TWILIO_LOOKUP_BASE,
    HttpRequest,
    HttpResponse,
    LineTypeLookup,
    TwilioLineTypeLookup,
    parse_twilio_lookup,
    twilio_lookup_request,
)
from tests.unit.managers import CountingState, FakeLookup, make_client, start_ctx

MOBILE, LANDLINE, INVALID, VOIP, UNKNOWN = (f"+1415555{n:04d}" for n in range(1, 6))


def scrubber(lookup: LineTypeLookup | None, **options: Any) -> ScrubBadMobileNums:
    return ScrubBadMobileNums({"lookup": lambda client: lookup, **options})


def twilio_answer(kind: str | None = "mobile", **fields: Any) -> HttpResponse:
    body = {
        "calling_country_code": "1",
        "country_code": "US",
        "phone_number": "+14155550001",
        "valid": True,
        "validation_errors": [],
        "line_type_intelligence": {
            "type": kind,
            "carrier_name": "x",
            "error_code": None,
            "mobile_country_code": "310",
            "mobile_network_code": "456",
        },
        **fields,
    }
    return HttpResponse(200, json.dumps(body).encode())


# -- the manager -----------------------------------------------------------------------------


async def test_landlines_and_invalid_numbers_are_scrubbed_with_reasons() -> None:
    lookup = FakeLookup(
        {LANDLINE: "landline", INVALID: "invalid", VOIP: "voip", UNKNOWN: "unknown"}
    )
    state = MemoryState()
    result = await scrubber(lookup).on_session_start(
        start_ctx(make_client(), state, [MOBILE, LANDLINE, INVALID, VOIP, UNKNOWN])
    )
    assert result is not None and result.block is None
    assert [(s.address, s.reason) for s in result.scrub] == [
        (LANDLINE, "landline: cannot receive SMS (line type lookup)"),
        (INVALID, "invalid: no such phone number (line type lookup)"),
    ]
    assert sorted(lookup.asked) == sorted([MOBILE, LANDLINE, INVALID, VOIP, UNKNOWN])
    assert dict(result.detail) == {"cached": 0, "looked_up": 5}
    # Every answer is cached, "unknown" too.
    cached = state.get(LINE_TYPE_NAMESPACE, line_type_key("acme", UNKNOWN))
    assert cached is not None and cached["line_type"] == "unknown"
    assert set(SCRUB_REASONS) == {"landline", "invalid"}


async def test_a_second_session_looks_up_only_new_numbers() -> None:
    lookup = FakeLookup({LANDLINE: "landline", UNKNOWN: "unknown"})
    manager, state, client = scrubber(lookup), CountingState(), make_client()
    await manager.on_session_start(start_ctx(client, state, [MOBILE, LANDLINE, UNKNOWN]))
    writes = len(state.puts)
    lookup.asked.clear()
    new = "+14155559999"
    result = await manager.on_session_start(
        start_ctx(client, state, [UNKNOWN, LANDLINE, MOBILE, new])
    )
    assert lookup.asked == [new]  # known numbers, "unknown" included, are never looked up again
    assert result is not None and [s.address for s in result.scrub] == [LANDLINE]
    assert dict(result.detail) == {"cached": 3, "looked_up": 1}
    assert len(state.puts) == writes + 1


async def test_the_cache_is_per_client() -> None:
    lookup = FakeLookup({LANDLINE: "landline"})
    manager, state = scrubber(lookup), MemoryState()
    await manager.on_session_start(start_ctx(make_client("acme"), state, [LANDLINE]))
    lookup.asked.clear()
    result = await manager.on_session_start(start_ctx(make_client("other"), state, [LANDLINE]))
    assert lookup.asked == [LANDLINE]
    assert result is not None and len(result.scrub) == 1


async def test_a_failed_lookup_leaves_the_number_in_and_uncached() -> None:
    failure = LookupFailed("Twilio Lookup HTTP 503", kind="retryable", code="http-503")
    lookup = FakeLookup({LANDLINE: failure, INVALID: "invalid"})
    manager, state, client = scrubber(lookup), MemoryState(), make_client()
    result = await manager.on_session_start(start_ctx(client, state, [LANDLINE, INVALID]))
    assert result is not None and [s.address for s in result.scrub] == [INVALID]
    assert result.detail["lookup_failures"] == 1
    assert result.detail["first_failure"] == "retryable http-503: Twilio Lookup HTTP 503"
    assert state.get(LINE_TYPE_NAMESPACE, line_type_key("acme", LANDLINE)) is None
    # The next session asks again, and this time gets an answer.
    lookup.answers[LANDLINE] = "landline"
    lookup.asked.clear()
    again = await manager.on_session_start(start_ctx(client, state, [LANDLINE, INVALID]))
    assert lookup.asked == [LANDLINE]
    assert again is not None and [s.address for s in again.scrub] == [LANDLINE, INVALID]


async def test_a_lookup_that_raises_anything_is_a_failure_too() -> None:
    class Broken:
        async def line_type(self, e164: str) -> LineType:
            raise KeyError("surprise")

    class Wrong:
        async def line_type(self, e164: str) -> LineType:
            return "cellular"  # type: ignore[return-value]

    for lookup in (Broken(), Wrong()):
        result = await scrubber(lookup).on_session_start(
            start_ctx(make_client(), MemoryState(), [MOBILE])
        )
        assert result is not None and result.scrub == () and result.detail["lookup_failures"] == 1


async def test_bad_credentials_stop_the_lookups() -> None:
    numbers = [f"+1415777{n:04d}" for n in range(20)]
    auth = LookupFailed("Twilio Lookup HTTP 401, error 20003", kind="config", code="20003")
    lookup = FakeLookup(dict.fromkeys(numbers, auth))
    result = await scrubber(lookup, concurrency=2).on_session_start(
        start_ctx(make_client(), MemoryState(), numbers)
    )
    assert result is not None and result.scrub == ()
    assert len(lookup.asked) <= 2  # the workers in flight when the first failure came back
    assert result.detail["lookup_failures"] + result.detail["not_looked_up"] == 20
    assert result.detail["first_failure"].startswith("config 20003")


async def test_lookups_run_at_most_concurrency_at_a_time_and_once_per_number() -> None:
    numbers = [f"+1415888{n:04d}" for n in range(30)]
    lookup = FakeLookup()
    await scrubber(lookup, concurrency=3).on_session_start(
        start_ctx(make_client(), MemoryState(), numbers + numbers[:10])
    )
    assert sorted(lookup.asked) == sorted(numbers)
    assert lookup.most_in_flight == 3


async def test_without_a_lookup_only_cached_answers_apply() -> None:
    state = MemoryState()
    await state.put(LINE_TYPE_NAMESPACE, line_type_key("acme", LANDLINE), {"line_type": "landline"})
    result = await scrubber(None).on_session_start(
        start_ctx(make_client(), state, [LANDLINE, MOBILE])
    )
    assert result is not None and [s.address for s in result.scrub] == [LANDLINE]
    assert dict(result.detail) == {"cached": 1, "looked_up": 0, "not_looked_up": 1}


async def test_the_lookup_is_chosen_per_client() -> None:
    seen: list[str] = []

    def lookup_for(client: ClientConfig) -> LineTypeLookup | None:
        seen.append(client.client_id)
        return FakeLookup() if client.client_id == "acme" else None

    manager = ScrubBadMobileNums({"lookup": lookup_for})
    await manager.on_session_start(start_ctx(make_client("acme"), MemoryState(), [MOBILE]))
    await manager.on_session_start(start_ctx(make_client("other"), MemoryState(), [MOBILE]))
    assert seen == ["acme", "other"]


async def test_a_failed_cache_write_still_scrubs() -> None:
    class ReadOnly(MemoryState):
        async def put(self, namespace: str, key: str, value: Any | None) -> None:
            raise ConnectionError("broker down")

    result = await scrubber(FakeLookup({LANDLINE: "landline"})).on_session_start(
        start_ctx(make_client(), ReadOnly(), [LANDLINE])
    )
    assert result is not None and [s.address for s in result.scrub] == [LANDLINE]
    assert result.detail["cache_write_failures"] == 1


async def test_only_phone_numbers_on_the_configured_channels() -> None:
    lookup = FakeLookup({LANDLINE: "landline"})
    email = start_ctx(make_client(), MemoryState(), ["ana@example.com"], channel="email")
    assert await scrubber(lookup).on_session_start(email) is None
    voice = start_ctx(make_client(), MemoryState(), [LANDLINE], channel="voice")
    assert await scrubber(lookup).on_session_start(voice) is None  # a landline takes calls
    result = await scrubber(lookup, channels=["sms", "whatsapp"]).on_session_start(
        start_ctx(make_client(), MemoryState(), [LANDLINE, "not-a-number"], channel="whatsapp")
    )
    assert result is not None and [s.address for s in result.scrub] == [LANDLINE]
    assert lookup.asked == [LANDLINE]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "option lookup is required"),
        ({"lookup": "twilio"}, "option lookup is required"),
        ({"lookup": lambda c: None, "concurrency": 0}, "concurrency must be"),
        ({"lookup": lambda c: None, "channels": "sms"}, "channels must be"),
        ({"lookup": lambda c: None, "ttl": 3}, "unknown option(s) ttl"),
    ],
)
def test_bad_options(options: dict[str, Any], message: str) -> None:
    from switchboard.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        ScrubBadMobileNums(options)
    assert message in str(info.value)


# -- Twilio Lookup v2 ------------------------------------------------------------------------


def test_the_request() -> None:
    request = twilio_lookup_request("+14155550001")
    assert request == HttpRequest(
        "GET",
        "https://lookups.twilio.com/v2/PhoneNumbers/%2B14155550001?Fields=line_type_intelligence",
        {"Accept": "application/json"},
    )
    assert twilio_lookup_request("+4930123456", base_url="http://127.0.0.1:9/").url == (
        "http://127.0.0.1:9/v2/PhoneNumbers/%2B4930123456?Fields=line_type_intelligence"
    )
    for bad in ("4155550001", "+0415", "+1 415", "+1415/../x"):
        with pytest.raises(ValueError, match=r"not an E\.164 number"):
            twilio_lookup_request(bad)
    assert TWILIO_LOOKUP_BASE == "https://lookups.twilio.com"


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("mobile", "mobile"),
        ("landline", "landline"),
        ("fixedVoip", "voip"),
        ("nonFixedVoip", "voip"),
        ("tollFree", "unknown"),
        ("personal", "unknown"),
        ("pager", "unknown"),
        ("voicemail", "unknown"),
        ("unknown", "unknown"),
        ("somethingNew", "unknown"),
        (None, "unknown"),
    ],
)
def test_line_types_map(kind: str | None, expected: LineType) -> None:
    assert parse_twilio_lookup(twilio_answer(kind)) == expected


def test_an_invalid_number_is_invalid() -> None:
    answer = twilio_answer(
        None, valid=False, validation_errors=["TOO_SHORT"], line_type_intelligence=None
    )
    assert parse_twilio_lookup(answer) == "invalid"


@pytest.mark.parametrize(
    ("response", "kind", "code"),
    [
        (
            HttpResponse(401, b'{"code": 20003, "message": "Authenticate", "status": 401}'),
            "config",
            "20003",
        ),
        (HttpResponse(403, b""), "config", "http-403"),
        (HttpResponse(404, b'{"code": 20404, "message": "not found"}'), "permanent", "20404"),
        (HttpResponse(400, b"<html>"), "permanent", "http-400"),
        (HttpResponse(429, b'{"code": 20429}'), "retryable", "20429"),
        (HttpResponse(503, b""), "retryable", "http-503"),
        (HttpResponse(302, b""), "retryable", "http-302"),
        (HttpResponse(200, b"not json"), "retryable", "bad-response"),
        (HttpResponse(200, b"[]"), "retryable", "bad-response"),
        (
            HttpResponse(200, b'{"valid": true, "line_type_intelligence": null}'),
            "permanent",
            "no-line-type",
        ),
        (
            twilio_answer(None, line_type_intelligence={"type": None, "error_code": 60600}),
            "permanent",
            "60600",
        ),
        (
            twilio_answer(None, line_type_intelligence={"type": None, "error_code": 60601}),
            "config",
            "60601",
        ),
    ],
)
def test_failures_are_classified(response: HttpResponse, kind: str, code: str) -> None:
    with pytest.raises(LookupFailed) as info:
        parse_twilio_lookup(response)
    assert (info.value.kind, info.value.code) == (kind, code)


@given(
    st.integers(100, 599),
    st.binary(max_size=200)
    | st.builds(
        lambda v: json.dumps(v).encode(),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=10),
            lambda inner: (
                st.lists(inner, max_size=3)
                | st.dictionaries(
                    st.sampled_from(
                        ["valid", "line_type_intelligence", "type", "error_code", "code"]
                    ),
                    inner,
                    max_size=4,
                )
            ),
            max_leaves=8,
        ),
    ),
)
def test_any_answer_is_a_line_type_or_a_classified_failure(status: int, body: bytes) -> None:
    answer: LineType | LookupFailed
    try:
        answer = parse_twilio_lookup(HttpResponse(status, body))
    except LookupFailed as exc:
        answer = exc
    if isinstance(answer, LookupFailed):
        assert answer.kind in ("retryable", "permanent", "config")
    else:
        assert status == 200 and answer in ("mobile", "landline", "voip", "invalid", "unknown")


async def test_twilio_lookup_calls_the_injected_http() -> None:
    requests: list[HttpRequest] = []

    async def http(request: HttpRequest) -> HttpResponse:
        requests.append(request)
        return twilio_answer("landline")

    lookup = TwilioLineTypeLookup(http, base_url="http://fake")
    assert await lookup.line_type("+14155550001") == "landline"
    assert (
        requests[0].url
        == "http://fake/v2/PhoneNumbers/%2B14155550001?Fields=line_type_intelligence"
    )


async def test_twilio_lookup_failures() -> None:
    async def times_out(request: HttpRequest) -> HttpResponse:
        raise TimeoutError

    async def own(request: HttpRequest) -> HttpResponse:
        raise LookupFailed("mine", kind="permanent", code="x")

    async def never(request: HttpRequest) -> HttpResponse:
        raise AssertionError("no request for a number that is not E.164")

    with pytest.raises(LookupFailed) as info:
        await TwilioLineTypeLookup(times_out).line_type("+14155550001")
    assert (info.value.kind, info.value.code) == ("retryable", "lookup-connection")
    with pytest.raises(LookupFailed, match="mine"):
        await TwilioLineTypeLookup(own).line_type("+14155550001")
    with pytest.raises(LookupFailed) as info:
        await TwilioLineTypeLookup(never).line_type("14155550001")
    assert (info.value.kind, info.value.code) == ("permanent", "not-e164")


async def test_the_scrubber_with_the_twilio_lookup() -> None:
    answers = {
        MOBILE: twilio_answer("mobile"),
        LANDLINE: twilio_answer("landline"),
        INVALID: twilio_answer(None, valid=False, line_type_intelligence=None),
    }

    async def http(request: HttpRequest) -> HttpResponse:
        await asyncio.sleep(0)
        number = request.url.split("/PhoneNumbers/")[1].split("?")[0].replace("%2B", "+")
        return answers[number]

    result = await scrubber(TwilioLineTypeLookup(http)).on_session_start(
        start_ctx(make_client(), MemoryState(), [MOBILE, LANDLINE, INVALID])
    )
    assert result is not None and [s.address for s in result.scrub] == [LANDLINE, INVALID]
