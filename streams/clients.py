"""The client registry: every client's configuration, on every worker, from the clients topic.

The compacted ``<prefix>.clients`` topic (key: client id, value: the client's configuration as
JSON, a tombstone deletes) is the source of truth. Every worker reads all of it from the
beginning, then follows it (a :class:`streams.replica.TopicReplica`), so ``switchboard clients
apply`` reaches every worker within a second and without a restart.

Guarantees and failure modes:
    * :attr:`ClientRegistry.ready` is set once the topic has been read up to the end offsets
      seen at start. Intake waits for it, and the Send API answers 503 before it, so no
      instruction is refused for an "unknown client" that is merely not loaded yet.
    * A record that is not a valid configuration is logged and ignored: the client keeps its
      previous configuration rather than losing it to a bad update.
    * API keys are looked up by digest; only digests are kept.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable

from streams.replica import TopicReplica
from switchboard.clients import ClientConfig, api_key_digest, parse_client
from switchboard.errors import ConfigError
from switchboard.settings import Settings

__all__ = ["ClientRegistry", "publish_clients"]

log = logging.getLogger(__name__)


class ClientRegistry:
    def __init__(
        self, settings: Settings, check: Callable[[ClientConfig], None] | None = None
    ) -> None:
        self.settings = settings
        #: Raises ``ConfigError`` for a configuration this worker cannot run (service managers).
        self._check = check
        self.topic = settings.topic("clients")
        self._replica = TopicReplica(settings, self.topic, self.apply)
        #: Set once the whole topic was read (see :class:`streams.replica.TopicReplica`).
        self.ready = self._replica.ready
        self._clients: dict[str, ClientConfig] = {}
        self._by_digest: dict[str, str] = {}

    # -- lookups (pure) ----------------------------------------------------------------------

    def get(self, client_id: object) -> ClientConfig | None:
        return self._clients.get(client_id) if isinstance(client_id, str) else None

    def authenticate(self, api_key: str) -> ClientConfig | None:
        """The client owning ``api_key``, or ``None``. Only digests are compared."""
        client_id = self._by_digest.get(api_key_digest(api_key))
        client = self._clients.get(client_id) if client_id else None
        return client if client is not None and client.accepts_key(api_key) else None

    def all(self) -> list[ClientConfig]:
        return list(self._clients.values())

    def __len__(self) -> int:
        return len(self._clients)

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        """Apply one record of the clients topic."""
        if key is None:
            log.error("clients topic: record without a key ignored")
            return
        client_id = key.decode("utf-8", errors="replace")
        if value is None:
            self._remove(client_id)
            log.info("client removed", extra={"client_id": client_id})
            return
        try:
            client = parse_client(client_id, json.loads(value))
            if self._check is not None:
                self._check(client)
        except (ValueError, ConfigError) as exc:
            log.error(
                "clients topic: invalid configuration ignored, previous one kept",
                extra={"client_id": client_id, "error": str(exc)},
            )
            return
        self._remove(client_id)
        self._clients[client_id] = client
        for digest in client.api_key_digests:
            self._by_digest[digest] = client_id
        log.info(
            "client configured", extra={"client_id": client_id, "channels": list(client.channels)}
        )

    def _remove(self, client_id: str) -> None:
        old = self._clients.pop(client_id, None)
        if old is not None:
            for digest in old.api_key_digests:
                if self._by_digest.get(digest) == client_id:
                    del self._by_digest[digest]

    # -- following the topic -----------------------------------------------------------------

    async def run(self) -> None:
        """Read the clients topic from the beginning and follow it until cancelled."""
        await self._replica.run()


def publish_clients(
    settings: Settings,
    clients: Iterable[ClientConfig],
    delete: Iterable[str] = (),
    timeout: float = 30.0,
) -> int:
    """Write client configurations (and tombstones for ``delete``) to the clients topic.

    Returns the number of records the broker confirmed. Raises ``ConfigError`` if any write
    was not confirmed.
    """
    from confluent_kafka import KafkaError, Message, Producer

    from streams.kafka_security import librdkafka_config

    producer = Producer({**librdkafka_config(settings), "enable.idempotence": True})
    failures: list[str] = []
    confirmed = 0

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        nonlocal confirmed
        if err is not None:
            failures.append(f"{msg.key()!r}: {err}")
        else:
            confirmed += 1

    topic = settings.topic("clients")
    for client in clients:
        value = json.dumps(client.to_json(), separators=(",", ":")).encode()
        producer.produce(topic, key=client.client_id.encode(), value=value, on_delivery=on_delivery)
    for client_id in delete:
        producer.produce(topic, key=client_id.encode(), value=None, on_delivery=on_delivery)
    remaining = producer.flush(timeout)
    if failures or remaining:
        raise ConfigError(
            f"client configuration not confirmed by the broker: {failures or f'{remaining} pending'}"
        )
    return confirmed
