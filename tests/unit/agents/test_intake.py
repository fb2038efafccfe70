"""The intake agent's rules (``streams/intake.py``) through its real handler, in memory: an
instruction becomes the commands that open its session, a bad one a rejection."""

from __future__ import annotations

from pathlib import Path

from switchboard import records
from tests.unit.agents.harness import build, instruction, run_intake

SEND = {
    "client_id": "acme",
    "transport": {"type": "sms", "message": "Hi"},
    "audience": ["+14155550111", "+14155550112"],
}


async def test_an_instruction_opens_one_session_with_its_audience(tmp_path: Path) -> None:
    sb = build(tmp_path)
    event = instruction(sb, SEND, offset=7)
    await run_intake(sb, [event])
    commands = [r.command() for r in sb.take("sessions")]
    opens = [c for c in commands if isinstance(c, records.OpenSession)]
    assert len(opens) == 1
    assert opens[0].instruction["client_id"] == "acme"
    assert sb.take("rejected") == []
    assert event.acked, "acknowledged once its commands are in Kafka"


async def test_the_same_instruction_processed_again_opens_the_same_session(tmp_path: Path) -> None:
    sb = build(tmp_path)
    await run_intake(sb, [instruction(sb, SEND, offset=3), instruction(sb, SEND, offset=3)])
    ids = {r.command().session_id for r in sb.take("sessions")}
    assert len(ids) == 1, "a replayed instruction keeps its session id"


async def test_an_invalid_instruction_is_rejected_with_its_bytes_and_errors(tmp_path: Path) -> None:
    sb = build(tmp_path)
    bad = {**SEND, "transport": {"type": "sms"}}  # no message
    event = instruction(sb, bad, offset=4)
    await run_intake(sb, [event])
    assert sb.take("sessions") == []
    [rejection] = sb.take("rejected")
    assert rejection.key == b"k"
    assert sb.metrics.instructions.labels("kafka", "rejected")._value.get() == 1
    assert event.acked


async def test_an_unknown_client_and_garbage_are_rejected_and_the_stream_goes_on(
    tmp_path: Path,
) -> None:
    sb = build(tmp_path)
    await run_intake(
        sb,
        [
            instruction(sb, {**SEND, "client_id": "nobody"}, 0),
            instruction(sb, b"\x00not json", 1),
            instruction(sb, SEND, 2),
        ],
    )
    assert len(sb.take("rejected")) == 2
    assert any(r.value for r in sb.take("sessions")), "the good one still opens its session"
