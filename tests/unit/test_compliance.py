"""The pure rules of compliance on every channel (issue 14, part 3): where an opt-out applies,
how addresses are keyed, the client's narrowing, and the signed one-click unsubscribe links.
(Quiet hours over several zones are in ``test_windows.py``.)"""

from __future__ import annotations

import email.policy
from email import message_from_bytes

import pytest
from aiosmtplib.email import flatten_message
from hypothesis import given
from hypothesis import strategies as st

from switchboard import optout, unsubscribe
from switchboard.clients import parse_client
from switchboard.errors import ConfigError
from switchboard.fanout import plan_chunk
from switchboard.records import DispatchJob, SessionState
from switchboard.settings import Settings
from transports.base import OutboundMessage
from transports.smtp import build_email

SECRET = "s3cret-unsubscribe-key-0123456789"

# -- opt-out scope -------------------------------------------------------------------------


def test_a_numbers_opt_out_applies_to_every_phone_channel_by_default() -> None:
    scope = parse_client("acme", {}).optout_channels
    assert scope == {"sms", "voice", "whatsapp"}
    for channel in ("sms", "voice", "whatsapp"):
        assert optout.applies(channel, scope)
        assert optout.applies(channel, scope, transactional=True), "STOP binds transactional sends"
    assert not optout.applies("push", scope) and not optout.applies("slack", scope)


def test_a_client_narrows_the_scope_but_never_below_sms() -> None:
    narrowed = parse_client("acme", {"optout_channels": ["sms"]})
    assert narrowed.optout_channels == {"sms"}
    assert optout.applies("sms", narrowed.optout_channels)
    assert not optout.applies("voice", narrowed.optout_channels)
    assert not optout.applies("whatsapp", narrowed.optout_channels)
    assert parse_client("acme", narrowed.to_json()).optout_channels == {"sms"}  # the topic form
    assert "optout_channels" not in parse_client("acme", {}).to_json()
    with pytest.raises(ConfigError, match="must include sms"):
        parse_client("acme", {"optout_channels": ["voice", "whatsapp"]})
    with pytest.raises(ConfigError, match="unknown phone channel"):
        parse_client("acme", {"optout_channels": ["sms", "email"]})
    with pytest.raises(ConfigError, match="list of strings"):
        parse_client("acme", {"optout_channels": "sms"})


def test_an_email_unsubscribe_withholds_bulk_email_only() -> None:
    scope = optout.DEFAULT_CHANNELS
    assert optout.applies("email", scope)
    assert not optout.applies("email", scope, transactional=True)
    assert optout.applies("email", frozenset({"sms"})), "optout_channels narrows phones only"


def test_every_form_of_one_address_has_one_key() -> None:
    number = "+14155550100"
    assert optout.key("acme", f"whatsapp:{number}") == optout.key("acme", number)
    assert optout.key("acme", " Ana@Example.COM ") == optout.key("acme", "ana@example.com")
    assert optout.key("acme", number) != optout.key("other", number)
    assert optout.key("acme", number) == b"acme\x1f+14155550100"  # the key design is kept


# -- transactional travels to the job ---------------------------------------------------------


def _session(options: dict[str, object]) -> SessionState:
    return SessionState(
        session_id="s1",
        client_id="acme",
        channels=["email"],
        recipients=1,
        deliveries=1,
        chunks=1,
        trigger="immediate",
        status="dispatching",
        created_at=0.0,
        source="api",
        transport={"type": "email", "subject": "Hi", "message": "Hello"},
        options=options,
    )


def test_fan_out_marks_transactional_jobs() -> None:
    recipients = [{"addresses": {"email": "ana@example.com"}}]
    for options, expected in (({}, False), ({"transactional": True}, True)):
        [job] = plan_chunk(_session(options), 0, recipients, now=0.0)
        assert isinstance(job, DispatchJob) and job.transactional is expected


# -- signed unsubscribe links ------------------------------------------------------------------


@given(st.text(min_size=1, max_size=40), st.text(min_size=1, max_size=80))
def test_a_token_names_what_it_was_signed_for(client_id: str, address: str) -> None:
    token = unsubscribe.sign(SECRET, client_id, address)
    assert unsubscribe.verify(SECRET, token) == (client_id, address)
    assert unsubscribe.verify(SECRET + "x", token) is None, "another deployment's secret"


@given(st.text(max_size=200))
def test_no_forged_or_mangled_token_verifies(token: str) -> None:
    assert unsubscribe.verify(SECRET, token) is None


def test_an_altered_token_does_not_verify() -> None:
    token = unsubscribe.sign(SECRET, "acme", "ana@example.com")
    payload, _, signature = token.partition(".")
    other = unsubscribe.sign(SECRET, "acme", "bob@example.com").partition(".")[0]
    assert unsubscribe.verify(SECRET, f"{other}.{signature}") is None  # someone else's address
    assert unsubscribe.verify(SECRET, f"{payload}.{signature[:-2]}") is None
    assert unsubscribe.verify(SECRET, payload) is None
    assert unsubscribe.verify(SECRET, "") is None


def test_the_link_and_its_headers() -> None:
    url = unsubscribe.link("https://sb.example/", SECRET, "acme", "ana@example.com")
    assert url.startswith("https://sb.example/v1/unsubscribe?t=")
    assert SECRET not in url
    assert unsubscribe.headers(url) == {
        "List-Unsubscribe": f"<{url}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }


def test_links_need_both_settings_and_a_long_secret() -> None:
    assert Settings.from_env({}).unsubscribe_links is None
    assert (
        Settings.from_env({"SWITCHBOARD_PUBLIC_URL": "https://sb.example"}).unsubscribe_links
        is None
    )
    settings = Settings.from_env(
        {"SWITCHBOARD_PUBLIC_URL": "https://sb.example", "SWITCHBOARD_UNSUBSCRIBE_SECRET": SECRET}
    )
    assert settings.unsubscribe_links == ("https://sb.example", SECRET)
    assert SECRET not in repr(settings)
    with pytest.raises(ConfigError, match="at least 16") as info:
        Settings.from_env({"SWITCHBOARD_UNSUBSCRIBE_SECRET": "short-secret"})
    assert "short-secret" not in str(info.value)


def _email(**kwargs: object) -> email.message.EmailMessage:
    """The message as the SMTP client writes it to the wire, parsed again."""
    message = OutboundMessage(
        channel="email", to="ana@example.com", body="Hi", subject="News", **kwargs
    )  # type: ignore[arg-type]
    raw = flatten_message(build_email(message, "Acme <noreply@acme.example>"))
    parsed = message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(parsed, email.message.EmailMessage)
    return parsed


def test_bulk_email_carries_both_headers_and_transactional_none() -> None:
    url = unsubscribe.link("https://sb.example", SECRET, "acme", "ana@example.com")
    bulk = _email(unsubscribe_url=url)
    assert bulk["List-Unsubscribe"] == f"<{url}>"
    # On the wire: one line, as is (the email package would fold a long one into RFC 2047
    # encoded words, which no mail client reads as a URL).
    message = OutboundMessage(channel="email", to="ana@example.com", body="Hi", unsubscribe_url=url)
    raw = flatten_message(build_email(message, "Acme <noreply@acme.example>"))
    assert f"\r\nList-Unsubscribe: <{url}>\r\n".encode() in raw
    assert b"\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n" in raw
    assert bulk["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    plain = _email()
    assert plain["List-Unsubscribe"] is None and plain["List-Unsubscribe-Post"] is None


def test_a_clients_own_list_unsubscribe_wins() -> None:
    url = unsubscribe.link("https://sb.example", SECRET, "acme", "ana@example.com")
    own = _email(
        unsubscribe_url=url, extras={"headers": {"List-Unsubscribe": "<mailto:u@acme.example>"}}
    )
    assert own.get_all("List-Unsubscribe") == ["<mailto:u@acme.example>"]
    assert own["List-Unsubscribe-Post"] is None
