"""transports.sandbox: records what would be sent, answers delivered, misbehaves on request."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from transports.base import OutboundMessage, SendResult, Transport
from transports.errors import PermanentError, RetryableError, SuppressedError
from transports.sandbox import SandboxTransport


def message(attempt: int = 1, sandbox: Any = None, **kwargs: Any) -> OutboundMessage:
    extras = dict(kwargs.pop("extras", {}))
    if sandbox is not None:
        extras["sandbox"] = sandbox
    kwargs.setdefault("body", "Hello Ana")
    return OutboundMessage(
        channel="sms",
        to="+14155550100",
        sender="+14155550199",
        reference="s1/0/sms",
        attempt=attempt,
        extras=extras,
        **kwargs,
    )


def test_is_a_transport() -> None:
    assert isinstance(SandboxTransport("sms"), Transport)
    assert SandboxTransport("sms").name == "sandbox"


async def test_records_in_memory_and_answers_delivered() -> None:
    sandbox = SandboxTransport("sms")
    result = await sandbox.send(
        message(subject="S", file_url="https://example.com/a.jpg", attempt=2)
    )
    assert isinstance(result, SendResult)
    assert result.status == "delivered"
    assert result.provider_message_id is not None
    assert result.provider_message_id.startswith("sandbox-")
    assert result.detail == {"sandbox": True, "from": "+14155550199"}, "tells its sender"
    (record,) = sandbox.sent
    assert record["provider_message_id"] == result.provider_message_id
    assert {k: v for k, v in record.items() if k not in ("provider_message_id", "at")} == {
        "channel": "sms",
        "to": "+14155550100",
        "from": "+14155550199",
        "subject": "S",
        "body": "Hello Ana",
        "file_url": "https://example.com/a.jpg",
        "reference": "s1/0/sms",
        "attempt": 2,
        "messaging_service_sid": None,
        "send_as_mms": False,
    }
    assert abs(record["at"] - time.time()) < 60


async def test_provider_ids_are_unique() -> None:
    sandbox = SandboxTransport("sms")
    ids = {(await sandbox.send(message())).provider_message_id for _ in range(20)}
    assert len(ids) == 20


async def test_keeps_only_the_most_recent() -> None:
    sandbox = SandboxTransport("sms", keep=3)
    for i in range(5):
        await sandbox.send(message(body=f"m{i}"))
    assert [r["body"] for r in sandbox.sent] == ["m2", "m3", "m4"]


async def test_outbox_gets_one_json_line_per_send(tmp_path: Path) -> None:
    outbox = tmp_path / "nested" / "dir" / "outbox.jsonl"
    sandbox = SandboxTransport("email", outbox=outbox)
    await sandbox.send(message(body="Grüße ✓"))
    await sandbox.send(message(body="second"))
    lines = outbox.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert first["body"] == "Grüße ✓"
    assert first["to"] == "+14155550100"
    assert json.loads(lines[1])["body"] == "second"
    assert "Grüße" in lines[0]  # written as UTF-8, not escaped


@pytest.mark.parametrize(
    ("kind", "error"),
    [("retryable", RetryableError), ("permanent", PermanentError), ("suppressed", SuppressedError)],
)
async def test_simulated_failure(kind: str, error: type[Exception]) -> None:
    sandbox = SandboxTransport("sms")
    with pytest.raises(error) as info:
        await sandbox.send(message(sandbox={"fail": kind}))
    assert type(info.value) is error
    assert info.value.code == f"sandbox-{kind}"  # type: ignore[attr-defined]
    assert not sandbox.sent  # nothing "sent"


async def test_failure_classes_are_distinguishable() -> None:
    sandbox = SandboxTransport("sms")
    with pytest.raises(RetryableError) as retry:
        await sandbox.send(message(sandbox={"fail": "retryable"}))
    assert retry.value.retryable and not retry.value.suppressed
    with pytest.raises(PermanentError) as perm:
        await sandbox.send(message(sandbox={"fail": "permanent"}))
    assert not perm.value.retryable and not perm.value.suppressed
    assert not isinstance(perm.value, SuppressedError)
    with pytest.raises(SuppressedError) as supp:
        await sandbox.send(message(sandbox={"fail": "suppressed"}))
    assert supp.value.suppressed and not supp.value.retryable


async def test_fail_attempts_then_succeed() -> None:
    sandbox = SandboxTransport("sms")
    behaviour = {"fail": "retryable", "fail_attempts": 2}
    for attempt in (1, 2):
        with pytest.raises(RetryableError):
            await sandbox.send(message(attempt=attempt, sandbox=behaviour))
    result = await sandbox.send(message(attempt=3, sandbox=behaviour))
    assert result.status == "delivered"
    assert [r["attempt"] for r in sandbox.sent] == [3]


async def test_fail_attempts_zero_never_fails() -> None:
    result = await SandboxTransport("sms").send(
        message(sandbox={"fail": "permanent", "fail_attempts": 0})
    )
    assert result.status == "delivered"


@pytest.mark.parametrize("behaviour", [{"fail": "explode"}, {}, {"fail": None}, "fail", ["fail"]])
async def test_unknown_or_malformed_behaviour_is_ignored(behaviour: Any) -> None:
    result = await SandboxTransport("sms").send(message(sandbox=behaviour))
    assert result.status == "delivered"


@pytest.mark.parametrize("fail", [["retryable"], {"kind": "retryable"}])
async def test_unhashable_fail_value_is_ignored_not_a_crash(fail: Any) -> None:
    # Pins a fixed bug. Before the fix: `kind in _FAILURES` raises TypeError (unhashable) for a list or object, so a JSON
    # instruction with extras.sandbox.fail = [...] makes the sandbox raise a non-TransportError.
    result = await SandboxTransport("sms").send(message(sandbox={"fail": fail}))
    assert result.status == "delivered"


async def test_delay_ms() -> None:
    sandbox = SandboxTransport("sms")
    started = time.monotonic()
    await sandbox.send(message(sandbox={"delay_ms": 60}))
    assert time.monotonic() - started >= 0.05


async def test_delay_then_fail() -> None:
    started = time.monotonic()
    with pytest.raises(RetryableError):
        await SandboxTransport("sms").send(message(sandbox={"delay_ms": 30, "fail": "retryable"}))
    assert time.monotonic() - started >= 0.02


@pytest.mark.parametrize("delay", [0, -5, "1000", None])
async def test_non_positive_or_non_numeric_delay_is_no_delay(delay: Any) -> None:
    started = time.monotonic()
    await SandboxTransport("sms").send(message(sandbox={"delay_ms": delay}))
    assert time.monotonic() - started < 0.5


async def test_aclose() -> None:
    assert await SandboxTransport("sms").aclose() is None
