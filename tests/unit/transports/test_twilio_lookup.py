"""Twilio Lookup v2 line types (:mod:`transports.twilio_lookup`), through the SDK's real async
HTTP client against the local fake Twilio server (:mod:`tests.fakes.twilio_server`): answers,
classified failures, per-client configuration, caching, and the fake's Lookup endpoint itself."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from switchboard.clients import ChannelConfig, ClientConfig
from switchboard.managers import LineTypeLookup, LookupFailed, MemoryState
from switchboard.managers.builtin import ScrubBadMobileNums
from tests.fakes.twilio_server import TEST_AUTH_TOKEN, Behaviour, FakeTwilioServer
from tests.unit.managers import start_ctx
from transports.twilio_lookup import TwilioLookups

TOKEN_ENV = "SWITCHBOARD_TEST_TWILIO_LOOKUP_TOKEN"
NUMBER = "+14155550123"
OTHER = "+14155550124"

MakeClient = Callable[..., ClientConfig]


@pytest.fixture
async def server() -> AsyncIterator[FakeTwilioServer]:
    async with FakeTwilioServer() as fake:
        yield fake


@pytest.fixture
async def lookups() -> AsyncIterator[TwilioLookups]:
    made = TwilioLookups(timeout=5)
    yield made
    await made.aclose()


@pytest.fixture
def client(server: FakeTwilioServer, monkeypatch: pytest.MonkeyPatch) -> MakeClient:
    """Clients whose sms channel is Twilio at the fake server; options override (None removes)."""
    monkeypatch.setenv(TOKEN_ENV, TEST_AUTH_TOKEN)

    def factory(
        client_id: str = "acme", provider: str = "twilio", **overrides: Any
    ) -> ClientConfig:
        options: dict[str, Any] = {
            "account_sid": server.account_sid,
            "auth_token_env": TOKEN_ENV,
            "from": ["+14155550100"],
            "api_base": server.base_url,
        }
        options.update(overrides)
        sms = ChannelConfig(provider, {k: v for k, v in options.items() if v is not None})
        return ClientConfig(client_id=client_id, channels={"sms": sms})

    return factory


def lookup_of(lookups: TwilioLookups, client: ClientConfig) -> LineTypeLookup:
    found = lookups.for_client(client)
    assert found is not None
    return found


async def failure(lookup: LineTypeLookup, number: str = NUMBER) -> LookupFailed:
    with pytest.raises(LookupFailed) as caught:
        await lookup.line_type(number)
    return caught.value


# -- answers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("twilio_type", "expected"),
    [
        ("mobile", "mobile"),
        ("landline", "landline"),
        ("fixedVoip", "voip"),
        ("nonFixedVoip", "voip"),
        ("tollFree", "unknown"),
        ("unknown", "unknown"),
        ("invalid", "invalid"),
    ],
)
async def test_line_types_are_answered(
    lookups: TwilioLookups,
    client: MakeClient,
    server: FakeTwilioServer,
    twilio_type: str,
    expected: str,
) -> None:
    server.line_types[NUMBER] = twilio_type

    assert await lookup_of(lookups, client()).line_type(NUMBER) == expected


async def test_numbers_are_mobile_unless_scripted(
    lookups: TwilioLookups, client: MakeClient, server: FakeTwilioServer
) -> None:
    server.line_types[OTHER] = "landline"
    lookup = lookup_of(lookups, client())

    assert await lookup.line_type(NUMBER) == "mobile"
    assert await lookup.line_type(OTHER) == "landline"


async def test_the_request_is_lookup_v2_with_an_escaped_number(
    lookups: TwilioLookups, client: MakeClient, server: FakeTwilioServer
) -> None:
    await lookup_of(lookups, client()).line_type(NUMBER)

    [request] = server.lookups()
    assert request.resource == "Lookups"
    assert request.raw_path == "/v2/PhoneNumbers/%2B14155550123?Fields=line_type_intelligence"
    assert request.phone_number == NUMBER
    assert request.form == {"Fields": ("line_type_intelligence",)}
    assert request.authorized
    assert request.account_sid == server.account_sid
    assert request.headers["Accept"] == "application/json"
    assert "Authorization" not in request.headers  # the fake keeps no credentials either


async def test_line_type_error_codes_are_classified(
    lookups: TwilioLookups, client: MakeClient, server: FakeTwilioServer
) -> None:
    server.line_type_errors[NUMBER] = 60600  # unprovisioned or out of coverage
    server.line_type_errors[OTHER] = 60601  # Canadian numbers need approval
    lookup = lookup_of(lookups, client())

    unprovisioned = await failure(lookup, NUMBER)
    assert (unprovisioned.kind, unprovisioned.code) == ("permanent", "60600")
    canadian = await failure(lookup, OTHER)
    assert (canadian.kind, canadian.code) == ("config", "60601")


# -- failures --------------------------------------------------------------------------------


async def test_bad_credentials_are_config_and_never_shown(
    lookups: TwilioLookups,
    client: MakeClient,
    server: FakeTwilioServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="transports.twilio_lookup.sdk")
    wrong = "wrong-token-0123456789abcdef"
    monkeypatch.setenv("OTHER_LOOKUP_TOKEN", wrong)
    lookup = lookup_of(lookups, client(auth_token_env="OTHER_LOOKUP_TOKEN"))

    failed = await failure(lookup)

    assert (failed.kind, failed.code) == ("config", "20003")
    assert "401" in failed.message
    assert "$OTHER_LOOKUP_TOKEN" in failed.message  # what to fix
    assert wrong not in str(failed)
    assert wrong not in repr(failed.args)
    assert wrong not in repr(lookup)
    assert wrong not in caplog.text
    assert "GET Request" in caplog.text  # the SDK did log, without the credentials
    assert not server.lookups()[0].authorized


@pytest.mark.parametrize(
    ("behaviour", "code"),
    [
        (Behaviour.error(500, 20500, "Internal Server Error"), "20500"),
        (Behaviour.error(503, None, "Service Unavailable"), "http-503"),
        (Behaviour.rate_limited(retry_after=3), "20429"),
    ],
)
async def test_server_errors_and_rate_limits_are_retryable(
    lookups: TwilioLookups,
    client: MakeClient,
    server: FakeTwilioServer,
    behaviour: Behaviour,
    code: str,
) -> None:
    server.script(behaviour, to=NUMBER, lookup=True)

    failed = await failure(lookup_of(lookups, client()))

    assert (failed.kind, failed.code) == ("retryable", code)


async def test_another_client_error_is_permanent(
    lookups: TwilioLookups, client: MakeClient, server: FakeTwilioServer
) -> None:
    server.script(Behaviour.error(400, 60200, "Invalid parameter"), to=NUMBER, lookup=True)

    failed = await failure(lookup_of(lookups, client()))

    assert (failed.kind, failed.code) == ("permanent", "60200")


async def test_a_dropped_connection_is_retryable_and_recovers(
    lookups: TwilioLookups, client: MakeClient, server: FakeTwilioServer
) -> None:
    server.script(Behaviour.dropped(), to=NUMBER, lookup=True)
    lookup = lookup_of(lookups, client())

    failed = await failure(lookup)
    assert (failed.kind, failed.code) == ("retryable", "lookup-connection")
    # aiohttp sends an idempotent GET once more when the connection drops.
    assert server.lookup_counts()[NUMBER] == 2

    server.clear_scripts()
    assert await lookup.line_type(NUMBER) == "mobile"  # the session recovers


async def test_one_dropped_connection_is_retried_by_aiohttp(
    lookups: TwilioLookups, client: MakeClient, server: FakeTwilioServer
) -> None:
    server.script(Behaviour.dropped(), to=NUMBER, times=1, lookup=True)

    assert await lookup_of(lookups, client()).line_type(NUMBER) == "mobile"
    assert server.lookup_counts()[NUMBER] == 2  # both are billed by Twilio


async def test_a_slow_answer_times_out_as_retryable(
    client: MakeClient, server: FakeTwilioServer
) -> None:
    server.script(Behaviour.slow(5000), lookup=True)
    lookups = TwilioLookups(timeout=0.2)
    started = time.monotonic()
    try:
        failed = await failure(lookup_of(lookups, client()))
    finally:
        await lookups.aclose()

    assert (failed.kind, failed.code) == ("retryable", "lookup-timeout")
    assert time.monotonic() - started < 2


async def test_a_refused_connection_is_retryable(
    lookups: TwilioLookups, client: MakeClient
) -> None:
    failed = await failure(lookup_of(lookups, client(api_base="http://127.0.0.1:9")))

    assert (failed.kind, failed.code) == ("retryable", "lookup-connection")


async def test_a_number_that_is_not_e164_is_not_looked_up(
    lookups: TwilioLookups, client: MakeClient, server: FakeTwilioServer
) -> None:
    failed = await failure(lookup_of(lookups, client()), "4155550123")

    assert (failed.kind, failed.code) == ("permanent", "not-e164")
    assert server.lookups() == []


# -- per client ------------------------------------------------------------------------------


async def test_a_client_without_twilio_sms_has_no_lookup(
    lookups: TwilioLookups, client: MakeClient
) -> None:
    assert lookups.for_client(ClientConfig(client_id="nothing")) is None
    assert lookups.for_client(client(provider="sandbox")) is None
    voice_only = ClientConfig(client_id="voice", channels={"voice": client().channels["sms"]})
    assert lookups.for_client(voice_only) is None


async def test_a_missing_token_variable_is_a_config_failure_naming_it(
    lookups: TwilioLookups,
    client: MakeClient,
    server: FakeTwilioServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("UNSET_LOOKUP_TOKEN", raising=False)
    lookup = lookup_of(lookups, client(auth_token_env="UNSET_LOOKUP_TOKEN"))

    failed = await failure(lookup)

    assert (failed.kind, failed.code) == ("config", "lookup-config")
    assert "UNSET_LOOKUP_TOKEN" in failed.message
    assert "acme" in failed.message
    assert server.lookups() == []  # nothing was sent


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"auth_token_env": None}, "auth_token_env is required"),
        ({"account_sid": None}, "account_sid must be AC"),
        ({"account_sid": "ACnope"}, "account_sid must be AC"),
        ({"api_base": "ftp://example.com"}, "api_base must be an http(s) URL"),
    ],
)
async def test_unusable_options_are_config_failures(
    lookups: TwilioLookups,
    client: MakeClient,
    server: FakeTwilioServer,
    overrides: dict[str, Any],
    expected: str,
) -> None:
    failed = await failure(lookup_of(lookups, client(**overrides)))

    assert failed.kind == "config"
    assert expected in failed.message
    assert TEST_AUTH_TOKEN not in failed.message
    assert server.lookups() == []


async def test_lookups_are_cached_per_credentials_and_base(
    lookups: TwilioLookups,
    client: MakeClient,
    server: FakeTwilioServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first = lookup_of(lookups, client("acme"))
    # Another client with the same account, token and base shares it (and its HTTP session).
    assert lookup_of(lookups, client("globex")) is first
    monkeypatch.setenv("SAME_TOKEN_ELSEWHERE", TEST_AUTH_TOKEN)
    assert lookup_of(lookups, client("initech", auth_token_env="SAME_TOKEN_ELSEWHERE")) is first
    # A different base, account or token does not.
    other_base = lookup_of(lookups, client(api_base=server.base_url + "/"))
    assert other_base is first  # the same base, spelled with a slash
    assert lookup_of(lookups, client(api_base=None)) is not first
    assert lookup_of(lookups, client(account_sid="AC" + "f" * 32)) is not first
    monkeypatch.setenv(TOKEN_ENV, "rotated-token-0123456789")
    rotated = lookup_of(lookups, client("acme"))
    assert rotated is not first
    assert lookup_of(lookups, client("acme")) is rotated

    assert await first.line_type(NUMBER) == "mobile"
    assert await first.line_type(OTHER) == "mobile"
    assert (await failure(rotated)).kind == "config"  # the fake does not know the new token
    assert server.lookup_counts() == {NUMBER: 2, OTHER: 1}


async def test_aclose_closes_the_sessions_and_later_lookups_open_new_ones(
    client: MakeClient, server: FakeTwilioServer
) -> None:
    lookups = TwilioLookups(timeout=5)
    first = lookup_of(lookups, client())
    assert await first.line_type(NUMBER) == "mobile"

    await lookups.aclose()
    await lookups.aclose()  # idempotent

    second = lookup_of(lookups, client())
    assert second is not first
    assert await second.line_type(NUMBER) == "mobile"
    await lookups.aclose()


def test_the_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match="timeout"):
        TwilioLookups(timeout=0)


async def test_the_scrubber_through_twilio_lookups(
    lookups: TwilioLookups, client: MakeClient, server: FakeTwilioServer
) -> None:
    landline, invalid, voip = "+14155550125", "+14155550126", "+14155550127"
    server.line_types.update({landline: "landline", invalid: "invalid", voip: "nonFixedVoip"})
    scrubber = ScrubBadMobileNums({"lookup": lookups.for_client})
    audience = [NUMBER, landline, invalid, voip]

    result = await scrubber.on_session_start(start_ctx(client(), MemoryState(), audience))

    assert result is not None
    assert [s.address for s in result.scrub] == [landline, invalid]
    assert dict(result.detail) == {"cached": 0, "looked_up": 4}
    assert server.lookup_counts() == dict.fromkeys(audience, 1)


# -- the fake's Lookup endpoint --------------------------------------------------------------


async def fetch(
    server: FakeTwilioServer, path: str, *, auth: aiohttp.BasicAuth | None = None
) -> tuple[int, dict[str, Any]]:
    auth = auth or aiohttp.BasicAuth(server.account_sid, server.auth_token)
    async with (
        aiohttp.ClientSession() as session,
        session.get(server.base_url + path, headers={"Authorization": auth.encode()}) as response,
    ):
        return response.status, await response.json()


async def test_the_fake_answers_lookup_v2s_shape(server: FakeTwilioServer) -> None:
    status, body = await fetch(
        server, "/v2/PhoneNumbers/%2B14155550123?Fields=line_type_intelligence"
    )

    assert status == 200
    assert body == {
        "calling_country_code": "1",
        "country_code": "US",
        "phone_number": NUMBER,
        "national_format": "(415) 555-0123",
        "valid": True,
        "validation_errors": [],
        "caller_name": None,
        "sim_swap": None,
        "call_forwarding": None,
        "line_status": None,
        "line_type_intelligence": {
            "carrier_name": "Fake Wireless",
            "error_code": None,
            "mobile_country_code": "310",
            "mobile_network_code": "260",
            "type": "mobile",
        },
        "identity_match": None,
        "reassigned_number": None,
        "sms_pumping_risk": None,
        "phone_number_quality_score": None,
        "pre_fill": None,
        "url": f"{server.base_url}/v2/PhoneNumbers/{NUMBER}",
    }


async def test_the_fake_answers_invalid_and_unrequested_line_types(
    server: FakeTwilioServer,
) -> None:
    server.line_types[NUMBER] = "invalid"
    server.line_types[OTHER] = "tollFree"

    _, invalid = await fetch(
        server, "/v2/PhoneNumbers/%2B14155550123?Fields=line_type_intelligence"
    )
    _, toll_free = await fetch(
        server, "/v2/PhoneNumbers/%2B14155550124?Fields=line_type_intelligence"
    )
    _, basic = await fetch(server, "/v2/PhoneNumbers/%2B14155550124")
    _, garbage = await fetch(server, "/v2/PhoneNumbers/hello?Fields=line_type_intelligence")

    assert invalid["valid"] is False
    assert invalid["validation_errors"] == ["INVALID_BUT_POSSIBLE"]
    assert invalid["line_type_intelligence"] is None
    assert toll_free["line_type_intelligence"] == {
        "carrier_name": None,
        "error_code": None,
        "mobile_country_code": None,
        "mobile_network_code": None,
        "type": "tollFree",
    }
    assert basic["valid"] is True and basic["line_type_intelligence"] is None
    assert garbage["valid"] is False and garbage["validation_errors"] == ["NOT_A_NUMBER"]
    assert server.lookup_counts() == {NUMBER: 1, OTHER: 2, "hello": 1}


async def test_the_fake_rejects_bad_credentials_like_twilio(server: FakeTwilioServer) -> None:
    status, body = await fetch(
        server, "/v2/PhoneNumbers/%2B14155550123", auth=aiohttp.BasicAuth(server.account_sid, "x")
    )

    assert status == 401
    assert body["code"] == 20003
    assert body["status"] == 401
    assert body["more_info"] == "https://www.twilio.com/docs/errors/20003"
    assert server.lookups()[0].authorized is False


async def test_the_fakes_lookup_and_send_scripts_are_kept_apart(server: FakeTwilioServer) -> None:
    server.script(Behaviour.error(400, 21610), to=NUMBER)  # a send's script
    server.script(Behaviour.error(503, 20503), times=1, lookup=True)  # any number, once

    first, _ = await fetch(server, "/v2/PhoneNumbers/%2B14155550124")
    second, _ = await fetch(server, "/v2/PhoneNumbers/%2B14155550123")

    assert (first, second) == (503, 200)  # the send's script was not used by a lookup
    assert server.messages() == [] and server.calls() == []
    assert [r.phone_number for r in server.lookups()] == [OTHER, NUMBER]
    assert [r.phone_number for r in server.lookups(NUMBER)] == [NUMBER]
