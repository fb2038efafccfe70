"""``make bench``'s broker (bench/pipeline.py): its log goes in memory only where there is room
for it, and its JVM's options reach the broker's command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import pipeline
from cli.kafka.local import LocalBroker


def test_the_log_goes_in_a_memory_directory_with_room(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pipeline, "MEMORY_DIR_FREE", 1)  # whatever the test machine's disk has
    assert pipeline._memory_dir(tmp_path) == tmp_path


def test_the_log_stays_on_disk_without_room(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pipeline, "MEMORY_DIR_FREE", 1 << 62)
    assert pipeline._memory_dir(tmp_path) is None


def test_the_log_stays_on_disk_without_a_memory_directory(tmp_path: Path) -> None:
    assert pipeline._memory_dir(tmp_path / "absent") is None


def test_the_jvm_options_go_on_the_brokers_command_line_before_kafka(tmp_path: Path) -> None:
    broker = LocalBroker(tmp_path, port=9, controller_port=10, jvm_options=pipeline.BROKER_JIT)
    command = broker.command("java")
    assert "-XX:TieredStopAtLevel=1" in command
    assert command.index("-XX:TieredStopAtLevel=1") < command.index("kafka.Kafka")
    assert command.index("-XX:TieredStopAtLevel=1") > command.index("-XX:+UseG1GC")
    assert "-XX:TieredStopAtLevel=1" not in LocalBroker(tmp_path, port=9).command("java")
