"""Campaign configuration and ``POST /api/call`` bodies (switchboard.calltool.campaigns)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from switchboard.calltool.calls import target_checksum
from switchboard.calltool.campaigns import (
    DEFAULT_LANGUAGE,
    DEFAULT_SILENCE_LIMIT,
    Campaign,
    InvalidCampaigns,
    Target,
    parse_campaigns,
    resolve_call_request,
)
from switchboard.calltool.twiml import CallScript, DialTarget
from switchboard.errors import ConfigError, ValidationFailed

SECRET = b"s3cret-for-manual-targets-0123456789"
TARGET = "+14155550199"
MEMBER = "+14155552671"

BEES: dict[str, Any] = {
    "sound_clip_url": "https://cdn.example.org/bees/message.mp3",
    "menu_clip_url": "https://cdn.example.org/bees/menu.mp3",
    "language": "en-GB",
    "caller_id": "+14155550101",
    "default_region": "gb",
    "checksum_secret_env": "BEES_KEY",
    "silence_limit": 120,
    "targets": [
        {
            "id": "mp-smith",
            "name": " Jane Smith MP ",
            "phone_number": TARGET,
            "extension": 123,
            "caller_id": "+14155550102",
        },
        {"id": "desk", "name": "Front desk", "phone_number": "+442079460000"},
    ],
}
SPOKEN: dict[str, Any] = {
    "message_text": "Bees need you.",
    "menu_text": "Press 1 to be connected.",
    "targets": [{"id": "desk", "name": "Front desk", "phone_number": TARGET}],
}


def campaigns(**overrides: Any) -> dict[str, Any]:
    return {"bees": {**copy.deepcopy(BEES), **overrides}}


def fields_of(exc: pytest.ExceptionInfo[InvalidCampaigns]) -> list[str]:
    return [e.field for e in exc.value.errors]


# -- configuration ---------------------------------------------------------------------------


def test_a_complete_campaign() -> None:
    parsed = parse_campaigns({**campaigns(), "spoken": SPOKEN})
    bees = parsed["bees"]
    assert bees.campaign_id == "bees"
    assert list(bees.targets) == ["mp-smith", "desk"]
    assert bees.targets["mp-smith"] == Target(
        "mp-smith", "Jane Smith MP", TARGET, "123", "+14155550102"
    ), "names are trimmed; a YAML number extension becomes text"
    assert bees.targets["desk"].dial() == DialTarget("+442079460000")
    assert (bees.caller_id, bees.default_region, bees.checksum_secret_env) == (
        "+14155550101",
        "GB",
        "BEES_KEY",
    )
    assert bees.silence_limit == 120.0
    assert bees.script() == CallScript(
        sound_clip_url=BEES["sound_clip_url"],
        menu_clip_url=BEES["menu_clip_url"],
        language="en-GB",
    )

    spoken = parsed["spoken"]
    assert spoken.language == DEFAULT_LANGUAGE and spoken.silence_limit == DEFAULT_SILENCE_LIMIT
    assert spoken.caller_id is None and spoken.checksum_secret_env is None
    script = spoken.script()
    assert script.sound_clip_url is None and script.message_text == "Bees need you."
    assert script.menu_clip_url is None and script.menu_text == "Press 1 to be connected."


def test_no_campaigns() -> None:
    assert parse_campaigns(None) == {}
    assert parse_campaigns({}) == {}


def test_every_problem_is_reported_with_its_path() -> None:
    raw = {
        "bees": {
            "sound_clip_url": "ftp://cdn.example.org/x.mp3",
            "menu_clip_url": "https://cdn.example.org/menu.mp3",
            "menu_text": "also a text",
            "language": "english please",
            "caller_id": "4155550101",
            "default_region": "XX",
            "checksum_secret_env": "not a name",
            "silence_limit": 0,
            "colour": "blue",
            "targets": [
                {"id": "a", "name": "A", "phone_number": "+1415555"},
                {"id": "a", "name": "", "phone_number": TARGET, "extension": "12x"},
                "not a target",
                {"name": "B", "phone_number": TARGET, "caller_id": "+99", "office": 1},
            ],
        },
        "bad id!": SPOKEN,
        "empty": {"targets": []},
        "scalar": 42,
    }
    with pytest.raises(InvalidCampaigns) as exc:
        parse_campaigns(raw)
    assert sorted(fields_of(exc)) == sorted(
        [
            "campaigns.bees.colour",
            "campaigns.bees.sound_clip_url",
            "campaigns.bees.menu_text",
            "campaigns.bees.language",
            "campaigns.bees.caller_id",
            "campaigns.bees.default_region",
            "campaigns.bees.checksum_secret_env",
            "campaigns.bees.silence_limit",
            "campaigns.bees.targets[0].phone_number",
            "campaigns.bees.targets[1].id",
            "campaigns.bees.targets[1].name",
            "campaigns.bees.targets[1].extension",
            "campaigns.bees.targets[2]",
            "campaigns.bees.targets[3].office",
            "campaigns.bees.targets[3].id",
            "campaigns.bees.targets[3].caller_id",
            "campaigns.bad id!",
            "campaigns.empty.targets",
            "campaigns.empty.sound_clip_url",
            "campaigns.empty.menu_clip_url",
            "campaigns.scalar",
        ]
    )
    assert isinstance(exc.value, ConfigError)
    message = str(exc.value)
    assert "campaigns.bees.targets[1].id: 'a' is used by another target" in message
    assert "campaigns.bees.colour: unknown setting" in message


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"message_text": "both"}, "campaigns.bees.message_text"),
        ({"sound_clip_url": None}, "campaigns.bees.sound_clip_url"),
        ({"menu_clip_url": None}, "campaigns.bees.menu_clip_url"),
        ({"menu_clip_url": None, "menu_text": "   "}, "campaigns.bees.menu_text"),
        ({"silence_limit": True}, "campaigns.bees.silence_limit"),
        ({"silence_limit": 86401}, "campaigns.bees.silence_limit"),
        ({"targets": {"mp-smith": {}}}, "campaigns.bees.targets"),
    ],
)
def test_one_problem(overrides: dict[str, Any], field: str) -> None:
    raw = campaigns(**overrides)
    raw["bees"] = {k: v for k, v in raw["bees"].items() if v is not None}
    with pytest.raises(InvalidCampaigns) as exc:
        parse_campaigns(raw)
    assert field in fields_of(exc)


def test_not_a_mapping() -> None:
    with pytest.raises(InvalidCampaigns) as exc:
        parse_campaigns(["bees"])
    assert fields_of(exc) == ["campaigns"]


def test_a_number_that_looks_right_but_is_not_assigned_is_refused() -> None:
    raw = campaigns(targets=[{"id": "x", "name": "X", "phone_number": "+10005550100"}])
    with pytest.raises(InvalidCampaigns) as exc:
        parse_campaigns(raw)
    assert fields_of(exc) == ["campaigns.bees.targets[0].phone_number"]


# -- POST /api/call --------------------------------------------------------------------------


@pytest.fixture
def parsed() -> dict[str, Campaign]:
    return parse_campaigns({**campaigns(), "spoken": SPOKEN})


def secrets_of(values: dict[str, bytes]) -> Any:
    return values.get


def test_a_request_for_a_listed_target(parsed: dict[str, Campaign]) -> None:
    request = resolve_call_request(
        {
            "campaign_id": "bees",
            "target_id": "mp-smith",
            "member_phone_number": "+1 (415) 555-2671",
        },
        parsed,
        secrets_of({}),
    )
    assert request.campaign is parsed["bees"]
    assert request.target is parsed["bees"].targets["mp-smith"]
    assert request.target_id == "mp-smith"
    assert request.member_number == MEMBER


def test_a_national_number_needs_the_campaigns_region(parsed: dict[str, Campaign]) -> None:
    uk = resolve_call_request(
        {"campaign_id": "bees", "target_id": "desk", "member_phone_number": "020 7946 0018"},
        parsed,
        secrets_of({}),
    )
    assert uk.member_number == "+442079460018"
    with pytest.raises(ValidationFailed) as exc:
        resolve_call_request(
            {"campaign_id": "spoken", "target_id": "desk", "member_phone_number": "020 7946 0018"},
            parsed,
            secrets_of({}),
        )
    assert [e.field for e in exc.value.errors] == ["member_phone_number"]


def test_every_request_problem_at_once(parsed: dict[str, Campaign]) -> None:
    with pytest.raises(ValidationFailed) as exc:
        resolve_call_request(
            {"campaign_id": "wasps", "member_phone_number": "12ab"}, parsed, secrets_of({})
        )
    assert [(e.field, e.error) for e in exc.value.errors] == [
        ("campaign_id", "no such campaign"),
        (
            "member_phone_number",
            "the phone number may contain only digits, spaces, -, ., parentheses and a leading +",
        ),
    ]
    with pytest.raises(ValidationFailed) as exc:
        resolve_call_request({"campaign_id": "bees", "target_id": "nobody"}, parsed, secrets_of({}))
    assert sorted(e.field for e in exc.value.errors) == ["member_phone_number", "target_id"]
    with pytest.raises(ValidationFailed) as exc:
        resolve_call_request(
            {"member_phone_number": MEMBER, "campaign_id": 7}, parsed, secrets_of({})
        )
    assert [e.field for e in exc.value.errors] == ["campaign_id"]


def manual(parsed: dict[str, Campaign], secrets: dict[str, bytes], **body: Any) -> Any:
    data = {"campaign_id": "bees", "member_phone_number": MEMBER, **body}
    return resolve_call_request(data, parsed, secrets_of(secrets))


def test_a_manual_target_with_its_checksum(parsed: dict[str, Campaign]) -> None:
    checksum = target_checksum("+14155550198", SECRET)
    request = manual(
        parsed,
        {"BEES_KEY": SECRET},
        target_phone_number="+1 (415) 555-0198",
        target_checksum=f" {checksum.upper()} ",
    )
    assert request.target_id is None
    assert request.target == Target("manual", "manual target", "+14155550198")


@pytest.mark.parametrize(
    ("secrets", "body", "field"),
    [
        (
            {"BEES_KEY": SECRET},
            {"target_phone_number": "+14155550198", "target_checksum": "0" * 32},
            "target_checksum",
        ),
        (
            {"BEES_KEY": SECRET},
            {
                "target_phone_number": "+14155550197",
                "target_checksum": target_checksum("+14155550198", SECRET),
            },
            "target_checksum",
        ),
        ({"BEES_KEY": SECRET}, {"target_phone_number": "+14155550198"}, "target_checksum"),
        ({"BEES_KEY": SECRET}, {"target_checksum": "abc"}, "target_phone_number"),
        (
            {},
            {
                "target_phone_number": "+14155550198",
                "target_checksum": target_checksum("+14155550198", SECRET),
            },
            "target_phone_number",
        ),
        (
            {"BEES_KEY": b"short"},
            {
                "target_phone_number": "+14155550198",
                "target_checksum": target_checksum("+14155550198", SECRET),
            },
            "target_phone_number",
        ),
        (
            {"BEES_KEY": SECRET},
            {"target_id": "desk", "target_phone_number": "+14155550198", "target_checksum": "x"},
            "target_id",
        ),
        ({"BEES_KEY": SECRET}, {}, "target_id"),
    ],
)
def test_a_manual_target_is_refused(
    parsed: dict[str, Campaign], secrets: dict[str, bytes], body: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValidationFailed) as exc:
        manual(parsed, secrets, **body)
    assert [e.field for e in exc.value.errors] == [field]


def test_a_campaign_without_a_secret_takes_no_manual_target(parsed: dict[str, Campaign]) -> None:
    with pytest.raises(ValidationFailed) as exc:
        resolve_call_request(
            {
                "campaign_id": "spoken",
                "member_phone_number": MEMBER,
                "target_phone_number": TARGET,
                "target_checksum": target_checksum(TARGET, SECRET),
            },
            parsed,
            secrets_of({"BEES_KEY": SECRET}),
        )
    assert [e.error for e in exc.value.errors] == ["this campaign does not accept manual targets"]
