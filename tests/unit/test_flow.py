"""The fan-out's flow control (streams/flow.py): the backlog is read from the broker only when
this worker's estimate may be over the limit, or is old, never once per chunk."""

from __future__ import annotations

from typing import Any

import pytest

from streams import flow
from streams.flow import DispatchBacklog


async def test_measures_only_when_the_estimate_may_be_over_the_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = {"now": 100.0}
    broker = {"t": 0}
    reads: list[list[str]] = []

    def measure(sb: Any, topics: list[str]) -> dict[str, int]:
        reads.append(list(topics))
        return {t: broker[t] for t in topics}

    monkeypatch.setattr(flow, "_measure", measure)
    monkeypatch.setattr(flow.time, "monotonic", lambda: clock["now"])
    backlog = DispatchBacklog(sb=None)  # type: ignore[arg-type]

    assert not await backlog.over(["t"], 1000)  # unknown: measured (0 waiting)
    assert len(reads) == 1
    for _ in range(3):  # chunks this worker fans out: counted, not measured
        backlog.added("t", 300)
        assert not await backlog.over(["t"], 1000)
    assert len(reads) == 1
    backlog.added("t", 300)  # 1,200 by its own count: over, so it asks the broker...
    assert await backlog.over(["t"], 1000)  # ...but not twice within FRESH
    assert len(reads) == 1
    clock["now"] += flow.FRESH
    broker["t"] = 700  # the dispatchers have worked meanwhile
    assert not await backlog.over(["t"], 1000)
    assert len(reads) == 2
    backlog.added("t", 400)  # 1,100 again, but the measurement is fresh: trusted
    assert await backlog.over(["t"], 1000)
    assert len(reads) == 2
    clock["now"] += flow.REFRESH  # other workers fill the topic too: measured again when old
    broker["t"] = 50
    assert not await backlog.over(["t"], 1000)
    assert len(reads) == 3
