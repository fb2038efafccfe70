"""numpicker-basic, sticky-sender and per-client-messageservices, alone and together."""

from __future__ import annotations

import asyncio
from collections import Counter
from random import Random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from switchboard.managers import (
    MemoryState,
    OptOutContext,
    Registry,
    ServiceManager,
    ServiceManagers,
)
from switchboard.managers.builtin import (
    STICKY_NAMESPACE,
    NumpickerBasic,
    PerClientMessageServices,
    StickySender,
    pick_sender,
    sender_pool,
    sticky_key,
)
from tests.unit.managers import POOL, RECIPIENT, CountingState, make_client, report_ctx, send_ctx

MG = "MG" + "a" * 32
phones = st.integers(2_000_000_000, 9_999_999_999).map(lambda n: f"+1{n}")


def managers(*names: str) -> tuple[ServiceManagers, list[ServiceManager]]:
    sb = ServiceManagers(list(names), registry=Registry(entry_points=[]))
    return sb, list(sb.for_client(make_client()))


def other_than_pick(address: str) -> str:
    """A pool number numpicker would not pick for ``address``."""
    return next(n for n in POOL if n != pick_sender(POOL, address))


# -- numpicker-basic -------------------------------------------------------------------------


async def test_numpicker_picks_from_the_pool_when_nothing_is_chosen() -> None:
    numpicker = NumpickerBasic()
    client, state = make_client(), MemoryState()
    answer = await numpicker.on_message_send(send_ctx(client, state))
    assert answer == {"sender": pick_sender(POOL, RECIPIENT)}
    assert answer["sender"] in POOL
    # Already chosen: on the message, or a Messaging Service.
    assert await numpicker.on_message_send(send_ctx(client, state, sender="+14155550100")) is None
    ctx = send_ctx(client, state)
    ctx.message.messaging_service_sid = MG
    assert await numpicker.on_message_send(ctx) is None


async def test_numpicker_needs_a_pool_and_a_phone_channel() -> None:
    numpicker = NumpickerBasic()
    state = MemoryState()
    assert (
        await numpicker.on_message_send(
            send_ctx(make_client(sms={"messaging_service_sid": MG}), state)
        )
        is None
    )
    one = make_client(sms={"from": "+14155550100"})
    assert await numpicker.on_message_send(send_ctx(one, state)) == {"sender": "+14155550100"}
    email = make_client(email={"provider": "smtp", "from": "Acme <noreply@acme.example>"})
    ctx = send_ctx(email, state, channel="email", address="ana@example.com")
    assert await numpicker.on_message_send(ctx) is None
    voice_only_sms = NumpickerBasic({"channels": ["sms"]})
    voice = make_client(voice={"from": list(POOL)})
    assert await voice_only_sms.on_message_send(send_ctx(voice, state, channel="voice")) is None
    assert await numpicker.on_message_send(send_ctx(voice, state, channel="voice")) is not None


def test_sender_pool_reads_from() -> None:
    assert sender_pool(make_client(), "sms") == POOL
    assert sender_pool(make_client(sms={"from": ["+1", "+2", "+1", 3, ""]}), "sms") == ("+1", "+2")
    assert sender_pool(make_client(sms={}), "sms") == ()
    assert sender_pool(make_client(), "whatsapp") == ()


@given(st.lists(phones, min_size=1, max_size=8, unique=True), phones, st.randoms())
def test_pick_sender_is_stable_and_ignores_the_pool_order(
    pool: list[str], address: str, random: Random
) -> None:
    picked = pick_sender(pool, address)
    assert picked in pool
    shuffled = list(pool)
    random.shuffle(shuffled)
    assert pick_sender(shuffled, address) == picked


@given(
    st.lists(phones, min_size=2, max_size=6, unique=True), st.lists(phones, min_size=1, max_size=30)
)
def test_adding_a_number_moves_recipients_only_to_it(pool: list[str], addresses: list[str]) -> None:
    new = "+15005550006"
    for address in addresses:
        before, after = pick_sender(pool, address), pick_sender([*pool, new], address)
        assert after in (before, new)


def test_pick_sender_spreads_evenly() -> None:
    counts = Counter(pick_sender(POOL, f"+1415{n:07d}") for n in range(8000))
    assert set(counts) == set(POOL)
    assert all(abs(c - 2000) < 200 for c in counts.values()), counts  # within 10%
    with pytest.raises(ValueError, match="no numbers"):
        pick_sender([], RECIPIENT)


# -- sticky-sender ---------------------------------------------------------------------------


async def test_sticky_before_numpicker_wins_after_a_delivered_report() -> None:
    sb, listed = managers("sticky-sender", "numpicker-basic")
    client, state = make_client(), MemoryState()
    first = await sb.run_send(listed, send_ctx(client, state))
    assert first.message.sender == pick_sender(POOL, RECIPIENT)  # nothing remembered: numpicker
    delivered_from = other_than_pick(RECIPIENT)
    await sb.run_delivery_report(listed, report_ctx(client, state, sender=delivered_from))
    again = await sb.run_send(listed, send_ctx(client, state))
    assert again.message.sender == delivered_from
    assert again.ran == ("sticky-sender", "numpicker-basic") and again.errors == ()


async def test_sticky_after_numpicker_never_applies() -> None:
    sb, listed = managers("numpicker-basic", "sticky-sender")
    client, state = make_client(), MemoryState()
    delivered_from = other_than_pick(RECIPIENT)
    await sb.run_delivery_report(listed, report_ctx(client, state, sender=delivered_from))
    assert state.get(STICKY_NAMESPACE, sticky_key("acme", "sms", RECIPIENT)) is not None
    outcome = await sb.run_send(listed, send_ctx(client, state))
    assert outcome.message.sender == pick_sender(POOL, RECIPIENT) != delivered_from


async def test_sticky_never_overwrites_a_remembered_number() -> None:
    sticky = StickySender()
    client, state = make_client(), CountingState()
    await sticky.on_delivery_report(report_ctx(client, state, sender=POOL[1]))
    await sticky.on_delivery_report(report_ctx(client, state, sender=POOL[2]))
    assert state.get(STICKY_NAMESPACE, sticky_key("acme", "sms", RECIPIENT)) == {
        "sender": POOL[1],
        "delivered_at": 1_700_000_000.0,
    }
    assert len(state.puts) == 1
    assert await sticky.on_message_send(send_ctx(client, state)) == {"sender": POOL[1]}


@pytest.mark.parametrize(
    ("status", "error_code", "sender"),
    [
        ("sent", None, POOL[1]),
        ("failed", None, POOL[1]),
        ("undelivered", "30003", POOL[1]),
        ("read", None, POOL[1]),
        ("delivered", "30007", POOL[1]),  # a delivered report with an error code
        ("delivered", None, None),  # no sender known
        ("delivered", None, "+19995550100"),  # not one of the client's numbers
    ],
)
async def test_sticky_remembers_only_a_clean_delivery(
    status: str, error_code: str | None, sender: str | None
) -> None:
    state = CountingState()
    await StickySender().on_delivery_report(
        report_ctx(make_client(), state, status=status, error_code=error_code, sender=sender)
    )
    assert state.puts == []


async def test_sticky_is_per_client_and_channel() -> None:
    sticky = StickySender()
    state = MemoryState()
    acme, other = make_client("acme"), make_client("other")
    await sticky.on_delivery_report(report_ctx(acme, state, sender=POOL[3]))
    assert await sticky.on_message_send(send_ctx(acme, state)) == {"sender": POOL[3]}
    assert await sticky.on_message_send(send_ctx(other, state)) is None
    whatsapp = make_client("acme", whatsapp={"from": list(POOL)})
    assert await sticky.on_message_send(send_ctx(whatsapp, state, channel="whatsapp")) is None


async def test_sticky_ignores_and_replaces_a_number_that_left_the_pool() -> None:
    sticky = StickySender()
    state = MemoryState()
    await sticky.on_delivery_report(report_ctx(make_client(), state, sender=POOL[0]))
    shrunk = make_client(sms={"from": list(POOL[1:])})
    assert await sticky.on_message_send(send_ctx(shrunk, state)) is None
    await sticky.on_delivery_report(report_ctx(shrunk, state, sender=POOL[2]))
    assert await sticky.on_message_send(send_ctx(shrunk, state)) == {"sender": POOL[2]}


async def test_sticky_with_a_messaging_service_only_trusts_the_reported_number() -> None:
    sticky = StickySender()
    state = MemoryState()
    service_only = make_client(sms={"messaging_service_sid": MG})
    await sticky.on_delivery_report(report_ctx(service_only, state, sender="+14155559999"))
    assert await sticky.on_message_send(send_ctx(service_only, state)) == {"sender": "+14155559999"}


async def test_sticky_whatsapp_numbers_match_with_or_without_prefix() -> None:
    sticky = StickySender()
    state = MemoryState()
    client = make_client(whatsapp={"from": ["whatsapp:+14155550100"]})
    ctx = report_ctx(client, state, channel="whatsapp", sender="+14155550100")
    await sticky.on_delivery_report(ctx)
    send = send_ctx(client, state, channel="whatsapp")
    assert await sticky.on_message_send(send) == {"sender": "+14155550100"}


async def test_an_opt_out_forgets_the_recipient() -> None:
    sticky = StickySender()
    client, state = make_client(), CountingState()
    opt_out = OptOutContext(client=client, channel="sms", state=state, address=RECIPIENT)
    await sticky.on_opt_out(opt_out)
    assert state.puts == []  # nothing kept: no write
    await sticky.on_delivery_report(report_ctx(client, state, sender=POOL[1]))
    await sticky.on_opt_out(opt_out)
    assert await sticky.on_message_send(send_ctx(client, state)) is None
    await sticky.on_delivery_report(report_ctx(client, state, sender=POOL[2]))
    assert await sticky.on_message_send(send_ctx(client, state)) == {"sender": POOL[2]}


# -- per-client-messageservices --------------------------------------------------------------


async def test_messaging_service_replaces_a_picked_number() -> None:
    client = make_client(sms={"from": list(POOL), "messaging_service_sid": MG})
    sb = ServiceManagers(
        ["numpicker-basic", "per-client-messageservices"], registry=Registry(entry_points=[])
    )
    outcome = await sb.run_send(sb.for_client(client), send_ctx(client, MemoryState()))
    assert outcome.message.sender is None and outcome.message.messaging_service_sid == MG
    assert dict(outcome.values) == {"sender": None, "messaging_service_sid": MG}
    assert outcome.message.transport_fields()["extras"] == {"messaging_service_sid": MG}


async def test_messaging_service_first_leaves_the_pickers_nothing_to_do() -> None:
    client = make_client(sms={"from": list(POOL), "messaging_service_sid": MG})
    state = MemoryState()
    await StickySender().on_delivery_report(report_ctx(client, state, sender=POOL[1]))
    sb = ServiceManagers(
        ["per-client-messageservices", "sticky-sender", "numpicker-basic"],
        registry=Registry(entry_points=[]),
    )
    outcome = await sb.run_send(sb.for_client(client), send_ctx(client, state))
    assert outcome.message.sender is None and outcome.message.messaging_service_sid == MG


async def test_messaging_service_only_where_one_is_configured() -> None:
    manager = PerClientMessageServices()
    state = MemoryState()
    plain = send_ctx(make_client(), state, sender=POOL[0])
    assert await manager.on_message_send(plain) is None and plain.message.sender == POOL[0]
    voice = make_client(voice={"from": list(POOL), "messaging_service_sid": MG})
    assert await manager.on_message_send(send_ctx(voice, state, channel="voice")) is None
    whatsapp = make_client(whatsapp={"messaging_service_sid": MG})
    ctx = send_ctx(whatsapp, state, channel="whatsapp", sender="whatsapp:+14155550100")
    assert await manager.on_message_send(ctx) == {"messaging_service_sid": MG, "sender": None}
    assert ctx.message.sender is None


def test_sticky_and_numpicker_together_over_many_recipients() -> None:
    """Sticky before numpicker: a recipient delivered from any pool number keeps it."""
    sb, listed = managers("sticky-sender", "numpicker-basic")
    client, state = make_client(), MemoryState()

    async def scenario() -> None:
        for n in range(50):
            address = f"+1415666{n:04d}"
            delivered_from = POOL[n % len(POOL)]
            await sb.run_delivery_report(
                listed, report_ctx(client, state, address=address, sender=delivered_from)
            )
            outcome = await sb.run_send(listed, send_ctx(client, state, address=address))
            assert outcome.message.sender == delivered_from

    asyncio.run(scenario())
