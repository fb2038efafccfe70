"""The Confluent wire format with a real Schema Registry (Apicurio, Confluent API).

An outside producer uses confluent-kafka's own AvroSerializer (which registers the schema and
frames the body as magic byte 0 + schema id); a consumer uses confluent-kafka's own
AvroDeserializer on the status and rejected topics. Nothing of Switchboard's is used on the
client side but the ``.avsc`` file.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

import schemas
from tests.integration.apicurio import Apicurio
from tests.integration.conftest import WorkerFactory
from tests.integration.harness import MailSink, TopicReader, Worker, produce

pytestmark = [pytest.mark.kafka, pytest.mark.registry]


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Apicurio]:
    server = Apicurio(tmp_path_factory.mktemp("apicurio")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def worker(make_worker: WorkerFactory, registry: Apicurio) -> Worker:
    return make_worker({"SCHEMA_REGISTRY_URL": registry.url}).start()


@pytest.fixture(scope="module")
def sr(registry: Apicurio) -> Iterator[SchemaRegistryClient]:
    # With a timeout, as Switchboard's own client: Apicurio once left the serializer's
    # associations lookup (a 404) unanswered, and the client's default is to wait forever.
    client = SchemaRegistryClient({"url": registry.url, "timeout": 10})
    yield client
    client.close()


def confluent_reader(kafka: Any, topic: str, registry_url: str) -> TopicReader:
    # A registry client of its own: the reader decodes in a background thread.
    client = SchemaRegistryClient({"url": registry_url, "timeout": 10})
    deserializer = AvroDeserializer(client)

    def decode(msg: Any) -> dict[str, Any]:
        value = msg.value()
        assert value[0] == 0, "Confluent wire format: magic byte 0"
        record: dict[str, Any] = deserializer(
            value, SerializationContext(topic, MessageField.VALUE)
        )
        record["_key"] = msg.key()
        return record

    return TopicReader(kafka.bootstrap_servers, topic, decode, on_close=client.close)


@pytest.fixture(scope="module")
def statuses(kafka: Any, worker: Worker, registry: Apicurio) -> Iterator[TopicReader]:
    reader = confluent_reader(kafka, worker.topic("status"), registry.url)
    yield reader
    reader.close()


def instruction(address: str, subject: str) -> dict[str, Any]:
    return {
        "client_id": "acme",
        "idempotency_key": None,
        "options": None,
        "audience": [address],
        "transport": {
            "type": "email",
            "subject": subject,
            "message": "Hi {{name}}",
            "fileUrl": None,
            "extras": {"template_vars": {"name": "Ana"}},
        },
    }


def test_confluent_framed_instruction_is_delivered_and_statuses_are_confluent_framed(
    worker: Worker, kafka: Any, sr: SchemaRegistryClient, mail: MailSink, statuses: TopicReader
) -> None:
    topic = worker.topic("instructions")
    serializer = AvroSerializer(sr, schemas.source("instruction"))
    address = f"sr-{uuid.uuid4().hex[:8]}@example.com"
    value = serializer(
        instruction(address, "Via the registry"), SerializationContext(topic, MessageField.VALUE)
    )
    assert value[0] == 0
    produce(kafka.bootstrap_servers, topic, value, key=b"acme")

    [accepted] = statuses.wait(lambda r: r["recipient"] == address and r["status"] == "accepted")
    events = statuses.wait(lambda r: r["session_id"] == accepted["session_id"], 4)
    assert [e["status"] for e in events] == ["accepted", "sent", "delivered", "completed"]
    [message] = mail.to(address)
    assert message["Subject"] == "Via the registry"
    assert message.get_payload().strip() == "Hi Ana"


def test_a_newer_compatible_writer_schema_is_resolved(
    worker: Worker, kafka: Any, sr: SchemaRegistryClient, mail: MailSink, statuses: TopicReader
) -> None:
    """A producer on a newer instruction schema (an extra optional field) is read with the
    bundled reader schema: Avro schema resolution, not byte-for-byte equality."""
    evolved = json.loads(schemas.source("instruction"))
    evolved["fields"].append({"name": "campaign", "type": ["null", "string"], "default": None})
    topic = worker.topic("instructions")
    serializer = AvroSerializer(sr, json.dumps(evolved))
    address = f"evolved-{uuid.uuid4().hex[:8]}@example.com"
    body = {**instruction(address, "Evolved"), "campaign": "spring"}
    produce(
        kafka.bootstrap_servers,
        topic,
        serializer(body, SerializationContext(topic, MessageField.VALUE)),
        key=b"acme",
    )

    [accepted] = statuses.wait(lambda r: r["recipient"] == address and r["status"] == "accepted")
    statuses.wait(
        lambda r: r["session_id"] == accepted["session_id"] and r["status"] == "completed"
    )
    assert mail.to(address)[0]["Subject"] == "Evolved"


def test_rejections_are_confluent_framed_and_unknown_schema_ids_are_rejected(
    worker: Worker, kafka: Any, registry: Apicurio
) -> None:
    rejected = confluent_reader(kafka, worker.topic("rejected"), registry.url)
    try:
        key = f"unknown-id-{uuid.uuid4().hex[:6]}".encode()
        produce(
            kafka.bootstrap_servers,
            worker.topic("instructions"),
            b"\x00\x00\x0f\x42\x40" + b"\x02abc",
            key=key,
        )
        [rejection] = rejected.wait(lambda r: r["key"] == key)
        assert "schema id 1000000" in rejection["errors"][0]["error"]
        assert rejection["value"] == b"\x00\x00\x0f\x42\x40\x02abc"
    finally:
        rejected.close()
