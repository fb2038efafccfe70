"""The status producer's batches (streams/bulk.py): one future per turn of the event loop,
resolved only when every record of the batch is acknowledged, failed by any refusal. The
producer itself runs against the real broker in every integration test that reads statuses."""

from __future__ import annotations

import asyncio

import pytest
from confluent_kafka import KafkaError

from streams.bulk import _Batch


async def test_a_batch_resolves_once_sealed_and_every_record_acknowledged() -> None:
    batch = _Batch(asyncio.get_running_loop())
    batch.pending = 2
    batch.delivered(None, None)
    batch.delivered(None, None)  # every record so far acknowledged, but more may join
    await asyncio.sleep(0)
    assert not batch.future.done(), "an open batch is never resolved"
    batch.pending += 1
    batch.seal()
    assert not batch.future.done()
    batch.delivered(None, None)  # from the polling thread in production
    await asyncio.wait_for(batch.future, 1)


async def test_a_sealed_batch_with_nothing_pending_resolves_at_once() -> None:
    batch = _Batch(asyncio.get_running_loop())
    batch.seal()
    assert batch.future.done() and batch.future.result() == {}


async def test_one_refused_record_fails_the_batch() -> None:
    batch = _Batch(asyncio.get_running_loop())
    batch.pending = 2
    batch.seal()
    batch.delivered(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE), None)
    batch.delivered(None, None)
    with pytest.raises(RuntimeError, match="refused"):
        await asyncio.wait_for(batch.future, 1)


async def test_a_cancelled_batch_stops_nothing() -> None:
    """An awaiting gather that gives up cancels the shared future: nothing was refused, so the
    worker is not stopped (``BulkProducer._check``)."""
    from streams.bulk import BulkProducer

    stopped: list[BaseException] = []
    checker: object = BulkProducer.__new__(BulkProducer)
    checker._on_failure = stopped.append  # type: ignore[attr-defined]
    checker._open = set()  # type: ignore[attr-defined]
    batch = _Batch(asyncio.get_running_loop())
    batch.future.cancel()
    BulkProducer._check(checker, batch.future)  # type: ignore[arg-type]
    failed = _Batch(asyncio.get_running_loop())
    failed.future.set_exception(RuntimeError("the broker refused a record"))
    BulkProducer._check(checker, failed.future)  # type: ignore[arg-type]
    assert [str(e) for e in stopped] == ["the broker refused a record"]
