"""streams.schema_registry: a registry that never answers cannot hang a worker or the CLI.

confluent-kafka's client waits forever by default. A registry has been seen to log its answer
to a request and never deliver it (Apicurio, the associations lookup of a fresh clone's CI run),
so every request has a timeout, and the client retries a timed-out request.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator

import pytest

import streams.schema_registry as schema_registry
from streams.schema_registry import SchemaRegistry


class SilentServer:
    """Accepts connections, reads requests and never answers."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.requests = 0
        self._held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self._held.append(conn)
            if conn.recv(65536):
                self.requests += 1

    def close(self) -> None:
        self.sock.close()
        for conn in self._held:
            conn.close()


@pytest.fixture
def silent() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()


def test_the_registry_client_has_a_request_timeout() -> None:
    client = schema_registry.registry_client("http://127.0.0.1:1")
    assert client._rest_client.timeout == schema_registry.REQUEST_TIMEOUT > 0


def test_a_silent_registry_is_an_error_after_a_few_retries_not_a_hang(
    silent: SilentServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(schema_registry, "REQUEST_TIMEOUT", 0.2)
    registry = SchemaRegistry(f"http://127.0.0.1:{silent.port}")
    started = time.monotonic()
    with pytest.raises(ConnectionError, match=f"schema registry http://127.0.0.1:{silent.port}"):
        asyncio.run(registry.writer_schema(1))
    assert time.monotonic() - started < 30
    assert silent.requests >= 2, "a timed-out request is retried"
