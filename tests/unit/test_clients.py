"""switchboard.clients: the client configuration document, its errors, and API keys."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from switchboard.clients import (
    ClientConfig,
    api_key_digest,
    new_api_key,
    parse_client,
    parse_clients_document,
)
from switchboard.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
DIGEST = api_key_digest("k1")

FULL: dict[str, Any] = {
    "api_keys": [DIGEST],
    "webhook_secret": "whsec_ZGVtby13ZWJob29rLXNlY3JldC0wMDAx",
    "default_channels": ["sms"],
    "channels": {
        "sms": {"provider": "twilio", "from": ["+14155550100"], "messaging_service_sid": None},
        "email": {"provider": "smtp", "from": "Acme <noreply@acme.example>"},
        "push": {"provider": "apns"},
    },
    "time_windows": {
        "sms": {
            "days": ["mon", "tue", "wed", "thu", "fri"],
            "start": "09:00",
            "end": "20:00",
            "timezone": "recipient",
        },
        "email": {"days": ["sat", "sun"], "start": "22:00", "end": "24:00", "timezone": "UTC"},
    },
    "timezone": "America/New_York",
    "service_managers": ["sticky-sender", "numpicker-basic"],
    "help_text": "Reply STOP to opt out.",
}


def problems(client_id: str, data: Any) -> list[str]:
    """The `field: error` lines of the ConfigError."""
    with pytest.raises(ConfigError) as info:
        parse_client(client_id, data)
    return [line.strip() for line in str(info.value).splitlines()[1:]]


def problem_fields(client_id: str, data: Any) -> list[str]:
    return [line.split(": ", 1)[0] for line in problems(client_id, data)]


# -- the repository's file ---------------------------------------------------------------------


def test_repo_clients_yaml_parses_and_accepts_the_demo_key() -> None:
    doc = yaml.safe_load((ROOT / "config" / "clients.yaml").read_text())
    clients = parse_clients_document(doc)
    demo = clients["demo"]
    assert demo.client_id == "demo"
    assert demo.accepts_key("demo-key")
    assert not demo.accepts_key("demo-key ")
    assert not demo.accepts_key("another-key")
    assert not demo.accepts_key("")
    assert set(demo.channels) == {"sms", "email", "push", "voice", "whatsapp", "slack"}
    assert all(cfg.provider == "sandbox" for cfg in demo.channels.values())
    assert demo.default_channels == ("sms",)


# -- keys --------------------------------------------------------------------------------------


def test_api_key_digest_format() -> None:
    digest = api_key_digest("demo-key")
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest)
    assert digest == "sha256:c48a01f49fd0f2cc404bc3cbbc80e91457a3d41bb429a695243de4c61794155c"
    assert api_key_digest("é") == api_key_digest("é")
    assert api_key_digest("a") != api_key_digest("b")


def test_new_api_key_is_prefixed_and_unique() -> None:
    keys = {new_api_key("acme") for _ in range(200)}
    assert len(keys) == 200
    for key in keys:
        assert key.startswith("sb_acme_")
        assert len(key) >= len("sb_acme_") + 43  # 32 random bytes, urlsafe base64


def test_accepts_any_of_several_keys() -> None:
    client = ClientConfig("acme", api_key_digests=(api_key_digest("a"), api_key_digest("b")))
    assert client.accepts_key("a") and client.accepts_key("b")
    assert not client.accepts_key("c")
    assert not ClientConfig("acme").accepts_key("a")


# -- a full configuration ---------------------------------------------------------------------


def test_full_configuration() -> None:
    client = parse_client("acme", FULL)
    assert client.api_key_digests == (DIGEST,)
    assert client.accepts_key("k1")
    assert client.webhook_secret == FULL["webhook_secret"]
    assert client.default_channels == ("sms",)
    assert client.channels["sms"].provider == "twilio"
    assert client.channels["sms"].options == {
        "from": ["+14155550100"],
        "messaging_service_sid": None,
    }
    assert client.channels["email"].options == {"from": "Acme <noreply@acme.example>"}
    assert client.time_windows["sms"].days == ("mon", "tue", "wed", "thu", "fri")
    assert (client.time_windows["sms"].start, client.time_windows["sms"].end) == ("09:00", "20:00")
    assert client.time_windows["sms"].timezone == "recipient"
    assert client.time_windows["email"].timezone == "UTC"
    assert client.timezone == "America/New_York"
    assert client.service_managers == ("sticky-sender", "numpicker-basic")
    assert client.help_text == "Reply STOP to opt out."


def test_minimal_configuration_defaults() -> None:
    client = parse_client("a", {})
    assert client == ClientConfig("a")
    assert client.timezone == "UTC"
    assert client.service_managers is None  # None: use the global list


def test_window_defaults() -> None:
    client = parse_client(
        "a", {"channels": {"sms": {"provider": "sandbox"}}, "time_windows": {"sms": {}}}
    )
    window = client.time_windows["sms"]
    assert window.days == ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
    assert (window.start, window.end, window.timezone) == ("00:00", "24:00", "recipient")


def test_empty_service_managers_is_kept() -> None:
    assert parse_client("a", {"service_managers": []}).service_managers == ()


@pytest.mark.parametrize("data", [FULL, {}, {"channels": {"slack": {"provider": "slack"}}}])
def test_to_json_round_trips(data: dict[str, Any]) -> None:
    client = parse_client("acme", data)
    assert parse_client("acme", client.to_json()) == client
    assert parse_client("acme", yaml.safe_load(yaml.safe_dump(client.to_json()))) == client


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize("client_id", ["", "Acme", "-acme", "_a", "a b", "a.b", "a" * 64, "ä"])
def test_bad_client_id(client_id: str) -> None:
    assert problems(client_id, {}) == [
        f"clients.{client_id}: a client id is 1-63 characters of a-z 0-9 _ -, starting with a letter or digit"
    ]


@pytest.mark.parametrize("client_id", ["a", "0", "acme-corp_2", "a" * 63])
def test_good_client_id(client_id: str) -> None:
    assert parse_client(client_id, {}).client_id == client_id


@pytest.mark.parametrize("data", [None, [], "acme"])
def test_client_must_be_a_mapping(data: Any) -> None:
    with pytest.raises(ConfigError, match=r"clients\.acme: must be a mapping"):
        parse_client("acme", data)


def test_unknown_setting() -> None:
    assert problems("acme", {"api_key": [DIGEST], "colour": 1}) == [
        "clients.acme.api_key: unknown setting",
        "clients.acme.colour: unknown setting",
    ]


@pytest.mark.parametrize(
    ("keys", "field"),
    [
        (["demo-key"], "clients.acme.api_keys[0]"),
        ([DIGEST, "sha256:" + "A" * 64], "clients.acme.api_keys[1]"),
        (["sha256:abc"], "clients.acme.api_keys[0]"),
        ([DIGEST.replace("sha256:", "md5:")], "clients.acme.api_keys[0]"),
    ],
)
def test_api_keys_must_be_digests(keys: list[str], field: str) -> None:
    (line,) = problems("acme", {"api_keys": keys})
    assert line.startswith(f"{field}: must be sha256:<64 hex digits>")
    assert "never keys" in line


@pytest.mark.parametrize("keys", ["sha256:" + "a" * 64, [1], None])
def test_api_keys_must_be_a_list_of_strings(keys: Any) -> None:
    assert problems("acme", {"api_keys": keys}) == [
        "clients.acme.api_keys: must be a list of strings"
    ]


@pytest.mark.parametrize(
    "secret", ["secret", "whsec_", "whsec_short", 12, ["whsec_xxxxxxxxxxxxxxxx"]]
)
def test_bad_webhook_secret(secret: Any) -> None:
    assert problems("acme", {"webhook_secret": secret}) == [
        "clients.acme.webhook_secret: must be whsec_ followed by a base64 secret of at least 16 bytes (Standard Webhooks)"
    ]


@pytest.mark.parametrize("secret", ["whsec_!!!!not*base64!!!!", "whsec_ has spaces in it ok"])
def test_webhook_secret_must_be_base64(secret: str) -> None:
    # Pins a fixed bug. Before the fix: only the prefix and the length are checked, although the error (and the Standard
    # Webhooks spec, which base64-decodes the part after whsec_) says it must be base64.
    assert problems("acme", {"webhook_secret": secret}) == [
        "clients.acme.webhook_secret: must be whsec_ followed by a base64 secret of at least 16 bytes (Standard Webhooks)"
    ]


def test_channels_must_be_a_mapping() -> None:
    assert problems("acme", {"channels": ["sms"]}) == [
        "clients.acme.channels: must be a mapping of channel to settings"
    ]


@pytest.mark.parametrize("cfg", ["sandbox", None, {}, {"provider": 3}, {"from": "+14155550100"}])
def test_channel_needs_a_mapping_with_a_provider(cfg: Any) -> None:
    assert problems("acme", {"channels": {"sms": cfg}}) == [
        "clients.acme.channels.sms: must be a mapping with a provider, e.g. {provider: sandbox}"
    ]


def test_unknown_channel() -> None:
    assert problems("acme", {"channels": {"fax": {"provider": "sandbox"}}}) == [
        "clients.acme.channels.fax: unknown channel; expected one of sms, email, push, voice, whatsapp, slack"
    ]


def test_default_channel_not_configured() -> None:
    data = {"channels": {"sms": {"provider": "sandbox"}}, "default_channels": ["sms", "email"]}
    assert problems("acme", data) == [
        "clients.acme.default_channels[1]: channel 'email' is not configured under channels"
    ]


def test_default_channels_must_be_a_list() -> None:
    assert problem_fields("acme", {"default_channels": "sms"}) == ["clients.acme.default_channels"]


def test_duplicate_default_channels_are_refused_or_collapsed() -> None:
    # Pins a fixed bug. Before the fix: [sms, sms] is accepted as-is; every instruction without a type then has channels
    # (sms, sms), and fan-out makes two jobs per recipient with the same delivery key
    # (session/index/sms), i.e. the message is sent twice.
    data = {"channels": {"sms": {"provider": "sandbox"}}, "default_channels": ["sms", "sms"]}
    try:
        client = parse_client("acme", data)
    except ConfigError:
        return
    assert client.default_channels == ("sms",)


@pytest.mark.parametrize("zone", ["Mars/Olympus", "", None, "../etc/passwd", 5])
def test_bad_client_timezone(zone: Any) -> None:
    assert problems("acme", {"timezone": zone}) == [
        "clients.acme.timezone: not an IANA time zone name"
    ]


def _window(**window: Any) -> dict[str, Any]:
    return {"channels": {"sms": {"provider": "sandbox"}}, "time_windows": {"sms": window}}


@pytest.mark.parametrize("days", [["monday"], ["mon", "Tue"]])
def test_window_unknown_day(days: list[str]) -> None:
    (line,) = problems("acme", _window(days=days))
    assert line.startswith("clients.acme.time_windows.sms.days: unknown day")


@pytest.mark.parametrize("days", ["mon", [1], None])
def test_window_days_must_be_a_list(days: Any) -> None:
    assert problems("acme", _window(days=days)) == [
        "clients.acme.time_windows.sms.days: must be a list of strings"
    ]


def test_window_with_no_days_is_refused() -> None:
    """A window that never opens would hold its messages forever: refused with the reason
    (switchboard.windows relies on validated windows having a day)."""
    with pytest.raises(ConfigError, match=r"days: must name at least one day"):
        parse_client("acme", _window(days=[]))


@pytest.mark.parametrize("value", ["9:00", "09:0", "25:00", "12:60", "noon", 900, "09:00:00", ""])
@pytest.mark.parametrize("key", ["start", "end"])
def test_window_bad_hhmm(key: str, value: Any) -> None:
    assert problems("acme", _window(**{key: value})) == [
        f"clients.acme.time_windows.sms.{key}: must be HH:MM between 00:00 and 24:00"
    ]


@pytest.mark.parametrize("value", ["24:01", "24:30", "24:59"])
def test_window_24_only_as_24_00(value: str) -> None:
    assert problem_fields("acme", _window(end=value)) == ["clients.acme.time_windows.sms.end"]


@pytest.mark.parametrize(
    ("start", "end"), [("00:00", "24:00"), ("22:00", "06:00"), ("23:59", "00:00")]
)
def test_window_good_hhmm(start: str, end: str) -> None:
    window = parse_client("acme", _window(start=start, end=end)).time_windows["sms"]
    assert (window.start, window.end) == (start, end)


def test_window_bad_timezone() -> None:
    assert problems("acme", _window(timezone="Recipient")) == [
        "clients.acme.time_windows.sms.timezone: must be `recipient` or an IANA time zone name"
    ]


def test_window_unknown_settings() -> None:
    assert problems("acme", _window(tz="UTC", begin="09:00")) == [
        "clients.acme.time_windows.sms.begin: unknown setting",
        "clients.acme.time_windows.sms.tz: unknown setting",
    ]


def test_window_must_be_a_mapping() -> None:
    assert problems("acme", _window() | {"time_windows": {"sms": "09:00-17:00"}}) == [
        "clients.acme.time_windows.sms: must be a mapping with days, start, end and timezone"
    ]
    assert problems("acme", {"time_windows": ["sms"]}) == [
        "clients.acme.time_windows: must be a mapping of channel to window"
    ]


@pytest.mark.parametrize("channel", ["email", "fax"])
def test_window_for_unconfigured_channel(channel: str) -> None:
    data = {"channels": {"sms": {"provider": "sandbox"}}, "time_windows": {channel: {}}}
    assert problems("acme", data) == [
        f"clients.acme.time_windows.{channel}: no such configured channel"
    ]


def test_service_managers_and_help_text_types() -> None:
    assert problems("acme", {"service_managers": "sticky-sender", "help_text": 3}) == [
        "clients.acme.service_managers: must be a list of strings",
        "clients.acme.help_text: must be a string",
    ]


def test_all_errors_are_reported_together() -> None:
    data = {
        "api_keys": ["plain-key"],
        "webhook_secret": "nope",
        "colour": "red",
        "channels": {"sms": {"provider": "sandbox"}, "fax": {"provider": "x"}, "push": "apns"},
        "default_channels": ["email"],
        "timezone": "Nowhere",
        "time_windows": {
            "sms": {
                "days": ["funday"],
                "start": "25:00",
                "end": "24:30",
                "timezone": "X/Y",
                "x": 1,
            },
            "slack": {},
        },
        "help_text": ["x"],
    }
    assert problem_fields("Bad Id", data) == [
        "clients.Bad Id",
        "clients.Bad Id.colour",
        "clients.Bad Id.api_keys[0]",
        "clients.Bad Id.webhook_secret",
        "clients.Bad Id.channels.fax",
        "clients.Bad Id.channels.push",
        "clients.Bad Id.default_channels[0]",
        "clients.Bad Id.timezone",
        "clients.Bad Id.time_windows.sms.days",
        "clients.Bad Id.time_windows.sms.start",
        "clients.Bad Id.time_windows.sms.end",
        "clients.Bad Id.time_windows.sms.timezone",
        "clients.Bad Id.time_windows.sms.x",
        "clients.Bad Id.time_windows.slack",
        "clients.Bad Id.help_text",
    ]


# -- the document ------------------------------------------------------------------------------


@pytest.mark.parametrize("doc", [None, [], {"client": {}}, {"clients": ["a"]}, {"clients": None}])
def test_document_needs_a_clients_mapping(doc: Any) -> None:
    with pytest.raises(ConfigError, match="top-level `clients:` mapping"):
        parse_clients_document(doc)


def test_document_reports_every_bad_client() -> None:
    doc = {"clients": {"good": {}, "Bad": {}, "worse": {"timezone": "X"}}}
    with pytest.raises(ConfigError) as info:
        parse_clients_document(doc)
    text = str(info.value)
    assert "clients.Bad:" in text
    assert "clients.worse.timezone" in text
    assert "clients.good" not in text


def test_document_parses_every_client() -> None:
    doc = yaml.safe_load(
        """
        clients:
          a: {}
          b:
            channels: {email: {provider: smtp, from: "B <b@b.example>"}}
            default_channels: [email]
        """
    )
    clients = parse_clients_document(doc)
    assert sorted(clients) == ["a", "b"]
    assert clients["b"].default_channels == ("email",)
