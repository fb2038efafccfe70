"""A Switchboard worker as a child process, for the benchmarks and the end-to-end tests.

A :class:`WorkerProcess` is ``python -m cli.main worker`` in a subprocess, configured only
through its environment, exactly as an operator runs it: its caller talks to it over HTTP and
Kafka, and can stop it, kill it and start it again (each start writes a log of its own in
``workdir``). The integration tests' ``Worker`` (``tests/integration/harness.py``) adds the
Send API calls the tests make.

Failure modes: :meth:`WorkerProcess.start` raises :class:`WorkerDidNotStart`, with the end of
the worker's log, when the process exits or is not ready within the timeout (it is stopped
first); :meth:`WorkerProcess.stop` kills a worker that does not stop within its timeout.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["ROOT", "WorkerDidNotStart", "WorkerProcess", "free_port", "wait_until"]

#: The directory the worker runs in: the checkout, so ``config/`` and ``.switchboard/`` are
#: where ``make run`` has them.
ROOT = Path(__file__).resolve().parents[1]

T = TypeVar("T")


class WorkerDidNotStart(RuntimeError):
    """The worker exited, or did not become ready in time; the message ends with its log."""


def free_port() -> int:
    """A TCP port of 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(
    predicate: Callable[[], T], timeout: float, interval: float = 0.1, what: str = "condition"
) -> T:
    """``predicate()``'s first true value, asked every ``interval`` seconds; ``TimeoutError``
    naming ``what`` after ``timeout`` seconds. An exception of ``predicate`` is passed on."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@dataclass
class WorkerProcess:
    """One ``switchboard worker`` process. Its settings are :meth:`env`: the SWITCHBOARD_*
    variables that give it its own topics (``prefix``), consumer group, data directory and
    port, then ``extra_env``, which overrides any of them."""

    bootstrap: str
    prefix: str
    workdir: Path
    clients_file: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        """The log of the current (or last) start."""
        return self.workdir / f"worker-{self.starts}.log"

    def topic(self, name: str) -> str:
        return f"{self.prefix}.{name}"

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "SWITCHBOARD_BOOTSTRAP_SERVERS": self.bootstrap,
            "SWITCHBOARD_TOPIC_PREFIX": self.prefix,
            "SWITCHBOARD_APP_ID": f"sb-{self.prefix}",
            "SWITCHBOARD_PARTITIONS": "4",
            "SWITCHBOARD_DATA_DIR": str(self.workdir / "data"),
            "SWITCHBOARD_WEB_PORT": str(self.port),
            "SWITCHBOARD_WEB_HOST": "127.0.0.1",
            "SWITCHBOARD_CLIENTS_FILE": str(self.clients_file),
            "SWITCHBOARD_LOG_FORMAT": "json",
            "SWITCHBOARD_ALLOW_HTTP_WEBHOOKS": "true",
            **self.extra_env,
        }

    def start(self, timeout: float = 90.0) -> WorkerProcess:
        """Start the worker and return once it is ready and its partitions settled (so a caller
        starts from a quiet consumer group)."""
        self.starts += 1
        self.workdir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "cli.main", "worker"],
                cwd=ROOT,
                env=self.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_until(self._ready, timeout, 0.2, f"worker {self.prefix} to be ready")
        except (TimeoutError, WorkerDidNotStart) as exc:
            self.stop()
            raise WorkerDidNotStart(
                f"worker did not start ({exc}); log:\n{self.log_tail()}"
            ) from None
        return self

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise WorkerDidNotStart(f"worker exited with {self.process.returncode}")
        try:
            # S310: the URL is http://127.0.0.1:<port>, built here, never a caller's.
            with urllib.request.urlopen(f"{self.url}/readyz", timeout=2) as answer:  # noqa: S310
                body: Any = json.loads(answer.read())
        except (OSError, ValueError):  # not listening yet, 503 while starting
            return False
        return isinstance(body, dict) and bool(body.get("settled"))

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int | None:
        """Stop the worker (SIGTERM: a clean shutdown; SIGKILL: a crash). Returns its exit code."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(10)

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def log_records(self) -> list[dict[str, Any]]:
        """The JSON log records of every start, in order."""
        out = []
        for path in sorted(self.workdir.glob("worker-*.log")):
            for line in path.read_text(errors="replace").splitlines():
                if line.startswith("{"):
                    try:
                        out.append(json.loads(line))
                    except ValueError:
                        continue
        return out
