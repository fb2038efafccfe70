"""``make bench``'s pairs (bench/pipeline.py): each pair's ratio is Switchboard's rate over the
baseline's of the same pair, the first of each pair alternates, and the median is printed."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from bench import pipeline
from bench.pipeline import Result


def _result(name: str, seconds: float, cpu_seconds: float = 1.0) -> Result:
    return Result(name, 10_000, seconds, [], cpu_seconds, 100.0, [], broker_cpu_seconds=2.0)


def test_the_pairs_alternate_which_runs_first(monkeypatch: pytest.MonkeyPatch) -> None:
    order: list[str] = []

    def ours(*_: Any, **kwargs: Any) -> Result:
        assert kwargs == {"paced_sends": False}
        order.append("ours")
        return _result("Switchboard (sandbox)", 4.0)

    def theirs(*_: Any, **kwargs: Any) -> Result:
        assert kwargs == {"paced_sends": False}
        order.append("theirs")
        return _result("baseline", 1.0)

    monkeypatch.setattr(pipeline, "run_switchboard", ours)
    monkeypatch.setattr(pipeline, "run_baseline", theirs)

    pairs = pipeline.run_pairs(None, Path("."), 200, 50, 3)  # type: ignore[arg-type]

    assert order == ["ours", "theirs", "theirs", "ours", "ours", "theirs"]
    assert [(a.name, b.name) for a, b in pairs] == [("Switchboard (sandbox)", "baseline")] * 3


def test_the_pairs_line_gives_each_ratio_and_their_median() -> None:
    pairs = [
        (_result("s", 4.0, cpu_seconds=1.0), _result("b", 1.0)),  # 25 %
        (_result("s", 5.0, cpu_seconds=3.0), _result("b", 1.0)),  # 20 %
        (_result("s", 2.0, cpu_seconds=2.0), _result("b", 1.0)),  # 50 %
    ]
    line = pipeline._pairs_line(pairs)
    assert "3 more pairs" in line
    assert (
        "25.0% (2,500/s beside 10,000/s), 20.0% (2,000/s beside 10,000/s), "
        "50.0% (5,000/s beside 10,000/s) (median 25.0%"
    ) in line  # each pair's rates: which side of a pair moved
    assert "median 0.20 ms" in line  # 2.0 s of CPU over 10,000 deliveries


def test_a_ratio_to_a_baseline_whose_broker_read_no_tick_is_not_a_number() -> None:
    ours, theirs = _result("Switchboard (sandbox)", 2.0), _result("baseline", 1.0)
    assert "50.0% of its deliveries/s, 1.0x its CPU per delivery, 1.0x the broker's" in (
        pipeline._against(ours, theirs)
    )
    theirs.broker_cpu_seconds = 0.0
    assert pipeline._against(ours, theirs).endswith("nanx the broker's")


def test_the_runs_ratio_is_the_median_of_every_pair_the_first_bursts_included() -> None:
    first = (_result("Switchboard (sandbox)", 5.0), _result("baseline", 1.0))  # 20 %
    pairs = [
        (_result("Switchboard (sandbox)", 4.0), _result("baseline", 1.0)),  # 25 %
        (_result("Switchboard (sandbox)", 2.0), _result("baseline", 1.0)),  # 50 %
        (_result("Switchboard (sandbox)", 10.0), _result("baseline", 1.0)),  # 10 %
        (_result("Switchboard (sandbox)", 3.0), _result("baseline", 1.0)),  # 33.3 %
    ]

    line = pipeline._run_ratio_line(first, pairs)

    assert "the run's ratio: 25.0%" in line
    assert "the median of its 5 pairs, the first burst's and the 4 more" in line


def test_the_baseline_runs_right_after_the_first_burst_and_is_listed_last(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    order: list[str] = []

    def ours(*args: Any, **kwargs: Any) -> Result:
        name = "warm-up" if kwargs.get("paced_sends") is False else args[4]
        order.append(name)
        return _result(f"Switchboard ({args[4]})", 4.0)

    def theirs(*_: Any, **kwargs: Any) -> Result:
        order.append("warm-up baseline" if kwargs.get("paced_sends") is False else "baseline")
        return _result("baseline", 1.0)

    def pairs(*_: Any) -> list[tuple[Result, Result]]:
        order.append("pairs")
        return []

    monkeypatch.setattr(pipeline, "run_switchboard", ours)
    monkeypatch.setattr(pipeline, "run_baseline", theirs)
    monkeypatch.setattr(pipeline, "run_pairs", pairs)
    args = argparse.Namespace(
        instructions=200,
        recipients=50,
        provider="both",
        provider_latency_ms=20,
        no_baseline=False,
        ratio_pairs=4,
    )

    results, _ = pipeline.run_bursts(None, Path("."), args)  # type: ignore[arg-type]

    assert order == [
        "warm-up baseline",
        "warm-up",
        "sandbox",
        "baseline",
        "twilio-fake",
        "pairs",
    ]
    assert [r.name for r in results] == [
        "Switchboard (sandbox)",
        "Switchboard (twilio-fake)",
        "baseline",
    ]
