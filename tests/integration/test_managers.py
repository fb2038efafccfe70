"""Service managers end to end on the real broker (issue 7): the built-ins through the sandbox
and through the real Twilio transport against a fake Twilio (Lookup included), and third-party
managers installed as entry points (one that raises, one that scrubs or blocks)."""

from __future__ import annotations

import itertools
import json
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streams.clients import publish_clients
from switchboard.clients import api_key_digest, parse_client
from switchboard.managers import DETAIL_KEY
from switchboard.managers.builtin import pick_sender
from switchboard.settings import Settings
from tests.fakes.background import BackgroundServer
from tests.fakes.managers import install
from tests.fakes.twilio_server import TEST_ACCOUNT_SID, TEST_AUTH_TOKEN, FakeTwilioServer
from tests.integration.conftest import WorkerFactory
from tests.integration.harness import TopicReader, Worker, gauge, status_reader, wait_for

pytestmark = pytest.mark.kafka

X, Y, Z = "+14155550101", "+14155550102", "+14155550103"
SERVICE_SID = "MG" + "0123456789abcdef" * 2
_numbers = itertools.count(int(time.time()) % 200_000 + 100_000)


def number() -> str:
    """A fresh number, never ending in 0000 or 9999 (the gate manager's triggers)."""
    while True:
        n = next(_numbers)
        candidate = f"+1415{300 + n // 10_000:03d}{n % 10_000:04d}"
        if not candidate.endswith(("0000", "9999")):
            return candidate


KEYS = {
    name: f"{name}-{secrets.token_hex(8)}"
    for name in ("sticky", "picker", "mms", "services", "fragile", "gated", "scrubbed")
}


def sandbox_client(
    name: str, managers: list[str] | None, pool: list[str], **sms: Any
) -> dict[str, Any]:
    """A client with sandbox SMS from ``pool``; ``managers`` None: the global list applies."""
    client = {
        "api_keys": [api_key_digest(KEYS[name])],
        "default_channels": ["sms"],
        "channels": {"sms": {"provider": "sandbox", "from": pool, **sms}},
    }
    if managers is not None:
        client["service_managers"] = managers
    return client


@pytest.fixture(scope="module")
def worker(
    make_worker: WorkerFactory,
    twilio: BackgroundServer[FakeTwilioServer],
    tmp_path_factory: pytest.TempPathFactory,
) -> Worker:
    plugins = install(tmp_path_factory.mktemp("plugins"))
    outbox = tmp_path_factory.mktemp("outbox") / "outbox.jsonl"
    twilio_sms = {
        "provider": "twilio",
        "account_sid": TEST_ACCOUNT_SID,
        "auth_token_env": "SCRUB_TWILIO_TOKEN",
        "from": [X],
        "api_base": twilio.url,
        "rate_per_second": 50,
    }
    document = {
        "clients": {
            "sticky": sandbox_client("sticky", ["sticky-sender", "numpicker-basic"], [X]),
            "picker": sandbox_client("picker", ["numpicker-basic", "sticky-sender"], [X]),
            "mms": sandbox_client("mms", None, [X]),  # the global list (SERVICE_MANAGERS) applies
            "services": sandbox_client(
                "services",
                ["numpicker-basic", "per-client-messageservices"],
                [X, Y],
                messaging_service_sid=SERVICE_SID,
            ),
            "fragile": sandbox_client("fragile", ["explode", "numpicker-basic"], [X, Y, Z]),
            "gated": sandbox_client("gated", ["gate"], [X]),
            "scrubbed": {
                "api_keys": [api_key_digest(KEYS["scrubbed"])],
                "default_channels": ["sms"],
                "channels": {"sms": twilio_sms},
                "service_managers": ["scrub-bad-mobilenums"],
            },
        }
    }
    pythonpath = os.pathsep.join(p for p in (str(plugins), os.environ.get("PYTHONPATH")) if p)
    env = {
        "SWITCHBOARD_SANDBOX_OUTBOX": str(outbox),
        "SERVICE_MANAGERS": "mms-when-cheaper",
        "SWITCHBOARD_SERVICE_MANAGER_OPTIONS": json.dumps({"mms-when-cheaper": {"ratio": 2.5}}),
        "SCRUB_TWILIO_TOKEN": TEST_AUTH_TOKEN,
        "PYTHONPATH": pythonpath,
    }
    return make_worker(env, document=document).start()


@pytest.fixture(scope="module")
def statuses(kafka: Any, worker: Worker) -> Iterator[TopicReader]:
    reader = status_reader(kafka.bootstrap_servers, worker.topic("status"))
    yield reader
    reader.close()


@pytest.fixture(scope="module")
def memory(kafka: Any, worker: Worker) -> Iterator[TopicReader]:
    """The managers' state topic, as (key, value) records."""

    def decode(msg: Any) -> tuple[str, Any, int, int]:
        value = msg.value()
        return (
            msg.key().decode(),
            json.loads(value) if value is not None else None,
            msg.partition(),
            msg.offset(),
        )

    reader = TopicReader(kafka.bootstrap_servers, worker.topic("manager-state"), decode)
    yield reader
    reader.close()


def remembered(worker: Worker, memory: TopicReader, *keys: str) -> None:
    """Wait until the managers wrote ``keys``, and ``worker`` applied those writes (its
    ``switchboard_replica_position`` gauge, refreshed every few seconds, passed them)."""
    written = memory.wait(lambda r: r[0] in keys, len(keys))
    topic = worker.topic("manager-state")

    def applied() -> bool:
        return all(
            (gauge(worker, "switchboard_replica_position", topic=topic, partition=str(p)) or 0)
            > offset
            for _, _, p, offset in written
        )

    wait_for(applied, 30, 0.5, f"the worker to apply {', '.join(keys)}")


def send(worker: Worker, client: str, audience: list[str], message: str = "Hi") -> str:
    answer = worker.post(
        {"transport": {"type": "sms", "message": message}, "audience": audience}, KEYS[client]
    )
    assert answer.status == 202, answer.body
    return str(answer.body["session_id"])


def outbox(worker: Worker, address: str) -> list[dict[str, Any]]:
    path = Path(worker.env()["SWITCHBOARD_SANDBOX_OUTBOX"])
    lines = path.read_text().splitlines() if path.exists() else []
    return [r for r in map(json.loads, lines) if r["to"] == address]


def completed(statuses: TopicReader, session_id: str) -> dict[str, Any]:
    return statuses.wait(
        lambda e: e["session_id"] == session_id and e["status"] == "completed", 1, 60
    )[0]


def events(statuses: TopicReader, session_id: str, address: str | None = None) -> list[Any]:
    return statuses.matching(
        lambda e: e["session_id"] == session_id and (address is None or e["recipient"] == address)
    )


def far_from(pool: list[str], avoid: str) -> str:
    """A fresh number the picker would not send to from ``avoid``."""
    while pick_sender(pool, candidate := number()) == avoid:
        pass
    return candidate


# -- sticky-sender and numpicker-basic ---------------------------------------------------------


def test_sticky_sender_listed_first_wins_and_listed_after_the_picker_never_applies(
    worker: Worker, kafka: Any, statuses: TopicReader, memory: TopicReader
) -> None:
    grown = [X, Y, Z]
    recipient = far_from(grown, X)  # once the pool grows, the picker would choose Y or Z
    # 1. With a pool of one, both clients reach the recipient from X; sticky-sender (in both
    #    lists) remembers X on the delivered report.
    for client in ("sticky", "picker"):
        completed(statuses, send(worker, client, [recipient]))
    assert [r["from"] for r in outbox(worker, recipient)] == [X, X]
    remembered(
        worker,
        memory,
        f"sticky-sender/sticky/sms/{recipient}",
        f"sticky-sender/picker/sms/{recipient}",
    )

    # 2. The pool grows, through the clients topic, while the worker runs.
    settings = Settings.from_env(
        bootstrap_servers=kafka.bootstrap_servers, topic_prefix=worker.prefix
    )
    publish_clients(
        settings,
        [
            parse_client(name, sandbox_client(name, managers, grown))
            for name, managers in (
                ("sticky", ["sticky-sender", "numpicker-basic"]),
                ("picker", ["numpicker-basic", "sticky-sender"]),
            )
        ],
    )

    def grown_pool_applied() -> bool:
        probe = far_from(grown, X)
        completed(statuses, send(worker, "picker", [probe]))
        return outbox(worker, probe)[-1]["from"] != X

    wait_for(grown_pool_applied, 30, 0.5, "the grown pool to apply")

    # 3. Sticky first: the remembered X. Picker first: its pick; sticky-sender never applies.
    completed(statuses, send(worker, "sticky", [recipient]))
    completed(statuses, send(worker, "picker", [recipient]))
    sticky_send, picker_send = outbox(worker, recipient)[-2:]
    assert sticky_send["from"] == X
    assert picker_send["from"] == pick_sender(grown, recipient) != X

    # 4. A new recipient of the sticky client gets the picker's choice, and keeps it.
    newcomer = far_from(grown, X)
    for _ in range(2):
        completed(statuses, send(worker, "sticky", [newcomer]))
    assert [r["from"] for r in outbox(worker, newcomer)] == [pick_sender(grown, newcomer)] * 2


# -- mms-when-cheaper (global list, with an option) and per-client-messageservices --------------


def test_the_global_list_sends_a_long_text_as_one_mms(
    worker: Worker, statuses: TopicReader
) -> None:
    short, long = number(), number()
    completed(statuses, send(worker, "mms", [short], "Hi"))
    # 400 GSM-7 characters: 3 segments of 153, more than the configured ratio of 2.5.
    completed(statuses, send(worker, "mms", [long], "x" * 400))
    assert outbox(worker, short)[0]["send_as_mms"] is False
    assert outbox(worker, long)[0]["send_as_mms"] is True


def test_per_client_messageservices_overrides_the_picked_number(
    worker: Worker, statuses: TopicReader
) -> None:
    address = number()
    completed(statuses, send(worker, "services", [address]))
    [sent] = outbox(worker, address)
    assert sent["messaging_service_sid"] == SERVICE_SID and sent["from"] is None


# -- a manager that raises -----------------------------------------------------------------------


def test_a_manager_that_raises_is_reported_and_the_message_still_goes_out_unchanged(
    worker: Worker, statuses: TopicReader
) -> None:
    address = number()
    session_id = send(worker, "fragile", [address], "Hello there")
    assert completed(statuses, session_id)["detail"]["counts"] == {"delivered": 1}
    [sent] = outbox(worker, address)
    assert sent["body"] == "Hello there", "the failed hook's change was undone"
    assert sent["from"] == pick_sender([X, Y, Z], address), "the managers after it still ran"
    delivered = next(e for e in events(statuses, session_id, address) if e["status"] == "delivered")
    assert delivered["detail"][DETAIL_KEY] == [
        "explode.on_message_send: RuntimeError: boom",
        "explode.on_delivery_report: ValueError: report boom",
    ]


# -- on_session_start: scrub and block (third-party) --------------------------------------------


def test_a_session_start_manager_scrubs_recipients_or_blocks_the_session(
    worker: Worker, statuses: TopicReader
) -> None:
    kept, scrubbed = number(), number()[:-4] + "9999"
    session_id = send(worker, "gated", [kept, scrubbed])
    done = completed(statuses, session_id)
    assert done["detail"]["counts"] == {"delivered": 1, "suppressed": 1}
    [suppressed] = [e for e in events(statuses, session_id, scrubbed)]
    assert (suppressed["status"], suppressed["error_code"], suppressed["error"]) == (
        "suppressed",
        "scrubbed",
        "test scrub",
    )
    assert suppressed["detail"] == {"service_manager": "gate", "reason": "scrubbed"}
    accepted = next(e for e in events(statuses, session_id, kept) if e["status"] == "accepted")
    assert accepted["detail"] == {"gate": {"seen": 2}}
    assert outbox(worker, scrubbed) == [] and len(outbox(worker, kept)) == 1

    innocent, forbidden = number(), number()[:-4] + "0000"
    blocked = send(worker, "gated", [innocent, forbidden])
    done = completed(statuses, blocked)
    assert done["detail"]["counts"] == {"cancelled": 2}
    [session_event] = [
        e
        for e in events(statuses, blocked)
        if e["status"] == "cancelled" and e["recipient"] is None
    ]
    assert (session_event["error_code"], session_event["detail"]["reason"]) == ("blocked",) * 2
    assert session_event["error"] == "gate: a number ending in 0000 is not allowed"
    for address in (innocent, forbidden):
        [cancelled] = events(statuses, blocked, address)
        assert cancelled["status"] == "cancelled" and cancelled["error_code"] == "blocked"
        assert cancelled["detail"]["reason"] == "blocked"
        assert outbox(worker, address) == []


# -- scrub-bad-mobilenums, through Twilio Lookup --------------------------------------------------


def test_scrubbing_looks_each_number_up_once_and_removes_landlines_and_invalid_numbers(
    worker: Worker,
    statuses: TopicReader,
    memory: TopicReader,
    twilio: BackgroundServer[FakeTwilioServer],
) -> None:
    mobile, landline, invalid = number(), number(), number()
    twilio.call(lambda: twilio.fake.line_types.update({landline: "landline", invalid: "invalid"}))

    def outcome(session_id: str, address: str) -> dict[str, Any]:
        return statuses.wait(
            lambda e: (
                e["session_id"] == session_id
                and e["recipient"] == address
                and e["status"] in ("sent", "suppressed")
            )
        )[0]

    first = send(worker, "scrubbed", [mobile, landline, invalid])
    assert outcome(first, mobile)["status"] == "sent"
    for address, reason in ((landline, "landline"), (invalid, "invalid")):
        event = outcome(first, address)
        assert (event["status"], event["error_code"]) == ("suppressed", "scrubbed")
        assert event["error"].startswith(reason)
    accepted = statuses.wait(lambda e: e["session_id"] == first and e["status"] == "accepted")[0]
    assert accepted["detail"] == {"scrub-bad-mobilenums": {"cached": 0, "looked_up": 3}}
    counts = twilio.call(twilio.fake.lookup_counts)
    assert [counts[a] for a in (mobile, landline, invalid)] == [1, 1, 1]

    # A second session: the three answers come from the cache; only the newcomer is looked up.
    remembered(worker, memory, *(f"line-type/scrubbed/{a}" for a in (mobile, landline, invalid)))
    newcomer = number()
    second = send(worker, "scrubbed", [mobile, landline, invalid, newcomer])
    assert outcome(second, newcomer)["status"] == "sent"
    assert outcome(second, landline)["status"] == outcome(second, invalid)["status"] == "suppressed"
    accepted = statuses.wait(lambda e: e["session_id"] == second and e["status"] == "accepted")[0]
    assert accepted["detail"] == {"scrub-bad-mobilenums": {"cached": 3, "looked_up": 1}}
    counts = twilio.call(twilio.fake.lookup_counts)
    assert [counts[a] for a in (mobile, landline, invalid, newcomer)] == [1, 1, 1, 1]
    sent_to = {r.to for r in twilio.records("requests", lambda r: r.resource == "Messages")}
    assert {mobile, newcomer} <= sent_to and not {landline, invalid} & sent_to
