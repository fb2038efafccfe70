"""Manager state (MemoryState, KeyValueState) and the contexts built from Switchboard's records."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from switchboard.managers import (
    CarrierInfo,
    KeyValueState,
    MemoryState,
    ReportContext,
    SendContext,
    SendMessage,
    carrier_from_detail,
)
from switchboard.records import DispatchJob, Report
from tests.unit.managers import make_client

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=10,
)


class BytesDict:
    """A bytes table, as streams.replica.KeyValueReplica is one."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}

    def get(self, key: bytes) -> bytes | None:
        return self.data.get(key)

    async def put(
        self, key: bytes, value: bytes | None, *, wait_applied: float | None = None
    ) -> bool:
        if value is None:
            self.data.pop(key, None)
        else:
            self.data[key] = value
        return True


async def test_memory_state_round_trips_json_and_none_deletes() -> None:
    state = MemoryState()
    assert state.get("ns", "k") is None
    await state.put("ns", "k", {"sender": "+14155550100", "n": [1, 2]})
    await state.put("other", "k", "x")
    assert state.get("ns", "k") == {"sender": "+14155550100", "n": [1, 2]}
    assert state.namespace("ns") == {"k": {"sender": "+14155550100", "n": [1, 2]}}
    assert len(state) == 2
    await state.put("ns", "k", None)
    assert state.get("ns", "k") is None and len(state) == 1
    await state.put("ns", "never-there", None)  # deleting nothing is fine


async def test_memory_state_behaves_like_the_replicated_one() -> None:
    state = MemoryState()
    value: dict[str, Any] = {"list": (1, 2)}
    await state.put("ns", "k", value)
    value["list"] = "changed after the write"
    got = state.get("ns", "k")
    assert got == {"list": [1, 2]}  # a copy, and a tuple comes back as a list
    got["list"].append(3)
    assert state.get("ns", "k") == {"list": [1, 2]}  # changing a read changes nothing
    with pytest.raises(TypeError, match="JSON values only"):
        await state.put("ns", "k", {"when": object()})
    with pytest.raises(TypeError, match="JSON values only"):
        await state.put("ns", "k", math.nan)


@given(json_values)
def test_memory_and_key_value_state_agree(value: Any) -> None:
    import asyncio

    async def both() -> tuple[Any, Any]:
        memory, table = MemoryState(), BytesDict()
        kv = KeyValueState(table)
        await memory.put("ns", "key", value)
        await kv.put("ns", "key", value)
        return memory.get("ns", "key"), kv.get("ns", "key")

    in_memory, replicated = asyncio.run(both())
    assert in_memory == replicated


async def test_key_value_state_keys_and_values() -> None:
    table = BytesDict()
    state = KeyValueState(table, prefix="sm/")
    await state.put("sticky-sender", "acme/sms/+14155550199", {"sender": "+14155550100"})
    assert table.data == {b"sm/sticky-sender/acme/sms/+14155550199": b'{"sender":"+14155550100"}'}
    assert state.get("sticky-sender", "acme/sms/+14155550199") == {"sender": "+14155550100"}
    await state.put("sticky-sender", "acme/sms/+14155550199", None)
    assert table.data == {}
    for bad in ("", "a/b"):
        with pytest.raises(ValueError, match="namespace"):
            state.get(bad, "k")


def test_send_message_from_a_job_and_back_to_the_transport() -> None:
    job = DispatchJob(
        session_id="s1",
        client_id="acme",
        channel="sms",
        index=3,
        address="+14155550199",
        attempt=2,
        message="Hi",
        file_url="https://x/y.png",
        extras={"media": True, "nested": {"a": 1}},
    )
    ctx = SendContext.for_job(job, make_client(), MemoryState())
    assert (ctx.address, ctx.session_id, ctx.attempt, ctx.channel) == (
        "+14155550199",
        "s1",
        2,
        "sms",
    )
    message = ctx.message
    assert (message.body, message.file_url, message.sender, message.send_as_mms) == (
        "Hi",
        "https://x/y.png",
        None,
        False,
    )
    message.extras["nested"]["a"] = 2
    assert job.extras["nested"] == {"a": 1}  # the job is never changed through the message
    message.sender = "+14155550100"
    message.send_as_mms = True
    message.messaging_service_sid = "MG" + "0" * 32
    assert message.transport_fields() == {
        "body": "Hi",
        "subject": None,
        "file_url": "https://x/y.png",
        "extras": {
            "media": True,
            "nested": {"a": 2},
            "send_as_mms": True,
            "messaging_service_sid": "MG" + "0" * 32,
        },
        "sender": "+14155550100",
    }


def test_send_as_mms_from_the_instruction_is_kept_and_can_be_cleared() -> None:
    job = DispatchJob(
        session_id="s1",
        client_id="acme",
        channel="sms",
        index=0,
        address="+14155550199",
        attempt=1,
        message="Hi",
        extras={"send_as_mms": True},
    )
    message = SendMessage.from_job(job)
    assert message.send_as_mms
    message.send_as_mms = False
    assert "send_as_mms" not in message.transport_fields()["extras"]


def test_report_context_takes_the_sender_from_the_detail() -> None:
    report = Report(
        session_id="s1",
        client_id="acme",
        channel="sms",
        index=0,
        address="+14155550199",
        status="delivered",
        provider_message_id="SM1",
        detail={"From": "+14155550101", "carrier": "Verizon"},
        occurred_at=5.0,
    )
    ctx = ReportContext.from_report(report, make_client(), MemoryState())
    assert (ctx.sender, ctx.status, ctx.occurred_at) == ("+14155550101", "delivered", 5.0)
    assert ctx.carrier == CarrierInfo(name="Verizon")
    explicit = ReportContext.from_report(report, make_client(), MemoryState(), sender="+1415")
    assert explicit.sender == "+1415"
    bare = Report(
        session_id="s1", client_id="acme", channel="sms", index=0, address="+1", status="delivered"
    )
    assert ReportContext.from_report(bare, make_client(), MemoryState()).sender is None


@pytest.mark.parametrize(
    ("detail", "expected"),
    [
        ({}, None),
        ({"twilio_status": "delivered"}, None),
        ({"carrier": "T-Mobile USA, Inc."}, CarrierInfo(name="T-Mobile USA, Inc.")),
        (
            {
                "carrier": {
                    "name": "Verizon Wireless",
                    "mobile_country_code": "311",
                    "mobile_network_code": "480",
                    "type": "mobile",
                }
            },
            CarrierInfo("Verizon Wireless", "311", "480"),
        ),
        (
            {"carrier_name": "AT&T", "mobile_country_code": 310, "mobile_network_code": "016"},
            CarrierInfo("AT&T", "310", "016"),
        ),
        ({"carrierName": "Bandwidth"}, CarrierInfo(name="Bandwidth")),
        ({"mcc": "310", "mnc": "260"}, CarrierInfo(None, "310", "260")),
        ({"carrier": "  ", "mcc": True, "mnc": None}, None),
        ({"carrier": {"name": None}}, None),
        ({"name": "Ana", "type": "mobile"}, None),  # not a carrier's fields
    ],
)
def test_carrier_from_detail(detail: dict[str, Any], expected: CarrierInfo | None) -> None:
    assert carrier_from_detail(detail) == expected


@given(
    st.dictionaries(
        st.sampled_from(
            [
                "carrier",
                "carrier_name",
                "carrierName",
                "mcc",
                "mnc",
                "mobile_country_code",
                "name",
                "x",
            ]
        ),
        json_values,
    )
)
def test_carrier_from_detail_never_raises(detail: dict[str, Any]) -> None:
    info = carrier_from_detail(detail)
    if info is not None:
        assert info.as_dict() and all(isinstance(v, str) and v for v in info.as_dict().values())
        json.dumps(info.as_dict())
