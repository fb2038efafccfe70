"""Intake: ``<prefix>.instructions`` → validated ``OpenSession`` commands, or rejections.

Each message is decoded (Confluent Avro, schemaless Avro or JSON), validated against its
client's configuration, given a session id, and handed to the session agent keyed by that id.
A message that cannot be used goes to ``<prefix>.rejected`` with its original bytes and every
error; the stream never stops on bad input.

Session ids are deterministic for instructions produced to Kafka: a UUID5 of the message's
topic, partition, offset and timestamp. A message processed twice (a crash before the offset
commit) therefore opens the same session twice, and the session agent ignores the second.
(Instructions from the Send API do not come this way: the API validates them itself and opens
their sessions directly.)
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

from faust.types import EventT, StreamT

from streams.app import Switchboard
from streams.checkpoint import run_checkpointed
from streams.submit import checked_envelope, submit
from switchboard.errors import DecodeFailed, FieldError, InvalidInput
from switchboard.idempotency import fingerprint
from switchboard.validation import ValidationPolicy
from switchboard.wire import decode_instruction, header_list, header_map, sniff

__all__ = ["register"]

log = logging.getLogger(__name__)

_NAMESPACE = uuid.UUID("6f1c9a52-7f0b-4bb4-9d8e-5c0c1d7a2b31")
_REGISTRY_RETRIES = (1.0, 2.0, 4.0, 8.0, 16.0)


def register(sb: Switchboard) -> None:
    policy = ValidationPolicy(allow_http_webhooks=sb.settings.allow_http_webhooks)

    @sb.app.agent(sb.topics.instructions, name="switchboard.intake")
    async def intake(stream: StreamT[bytes]) -> None:
        await sb.clients.ready.wait()
        # No table, but the same rule: an instruction is acknowledged only once the commands
        # that open its session are in Kafka.
        await run_checkpointed(sb, stream, "intake", lambda e: _handle(sb, e, policy))


async def _handle(sb: Switchboard, event: EventT[bytes], policy: ValidationPolicy) -> None:
    msg = event.message
    raw_headers = header_list(msg.headers)
    value: bytes | None = msg.value
    data: dict[str, Any] | None = None
    # Deterministic: an instruction processed twice (a crash before the commit) opens one session.
    session_id = str(
        uuid.uuid5(_NAMESPACE, f"{msg.topic}/{msg.partition}/{msg.offset}/{msg.timestamp}")
    )
    try:
        framing = sniff(value, header_map(raw_headers))
        assert value is not None  # sniff refuses empty values
        writer = (
            await _writer_schema(sb, framing.schema_id) if framing.kind == "confluent" else None
        )
        data = decode_instruction(value, framing, writer)
        envelope = await checked_envelope(
            data, client=sb.clients.get(data.get("client_id")), policy=policy
        )
        await submit(
            sb,
            envelope,
            data["audience"],
            session_id=session_id,
            source="kafka",
            origin=f"{msg.topic}/{msg.partition}/{msg.offset}",
            policy=policy,
            deadline=None,
            fingerprint=fingerprint(data) if envelope.idempotency_key is not None else None,
        )
    except InvalidInput as exc:
        client_id = (
            data.get("client_id")
            if isinstance(data, dict) and isinstance(data.get("client_id"), str)
            else None
        )
        await sb.reject(
            errors=list(exc.errors),
            topic=msg.topic,
            partition=msg.partition,
            offset=msg.offset,
            key=msg.key,
            value=value,
            headers=raw_headers,
            client_id=client_id,
        )
        sb.metrics.instructions.labels("kafka", "rejected").inc()
        return
    sb.metrics.instructions.labels("kafka", "accepted").inc()


async def _writer_schema(sb: Switchboard, schema_id: int | None) -> Any:
    if sb.registry is None:
        raise DecodeFailed(
            [
                FieldError(
                    "",
                    f"the message is in the Confluent wire format (schema id {schema_id}) but this worker has no SCHEMA_REGISTRY_URL; send schemaless Avro with a content-type header, or configure the registry",
                )
            ]
        )
    assert schema_id is not None
    for delay in (*_REGISTRY_RETRIES, None):
        try:
            writer = await sb.registry.writer_schema(schema_id)
        except ConnectionError as exc:
            if delay is None:
                raise DecodeFailed(
                    [
                        FieldError(
                            "",
                            f"the schema registry could not be reached to read schema id {schema_id}: {exc}",
                        )
                    ]
                ) from None
            log.warning(
                "schema registry unreachable; retrying",
                extra={"schema_id": schema_id, "retry_in": delay},
            )
            await asyncio.sleep(delay)
            continue
        if writer is None:
            raise DecodeFailed(
                [
                    FieldError(
                        "",
                        f"schema id {schema_id} is not an Avro schema known to the schema registry",
                    )
                ]
            )
        return writer
    raise AssertionError("unreachable")
