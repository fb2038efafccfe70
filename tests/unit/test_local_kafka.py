"""The local broker's jar cache (cli/kafka/local.py), without starting a broker."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cli.kafka.local import KafkaDistribution, _cluster_id, java_command

ROOT = Path(__file__).resolve().parents[2]


def test_cluster_ids_never_start_with_a_dash() -> None:
    """The storage tool parses `-t -abc...` as an option: about one start in 64 would fail."""
    ids = [_cluster_id() for _ in range(5000)]
    assert all(len(i) == 22 and not i.startswith("-") for i in ids)


def test_a_relative_cache_dir_is_made_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Maven resolves a relative outputDirectory against the pom's directory (a fresh clone's
    `switchboard kafka fetch` once put the jars there and found none)."""
    monkeypatch.chdir(tmp_path)
    dist = KafkaDistribution(cache_dir=Path(".cache") / "kafka")
    assert dist.cache_dir == tmp_path / ".cache" / "kafka"
    assert dist.libs.is_absolute()


def test_fetch_into_a_relative_cache_from_another_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What `make kafka` does on a fresh clone: a relative cache, mvn resolving from ~/.m2."""
    monkeypatch.chdir(tmp_path)
    libs = KafkaDistribution(cache_dir=Path("cache")).ensure()
    assert libs == tmp_path / "cache" / "4.1.1" / "libs"
    assert any(libs.glob("kafka_2.13-4.1.1.jar"))
    assert (libs / ".complete").read_text() == "4.1.1"
    assert KafkaDistribution(cache_dir=Path("cache")).is_cached()


def test_java_is_found() -> None:
    assert os.access(java_command(17), os.X_OK)
