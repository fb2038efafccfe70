"""What the benchmarks send, and the worker they send it to: instructions of client ``bench``,
in Avro as producers write them, and a sandbox worker (``bench/pipeline.py``,
``bench/retention.py``)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Final

import fastavro
import yaml

import schemas
from cli.kafka.local import LocalBroker
from cli.worker_process import WorkerProcess
from switchboard.clients import api_key_digest

__all__ = ["avro", "instruction", "sandbox_worker"]


def instruction(i: int, recipients: int, channel: str) -> tuple[dict[str, Any], list[str]]:
    if channel == "sms":
        # Distinct, valid NANP numbers: exchanges 200-999 of area code 415.
        audience = [
            f"+1415{200 + (k // 10_000) % 800:03d}{k % 10_000:04d}"
            for k in range(i * recipients, (i + 1) * recipients)
        ]
    else:
        audience = [f"b{i}-{j}@example.com" for j in range(recipients)]
    body = {
        "client_id": "bench",
        "idempotency_key": None,
        "options": None,
        "audience": audience,
        "transport": {
            "type": channel,
            "subject": "Benchmark",
            "message": "Hello {{name}}, your code is 1234.",
            "fileUrl": None,
            "extras": {"template_vars": {"name": "there"}},
        },
    }
    return body, audience


def avro(body: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, schemas.parsed("instruction"), body)
    return buf.getvalue()


#: An SMS window open all day, every day, read in each recipient's time zones: it holds
#: nothing, so what it measures is what checking it costs (at the fan-out and at each send).
OPEN_WINDOW: Final = {"start": "00:00", "end": "24:00", "timezone": "recipient"}


def sandbox_worker(
    broker: LocalBroker,
    workdir: Path,
    prefix: str,
    env: dict[str, str],
    *,
    name: str | None = None,
    window: bool = False,
) -> WorkerProcess:
    """A worker (not started) of client ``bench``, whose SMS go to the sandbox, 4 partitions;
    with ``window``, the client's SMS have :data:`OPEN_WINDOW`."""
    client: dict[str, Any] = {
        "api_keys": [api_key_digest("bench-key")],
        "default_channels": ["sms"],
        "channels": {"sms": {"provider": "sandbox"}},
    }
    if window:
        client["time_windows"] = {"sms": OPEN_WINDOW}
    clients = {"clients": {"bench": client}}
    clients_file = workdir / f"{prefix}-clients.yaml"
    clients_file.write_text(yaml.safe_dump(clients))
    settings = {"SWITCHBOARD_LOG_LEVEL": "warning", "SWITCHBOARD_PARTITIONS": "4", **env}
    return WorkerProcess(
        broker.bootstrap_servers, prefix, workdir / (name or prefix), clients_file, settings
    )
