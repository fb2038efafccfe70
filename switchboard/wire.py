"""Wire formats of the public topics (README: "Kafka topics and formats"). Pure: no Kafka, no HTTP.

A value on ``<prefix>.instructions`` is read as:

==========================================  =================================================
what the message looks like                 how it is read
==========================================  =================================================
byte 0 is ``0x00``, then a 4-byte schema id  Confluent wire format: the writer schema comes
                                             from the Schema Registry, the body is resolved
                                             against the bundled ``instruction.avsc``
header ``content-type:                       schemaless Avro written with the bundled schema
application/vnd.switchboard.instruction.v1+avro``
header ``content-type: application/json``    JSON (also accepted without the header when the
(or no header and a body starting with ``{``)  body starts with ``{``: what kcat users send)
==========================================  =================================================

Anything else is refused with a :class:`~switchboard.errors.DecodeFailed` that says what was
seen and what is expected. An Avro body that does not consume exactly all its bytes was written
with another schema, and is refused as such.

Outgoing status events and rejections are written in the Confluent format when a schema id is
given (a registry is configured), else schemaless with the content-type header.
"""

from __future__ import annotations

import io
import json
import math
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

import fastavro

import schemas
from schemas import SchemaName
from switchboard.errors import DecodeFailed, FieldError

__all__ = [
    "CONTENT_TYPE",
    "JSON_CONTENT_TYPE",
    "MAX_JSON_DIGITS",
    "Framing",
    "Headers",
    "decode_instruction",
    "encode_record",
    "header_list",
    "header_map",
    "json_object",
    "sniff",
]

CONTENT_TYPE: Final = "content-type"
JSON_CONTENT_TYPE: Final = "application/json"
_MAGIC_CONFLUENT: Final = 0
_MAGIC_CONFLUENT_GUID: Final = 1

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class Framing:
    """How a message's value is encoded. ``schema_id`` is set for the Confluent format."""

    kind: Literal["confluent", "avro", "json"]
    schema_id: int | None = None


def header_list(
    headers: Iterable[tuple[str, bytes | None]] | Mapping[str, bytes | None] | None,
) -> Headers:
    """Kafka headers as ``[(name, value)]``, whatever form the client library gave them in."""
    if headers is None:
        return []
    items = headers.items() if isinstance(headers, Mapping) else headers
    return [
        (str(k), v if isinstance(v, bytes) else str(v).encode()) for k, v in items if v is not None
    ]


def header_map(
    headers: Iterable[tuple[str, str | bytes | None]] | Mapping[str, str | bytes | None] | None,
) -> dict[str, bytes]:
    """Kafka headers as a dict with lower-cased names (the last value of a repeated name wins)."""
    if headers is None:
        return {}
    items = headers.items() if isinstance(headers, Mapping) else headers
    return {
        str(k).lower(): v if isinstance(v, bytes) else str(v).encode()
        for k, v in items
        if v is not None
    }


def sniff(
    value: bytes | None, headers: Mapping[str, bytes], schema: SchemaName = "instruction"
) -> Framing:
    """Decide how ``value`` is encoded, from its header and first bytes."""
    if not value:
        raise DecodeFailed([FieldError("", "the message has no value")])
    content_type = headers.get(CONTENT_TYPE, b"").decode("latin-1").split(";")[0].strip().lower()
    if content_type == schemas.content_type(schema):
        return Framing("avro")
    if content_type == JSON_CONTENT_TYPE:
        return Framing("json")
    if value[0] == _MAGIC_CONFLUENT and len(value) >= 5 and not content_type:
        return Framing("confluent", struct.unpack(">I", value[1:5])[0])
    if value[0] == _MAGIC_CONFLUENT_GUID and not content_type:
        raise DecodeFailed(
            [
                FieldError(
                    "",
                    "the Confluent wire format with a schema GUID (magic byte 1) is not supported; use schema ids (magic byte 0)",
                )
            ]
        )
    if not content_type and value.lstrip()[:1] == b"{":
        return Framing("json")
    seen = f"content-type {content_type!r}" if content_type else "no content-type header"
    raise DecodeFailed(
        [
            FieldError(
                "",
                f"unrecognised encoding ({seen}, first byte 0x{value[0]:02x}); expected the Confluent wire format, content-type {schemas.content_type(schema)}, or content-type {JSON_CONTENT_TYPE}",
            )
        ]
    )


def decode_instruction(
    value: bytes, framing: Framing, writer_schema: Any | None = None
) -> dict[str, Any]:
    """Decode an instruction's bytes into its contract mapping (not yet validated).

    Args:
        value: the message value.
        framing: from :func:`sniff`.
        writer_schema: for the Confluent format, the parsed schema registered under
            ``framing.schema_id``; ignored otherwise.
    """
    if framing.kind == "json":
        return json_object(value)
    reader = schemas.parsed("instruction")
    if framing.kind == "confluent":
        if writer_schema is None:
            raise DecodeFailed(
                [FieldError("", f"schema id {framing.schema_id} is unknown to the schema registry")]
            )
        record = _read_avro(value, 5, writer_schema, reader)
    else:
        record = _read_avro(value, 0, reader, reader)
    return _contract_shape(record)


def encode_record(
    name: SchemaName, record: Mapping[str, Any], schema_id: int | None = None
) -> tuple[bytes, Headers]:
    """Encode ``record`` with the bundled schema ``name``: Confluent-framed when ``schema_id`` is
    given, else schemaless with a content-type header. Raises ``ValueError`` when the record
    does not match the schema (a bug, not an input problem)."""
    buf = io.BytesIO()
    if schema_id is not None:
        buf.write(struct.pack(">bI", _MAGIC_CONFLUENT, schema_id))
    fastavro.schemaless_writer(buf, schemas.parsed(name), dict(record), strict_allow_default=True)
    headers: Headers = (
        [] if schema_id is not None else [(CONTENT_TYPE, schemas.content_type(name).encode())]
    )
    return buf.getvalue(), headers


def read_record(name: SchemaName, value: bytes, writer_schema: Any | None = None) -> dict[str, Any]:
    """Read a message written by :func:`encode_record` (either framing). For consumers and tests."""
    if value[:1] == b"\x00" and writer_schema is not None:
        return _read_avro(value, 5, writer_schema, schemas.parsed(name))
    return _read_avro(value, 0, schemas.parsed(name), schemas.parsed(name))


def _read_avro(value: bytes, offset: int, writer: Any, reader: Any) -> dict[str, Any]:
    buf = io.BytesIO(value)
    buf.seek(offset)
    try:
        record = fastavro.schemaless_reader(buf, writer, reader)
    except Exception as exc:  # noqa: BLE001 - fastavro raises anything from EOFError to KeyError
        raise DecodeFailed(
            [FieldError("", f"not a valid Avro Instruction body: {type(exc).__name__}: {exc}")]
        ) from None
    if buf.tell() != len(value):
        raise DecodeFailed(
            [
                FieldError(
                    "",
                    f"not a valid Avro Instruction body: {len(value) - buf.tell()} bytes left over; was it written with another schema?",
                )
            ]
        )
    if not isinstance(record, dict):
        raise DecodeFailed([FieldError("", "not a valid Avro Instruction body")])
    return record


def _contract_shape(record: dict[str, Any]) -> dict[str, Any]:
    """Avro gives absent optional fields as ``None``; the contract's JSON omits them."""
    out = _drop_nones(record)
    if isinstance(out.get("transport"), dict):
        out["transport"] = _drop_nones(out["transport"])
    if isinstance(out.get("options"), dict):
        out["options"] = _drop_nones(out["options"])
        if isinstance(out["options"].get("fallback"), dict):
            out["options"]["fallback"] = _drop_nones(out["options"]["fallback"])
    if isinstance(out.get("audience"), list):
        out["audience"] = [_drop_nones(r) if isinstance(r, dict) else r for r in out["audience"]]
    return out


def _drop_nones(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if v is not None}


#: The most digits a JSON integer may have. Python refuses to convert more than 4,300 (a guard
#: against quadratic-time parsing) with a ValueError no caller expects; no field of the contract
#: needs more than a handful, so a longer number is refused up front with a message that says so.
MAX_JSON_DIGITS: Final = 100


class _NotUsable(ValueError):
    """A JSON text that parses but cannot be used (a number out of range, NaN, Infinity)."""


def _json_int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_JSON_DIGITS:
        raise _NotUsable(f"a number has {digits:,} digits; at most {MAX_JSON_DIGITS} are accepted")
    return int(text)


def _json_float(text: str) -> float:
    if len(text) > MAX_JSON_DIGITS * 4:
        raise _NotUsable(f"a number is {len(text):,} characters long")
    number = float(text)
    if not math.isfinite(number):
        raise _NotUsable(f"the number {text[:40]} is out of range")
    return number


def _json_constant(name: str) -> Any:
    # json.loads accepts NaN and Infinity by default, although they are not JSON (RFC 8259),
    # and nothing downstream (Avro, json.dumps for webhooks) could carry them.
    raise _NotUsable(f"{name} is not a JSON value")


def json_object(value: bytes | str) -> dict[str, Any]:
    """``value`` parsed as a JSON object: strict JSON only (no NaN or Infinity), numbers of at most
    :data:`MAX_JSON_DIGITS` digits, nesting within Python's recursion limit.

    Raises:
        DecodeFailed: one error (field ``""``) saying why ``value`` is not a usable JSON object;
            never another exception, whatever the bytes.
    """
    if not value.strip():
        raise DecodeFailed([FieldError("", "empty: send the instruction as a JSON object")])
    try:
        data = json.loads(
            value, parse_int=_json_int, parse_float=_json_float, parse_constant=_json_constant
        )
    except _NotUsable as exc:
        raise DecodeFailed([FieldError("", f"not usable JSON: {exc}")]) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DecodeFailed([FieldError("", f"not valid JSON: {exc}")]) from None
    except RecursionError:
        raise DecodeFailed([FieldError("", "not usable JSON: nested too deeply")]) from None
    if not isinstance(data, dict):
        raise DecodeFailed([FieldError("", "the instruction must be a JSON object")])
    return data
