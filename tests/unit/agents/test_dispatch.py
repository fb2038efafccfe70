"""The dispatchers' rules (``streams/dispatch.py``) through their real handler, in memory: the
jobs a fan-out produced are sent through the sandbox transport and reported in a batch; a
replayed batch is not sent again; a cancelled session's jobs and an opted-out recipient's are
withdrawn."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from streams.dispatch import optout_record
from switchboard import optout, records
from tests.unit.agents.harness import (
    MemorySwitchboard,
    build,
    dispatch_event,
    fan_out,
    reports_of,
)

AUDIENCE = ["+14155550111", "+14155550112", "+14155550113"]
SEND: dict[str, Any] = {
    "client_id": "acme",
    "transport": {"type": "sms", "message": "Hi"},
    "audience": AUDIENCE,
}


def sent(sb: MemorySwitchboard) -> list[str]:
    sandbox = sb.sandbox_sent.get("sms")
    return sorted(message["to"] for message in sandbox.sent) if sandbox is not None else []


async def dispatch_all(sb: MemorySwitchboard, produced: list[Any]) -> None:
    for record in produced:
        await dispatch_event(sb, record.event())


async def test_a_batch_is_sent_through_the_sandbox_and_reported_in_one_record(
    tmp_path: Path,
) -> None:
    sb = build(tmp_path)
    session_id = await fan_out(sb, SEND)
    batches = sb.take("dispatch.sms")
    await dispatch_all(sb, batches)
    assert sent(sb) == AUDIENCE
    produced = sb.take("reports")
    assert len(produced) == len(batches), "one report record per batch"
    told = reports_of(produced)
    assert sorted(r.index for r in told) == [0, 1, 2]
    assert {(r.session_id, r.status) for r in told} == {(session_id, "delivered")}
    assert all(r.provider_message_id for r in told)


async def test_a_batch_delivered_again_is_reported_again_not_sent_again(tmp_path: Path) -> None:
    sb = build(tmp_path)
    await fan_out(sb, SEND)
    batches = sb.take("dispatch.sms")
    await dispatch_all(sb, batches)
    first = reports_of(sb.take("reports"))
    await dispatch_all(sb, batches)  # the same records again (a replay after a crash)
    assert sent(sb) == AUDIENCE, "each recipient sent once"
    again = reports_of(sb.take("reports"))
    assert [(r.index, r.status, r.provider_message_id) for r in again] == [
        (r.index, r.status, r.provider_message_id) for r in first
    ]


async def test_the_jobs_of_a_cancelled_session_are_withdrawn_silently(tmp_path: Path) -> None:
    sb = build(tmp_path)
    session_id = await fan_out(sb, SEND)
    await sb.cancels.put(session_id.encode(), b'{"at": 1.0, "blocked": null}')
    await dispatch_all(sb, sb.take("dispatch.sms"))
    assert sent(sb) == []
    assert sb.take("reports") == [], "the session agent reports them cancelled, after the fences"
    assert sb.metrics.withdrawn.labels("sms", "cancelled")._value.get() == 3


async def test_a_fence_withdraws_the_later_jobs_of_its_session_on_its_partition(
    tmp_path: Path,
) -> None:
    sb = build(tmp_path)
    session_id = await fan_out(sb, SEND)
    batches = sb.take("dispatch.sms")
    for partition in range(sb.settings.partitions):
        fence = records.encode(records.Fence(session_id))
        sb.topic("dispatch.sms").add(None, fence, None, partition)
    await dispatch_all(sb, sb.take("dispatch.sms") + batches)
    assert sent(sb) == []


async def test_an_opted_out_recipient_is_suppressed_not_sent(tmp_path: Path) -> None:
    sb = build(tmp_path)
    await sb.optouts.put(optout.key("acme", AUDIENCE[1]), optout_record("keyword", "STOP"))
    await fan_out(sb, SEND)
    await dispatch_all(sb, sb.take("dispatch.sms"))
    assert sent(sb) == [AUDIENCE[0], AUDIENCE[2]]
    by_index = {r.index: r for r in reports_of(sb.take("reports"))}
    assert (by_index[1].status, by_index[1].error_code) == ("suppressed", "opted-out")
    assert by_index[0].status == by_index[2].status == "delivered"
