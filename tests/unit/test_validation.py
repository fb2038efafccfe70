"""switchboard.validation, on the path production takes (validate_envelope, then
audience_chunks): what is accepted, and every error with its path.

The guarantees under test (module docstring, README: "The Send API"): every problem is reported
at once with its field path, unknown fields are errors, an unusable ``transport.type`` produces
no follow-on errors, and addresses come out normalised.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from switchboard.clients import ClientConfig, parse_client
from switchboard.errors import FieldError, ValidationFailed
from switchboard.instruction import CHANNELS, Instruction, recipient_from_record
from switchboard.validation import ValidationPolicy, audience_chunks, validate_envelope

PHONE = "+14155550100"
PHONE2 = "+9779812345678"
APNS = "ab" * 32


def make_client(
    client_id: str = "acme",
    channels: tuple[str, ...] = CHANNELS,
    defaults: tuple[str, ...] = ("sms",),
) -> ClientConfig:
    return parse_client(
        client_id,
        {
            "channels": {ch: {"provider": "sandbox"} for ch in channels},
            "default_channels": list(defaults),
        },
    )


ACME = make_client()
MULTI = make_client(defaults=("sms", "email"))
SMS_ONLY = make_client(channels=("sms",))
NO_DEFAULTS = make_client(channels=("sms", "email"), defaults=())


def body(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "client_id": "acme",
        "transport": {"type": "sms", "message": "Hello {{name}}"},
        "audience": [PHONE],
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


#: Small chunks, so that audiences of a few recipients span several.
CHUNK = 2


def validate(data: Any, client: ClientConfig | None = ACME, **kwargs: Any) -> Instruction:
    """What ``streams/submit.py`` does: the envelope, then the audience a chunk at a time; the
    chunks' records read back as recipients, and all of it as one :class:`Instruction`."""
    envelope = validate_envelope(data, client=client, **kwargs)
    chunks = audience_chunks(envelope, data["audience"], size=CHUNK, policy=kwargs.get("policy"))
    audience = tuple(recipient_from_record(r) for chunk in chunks for r in chunk)
    return Instruction(
        client_id=envelope.client_id,
        transport=envelope.transport,
        audience=audience,
        channels=envelope.channels,
        options=envelope.options,
        idempotency_key=envelope.idempotency_key,
    )


def ok(data: Any, client: ClientConfig | None = ACME, **kwargs: Any) -> Instruction:
    return validate(data, client, **kwargs)


def errors(data: Any, client: ClientConfig | None = ACME, **kwargs: Any) -> list[tuple[str, str]]:
    with pytest.raises(ValidationFailed) as info:
        validate(data, client, **kwargs)
    assert info.value.errors, "ValidationFailed must carry errors"
    assert all(isinstance(e, FieldError) for e in info.value.errors)
    return [(e.field, e.error) for e in info.value.errors]


def fields(data: Any, client: ClientConfig | None = ACME, **kwargs: Any) -> list[str]:
    return [f for f, _ in errors(data, client, **kwargs)]


# -- valid instructions, one per channel ---------------------------------------------------------


def test_valid_sms() -> None:
    ins = ok(body(idempotency_key="order-1"))
    assert ins.client_id == "acme"
    assert ins.channels == ("sms",)
    assert ins.transport.type == "sms"
    assert ins.transport.message == "Hello {{name}}"
    assert ins.audience[0].addresses == {"phone": PHONE}
    assert ins.idempotency_key == "order-1"
    assert ins.options.trigger == "immediate"
    assert ins.options.retries == 0
    assert ins.options.retry_intervals_minutes == (60.0,)
    assert ins.options.scheduled_at is None
    assert ins.options.webhook_url is None


def test_valid_email_with_subject_and_message() -> None:
    ins = ok(
        body(
            transport={"type": "email", "subject": "Hi", "message": "Body"},
            audience=["Ana@Example.COM"],
        )
    )
    assert ins.channels == ("email",)
    assert ins.audience[0].addresses == {"email": "Ana@example.com"}


def test_valid_email_with_html_instead_of_message() -> None:
    ins = ok(
        body(
            transport={"type": "email", "subject": "Hi", "extras": {"html": "<p>Hi</p>"}},
            audience=["a@b.co"],
        )
    )
    assert ins.transport.message is None
    assert ins.transport.extras == {"html": "<p>Hi</p>"}


def test_valid_push() -> None:
    ins = ok(body(transport={"type": "push", "message": "Ping"}, audience=[APNS.upper()]))
    assert ins.audience[0].addresses == {"push_token": APNS}


def test_valid_voice_with_file_url_only() -> None:
    ins = ok(
        body(transport={"type": "voice", "fileUrl": "https://example.com/a.mp3"}, audience=[PHONE])
    )
    assert ins.transport.file_url == "https://example.com/a.mp3"
    assert ins.channels == ("voice",)


def test_valid_whatsapp_with_content_sid_only() -> None:
    ins = ok(
        body(
            transport={"type": "whatsapp", "extras": {"content_sid": "HX123"}},
            audience=[f"whatsapp:{PHONE}"],
        )
    )
    assert ins.audience[0].addresses == {"phone": PHONE}


def test_valid_slack() -> None:
    ins = ok(body(transport={"type": "slack", "message": "Deployed"}, audience=["#deploys"]))
    assert ins.audience[0].addresses == {"slack": "#deploys"}


def test_http_file_url_is_accepted() -> None:
    ins = ok(body(transport={"type": "voice", "fileUrl": "http://example.com/a.mp3"}))
    assert ins.transport.file_url == "http://example.com/a.mp3"


def test_not_an_object() -> None:
    assert errors(["not", "an", "object"]) == [("", "the instruction must be a JSON object")]
    assert errors(None) == [("", "the instruction must be a JSON object")]


# -- unknown fields ----------------------------------------------------------------------------


def test_unknown_fields_everywhere_each_with_its_path() -> None:
    data = body(
        sheduledTimestamp="2026-01-01T00:00:00Z",
        transport={"type": "sms", "message": "m", "body": "x"},
        audience=[{"phone": PHONE, "fone": PHONE}],
        options={"retry": 3},
    )
    assert errors(data) == [
        ("sheduledTimestamp", "unknown field"),
        ("transport.body", "unknown field"),
        ("audience[0].fone", "unknown field"),
        ("options.retry", "unknown field"),
    ]


# -- client_id ---------------------------------------------------------------------------------


def test_client_id_required_on_kafka() -> None:
    assert errors(body(client_id=None)) == [("client_id", "required")]


@pytest.mark.parametrize("value", ["", 7, ["acme"]])
def test_client_id_must_be_a_non_empty_string(value: Any) -> None:
    assert errors(body(client_id=value)) == [("client_id", "must be a non-empty string")]


def test_client_id_comes_from_the_api_key_over_http() -> None:
    ins = ok(body(client_id=None), authenticated_client="acme")
    assert ins.client_id == "acme"
    assert ok(body(), authenticated_client="acme").client_id == "acme"


def test_client_id_must_match_the_api_key() -> None:
    assert errors(body(client_id="other"), authenticated_client="acme") == [
        ("client_id", "does not match the client of the API key")
    ]


def test_unknown_client() -> None:
    assert errors(body(client_id="ghost"), client=None) == [("client_id", "unknown client 'ghost'")]


def test_client_config_of_another_client_is_unknown() -> None:
    assert fields(body(client_id="ghost"), client=ACME) == ["client_id"]


# -- idempotency_key ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("   ", "must not be blank"),
        ("k" * 256, "must be at most 255 characters"),
        (12, "must be a string"),
    ],
)
def test_idempotency_key(value: Any, error: str) -> None:
    assert errors(body(idempotency_key=value)) == [("idempotency_key", error)]


def test_idempotency_key_of_255_characters_is_fine() -> None:
    assert ok(body(idempotency_key="k" * 255)).idempotency_key == "k" * 255


# -- transport.type ----------------------------------------------------------------------------


def test_transport_required_and_an_object() -> None:
    assert errors(body(transport=None)) == [("transport", "required")]
    assert errors(body(transport="sms")) == [("transport", "must be an object")]


def test_unknown_type_produces_no_follow_on_errors() -> None:
    # No message, a bare address that fits no channel, a profile without any address: all of
    # that depends on the channel, so only the type itself is reported.
    data = body(transport={"type": "fax"}, audience=["garbage", {"name": "Ana"}])
    assert errors(data) == [
        (
            "transport.type",
            "unknown channel 'fax'; expected one of sms, email, push, voice, whatsapp, slack",
        )
    ]


def test_unconfigured_type_produces_no_follow_on_errors() -> None:
    data = body(transport={"type": "email"}, audience=["not-an-email", {"name": "Ana"}])
    assert errors(data, client=SMS_ONLY) == [
        (
            "transport.type",
            "channel 'email' is not configured for client 'acme' (configured: sms)",
        )
    ]


def test_unusable_type_still_reports_channel_independent_errors() -> None:
    data = body(
        transport={"type": "fax", "fileUrl": "ftp://x.example/a"},
        audience=[{"phone": "12345", "timezone": "Mars/Base"}],
        options={"retries": 99},
    )
    assert fields(data) == [
        "transport.type",
        "transport.fileUrl",
        "audience[0].phone",
        "audience[0].timezone",
        "options.retries",
    ]


def test_no_type_uses_the_default_channels() -> None:
    ins = ok(body(transport={"message": "hi"}))
    assert ins.transport.type is None
    assert ins.channels == ("sms",)


def test_explicit_null_type_uses_the_default_channels() -> None:
    assert ok(body(transport={"type": None, "message": "hi"})).channels == ("sms",)


def test_no_type_and_no_default_channels() -> None:
    assert errors(body(transport={"message": "hi"}), client=NO_DEFAULTS) == [
        ("transport.type", "required: client 'acme' has no default channels")
    ]


# -- per-channel content rules -----------------------------------------------------------------


def test_email_needs_subject_and_body() -> None:
    data = body(transport={"type": "email"}, audience=["a@b.co"])
    assert errors(data) == [
        ("transport.subject", "required for email"),
        ("transport.message", "required for email (or extras.html)"),
    ]


def test_email_empty_strings_count_as_missing() -> None:
    data = body(transport={"type": "email", "subject": "", "message": ""}, audience=["a@b.co"])
    assert fields(data) == ["transport.subject", "transport.message"]


def test_sms_at_most_1600_characters() -> None:
    assert ok(body(transport={"type": "sms", "message": "x" * 1600}))
    assert errors(body(transport={"type": "sms", "message": "x" * 1601})) == [
        ("transport.message", "an SMS is at most 1600 characters")
    ]


def test_sms_with_media_only_is_fine() -> None:
    assert ok(body(transport={"type": "sms", "fileUrl": "https://example.com/cat.jpg"}))


@pytest.mark.parametrize("channel", ["sms", "voice", "whatsapp"])
def test_phone_channels_need_message_file_url_or_content_sid(channel: str) -> None:
    assert errors(body(transport={"type": channel})) == [
        ("transport.message", f"required for {channel} (or fileUrl)")
    ]


@pytest.mark.parametrize(("channel", "address"), [("push", APNS), ("slack", "#general")])
def test_push_and_slack_need_a_message(channel: str, address: str) -> None:
    data = body(
        transport={"type": channel, "subject": "s", "fileUrl": "https://example.com/a.png"},
        audience=[address],
    )
    assert errors(data) == [("transport.message", f"required for {channel}")]


def test_content_rules_apply_to_every_default_channel() -> None:
    # Defaults sms + email; a message but no subject: only email complains.
    data = body(transport={"message": "hi"}, audience=[PHONE])
    assert errors(data, client=MULTI) == [("transport.subject", "required for email")]


@pytest.mark.parametrize("url", ["ftp://example.com/a.mp3", "example.com/a.mp3", "https://"])
def test_file_url_must_be_http_or_https(url: str) -> None:
    assert fields(body(transport={"type": "sms", "message": "m", "fileUrl": url})) == [
        "transport.fileUrl"
    ]


@pytest.mark.parametrize(
    ("key", "value", "error"),
    [
        ("subject", 5, "must be a string"),
        ("message", ["m"], "must be a string"),
        ("subject", "s" * 999, "must be at most 998 characters"),
        ("message", "m" * 32_001, "must be at most 32000 characters"),
    ],
)
def test_transport_string_fields(key: str, value: Any, error: str) -> None:
    transport = {"type": "slack", "message": "m", key: value}
    assert (f"transport.{key}", error) in errors(body(transport=transport, audience=["#a"]))


def test_template_vars_of_scalars_are_fine() -> None:
    vars_ = {"name": "Ana", "n": 3, "x": 1.5, "flag": True}
    ins = ok(body(transport={"type": "sms", "message": "m", "extras": {"template_vars": vars_}}))
    assert ins.transport.extras["template_vars"] == vars_


@pytest.mark.parametrize("value", [{"a": {"b": 1}}, {"a": [1]}, ["a"], "name=Ana"])
def test_template_vars_must_be_scalars(value: Any) -> None:
    data = body(transport={"type": "sms", "message": "m", "extras": {"template_vars": value}})
    assert errors(data) == [
        (
            "transport.extras.template_vars",
            "must be an object of strings, numbers, booleans or null (null uses the placeholder's default)",
        )
    ]


@pytest.mark.parametrize("value", ["html", ["a"], 3])
def test_extras_must_be_an_object(value: Any) -> None:
    data = body(transport={"type": "sms", "message": "m", "extras": value})
    assert errors(data) == [("transport.extras", "must be an object")]


@pytest.mark.parametrize("value", [[], ""])
def test_extras_falsy_non_objects_are_refused_too(value: Any) -> None:
    # Pins a fixed bug. Before the fix: `data.get("extras", {}) or {}` turns any falsy value into {} before the type check,
    # so `"extras": []` is accepted while `"extras": ["a"]` is refused.
    data = body(transport={"type": "sms", "message": "m", "extras": value})
    assert errors(data) == [("transport.extras", "must be an object")]


# -- audience ----------------------------------------------------------------------------------


def test_audience_required() -> None:
    assert errors(body(audience=None)) == [("audience", "required")]


@pytest.mark.parametrize("value", [PHONE, {"phone": PHONE}, 3])
def test_audience_must_be_a_list(value: Any) -> None:
    assert errors(body(audience=value)) == [
        ("audience", "must be a list of addresses or recipient profiles")
    ]


def test_audience_must_not_be_empty() -> None:
    assert errors(body(audience=[])) == [("audience", "must have at least one recipient")]


def test_audience_is_capped_by_the_policy() -> None:
    policy = ValidationPolicy(max_audience=2)
    assert len(ok(body(audience=[PHONE, PHONE2]), policy=policy).audience) == 2
    assert errors(body(audience=[PHONE] * 3), policy=policy) == [
        ("audience", "must have at most 2 recipients")
    ]


def test_default_policy_allows_a_million() -> None:
    assert ValidationPolicy().max_audience == 1_000_000


def test_at_most_100_errors_then_a_cap_error() -> None:
    result = errors(body(audience=["bad"] * 150))
    assert len(result) == 101
    assert [f for f, _ in result[:100]] == [f"audience[{i}]" for i in range(100)]
    assert result[100] == ("audience", "too many errors; fix these and resubmit")


def test_99_bad_entries_are_all_reported_without_the_cap() -> None:
    result = errors(body(audience=["bad"] * 99))
    assert len(result) == 99
    assert ("audience", "too many errors; fix these and resubmit") not in result


@pytest.mark.parametrize("entry", [42, None, ["+14155550100"], 1.5])
def test_audience_entry_must_be_string_or_profile(entry: Any) -> None:
    assert errors(body(audience=[PHONE, entry])) == [
        ("audience[1]", "must be an address string or a recipient profile object")
    ]


# -- bare strings ------------------------------------------------------------------------------


def test_bare_strings_are_normalised_for_the_channel() -> None:
    ins = ok(body(audience=["+1 (415) 555-0100", "whatsapp:+977 981-2345678"]))
    assert [r.addresses for r in ins.audience] == [{"phone": PHONE}, {"phone": PHONE2}]
    assert ins.audience[0].given == "+1 (415) 555-0100"


def test_bare_string_invalid_for_the_one_channel_gives_its_reason() -> None:
    assert errors(body(audience=[PHONE, "4155550100"])) == [
        (
            "audience[1]",
            "not a valid E.164 phone number: it must start with + and the country code",
        )
    ]


def test_bare_email_invalid() -> None:
    data = body(transport={"type": "email", "subject": "s", "message": "m"}, audience=["nope"])
    result = errors(data)
    assert len(result) == 1
    assert result[0][0] == "audience[0]"
    assert result[0][1].startswith("not a valid email address")


def test_bare_strings_with_several_default_channels_fill_the_kinds_they_fit() -> None:
    data = body(transport={"subject": "s", "message": "m"}, audience=[PHONE, "A@B.CO"])
    ins = ok(data, client=MULTI)
    assert ins.channels == ("sms", "email")
    assert ins.audience[0].addresses == {"phone": PHONE}
    assert ins.audience[1].addresses == {"email": "A@b.co"}


def test_bare_string_fitting_no_default_channel() -> None:
    data = body(transport={"subject": "s", "message": "m"}, audience=["garbage"])
    assert errors(data, client=MULTI) == [("audience[0]", "not a valid address for sms, email")]


def test_bare_string_with_defaults_sharing_an_address_kind_gives_the_one_reason() -> None:
    client = make_client(defaults=("sms", "voice"))
    result = errors(body(transport={"message": "m"}, audience=["garbage"]), client=client)
    assert len(result) == 1
    assert result[0][0] == "audience[0]"
    assert result[0][1].startswith("not a valid E.164 phone number")


# -- profiles ----------------------------------------------------------------------------------


def test_profile_with_every_field() -> None:
    profile = {
        "phone": "+1 415 555 0100",
        "email": "Ana@Example.COM",
        "push_token": APNS.upper(),
        "slack": "C0123456789",
        "name": "Ana",
        "timezone": "America/Los_Angeles",
        "locale": "es-MX",
        "vars": {"order": "1234"},
    }
    ins = ok(body(audience=[profile]))
    r = ins.audience[0]
    assert r.addresses == {
        "phone": PHONE,
        "email": "Ana@example.com",
        "push_token": APNS,
        "slack": "C0123456789",
    }
    assert (r.name, r.timezone, r.locale, dict(r.vars)) == (
        "Ana",
        "America/Los_Angeles",
        "es-MX",
        {"order": "1234"},
    )
    assert r.given is None


def test_profile_with_an_address_for_one_of_several_channels_is_fine() -> None:
    data = body(transport={"subject": "s", "message": "m"}, audience=[{"email": "a@b.co"}])
    assert ok(data, client=MULTI).audience[0].addresses == {"email": "a@b.co"}


def test_profile_without_an_address_for_the_channel() -> None:
    assert errors(body(audience=[{"email": "a@b.co", "name": "Ana"}])) == [
        ("audience[0]", "no address for sms: give phone")
    ]


def test_profile_without_an_address_for_any_default_channel() -> None:
    data = body(transport={"subject": "s", "message": "m"}, audience=[{"slack": "#a"}])
    assert errors(data, client=MULTI) == [
        ("audience[0]", "no address for sms, email: give email or phone")
    ]


def test_profile_with_an_invalid_address_reports_only_that() -> None:
    result = errors(body(audience=[{"phone": "+1415555"}]))
    assert [f for f, _ in result] == ["audience[0].phone"]


@pytest.mark.parametrize("field", ["phone", "email", "push_token", "slack"])
def test_profile_address_must_be_a_string(field: str) -> None:
    data = body(audience=[{"phone": PHONE, field: 123} if field != "phone" else {"phone": 123}])
    assert (f"audience[0].{field}", "must be a string") in errors(data)


def test_profile_bad_timezone() -> None:
    assert errors(body(audience=[{"phone": PHONE, "timezone": "Mars/Olympus"}])) == [
        ("audience[0].timezone", "not an IANA time zone name, e.g. America/Los_Angeles")
    ]


@pytest.mark.parametrize("vars_", [{"n": 3}, {"a": None}, ["a"], "x"])
def test_profile_vars_must_be_strings(vars_: Any) -> None:
    assert errors(body(audience=[{"phone": PHONE, "vars": vars_}])) == [
        ("audience[0].vars", "must be an object of strings")
    ]


def test_profile_string_fields() -> None:
    data = body(audience=[{"phone": PHONE, "name": 3, "locale": "x" * 36}])
    assert errors(data) == [
        ("audience[0].name", "must be a string"),
        ("audience[0].locale", "must be at most 35 characters"),
    ]


# -- options -----------------------------------------------------------------------------------


@pytest.mark.parametrize("trigger", ["immediate", "manual"])
def test_trigger_values(trigger: str) -> None:
    assert ok(body(options={"trigger": trigger})).options.trigger == trigger


@pytest.mark.parametrize("trigger", ["now", "Immediate", 1])
def test_unknown_trigger(trigger: Any) -> None:
    assert errors(body(options={"trigger": trigger})) == [
        ("options.trigger", "must be one of immediate, scheduled, manual")
    ]


def test_options_must_be_an_object() -> None:
    assert errors(body(options=["immediate"])) == [("options", "must be an object")]


def test_null_option_values_are_defaults() -> None:
    options = {"trigger": None, "retries": None, "retryIntervalMinutes": None, "webhookUrl": None}
    o = ok(body(options=options)).options
    assert (o.trigger, o.retries, o.retry_intervals_minutes, o.webhook_url) == (
        "immediate",
        0,
        (60.0,),
        None,
    )


def test_scheduled_needs_a_timestamp() -> None:
    assert errors(body(options={"trigger": "scheduled"})) == [
        ("options.scheduledTimestamp", "required when trigger is scheduled")
    ]


def test_scheduled_with_a_utc_timestamp() -> None:
    o = ok(
        body(options={"trigger": "scheduled", "scheduledTimestamp": "2026-12-31T23:59:59Z"})
    ).options
    assert o.scheduled_at == datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC)


def test_scheduled_timestamp_keeps_its_offset() -> None:
    o = ok(
        body(options={"trigger": "scheduled", "scheduledTimestamp": "2026-06-01T09:00:00+05:45"})
    ).options
    assert o.scheduled_at is not None
    assert o.scheduled_at.utcoffset() == timedelta(hours=5, minutes=45)
    assert o.scheduled_at == datetime(2026, 6, 1, 3, 15, tzinfo=UTC)


def test_naive_timestamp_is_utc() -> None:
    o = ok(
        body(options={"trigger": "scheduled", "scheduledTimestamp": "2026-06-01T09:00:00"})
    ).options
    assert o.scheduled_at == datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
    assert o.scheduled_at is not None and o.scheduled_at.tzinfo is not None


def test_past_timestamp_is_accepted() -> None:
    past = (datetime.now(UTC) - timedelta(days=3)).isoformat()
    assert ok(body(options={"trigger": "scheduled", "scheduledTimestamp": past}))


@pytest.mark.parametrize("trigger", [None, "immediate", "manual"])
def test_timestamp_refused_without_scheduled(trigger: str | None) -> None:
    options = {"scheduledTimestamp": "2026-12-31T23:59:59Z"}
    if trigger:
        options["trigger"] = trigger
    assert errors(body(options=options)) == [
        ("options.scheduledTimestamp", "only allowed with trigger 'scheduled'")
    ]


def test_unparseable_timestamp_is_one_error() -> None:
    assert errors(body(options={"trigger": "scheduled", "scheduledTimestamp": "tomorrow"})) == [
        ("options.scheduledTimestamp", "not an ISO 8601 timestamp, e.g. 2026-12-31T23:59:59Z")
    ]


def test_timestamp_must_be_a_string() -> None:
    assert errors(body(options={"trigger": "scheduled", "scheduledTimestamp": 1767225599})) == [
        ("options.scheduledTimestamp", "must be an ISO 8601 string")
    ]


@pytest.mark.parametrize("retries", [0, 1, 20])
def test_retries_in_bounds(retries: int) -> None:
    assert ok(body(options={"retries": retries})).options.retries == retries


@pytest.mark.parametrize("retries", [-1, 21, 2.5, 3.0, "3", True, False])
def test_retries_out_of_bounds_or_not_whole(retries: Any) -> None:
    assert errors(body(options={"retries": retries})) == [
        ("options.retries", "must be a whole number from 0 to 20")
    ]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("60,180,600", (60.0, 180.0, 600.0)),
        (" 5 , 10 ", (5.0, 10.0)),
        ("0.5", (0.5,)),
        ("10080", (10080.0,)),
        (90, (90.0,)),
        (0.25, (0.25,)),
        ("1e2", (100.0,)),
    ],
)
def test_retry_intervals(value: Any, expected: tuple[float, ...]) -> None:
    assert ok(body(options={"retryIntervalMinutes": value})).options.retry_intervals_minutes == (
        expected
    )


@pytest.mark.parametrize(
    "value",
    [
        "",
        "0",
        "-5",
        "10081",
        "60,,180",
        "60;180",
        "abc",
        "nan",
        "inf",
        0,
        -1,
        10081,
        [60, 180],
        True,
    ],
)
def test_retry_intervals_refused(value: Any) -> None:
    result = errors(body(options={"retryIntervalMinutes": value}))
    assert len(result) == 1
    assert result[0][0] == "options.retryIntervalMinutes"
    assert "at most 10080" in result[0][1]


def test_webhook_https() -> None:
    url = "https://client.example.com/hooks/comms"
    assert ok(body(options={"webhookUrl": url})).options.webhook_url == url


def test_webhook_http_refused_by_default() -> None:
    assert errors(body(options={"webhookUrl": "http://client.example.com/h"})) == [
        ("options.webhookUrl", "not a valid URL: the scheme must be https")
    ]


def test_webhook_http_allowed_by_policy() -> None:
    policy = ValidationPolicy(allow_http_webhooks=True)
    url = "http://127.0.0.1:9/h"
    assert ok(body(options={"webhookUrl": url}), policy=policy).options.webhook_url == url


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (5, "must be a string"),
        ("ftp://x.example/h", "not a valid URL: the scheme must be https"),
        ("https://", "not a valid URL: it has no host"),
    ],
)
def test_webhook_refused(value: Any, error: str) -> None:
    assert errors(body(options={"webhookUrl": value})) == [("options.webhookUrl", error)]


@pytest.mark.parametrize(
    "overrides",
    [
        {"options": {"webhookUrl": "https://[::1"}},
        {"transport": {"type": "sms", "message": "m", "fileUrl": "https://[::1/a.mp3"}},
        {"transport": {"type": "slack", "message": "m"}, "audience": ["https://[hooks.slack.com"]},
    ],
    ids=["webhookUrl", "fileUrl", "slack-address"],
)
def test_malformed_urls_are_validation_errors_not_crashes(overrides: dict[str, Any]) -> None:
    # Pins a fixed bug. Before the fix: normalize_url/normalize_slack let urllib's ValueError("Invalid IPv6 URL") escape, so
    # validation raised ValueError: the Send API answered 500 instead of 422, and the intake
    # agent quarantined the message as an "internal error".
    with pytest.raises(ValidationFailed):
        validate(body(**overrides))


# -- everything at once ------------------------------------------------------------------------


def test_all_errors_are_reported_at_once() -> None:
    data = {
        "client_id": "acme",
        "idempotency_key": " ",
        "colour": "red",
        "transport": {"type": "email", "fileUrl": "ftp://x/y", "extras": {"template_vars": [1]}},
        "audience": ["a@b.co", "nope", {"email": "x@y.co", "timezone": "Nowhere/Land"}, 7],
        "options": {
            "trigger": "scheduled",
            "retries": 50,
            "retryIntervalMinutes": "0",
            "webhookUrl": "http://x.example",
        },
    }
    assert fields(data) == [
        "colour",
        "idempotency_key",
        "transport.fileUrl",
        "transport.extras.template_vars",
        "transport.subject",
        "transport.message",
        "audience[1]",
        "audience[2].timezone",
        "audience[3]",
        "options.scheduledTimestamp",
        "options.retries",
        "options.retryIntervalMinutes",
        "options.webhookUrl",
    ]


def test_validation_failed_message_summarises_errors() -> None:
    with pytest.raises(ValidationFailed) as info:
        validate(body(audience=["x"] * 7))
    assert "audience[0]" in str(info.value)
    assert "(and 2 more)" in str(info.value)
    assert info.value.as_dicts()[0]["field"] == "audience[0]"


def test_result_round_trips_through_the_contract_shape() -> None:
    data = body(
        idempotency_key="k1",
        transport={"type": "sms", "message": "Hi {{name}}", "extras": {"template_vars": {"a": 1}}},
        audience=[PHONE, {"phone": PHONE2, "name": "Ana", "vars": {"b": "2"}}],
        options={
            "trigger": "scheduled",
            "scheduledTimestamp": "2026-12-31T23:59:59+00:00",
            "retries": 3,
            "retryIntervalMinutes": "60,180,600",
            "webhookUrl": "https://client.example.com/h",
        },
    )
    first = ok(data)
    assert ok(first.to_contract()) == first


def test_timestamp_round_trip_with_offset() -> None:
    tz = timezone(timedelta(hours=-7))
    ts = datetime(2026, 3, 1, 8, 30, tzinfo=tz).isoformat()
    o = ok(body(options={"trigger": "scheduled", "scheduledTimestamp": ts})).options
    assert o.scheduled_at == datetime(2026, 3, 1, 15, 30, tzinfo=UTC)


# -- options.priority: the high-priority lane ---------------------------------------------------


def test_priority_defaults_to_normal_and_is_left_out_of_the_contract() -> None:
    from switchboard.validation import validate_envelope

    envelope = validate_envelope(body(), client=ACME)
    assert envelope.options.priority == "normal"
    assert "priority" not in envelope.options.to_contract()


def test_high_priority_for_a_one_time_password() -> None:
    from switchboard.validation import validate_envelope

    envelope = validate_envelope(body(options={"priority": "high"}), client=ACME)
    assert envelope.options.priority == "high"
    assert envelope.options.to_contract()["priority"] == "high"
    assert ok(body(options={"priority": "high"})).options.priority == "high"


def test_unknown_priority_is_refused() -> None:
    assert errors(body(options={"priority": "urgent"})) == [
        ("options.priority", "must be one of normal, high")
    ]


def test_high_priority_is_refused_for_a_campaign_with_every_other_error() -> None:
    from switchboard.instruction import MAX_PRIORITY_RECIPIENTS
    from switchboard.validation import validate_envelope

    audience = [f"+1415555{i:04d}" for i in range(MAX_PRIORITY_RECIPIENTS + 1)]
    data = body(audience=audience, options={"priority": "high", "retries": -1})
    with pytest.raises(ValidationFailed) as info:
        validate_envelope(data, client=ACME)
    assert [(e.field, e.error) for e in info.value.errors] == [
        ("options.retries", "must be a whole number from 0 to 20"),
        (
            "options.priority",
            "'high' is for at most 100 recipients (this audience has 101); "
            "send a campaign as 'normal'",
        ),
    ]
    assert (
        validate_envelope(
            body(audience=audience[:-1], options={"priority": "high"}), client=ACME
        ).recipients
        == MAX_PRIORITY_RECIPIENTS
    )


# -- the production path: validate_envelope + audience_chunks (issue 13, part 4) ---------------


def envelope_errors(data: Any, client: ClientConfig | None = ACME) -> list[tuple[str, str]]:
    from switchboard.validation import validate_envelope

    with pytest.raises(ValidationFailed) as info:
        validate_envelope(data, client=client)
    return [(e.field, e.error) for e in info.value.errors]


def test_the_envelope_reports_the_audience_errors_with_the_transport_errors() -> None:
    """A missing email subject must not hide a bad address: every problem in one 422."""
    data = body(transport={"type": "email", "message": "Hi"}, audience=["a@example.com", "nope"])
    assert [f for f, _ in envelope_errors(data)] == ["transport.subject", "audience[1]"]
    assert envelope_errors(data) == errors(data), "both paths report the same problems"


def test_the_envelope_reports_the_audience_errors_with_the_options_errors() -> None:
    data = body(audience=[PHONE, {"phone": "12"}], options={"retries": 99, "trigger": "later"})
    assert [f for f, _ in envelope_errors(data)] == [
        "audience[1].phone",
        "options.trigger",
        "options.retries",
    ]


def test_a_lone_surrogate_is_an_error_naming_its_field_wherever_it_is() -> None:
    data = body(
        transport={"type": "sms", "message": "Hi", "extras": {"template_vars": {"x": "\udcff"}}},
        idempotency_key="k\ud800",
        audience=[PHONE, "\ud800", {"phone": PHONE, "name": "\ud800"}],
        options={"webhookUrl": "https://example.com/\ud800"},
    )
    found = envelope_errors(data)
    assert [f for f, _ in found] == [
        "idempotency_key",
        "transport.extras.template_vars.x",
        "audience[1]",
        "audience[2].name",
        "options.webhookUrl",
    ]
    assert all("lone surrogate" in e for _, e in found)
    assert found == errors(data)


def test_an_unknown_field_with_a_lone_surrogate_is_named_escaped() -> None:
    [(field, error)] = envelope_errors(body(**{"x\ud800": 1}))
    assert field == "x\\ud800" and error == "unknown field"
    field.encode()  # the path itself can be encoded (JSON, Avro, a log line)


# -- in steps: a large audience never holds an event loop for long (issue 13, part 3) ---------


def test_an_invalid_envelope_checks_its_recipients_in_steps() -> None:
    from switchboard.validation import envelope_steps

    audience = [PHONE] * 1_000 + ["nope"]
    steps = envelope_steps(
        body(transport={"type": "sms"}, audience=audience), client=ACME, size=100
    )
    paused: list[None] = []
    with pytest.raises(ValidationFailed) as info:
        paused.extend(steps)
    assert len(paused) == 10, "a pause after every 100 recipients checked"
    assert [e.field for e in info.value.errors] == ["transport.message", "audience[1000]"]


def test_the_recipients_after_an_invalid_one_are_checked_in_steps() -> None:
    from switchboard.validation import audience_chunks, validate_envelope

    audience = ["nope", *[PHONE] * 999, {"phone": "12"}]
    envelope = validate_envelope(body(audience=audience), client=ACME)
    chunks = audience_chunks(envelope, audience, size=100)
    seen: list[list[dict[str, Any]]] = []
    with pytest.raises(ValidationFailed) as info:
        seen.extend(chunks)
    assert seen == [[]] * 10, "nothing to store after an invalid recipient, but pauses"
    assert [e.field for e in info.value.errors] == ["audience[0]", "audience[1000].phone"]


def test_transactional_is_a_boolean_left_out_of_the_contract_when_false() -> None:
    assert ok(body()).options.transactional is False
    assert "transactional" not in ok(body()).options.to_contract()
    assert ok(body(options={"transactional": None})).options.transactional is False
    options = ok(body(options={"transactional": True})).options
    assert options.transactional is True and options.to_contract()["transactional"] is True
    assert errors(body(options={"transactional": "yes"})) == [
        ("options.transactional", "must be true or false")
    ]
