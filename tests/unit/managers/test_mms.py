"""mms-when-cheaper: exact segment counts at their borders, media, and the strict ratio."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from switchboard.errors import ConfigError
from switchboard.managers import MemoryState, SendMessage
from switchboard.managers.builtin import MmsWhenCheaper, has_media, sms_text
from switchboard.segments import (
    GSM7_PART,
    GSM7_SINGLE,
    MMS_COST_RATIO,
    UCS2_PART,
    UCS2_SINGLE,
    count_segments,
    should_send_as_mms,
)
from tests.unit.managers import make_client, send_ctx

EMOJI = "\U0001f600"  # two UTF-16 units


async def switches(
    body: str | None,
    *,
    ratio: float | None = None,
    file_url: str | None = None,
    extras: dict[str, object] | None = None,
    channel: str = "sms",
) -> bool:
    manager = MmsWhenCheaper({} if ratio is None else {"ratio": ratio})
    client = make_client(whatsapp={"from": ["+14155550100"]})
    ctx = send_ctx(
        client, MemoryState(), body=body, file_url=file_url, extras=extras, channel=channel
    )
    answer = await manager.on_message_send(ctx)
    assert (answer == {"send_as_mms": True}) == ctx.message.send_as_mms
    return ctx.message.send_as_mms


@pytest.mark.parametrize(
    ("body", "segments"),
    [
        ("a" * GSM7_SINGLE, 1),
        ("a" * (GSM7_SINGLE + 1), 2),
        ("a" * GSM7_PART * 2, 2),
        ("a" * (GSM7_PART * 2 + 1), 3),  # 3 > 2.667: MMS
        ("{" * 80, 1),  # 160 septets: extended characters take two
        ("{" * 80 + "a", 2),
        ("a" * 152 + "{" + "a" * 153 + "a", 3),  # the escape pair moves whole to part 2
        ("a" * UCS2_SINGLE + "é", 1),  # é is GSM-7
        ("ç" * UCS2_SINGLE, 1),
        ("ç" * (UCS2_SINGLE + 1), 2),
        ("ç" * UCS2_PART * 2, 2),
        ("ç" * (UCS2_PART * 2 + 1), 3),
        (EMOJI * 35, 1),  # 70 units
        ("ç" * 66 + EMOJI + "ç" * 67 + "ç", 3),  # the surrogate pair is never split
        ("", 1),
    ],
)
async def test_switches_exactly_when_segments_exceed_the_default_ratio(
    body: str, segments: int
) -> None:
    assert count_segments(body) == segments
    assert await switches(body) is (segments > MMS_COST_RATIO)


async def test_the_ratio_is_strictly_greater() -> None:
    three = "a" * (GSM7_PART * 3)
    four = three + "a"
    assert count_segments(three) == 3 and count_segments(four) == 4
    assert not await switches(three, ratio=3)
    assert await switches(four, ratio=3)
    assert await switches(three, ratio=2.999)
    assert not await switches("a" * GSM7_SINGLE, ratio=1)
    assert await switches("a" * (GSM7_SINGLE + 1), ratio=1)


async def test_not_when_the_message_has_media() -> None:
    long = "ç" * 500
    assert not await switches(long, file_url="https://cdn.example/photo.JPG")
    assert not await switches(long, file_url="https://cdn.example/file", extras={"media": True})


async def test_a_link_that_is_not_media_counts_as_text() -> None:
    body = "a" * (GSM7_PART * 3 - 10)  # 3 segments; the link makes it 4
    link = "https://example.com/flyer.pdf"
    assert count_segments(body) == 3
    assert await switches(body, ratio=3, file_url=link)
    assert not await switches(body, ratio=3)
    # extras.media: false says an image URL is a link, as the Twilio transport reads it.
    message = SendMessage(
        channel="sms", body="x", file_url="https://x/a.png", extras={"media": False}
    )
    assert not has_media(message) and sms_text(message) == "x\nhttps://x/a.png"
    assert sms_text(SendMessage(channel="sms", body=None, file_url=link)) == link


async def test_only_sms_and_only_once() -> None:
    long = "ç" * 500
    assert not await switches(long, channel="whatsapp")
    manager = MmsWhenCheaper()
    ctx = send_ctx(make_client(), MemoryState(), body=long)
    ctx.message.send_as_mms = True  # asked for already (extras.send_as_mms)
    assert await manager.on_message_send(ctx) is None and ctx.message.send_as_mms


@pytest.mark.parametrize("ratio", [0, -1, float("nan"), float("inf"), "3", True, None])
def test_a_bad_ratio_is_a_config_error(ratio: object) -> None:
    with pytest.raises(ConfigError, match="ratio must be a finite number above 0"):
        MmsWhenCheaper({"ratio": ratio})


@given(
    st.text(alphabet=st.sampled_from(["a", "{", "ç", EMOJI, " ", "€"]), max_size=500),
    st.floats(min_value=0.5, max_value=12),
)
def test_the_decision_is_should_send_as_mms(body: str, ratio: float) -> None:
    assert asyncio.run(switches(body, ratio=ratio)) is should_send_as_mms(body, ratio)
