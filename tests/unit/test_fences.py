"""Cancel fences (streams/fences.py, streams/dispatch.py): a dispatcher that reached a session's
fence withdraws its jobs from the partition's own rows, even when this worker's replica of the
``cancels`` topic has not seen the cancel yet (a lagging replica, or the partition's next owner
right after a rebalance)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from streams import dispatch
from switchboard.keys import fence_row


class Replica:
    def __init__(self, rows: dict[bytes, bytes] | None = None) -> None:
        self.rows = rows or {}

    def get(self, key: bytes) -> bytes | None:
        return self.rows.get(key)


def worker(
    cancels: dict[bytes, bytes] | None = None, sends: dict[bytes, bytes] | None = None
) -> Any:
    return SimpleNamespace(
        cancels=Replica(cancels), tables=SimpleNamespace(sends=dict(sends or {})), bulk_rows=None
    )


async def test_a_passed_fence_withdraws_the_sessions_jobs_without_the_replica() -> None:
    sb = worker()
    assert not dispatch._cancelled(sb, "s1")
    await dispatch._fence(
        sb, "s1"
    )  # outside a checkpoint: written to the partition's table at once
    assert sb.tables.sends == {fence_row("s1"): b"1"}
    assert dispatch._cancelled(sb, "s1")
    assert not dispatch._cancelled(sb, "s2")


def test_the_replica_withdraws_jobs_still_ahead_of_the_fence() -> None:
    sb = worker(cancels={b"s1": b'{"at": 1}'})
    assert dispatch._cancelled(sb, "s1")
    assert not dispatch._cancelled(sb, "s2")


def test_a_partitions_next_owner_finds_the_fence_in_the_rows_it_recovered() -> None:
    sb = worker(sends={fence_row("s1"): b"1"})  # rebuilt from the changelog; replica still empty
    assert dispatch._cancelled(sb, "s1")
