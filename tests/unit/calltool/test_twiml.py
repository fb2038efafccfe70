"""TwiML of the call tool and the voice broadcast, parsed back and checked verb by verb."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from urllib.parse import parse_qs, urlsplit

import pytest

from switchboard.calltool.twiml import (
    CLIP_ATTEMPT,
    MAX_MENU_ATTEMPTS,
    MENU_GATHER_TIMEOUT,
    STEPS,
    CallScript,
    CallUrls,
    DialTarget,
    after_dial_twiml,
    broadcast_twiml,
    connect_twiml,
    goodbye_twiml,
    menu_choice_twiml,
    menu_step_twiml,
    menu_twiml,
    parse_attempt,
    start_twiml,
)

BASE = "https://sb.example.com"
CALL = "call-42"
PREFIX = f"{BASE}/twilio/calls/{CALL}"
SCRIPT = CallScript(
    sound_clip_url="https://cdn.example.com/campaign.mp3",
    menu_clip_url="https://cdn.example.com/menu.mp3",
    language="en-GB",
)
SPOKEN = CallScript(
    sound_clip_url="https://cdn.example.com/campaign.mp3",
    menu_text="Appuyez sur 1 <pour> être mis en relation & 2 pour réécouter.",
    language="fr-FR",
    voice="Polly.Lea",
    goodbye_text="Au revoir.",
)


def parse(xml: str) -> ET.Element:
    assert xml.startswith('<?xml version="1.0" encoding="UTF-8"?>')
    root = ET.fromstring(xml)
    assert root.tag == "Response"
    return root


def tags(element: ET.Element) -> list[str]:
    return [child.tag for child in element]


def menu_url(attempt: int) -> str:
    return f"{PREFIX}/menu?attempt={attempt}"


# -- URLs ------------------------------------------------------------------------------------


def test_urls_have_one_layout() -> None:
    urls = CallUrls(BASE + "/", CALL)
    assert urls.start == f"{PREFIX}/start"
    assert urls.menu() == menu_url(1)
    assert urls.menu(3) == menu_url(3)
    assert urls.connect == f"{PREFIX}/connect"
    assert urls.dial_status == f"{PREFIX}/dial-status"
    assert urls.status == f"{PREFIX}/status"
    assert {urlsplit(urls.url(step)).path.rsplit("/", 1)[1] for step in STEPS} == set(STEPS)


def test_base_url_path_is_kept_and_call_id_is_one_segment() -> None:
    urls = CallUrls("http://127.0.0.1:6066/sb", "a/b c?d")
    assert urls.start == "http://127.0.0.1:6066/sb/twilio/calls/a%2Fb%20c%3Fd/start"


@pytest.mark.parametrize(
    ("base", "call_id"),
    [
        ("sb.example.com", CALL),
        ("ftp://sb.example.com", CALL),
        ("https://", CALL),
        ("https://sb.example.com/?x=1", CALL),
        (BASE, ""),
    ],
)
def test_bad_urls_are_refused(base: str, call_id: str) -> None:
    with pytest.raises(ValueError, match=r"base URL|call id"):
        CallUrls(base, call_id)


@pytest.mark.parametrize(
    ("value", "attempt"),
    [
        (None, 1),
        ("", 1),
        ("1", 1),
        ("2", 2),
        ("3", 3),
        ("4", 4),
        ("99", 4),
        ("0", 0),
        ("-2", 1),
        ("x", 1),
        ("²", 1),
        ("٣", 1),
    ],
)
def test_parse_attempt_never_fails(value: str | None, attempt: int) -> None:
    assert parse_attempt(value) == attempt


# -- start -----------------------------------------------------------------------------------


def test_start_plays_the_clip_inside_a_gather_then_redirects_to_the_menu() -> None:
    root = parse(start_twiml(CALL, BASE, SCRIPT))
    assert tags(root) == ["Gather", "Redirect"]
    gather, redirect = root
    assert gather.attrib == {
        "action": menu_url(CLIP_ATTEMPT),
        "method": "POST",
        "numDigits": "1",
        "timeout": "1",
    }
    assert tags(gather) == ["Play"]
    assert gather[0].text == SCRIPT.sound_clip_url
    assert redirect.text == menu_url(1)
    assert redirect.attrib == {"method": "POST"}


def test_start_says_the_message_when_there_is_no_clip() -> None:
    script = CallScript(message_text="Call your senator.", language="es-US")
    root = parse(start_twiml(CALL, BASE, script))
    gather = root.find("Gather")
    assert gather is not None
    say = gather.find("Say")
    assert say is not None
    assert say.text == "Call your senator."
    assert say.attrib == {"language": "es-US"}


def test_start_without_clip_or_message_goes_to_the_menu() -> None:
    root = parse(start_twiml(CALL, BASE, CallScript()))
    assert tags(root) == ["Redirect"]
    assert root[0].text == menu_url(1)


# -- menu ------------------------------------------------------------------------------------


@pytest.mark.parametrize("attempt", [1, 2])
def test_menu_gathers_one_digit_then_redirects_to_the_next_attempt(attempt: int) -> None:
    root = parse(menu_twiml(CALL, BASE, SCRIPT, attempt))
    assert tags(root) == ["Gather", "Redirect"]
    gather, redirect = root
    assert gather.attrib == {
        "action": menu_url(attempt),
        "method": "POST",
        "numDigits": "1",
        "timeout": str(MENU_GATHER_TIMEOUT),
    }
    assert tags(gather) == ["Play"]
    assert gather[0].text == SCRIPT.menu_clip_url
    assert redirect.text == menu_url(attempt + 1)
    assert parse_qs(urlsplit(redirect.text).query) == {"attempt": [str(attempt + 1)]}


def test_menu_says_the_text_in_its_language_when_there_is_no_clip() -> None:
    root = parse(menu_twiml(CALL, BASE, SPOKEN))
    gather = root[0]
    assert tags(gather) == ["Say"]
    assert gather[0].text == SPOKEN.menu_text  # escaped on the way out, intact on the way in
    assert gather[0].attrib == {"language": "fr-FR", "voice": "Polly.Lea"}


def test_third_unanswered_menu_says_goodbye_and_hangs_up() -> None:
    root = parse(menu_twiml(CALL, BASE, SPOKEN, MAX_MENU_ATTEMPTS))
    assert tags(root) == ["Gather", "Say", "Hangup"]
    assert root[0].attrib["action"] == menu_url(MAX_MENU_ATTEMPTS)
    assert root[1].text == "Au revoir."
    assert root[1].attrib["language"] == "fr-FR"


def test_menu_past_the_last_attempt_hangs_up_at_once() -> None:
    root = parse(menu_twiml(CALL, BASE, SCRIPT, MAX_MENU_ATTEMPTS + 1))
    assert tags(root) == ["Say", "Hangup"]


def test_three_silent_menus_in_a_row_end_the_call() -> None:
    """Follow the redirects as Twilio would when no key is ever pressed."""
    url = urlsplit(parse(start_twiml(CALL, BASE, SCRIPT)).findall("Redirect")[0].text or "")
    seen = []
    for _ in range(10):
        attempt = parse_attempt(parse_qs(url.query)["attempt"][0])
        seen.append(attempt)
        root = parse(menu_twiml(CALL, BASE, SCRIPT, attempt))
        redirect = root.find("Redirect")
        if redirect is None:
            assert tags(root)[-1] == "Hangup"
            break
        url = urlsplit(redirect.text or "")
    assert seen == [1, 2, 3]


def drive_silent_call(script: CallScript, *, empty_result: bool) -> tuple[list[str], list[str]]:
    """Follow the TwiML of a member who never presses a key, as Twilio does: a ``<Gather>`` that
    times out goes on to the next verb, or (``empty_result``: ``actionOnEmptyResult``, or ``#``
    pressed alone) posts an empty ``Digits`` to its action. Each menu request is answered as the
    ``/menu`` view did before :func:`menu_step_twiml` existed. Returns what was played or said,
    and the steps requested."""
    heard: list[str] = []
    steps: list[str] = []
    root = parse(start_twiml(CALL, BASE, script))
    for _ in range(20):
        follow: tuple[str, str | None] | None = None
        for verb in root:
            if verb.tag in ("Play", "Say"):
                heard.append(verb.text or "")
            elif verb.tag == "Gather":
                heard.extend(child.text or "" for child in verb)
                if empty_result:
                    follow = (verb.attrib["action"], "")
                    break
            elif verb.tag == "Redirect":
                follow = (verb.text or "", None)
                break
            elif verb.tag == "Hangup":
                return heard, steps
        assert follow is not None, "a document that ends without hanging up"
        url, digits = follow
        steps.append(url.removeprefix(PREFIX + "/") + ("" if digits is None else " Digits="))
        attempt = parse_attempt(parse_qs(urlsplit(url).query)["attempt"][0])
        root = parse(
            menu_twiml(CALL, BASE, script, attempt)
            if digits is None
            else menu_choice_twiml(digits, CALL, BASE, script, attempt)
        )
    raise AssertionError("a loop")


@pytest.mark.parametrize("empty_result", [False, True])
@pytest.mark.parametrize("script", [SCRIPT, SPOKEN, CallScript(message_text="Hi."), CallScript()])
def test_a_member_who_presses_nothing_hears_three_menus_then_goodbye(
    script: CallScript, empty_result: bool
) -> None:
    """Issue 14, part 5: with Twilio posting empty results, the clip's silent gather counted as
    a menu, and the member heard two."""
    heard, steps = drive_silent_call(script, empty_result=empty_result)
    menu = script.menu_clip_url or script.menu_text
    assert heard.count(menu) == MAX_MENU_ATTEMPTS == 3, steps
    assert heard[-1] == script.goodbye_text


def test_a_menu_request_without_digits_plays_the_menu_and_with_digits_is_a_choice() -> None:
    assert menu_step_twiml(None, CALL, BASE, SCRIPT, 2) == menu_twiml(CALL, BASE, SCRIPT, 2)
    for digits in ("", "1", "2", "9"):
        assert menu_step_twiml(digits, CALL, BASE, SCRIPT, 2) == menu_choice_twiml(
            digits, CALL, BASE, SCRIPT, 2
        )


def test_a_wrong_key_during_the_clip_leads_to_the_first_menu() -> None:
    root = parse(menu_choice_twiml("9", CALL, BASE, SCRIPT, CLIP_ATTEMPT))
    assert root[0].attrib["action"] == menu_url(1)


# -- menu choices ----------------------------------------------------------------------------


def test_key_1_connects() -> None:
    root = parse(menu_choice_twiml("1", CALL, BASE, SCRIPT, attempt=2))
    assert tags(root) == ["Redirect"]
    assert root[0].text == f"{PREFIX}/connect"
    assert root[0].attrib == {"method": "POST"}


def test_key_2_replays_the_campaign_message() -> None:
    root = parse(menu_choice_twiml("2", CALL, BASE, SCRIPT, attempt=3))
    assert tags(root) == ["Redirect"]
    assert root[0].text == f"{PREFIX}/start"


@pytest.mark.parametrize("digits", ["3", "0", "*", "#", "11", "", None])
def test_other_keys_replay_the_menu_as_the_next_attempt(digits: str | None) -> None:
    root = parse(menu_choice_twiml(digits, CALL, BASE, SCRIPT, attempt=1))
    assert tags(root) == ["Gather", "Redirect"]
    assert root[0].attrib["action"] == menu_url(2)
    assert root[1].text == menu_url(3)


def test_wrong_key_at_the_last_menu_hangs_up() -> None:
    root = parse(menu_choice_twiml("9", CALL, BASE, SCRIPT, attempt=MAX_MENU_ATTEMPTS))
    assert tags(root) == ["Say", "Hangup"]


def test_key_during_the_clip_is_a_menu_choice() -> None:
    """The clip's gather posts to the menu URL: pressing 1 there connects at once."""
    action = parse(start_twiml(CALL, BASE, SCRIPT))[0].attrib["action"]
    attempt = parse_attempt(parse_qs(urlsplit(action).query)["attempt"][0])
    root = parse(menu_choice_twiml("1", CALL, BASE, SCRIPT, attempt))
    assert root[0].text == f"{PREFIX}/connect"


# -- connect and after -----------------------------------------------------------------------


def test_connect_dials_the_target_with_extension_and_caller_id() -> None:
    target = DialTarget("+14155550123", extension="1928", caller_id="+14155550100")
    root = parse(connect_twiml(CALL, BASE, target, timeout=25))
    assert tags(root) == ["Dial"]
    dial = root[0]
    assert dial.attrib == {
        "action": f"{PREFIX}/dial-status",
        "method": "POST",
        "timeout": "25",
        "callerId": "+14155550100",
    }
    assert tags(dial) == ["Number"]
    assert dial[0].text == "+14155550123"
    assert dial[0].attrib == {"sendDigits": "ww1928"}


def test_connect_without_extension_or_caller_id() -> None:
    dial = parse(connect_twiml(CALL, BASE, DialTarget("+14155550123")))[0]
    assert "callerId" not in dial.attrib
    assert dial.attrib["timeout"] == "30"
    assert dial[0].attrib == {}


def test_extension_with_its_own_pause_is_sent_as_is() -> None:
    dial = parse(connect_twiml(CALL, BASE, DialTarget("+14155550123", extension="wwww12#")))[0]
    assert dial[0].attrib == {"sendDigits": "wwww12#"}


@pytest.mark.parametrize("extension", ["", "12a", "1 2", "12;3", "<1>"])
def test_bad_extension_is_refused(extension: str) -> None:
    with pytest.raises(ValueError, match="extension"):
        DialTarget("+14155550123", extension=extension)


@pytest.mark.parametrize("status", ["completed", "answered"])
def test_after_a_conversation_hang_up(status: str) -> None:
    assert tags(parse(after_dial_twiml(status, SCRIPT))) == ["Hangup"]


@pytest.mark.parametrize("status", ["busy", "no-answer", "failed", "canceled", None])
def test_after_a_failed_dial_apologise_and_hang_up(status: str | None) -> None:
    root = parse(after_dial_twiml(status, SCRIPT))
    assert tags(root) == ["Say", "Hangup"]
    assert root[0].text == SCRIPT.not_connected_text
    assert root[0].attrib == {"language": "en-GB"}


def test_goodbye() -> None:
    root = parse(goodbye_twiml())
    assert tags(root) == ["Say", "Hangup"]
    assert root[0].text == "Goodbye."


# -- broadcast -------------------------------------------------------------------------------


def test_broadcast_plays_the_file_when_there_is_one() -> None:
    root = parse(broadcast_twiml("ignored", "https://cdn.example.com/v.mp3", "en-US"))
    assert tags(root) == ["Play"]
    assert root[0].text == "https://cdn.example.com/v.mp3"


def test_broadcast_says_the_message_otherwise() -> None:
    root = parse(broadcast_twiml("Polling station moved to <Main St> & 5th", None, "en-US"))
    assert tags(root) == ["Say"]
    assert root[0].text == "Polling station moved to <Main St> & 5th"
    assert root[0].attrib == {"language": "en-US"}


def test_broadcast_without_language_has_no_attribute() -> None:
    assert parse(broadcast_twiml("hi", None, None))[0].attrib == {}


@pytest.mark.parametrize(("message", "file_url"), [(None, None), ("", ""), ("  ", None)])
def test_empty_broadcast_is_refused(message: str | None, file_url: str | None) -> None:
    with pytest.raises(ValueError, match="file URL or a message"):
        broadcast_twiml(message, file_url)
