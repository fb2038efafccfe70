"""The circuit breaker of provider failover (``switchboard/circuit.py``) and a channel's
``providers`` list in the client configuration."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from switchboard.circuit import (
    CLOSED,
    Breaker,
    Circuit,
    admit,
    choose,
    failed,
    next_trial_at,
    succeeded,
    trial_abandoned,
)
from switchboard.clients import ChannelConfig, parse_client
from switchboard.errors import ConfigError

B = Breaker(failures=3, cooldown=10.0)


def opened(at: float = 100.0) -> Circuit:
    return Circuit("open", 0, at)


def test_a_run_of_retryable_errors_opens_it() -> None:
    circuit = CLOSED
    for n in range(1, 3):
        circuit = failed(circuit, 100.0, B)
        assert circuit.state == "closed" and circuit.failures == n
    assert failed(circuit, 100.0, B) == opened(100.0)


def test_an_answer_between_errors_starts_the_run_again() -> None:
    circuit = failed(failed(CLOSED, 0, B), 0, B)
    assert succeeded(circuit) == CLOSED, "a permanent error or a send: the provider answers"
    assert failed(succeeded(circuit), 0, B).state == "closed"


def test_an_open_circuit_admits_one_trial_after_its_cool_down() -> None:
    circuit = opened(100.0)
    assert admit(circuit, 109.9, B) is None, "still cooling down"
    trial = admit(circuit, 110.0, B)
    assert trial == Circuit("half-open", 0, 100.0, trial=True)
    assert admit(trial, 111.0, B) is None, "one trial at a time"
    assert succeeded(trial) == CLOSED, "the trial answered"
    assert failed(trial, 111.0, B) == opened(111.0), "the trial failed: a new cool-down"
    assert admit(trial_abandoned(trial), 111.0, B) is not None, "an abandoned trial frees it"


def test_a_failure_of_a_send_admitted_before_it_opened_changes_nothing() -> None:
    assert failed(opened(100.0), 105.0, B) == opened(100.0)


def test_choose_takes_the_first_provider_that_admits() -> None:
    assert choose([CLOSED, CLOSED], 0, B) == (0, CLOSED)
    assert choose([opened(100.0), CLOSED], 105.0, B) == (1, CLOSED), "failover"
    assert choose([opened(100.0), CLOSED], 110.0, B) == (0, admit(opened(100.0), 110.0, B))
    assert choose([CLOSED, CLOSED], 0, B, frozenset({0})) == (1, CLOSED), "tried already"
    assert choose([opened(100.0), opened(101.0)], 105.0, B) is None, "hold"
    assert next_trial_at([opened(100.0), opened(101.0), CLOSED], B) == 110.0
    assert next_trial_at([CLOSED], B) is None


@st.composite
def events(draw: st.DrawFn) -> list[tuple[str, float]]:
    steps = draw(st.lists(st.sampled_from(["admit", "fail", "answer", "abandon"]), max_size=60))
    gaps = draw(st.lists(st.floats(0, 15), min_size=len(steps), max_size=len(steps)))
    return list(zip(steps, gaps, strict=True))


@given(events())
def test_any_sequence_keeps_the_invariants(steps: list[tuple[str, float]]) -> None:
    """Whatever happens: a closed circuit admits every send; an open one admits nothing before
    its cool-down ends; a half-open one admits exactly one trial; the failure count stays
    under the threshold; an answer always closes it."""
    circuit, now = CLOSED, 0.0
    for step, gap in steps:
        now += gap
        if step == "admit":
            admitted = admit(circuit, now, B)
            if circuit.state == "closed":
                assert admitted == circuit
            elif circuit.state == "open":
                assert (admitted is None) is (now < circuit.opened_at + B.cooldown)
            else:
                assert (admitted is None) is circuit.trial
            circuit = admitted or circuit
        elif step == "fail":
            circuit = failed(circuit, now, B)
        elif step == "answer":
            circuit = succeeded(circuit)
            assert circuit == CLOSED
        else:
            circuit = trial_abandoned(circuit)
        assert 0 <= circuit.failures < B.failures
        assert not circuit.trial or circuit.state == "half-open"


# -- the providers list in clients.yaml ----------------------------------------------------------


def test_a_channel_lists_providers_in_order() -> None:
    client = parse_client(
        "acme",
        {
            "default_channels": ["sms"],
            "channels": {
                "sms": {
                    "providers": [
                        {"provider": "twilio", "from": ["+14155550100"]},
                        {"provider": "http", "url": "https://gw.example"},
                    ]
                }
            },
        },
    )
    sms = client.channels["sms"]
    assert (sms.provider, dict(sms.options)) == ("twilio", {"from": ["+14155550100"]})
    assert sms.providers == (
        ChannelConfig("twilio", {"from": ["+14155550100"]}),
        ChannelConfig("http", {"url": "https://gw.example"}),
    )
    assert parse_client("acme", client.to_json()) == client, "the topic's form round-trips"


def test_a_single_provider_has_no_breaker_and_a_list_of_one_has() -> None:
    plain = parse_client("a", {"channels": {"sms": {"provider": "sandbox"}}})
    listed = parse_client("a", {"channels": {"sms": {"providers": [{"provider": "sandbox"}]}}})
    assert plain.channels["sms"].failover is None and listed.channels["sms"].failover == ()
    assert listed.channels["sms"].to_json() == {"providers": [{"provider": "sandbox"}]}


@pytest.mark.parametrize(
    ("sms", "where", "what"),
    [
        ({"providers": []}, "sms.providers", "list of 1 to 5"),
        ({"providers": [{"provider": "sandbox"}] * 6}, "sms.providers", "list of 1 to 5"),
        (
            {"providers": [{"provider": "sandbox"}, {"url": "x"}]},
            "sms.providers[1]",
            "with a provider",
        ),
        ({"providers": [{"provider": "sandbox"}], "from": "x"}, "sms", "no other keys"),
    ],
)
def test_a_bad_providers_list_is_refused_with_where_and_why(
    sms: object, where: str, what: str
) -> None:
    with pytest.raises(ConfigError) as info:
        parse_client("a", {"channels": {"sms": sms}})
    assert f"clients.a.channels.{where}" in str(info.value) and what in str(info.value)
