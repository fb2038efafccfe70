"""The Avro schemas of Switchboard's public topics, bundled with the package.

The ``.avsc`` files beside this module are the contract: a producer outside the service needs
nothing but ``instruction.avsc`` and fastavro (or confluent-kafka) to write instructions.

=================  ====================  ==================================================
schema             topic                 content type (when no Schema Registry is used)
=================  ====================  ==================================================
``instruction``    ``<prefix>.instructions``  ``application/vnd.switchboard.instruction.v1+avro``
``status_event``   ``<prefix>.status``        ``application/vnd.switchboard.status_event.v1+avro``
``rejection``      ``<prefix>.rejected``      ``application/vnd.switchboard.rejection.v1+avro``
=================  ====================  ==================================================
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any, Literal

import fastavro

SchemaName = Literal["instruction", "status_event", "rejection"]
SCHEMA_NAMES: tuple[SchemaName, ...] = ("instruction", "status_event", "rejection")

__all__ = ["SCHEMA_NAMES", "SchemaName", "content_type", "parsed", "source"]


def source(name: SchemaName) -> str:
    """The schema's JSON text, exactly as shipped (what a Schema Registry gets registered)."""
    return resources.files(__name__).joinpath(f"{name}.avsc").read_text()


@cache
def parsed(name: SchemaName) -> Any:
    """The schema parsed by fastavro (cached), ready for ``schemaless_reader``/``writer``."""
    return fastavro.parse_schema(json.loads(source(name)))


def content_type(name: SchemaName) -> str:
    """The ``content-type`` header of a schemaless message written with the bundled schema."""
    return f"application/vnd.switchboard.{name}.v1+avro"
