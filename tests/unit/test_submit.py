"""streams.submit with a deadline (the Send API): the opening is written only once every chunk
is confirmed, and :class:`Unconfirmed` says whether it was (issue 13, part 3).

The sessions topic is a stand-in that confirms the writes a test chooses and leaves the others
pending forever: a deadline that passes is then certain, whatever the machine's speed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

import pytest

from streams.app import Switchboard
from streams.submit import Unconfirmed, submit
from switchboard import records
from switchboard.clients import parse_client
from switchboard.records import AudienceChunk, Claim, Discard, OpenSession, SessionCommand
from switchboard.validation import validate_envelope

ACME = parse_client(
    "acme", {"channels": {"sms": {"provider": "sandbox"}}, "default_channels": ["sms"]}
)
AUDIENCE = [f"+1415555{k:04d}" for k in range(1_200)]  # three chunks of 500


class Topic:
    """Publishes at once; confirms a write when ``confirm(command)`` says so, else never."""

    def __init__(self, confirm: Callable[[SessionCommand], bool | BaseException]) -> None:
        self.confirm = confirm
        self.published: list[SessionCommand] = []
        #: For each write: whether every earlier write was confirmed when it was published.
        self.after_confirmed: list[bool] = []
        self._futures: list[asyncio.Future[None]] = []
        self._values: dict[int, bytes] = {}
        self.wrote = asyncio.Event()

    def as_future_message(self, *, key: bytes, value: bytes) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._values[id(future)] = value
        return future

    async def publish_message(self, message: asyncio.Future[None]) -> None:
        command = records.decode_command(self._values.pop(id(message)))
        self.after_confirmed.append(all(f.done() for f in self._futures))
        self.published.append(command)
        self.wrote.set()
        self._futures.append(message)
        outcome = self.confirm(command)
        if isinstance(outcome, BaseException):
            message.set_exception(outcome)
        elif outcome:
            message.set_result(None)


class Sb:
    def __init__(self, topic: Topic) -> None:
        self.topic = topic
        self.background: set[asyncio.Task[None]] = set()

    def sessions_topic(self, lane: str) -> Topic:
        return self.topic


async def run(topic: Topic, key: str | None = None) -> None:
    data: dict[str, Any] = {
        "client_id": "acme",
        "transport": {"type": "sms", "message": "Hi"},
        "audience": AUDIENCE,
    }
    if key is not None:
        data["idempotency_key"] = key
    envelope = validate_envelope(data, client=ACME)
    await submit(
        cast(Switchboard, Sb(topic)),
        envelope,
        AUDIENCE,
        session_id="s-1",
        source="api",
        origin="api",
        fingerprint="fp" if key else None,
        deadline=0.05,
    )


def kinds(topic: Topic) -> list[str]:
    return [type(c).__name__ for c in topic.published]


async def until(topic: Topic, predicate: Callable[[], bool]) -> None:
    """Wait for a write (a background one) that makes ``predicate`` true."""
    while not predicate():
        topic.wrote.clear()
        await topic.wrote.wait()


@pytest.mark.parametrize("key", [None, "order-1"])
async def test_every_write_confirmed_opens_after_its_chunks(key: str | None) -> None:
    topic = Topic(lambda c: True)
    await run(topic, key)
    assert kinds(topic) == ["AudienceChunk"] * 3 + ["Claim" if key else "OpenSession"]
    assert topic.after_confirmed[-1], "the opening waits for every chunk's confirmation"


async def test_unconfirmed_chunks_open_nothing_and_are_discarded() -> None:
    topic = Topic(lambda c: not isinstance(c, AudienceChunk) or c.chunk != 2)
    with pytest.raises(Unconfirmed) as info:
        await run(topic)
    assert info.value.opening_sent is False and info.value.cause is None
    await until(topic, lambda: any(isinstance(c, Discard) for c in topic.published))
    assert kinds(topic) == ["AudienceChunk"] * 3 + ["Discard"]
    assert cast(Discard, topic.published[-1]).chunks == 3


async def test_a_refused_chunk_opens_nothing() -> None:
    refused = RuntimeError("not enough replicas")
    topic = Topic(lambda c: refused if isinstance(c, AudienceChunk) and c.chunk == 1 else True)
    with pytest.raises(Unconfirmed) as info:
        await run(topic)
    assert info.value.opening_sent is False and info.value.cause is refused
    assert not any(isinstance(c, OpenSession | Claim) for c in topic.published)


async def test_an_idempotency_keys_chunks_are_kept_for_its_retry() -> None:
    """A retry with the key writes the same chunks under the same session id, perhaps from
    another worker: a late Discard must not erase them."""
    topic = Topic(lambda c: not isinstance(c, AudienceChunk) or c.chunk != 2)
    with pytest.raises(Unconfirmed) as info:
        await run(topic, "order-1")
    assert info.value.opening_sent is False
    for _ in range(10):  # what a background Discard would need to be published
        await asyncio.sleep(0)
    assert kinds(topic) == ["AudienceChunk"] * 3


@pytest.mark.parametrize("key", [None, "order-1"])
async def test_an_unconfirmed_opening_is_reported_as_sent(key: str | None) -> None:
    topic = Topic(lambda c: isinstance(c, AudienceChunk))
    with pytest.raises(Unconfirmed) as info:
        await run(topic, key)
    assert info.value.opening_sent is True, "the session may still open: the 503 must say so"
    assert kinds(topic) == ["AudienceChunk"] * 3 + ["Claim" if key else "OpenSession"]


async def test_an_invalid_recipient_is_a_422_whatever_kafka_does() -> None:
    """Chunks and their Discard refused: the caller still hears ValidationFailed (422), and
    nothing opens."""
    from switchboard.errors import ValidationFailed

    topic = Topic(lambda c: RuntimeError("broker down"))
    data = {
        "client_id": "acme",
        "transport": {"type": "sms", "message": "Hi"},
        "audience": [*AUDIENCE, "nope"],
    }
    envelope = validate_envelope(data, client=ACME)
    with pytest.raises(ValidationFailed):
        await submit(
            cast(Switchboard, Sb(topic)),
            envelope,
            data["audience"],
            session_id="s-1",
            source="api",
            origin="api",
            deadline=0.05,
        )
    assert kinds(topic) == ["AudienceChunk"] * 2 + ["Discard"]
