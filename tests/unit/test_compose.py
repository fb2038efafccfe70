"""The composition root (streams/compose.py) wires what the guarantees rest on: every table's
rows go through librdkafka (``streams/changelog.py``), and Faust's commit of offsets waits for
both librdkafka producers' acknowledgements (``streams/commits.py``). Built offline: composing a
worker connects to nothing."""

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
