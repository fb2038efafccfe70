"""carrier-lookup: the carrier is recorded only when a report carries it, and only on change."""

from __future__ import annotations

from typing import Any

import pytest

from switchboard.managers.builtin import CARRIER_NAMESPACE, CarrierLookup, carrier_key
from tests.unit.managers import RECIPIENT, CountingState, make_client, report_ctx


def stored(state: CountingState) -> Any:
    return state.get(CARRIER_NAMESPACE, carrier_key("acme", RECIPIENT))


@pytest.mark.parametrize(
    ("detail", "expected"),
    [
        ({"carrier": "Verizon Wireless"}, {"name": "Verizon Wireless"}),
        (
            {
                "carrier": {
                    "name": "T-Mobile",
                    "mobile_country_code": "310",
                    "mobile_network_code": "260",
                }
            },
            {"name": "T-Mobile", "mcc": "310", "mnc": "260"},
        ),
        ({"carrierName": "AT&T Wireless"}, {"name": "AT&T Wireless"}),
        ({"mcc": "310", "mnc": "016"}, {"mcc": "310", "mnc": "016"}),
    ],
)
async def test_the_carrier_is_recorded_when_the_report_carries_it(
    detail: dict[str, Any], expected: dict[str, str]
) -> None:
    state = CountingState()
    await CarrierLookup().on_delivery_report(report_ctx(make_client(), state, detail=detail))
    assert stored(state) == expected | {"seen_at": 1_700_000_000.0}


@pytest.mark.parametrize("detail", [{}, {"twilio_status": "delivered"}, {"carrier": ""}])
async def test_nothing_is_recorded_without_a_carrier(detail: dict[str, Any]) -> None:
    state = CountingState()
    await CarrierLookup().on_delivery_report(report_ctx(make_client(), state, detail=detail))
    assert state.puts == []


async def test_a_steady_carrier_costs_one_write_and_changes_merge() -> None:
    manager, state, client = CarrierLookup(), CountingState(), make_client()
    for status in ("sent", "delivered", "delivered"):
        await manager.on_delivery_report(
            report_ctx(client, state, status=status, detail={"carrier": "Verizon Wireless"})
        )
    assert len(state.puts) == 1
    await manager.on_delivery_report(report_ctx(client, state, detail={"mcc": "311", "mnc": "480"}))
    assert stored(state) == {
        "name": "Verizon Wireless",
        "mcc": "311",
        "mnc": "480",
        "seen_at": 1_700_000_000.0,
    }
    await manager.on_delivery_report(report_ctx(client, state, detail={"carrier": "T-Mobile"}))
    assert stored(state)["name"] == "T-Mobile" and len(state.puts) == 3


async def test_any_status_and_only_phone_channels() -> None:
    state = CountingState()
    client = make_client(email={"provider": "smtp", "from": "a@b.example"})
    failed = report_ctx(
        client,
        state,
        status="undelivered",
        error_code="30003",
        detail={"carrier": "Verizon Wireless"},
    )
    await CarrierLookup().on_delivery_report(failed)  # a failure still tells the carrier
    assert len(state.puts) == 1
    email = report_ctx(
        client, state, channel="email", address="a@b.example", detail={"carrier": "x"}
    )
    await CarrierLookup().on_delivery_report(email)
    assert len(state.puts) == 1
