"""Provider failover on the real broker (``streams/failover.py``): a channel that lists
``providers`` behind this worker's circuit breakers, each provider a local HTTP gateway
(``tests/fakes/sms_gateway.py``, ``provider: http``) that can be put in an outage (every
request answered 503).

* ``acme`` sends sms through gateway A, then gateway B;
* ``other`` sends sms through gateway C alone (a list of one: its outages hold its sends).

The circuits open after 3 retryable errors in a row and cool down for 5 s. Sessions are sent
with no retries, so any delivery an outage failed would end ``failed``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from switchboard.clients import api_key_digest
from tests.fakes.background import BackgroundServer
from tests.fakes.sms_gateway import FakeSmsGateway, GatewayReply
from tests.integration.conftest import Keys, WorkerFactory
from tests.integration.harness import TopicReader, Worker, http, wait_for

pytestmark = pytest.mark.kafka

OUTAGE = GatewayReply(status=503, body={"error": "service unavailable"}, times=None)

Gateways = tuple[BackgroundServer[FakeSmsGateway], ...]


@pytest.fixture(scope="module")
def gateways() -> Iterator[Gateways]:
    servers = tuple(BackgroundServer(FakeSmsGateway).start() for _ in range(3))
    yield servers
    for server in servers:
        server.stop()


def provider(url: str) -> dict[str, Any]:
    return {
        "provider": "http",
        "url": f"{url}/send",
        "body": {"to": "{{to}}", "text": "{{body}}"},
        "response": {
            "success_when": {"path": "status", "equals": "ok"},
            "message_id": "data.message_id",
        },
    }


@pytest.fixture(scope="module")
def worker(make_worker: WorkerFactory, keys: Keys, gateways: Gateways) -> Worker:
    a, b, c = (g.url for g in gateways)
    document = {
        "clients": {
            "acme": {
                "api_keys": [api_key_digest(keys.acme)],
                "default_channels": ["sms"],
                "channels": {"sms": {"providers": [provider(a), provider(b)]}},
            },
            "other": {
                "api_keys": [api_key_digest(keys.other)],
                "default_channels": ["sms"],
                "channels": {"sms": {"providers": [provider(c)]}},
            },
        }
    }
    env = {"SWITCHBOARD_CIRCUIT_FAILURES": "3", "SWITCHBOARD_CIRCUIT_COOLDOWN": "5"}
    return make_worker(env, document=document).start()


def outage(gateway: BackgroundServer[FakeSmsGateway], reply: GatewayReply | None) -> None:
    gateway.call(setattr, gateway.fake, "outage", reply)


def answered(gateway: BackgroundServer[FakeSmsGateway], status: int) -> list[str]:
    """The addresses of the requests the gateway answered with ``status``."""
    requests = gateway.call(lambda: list(gateway.fake.requests))
    return [a for r in requests if r.status == status for a in r.addresses]


def gauge(worker: Worker, name: str, **labels: str) -> float | None:
    answer = http("GET", f"{worker.url}/metrics")
    for family in text_string_to_metric_families(str(answer.body)):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return None


def circuit(worker: Worker, client: str, position: int) -> float | None:
    """``switchboard_provider_circuit`` of the client's sms provider: 0 closed, 2 open."""
    return gauge(
        worker, "switchboard_provider_circuit", client=client, channel="sms", position=str(position)
    )


def send_during_outage(
    worker: Worker, key: str, gateway: BackgroundServer[FakeSmsGateway], audience: list[str]
) -> str:
    """Put ``gateway`` in an outage, then send "Hi" to ``audience``; the session's id."""
    outage(gateway, OUTAGE)
    return worker.send_sms(key, audience)


def numbers(first: int, count: int) -> list[str]:
    return [f"+1415557{first + i:04d}" for i in range(count)]


def test_while_the_first_provider_fails_sends_go_to_the_second_and_none_fails(
    worker: Worker, statuses: TopicReader, keys: Keys, gateways: Gateways
) -> None:
    a, b, _ = gateways
    audience = numbers(0, 20)
    session_id = send_during_outage(worker, keys.acme, a, audience)
    session = worker.wait_completed(session_id, keys.acme)
    assert session["counts"] == {"delivered": 20}, "an outage of the first provider failed sends"
    assert sorted(answered(b, 200)) == sorted(audience), "each went once, via the second"
    assert circuit(worker, "acme", 0) == 2, "open"
    delivered = statuses.wait(
        lambda e: e["session_id"] == session_id and e["status"] == "delivered", count=20
    )
    assert {e["detail"].get("provider_position") for e in delivered} == {1}

    # The circuit is open: the next session's sends go straight to the second provider (all
    # 20 of the first were in flight together, so each met the outage); the first provider
    # gets at most a trial, if the cool-down ended meanwhile.
    failed_before = len(answered(a, 503))
    more = numbers(20, 20)
    done = worker.wait_completed(worker.send_sms(keys.acme, more), keys.acme)
    assert done["counts"] == {"delivered": 20}
    assert len(answered(a, 503)) - failed_before <= 1
    assert set(more) <= set(answered(b, 200))

    # The first provider recovers: after its cool-down, a trial closes its circuit again, and
    # sends go back to it.
    outage(a, None)
    later = iter(numbers(100, 50))

    def back_on_the_first() -> bool:
        address = next(later)
        worker.wait_completed(worker.send_sms(keys.acme, [address]), keys.acme)
        return address in answered(a, 200)

    wait_for(back_on_the_first, 60, 0.5, "sends to go back to the first provider")
    assert circuit(worker, "acme", 0) == 0, "closed"


def test_a_permanent_error_for_one_message_does_not_move_the_channel(
    worker: Worker, keys: Keys, gateways: Gateways
) -> None:
    a, b, _ = gateways
    refused = numbers(200, 5)
    for address in refused:
        a.call(a.fake.script, address, GatewayReply(status=400, body={"error": "invalid number"}))
    session_id = worker.send_sms(keys.acme, refused)
    assert worker.wait_completed(session_id, keys.acme)["counts"] == {"failed": 5}
    assert not set(refused) & set(answered(b, 200)), "a permanent error is not failed over"
    assert circuit(worker, "acme", 0) == 0, "still closed"


def test_the_only_provider_down_holds_its_sends_and_spends_no_attempt(
    worker: Worker, statuses: TopicReader, keys: Keys, gateways: Gateways
) -> None:
    c = gateways[2]
    audience = numbers(300, 10)
    session_id = send_during_outage(worker, keys.other, c, audience)
    wait_for(lambda: circuit(worker, "other", 0) == 2, 60, 0.2, "the circuit to open")
    # Held: a trial fails each cool-down, and the session stays open meanwhile.
    failed_before = len(answered(c, 503))
    wait_for(lambda: len(answered(c, 503)) >= failed_before + 2, 60, 0.2, "two more trials")
    assert worker.session(session_id, keys.other).body["status"] != "completed"
    assert (gauge(worker, "switchboard_provider_held_sends", channel="sms") or 0) > 0
    outage(c, None)
    session = worker.wait_completed(session_id, keys.other)
    assert session["counts"] == {"delivered": 10}
    statuses.wait(lambda e: e["session_id"] == session_id and e["status"] == "completed")
    events = statuses.matching(lambda e: e["session_id"] == session_id and e["channel"] == "sms")
    assert {e["attempt"] for e in events if e["status"] != "accepted"} == {1}, "no attempt spent"
    assert "failed" not in {e["status"] for e in events}
    assert sorted(answered(c, 200)) == sorted(audience), "each sent once"
