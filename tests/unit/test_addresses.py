"""switchboard.addresses: every kind of address is normalised, or refused with a reason."""

from __future__ import annotations

import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import given, settings
from hypothesis import strategies as st

from switchboard.addresses import (
    NORMALIZERS,
    AddressError,
    normalize_email,
    normalize_phone,
    normalize_push_token,
    normalize_slack,
    normalize_url,
)

APNS = "a1B2c3D4" * 8  # 64 hex characters, mixed case
FCM = "dQw4w9WgXcQ:APA91b" + "F" * 140 + "-_x"

# -- phone --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("+14155550100", "+14155550100"),
        ("+1 (415) 555-0100", "+14155550100"),
        ("  +14155550100  ", "+14155550100"),
        ("+977 981-2345678", "+9779812345678"),
        ("+44 7911 123456", "+447911123456"),
        ("whatsapp:+14155550100", "+14155550100"),
    ],
)
def test_phone_valid_numbers_come_out_in_e164(given: str, expected: str) -> None:
    assert normalize_phone(given) == expected


@pytest.mark.parametrize("given", ["14155550100", "004414155550100", "(415) 555-0100"])
def test_phone_without_plus_is_refused_with_the_reason(given: str) -> None:
    with pytest.raises(AddressError, match=r"must start with \+ and the country code"):
        normalize_phone(given)


def test_phone_too_short_is_refused() -> None:
    with pytest.raises(AddressError, match="wrong number of digits"):
        normalize_phone("+1415555")


def test_phone_implausible_range_is_refused() -> None:
    # +1 999 is not an assigned North American area code.
    with pytest.raises(AddressError, match="no such number range"):
        normalize_phone("+19995550100")


@pytest.mark.parametrize("given", ["+", "+abc", "whatsapp:", ""])
def test_phone_garbage_is_an_address_error_not_a_crash(given: str) -> None:
    with pytest.raises(AddressError, match=r"not a valid E\.164 phone number"):
        normalize_phone(given)


# -- email --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("ana@example.com", "ana@example.com"),
        (
            "Ana@Example.COM",
            "Ana@example.com",
        ),  # the domain is case-insensitive, the local part not
        ("  a@b.co ", "a@b.co"),
        ("a@BÜCHER.de", "a@bücher.de"),  # an IDN domain is IDNA-normalised and lower-cased
    ],
)
def test_email_valid_addresses_are_normalised(given: str, expected: str) -> None:
    assert normalize_email(given) == expected


@pytest.mark.parametrize(
    "given", ["nope", "a@b", "a@@b.co", "@b.co", "a@b..co", "Ana <a@b.co>", "a b@c.co"]
)
def test_email_invalid_addresses_are_refused(given: str) -> None:
    with pytest.raises(AddressError, match="not a valid email address"):
        normalize_email(given)


_ATEXT = "A-Za-z0-9!#$%&'*+/=?^_`{|}~.-"
_generated_addresses = st.one_of(
    st.from_regex(
        rf"[{_ATEXT}]{{1,70}}@[A-Za-z0-9.-]{{1,30}}\.[A-Za-z0-9-]{{1,8}}", fullmatch=True
    ),
    st.builds(
        lambda local, labels, tld: f"{local}@{'.'.join([*labels, tld])}",
        st.from_regex(rf"[{_ATEXT}]{{1,66}}", fullmatch=True),
        st.lists(st.from_regex(r"[A-Za-z0-9-]{1,64}", fullmatch=True), min_size=1, max_size=3),
        st.sampled_from(
            [
                "com",
                "CO",
                "test",
                "local",
                "onion",
                "arpa",
                "localhost",
                "x",
                "123",
                "xn--p1ai",
                "museum",
                "a" * 64,
            ]
        ),
    ),
)


@settings(max_examples=3000, deadline=None)
@given(_generated_addresses)
def test_the_plain_address_shortcut_answers_what_email_validator_answers(address: str) -> None:
    """``normalize_email`` skips email-validator for plain ASCII addresses: whatever it answers
    for one, email-validator answers the same (refusals included)."""
    try:
        expected: str | None = validate_email(address, check_deliverability=False).normalized
    except EmailNotValidError:
        expected = None
    try:
        got: str | None = normalize_email(address)
    except AddressError:
        got = None
    assert got == expected


def test_email_normalisation_is_idempotent() -> None:
    once = normalize_email("Ana@BÜCHER.De")
    assert normalize_email(once) == once


# -- push tokens --------------------------------------------------------------------------------


def test_apns_token_is_lower_cased() -> None:
    assert normalize_push_token(APNS) == APNS.lower()
    assert normalize_push_token(f" {APNS} ") == APNS.lower()


def test_fcm_token_is_kept_exactly() -> None:
    assert normalize_push_token(FCM) == FCM


@pytest.mark.parametrize(
    "given",
    [
        "abc123",  # too short for either
        "a" * 63,  # one short of an APNs token, far too short for FCM
        "g" * 64,  # not hex, too short for FCM
        "x" * 99,  # one short of an FCM token
        "A" * 100 + "!",  # a character FCM tokens never contain
        "a" * 120 + " " + "b" * 10,
    ],
)
def test_invalid_push_tokens_are_refused(given: str) -> None:
    with pytest.raises(AddressError, match="not a valid push token"):
        normalize_push_token(given)


# -- slack --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "given",
    [
        "C0123456789",
        "G01234567",
        "D0123456789",
        "U0123ABCDEF",
        "#general",
        "#deploys-prod_2",
        "https://hooks.slack.com/services/T000/B000/XXXX",
    ],
)
def test_slack_addresses_are_accepted_as_given(given: str) -> None:
    assert normalize_slack(given) == given
    assert normalize_slack(f" {given} ") == given


@pytest.mark.parametrize(
    "given",
    [
        "http://hooks.slack.com/services/T000/B000/XXXX",  # not https
        "https://hooks.slack.com.evil.example/services/x",
        "https://hooks.slack.com@evil.example/services/x",
        "https://evil.example/hooks.slack.com",
    ],
)
def test_slack_webhook_must_be_https_hooks_slack_com(given: str) -> None:
    with pytest.raises(AddressError, match=r"https://hooks\.slack\.com"):
        normalize_slack(given)


@pytest.mark.parametrize(
    "given", ["c0123456789", "C0123", "X0123456789", "#General", "general", ""]
)
def test_slack_other_strings_are_refused(given: str) -> None:
    with pytest.raises(AddressError, match="not a valid Slack address"):
        normalize_slack(given)


def test_slack_malformed_webhook_url_is_an_address_error() -> None:
    # Pins a fixed bug. Before the fix: urlsplit raises ValueError("Invalid IPv6 URL"), which escapes as a ValueError.
    with pytest.raises(AddressError):
        normalize_slack("https://[hooks.slack.com/services/x")


# -- urls ---------------------------------------------------------------------------------------


def test_url_https_is_accepted_and_stripped() -> None:
    assert normalize_url("  https://example.com/a?b=c  ") == "https://example.com/a?b=c"


def test_url_http_only_when_allowed() -> None:
    with pytest.raises(AddressError, match=r"the scheme must be https$"):
        normalize_url("http://example.com/hook")
    assert normalize_url("http://example.com/hook", allow_http=True) == "http://example.com/hook"


@pytest.mark.parametrize("given", ["ftp://example.com/x", "example.com/x", "javascript:alert(1)"])
def test_url_other_schemes_are_refused(given: str) -> None:
    with pytest.raises(AddressError, match="scheme must be https or http"):
        normalize_url(given, allow_http=True)


@pytest.mark.parametrize("given", ["https://", "https:///path", "https://:443/x"])
def test_url_without_host_is_refused(given: str) -> None:
    with pytest.raises(AddressError, match="no host"):
        normalize_url(given)


@pytest.mark.parametrize("given", ["https://[::1", "https://[example.com]/x", "https://a]b.com/"])
def test_url_unparseable_is_an_address_error(given: str) -> None:
    # Pins a fixed bug. Before the fix: urllib's ValueError ("Invalid IPv6 URL") escapes instead of an AddressError.
    with pytest.raises(AddressError):
        normalize_url(given)


@pytest.mark.parametrize(
    "given",
    ["https://exa\nmple.com/x", "https://example.com/a\r\nX-Evil: 1", "https://ex\tample.com/"],
)
def test_url_with_control_characters_is_refused(given: str) -> None:
    # Pins a fixed bug. Before the fix: urlsplit silently drops tab/CR/LF when parsing, so the check passes, but the
    # returned text still contains them.
    with pytest.raises(AddressError):
        normalize_url(given)


def test_normalizers_cover_every_profile_address_field() -> None:
    assert set(NORMALIZERS) == {"phone", "email", "push_token", "slack"}
    assert NORMALIZERS["phone"]("+14155550100") == "+14155550100"
