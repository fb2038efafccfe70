"""Schema Registry I/O (only when ``SCHEMA_REGISTRY_URL`` is set).

At start, the worker registers the bundled ``status_event`` and ``rejection`` schemas under the
TopicNameStrategy subjects (``<topic>-value``) and writes those topics in the Confluent wire
format with the returned ids. Reading an instruction in the Confluent format fetches its writer
schema by id once and caches it; the body is then resolved against the bundled reader schema,
so producers may use any compatible version of ``instruction.avsc``.

The registry client is confluent-kafka's synchronous one; its calls run in a thread so the
event loop never blocks on HTTP. It authenticates with HTTP basic auth when
``SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO`` is set, and trusts ``SCHEMA_REGISTRY_CA_FILE`` for https
when that is set. Neither the user info nor a password written into the URL
(``https://user:password@host``) ever appears in an error message or a log line: messages name
the registry by :func:`redacted` URL.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import fastavro
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

import schemas
from schemas import SchemaName
from switchboard.errors import ConfigError
from switchboard.settings import Secret, Settings

__all__ = [
    "REQUEST_TIMEOUT",
    "SchemaIds",
    "SchemaRegistry",
    "redacted",
    "registry_client",
    "registry_config",
]

#: Seconds one registry request may take. The client's default is no limit: a registry that
#: accepts a request and never answers it would hang a worker's start (or a CLI) for good. A
#: timed-out request is retried by the client (``max.retries``, with backoff).
REQUEST_TIMEOUT = 10


def registry_config(
    url: str, user_info: Secret | None = None, ca_file: Path | None = None
) -> dict[str, Any]:
    """confluent-kafka's registry client configuration: ``url``, the request timeout, HTTP
    basic auth from ``user_info`` (``user:password``), and ``ca_file`` as the trusted CAs."""
    config: dict[str, Any] = {"url": url, "timeout": REQUEST_TIMEOUT}
    if user_info is not None:
        config["basic.auth.user.info"] = user_info.reveal()
    if ca_file is not None:
        config["ssl.ca.location"] = str(ca_file)
    return config


def registry_client(
    url: str, user_info: Secret | None = None, ca_file: Path | None = None
) -> SchemaRegistryClient:
    """confluent-kafka's registry client for ``url`` (:func:`registry_config`).

    Raises:
        ConfigError: the client refuses the configuration (e.g. user info both in the URL and
            in ``SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO``); the message shows no credential.
    """
    try:
        return SchemaRegistryClient(registry_config(url, user_info, ca_file))
    except ValueError as exc:
        raise ConfigError(f"schema registry {redacted(url)}: {exc}") from None


def redacted(url: str) -> str:
    """``url`` without the password of its user info, fit for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SchemaIds:
    """Registered ids of the schemas Switchboard writes (``None``: no registry, header form)."""

    status_event: int | None = None
    rejection: int | None = None


class SchemaRegistry:
    def __init__(
        self, url: str, user_info: Secret | None = None, ca_file: Path | None = None
    ) -> None:
        #: For messages: never holds a password.
        self.url = redacted(url)
        self._client = registry_client(url, user_info, ca_file)
        self._writers: dict[int, Any] = {}

    @classmethod
    def for_settings(cls, settings: Settings) -> SchemaRegistry:
        """The registry of ``SCHEMA_REGISTRY_URL``, with its credentials and CA file."""
        assert settings.schema_registry_url, "only called when a registry is configured"
        return cls(
            settings.schema_registry_url,
            settings.schema_registry_user_info,
            settings.schema_registry_ca_file,
        )

    def register(self, subject: str, name: SchemaName) -> int:
        """Register the bundled schema ``name`` under ``subject`` (idempotent); return its id."""
        try:
            schema_id: int = self._client.register_schema(
                subject, Schema(schemas.source(name), "AVRO")
            )
        except Exception as exc:
            raise ConfigError(
                f"cannot register {name} under {subject} at {self.url}: {exc}"
            ) from exc
        log.info("schema registered", extra={"subject": subject, "schema_id": schema_id})
        return schema_id

    def register_outputs(self, status_topic: str, rejected_topic: str) -> SchemaIds:
        return SchemaIds(
            status_event=self.register(f"{status_topic}-value", "status_event"),
            rejection=self.register(f"{rejected_topic}-value", "rejection"),
        )

    async def writer_schema(self, schema_id: int) -> Any | None:
        """The parsed schema registered under ``schema_id``; ``None`` if the registry has no such
        id. Raises ``ConnectionError`` when the registry cannot be asked (the caller retries)."""
        if schema_id in self._writers:
            return self._writers[schema_id]
        try:
            schema = await asyncio.to_thread(self._client.get_schema, schema_id)
        except Exception as exc:
            if "40403" in str(exc) or "not found" in str(exc).lower():
                return None
            raise ConnectionError(f"schema registry {self.url}: {exc}") from exc
        if schema.schema_type not in (None, "AVRO") or schema.schema_str is None:
            return None
        parsed = fastavro.parse_schema(json.loads(schema.schema_str))
        self._writers[schema_id] = parsed
        return parsed
