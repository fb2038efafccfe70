"""The composition root (streams/compose.py) wires what the guarantees rest on: every table's
rows go through librdkafka (``streams/changelog.py``), and Faust's commit of offsets waits for
both librdkafka producers' acknowledgements (``streams/commits.py``), and a revocation of
partitions clears what the worker knew of them. Built offline: composing a worker connects to
nothing."""

from __future__ import annotations

from pathlib import Path

from streams import compose
from streams.app import Switchboard
from streams.commits import DurableProducer
from switchboard.settings import Settings


def worker(tmp_path: Path) -> Switchboard:
    return compose.build(Settings(data_dir=tmp_path))


def test_every_table_is_written_through_librdkafka(tmp_path: Path) -> None:
    sb = worker(tmp_path)
    assert sb.bulk_rows is not None
    tables = sb.tables
    for table in (tables.deliveries, tables.sessions, tables.sends, tables.timers):
        assert sb.bulk_rows.owns(table), table.name


async def test_a_commit_waits_for_both_librdkafka_producers(tmp_path: Path) -> None:
    sb = worker(tmp_path)
    drained: list[str] = []

    class Producer:
        def __init__(self, name: str) -> None:
            self.name = name

        async def drained(self) -> None:
            drained.append(self.name)

    sb._output_producer = Producer("outputs")  # type: ignore[assignment]
    sb._bulk_producer = Producer("status events and rows")  # type: ignore[assignment]
    producer = sb.app.producer
    assert isinstance(producer, DurableProducer)
    await producer.flush()  # what Faust's commit awaits before it commits offsets
    assert drained == ["outputs", "status events and rows"]


async def test_a_revocation_forgets_what_was_known_of_the_partitions(tmp_path: Path) -> None:
    # The report agent trusts both only while this worker keeps its partitions: how far each
    # partition's events were handled (its wait for a session's replayed opening) and which
    # sessions' expiry timers it saw armed. A partition taken back later is read again from
    # its committed offset, and another worker may have cancelled a timer meanwhile.
    sb = worker(tmp_path)
    sb.staged.mark("sessions", 2, 41)
    sb.armed_expiry["s-1"] = 1.0
    assert sb.staged.handled("sessions", 2) == 42

    await sb.app.on_partitions_revoked.send(set())

    assert sb.staged.handled("sessions", 2) == -1
    assert sb.armed_expiry == {}
