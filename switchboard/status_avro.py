"""The status event's Avro body, written without fastavro on the hot path. Pure.

Every delivery is told by about three status events, and fastavro's ``schemaless_writer``
costs about 8 µs per event in its per-call set-up (a schema lookup, a copy of the record, the
generic writer walking the schema). :func:`encode_status_event` writes the same bytes for
``schemas/status_event.avsc`` directly, in about a fifth of that, and :func:`encode_event`
(what the worker publishes with) writes them from the event itself, remembering the strings
a session's events repeat: about 3 µs an ``accepted`` event, 4 µs a ``delivered`` one.

Guarantee: the bytes are exactly fastavro's for the same record (``tests/unit/test_status_avro.py``
compares them over generated events). Anything the fast path does not cover (a naive
``occurred_at``, a list or a map inside ``detail``, an integer outside Avro's long) is handed
to :func:`switchboard.wire.encode_record`, so the fast path can only be faster, never different.

:func:`decode_status` reads a status event back from any framing the worker writes (for
``switchboard tail`` and the web console's feed).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Final

import schemas
from switchboard.errors import DecodeFailed, FieldError
from switchboard.status import StatusEvent, plain_detail
from switchboard.wire import CONTENT_TYPE, Headers, encode_record, header_map, read_record, sniff

__all__ = ["WriterLookup", "decode_status", "encode_event", "encode_status_event"]

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_DOUBLE: Final = struct.Struct("<d")
_HEADER: Final = struct.Struct(">bI")
_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1
_CONTENT_TYPE: Final = schemas.content_type("status_event").encode()

#: Field order of the schema, and which are ``["null", "string"]`` unions.
_STRINGS: Final = ("event_id", "session_id", "client_id")
_OPTIONAL_BEFORE_STATUS: Final = ("recipient", "channel")
_OPTIONAL_AFTER_ATTEMPT: Final = ("provider_message_id", "error_code", "error")

#: Branches of a ``detail`` value's union: null, boolean, long, double, string (array, map).
_NULL, _BOOLEAN, _LONG, _DOUBLE_BRANCH, _STRING = (b"\x00", b"\x02", b"\x04", b"\x06", b"\x08")


class _Unsupported(Exception):
    """A value the fast path leaves to fastavro."""


def encode_status_event(
    record: Mapping[str, Any], schema_id: int | None = None
) -> tuple[bytes, Headers]:
    """``record`` (``StatusEvent.to_avro()``) as :func:`~switchboard.wire.encode_record` would
    write it with the ``status_event`` schema (module docs)."""
    try:
        body = _body(record)
    except _Unsupported:
        return encode_record("status_event", record, schema_id)
    if schema_id is None:
        return body, [(CONTENT_TYPE, _CONTENT_TYPE)]
    return _HEADER.pack(0, schema_id) + body, []


def encode_event(event: StatusEvent, schema_id: int | None = None) -> tuple[bytes, Headers]:
    """``encode_status_event(event.to_avro(), schema_id)``, written from the event itself: no
    record is built, and the strings a session's events repeat (its id, its client's, a
    recipient's address, a channel, a status) are encoded once (:func:`_repeated`)."""
    try:
        body = _event_body(event)
    except _Unsupported:
        return encode_status_event(event.to_avro(), schema_id)
    if schema_id is None:
        return body, [(CONTENT_TYPE, _CONTENT_TYPE)]
    return _HEADER.pack(0, schema_id) + body, []


def _event_body(event: StatusEvent) -> bytes:
    detail = event.detail
    encoded_detail = _encoded_detail(detail) if detail else _NULL
    recipient, channel = event.recipient, event.channel
    attempt = event.attempt
    return b"".join(
        (
            _text(event.event_id),
            _repeated(event.session_id),
            _repeated(event.client_id),
            _NULL if recipient is None else b"\x02" + _repeated(recipient),
            _NULL if channel is None else b"\x02" + _repeated(channel),
            _repeated(event.status),
            _SMALL_LONGS[attempt]
            if type(attempt) is int and 0 <= attempt < 64
            else _long_bytes(attempt),
            _optional_text(event.provider_message_id),
            _optional_text(event.error_code),
            _optional_text(event.error),
            _encoded_time(event.occurred_at),
            encoded_detail,
        )
    )


def _encoded_time(value: Any) -> bytes:
    """The ``occurred_at`` field (a long of milliseconds), remembered by the time written: a
    report's events share one (``sent`` and ``delivered``), and so do a chunk's ``accepted``
    events. (Remembered by the ``datetime``, microseconds included: two times of one
    millisecond are two entries.)"""
    if type(value) is not datetime:
        raise _Unsupported  # (and nothing unhashable is looked up)
    found = _TIMES.get(value)
    if found is None:
        if len(_TIMES) >= _TIMES_MAX:
            _TIMES.clear()
        found = _TIMES[value] = _long_bytes(_millis(value))
    return found


#: Encoded times by ``datetime`` (equal datetimes are the same instant): bounded, cleared when
#: full. Any value but an aware ``datetime`` raises in :func:`_millis` and is not remembered.
_TIMES: dict[Any, bytes] = {}
_TIMES_MAX: Final = 4096


def _encoded_detail(detail: Mapping[str, Any]) -> bytes:
    """The ``detail`` field: a map of plain values (:func:`plain_detail`), or null when empty.
    A small detail of strings, booleans and nulls is remembered by its items (a provider's
    ``{"sandbox": true}`` or ``{"from": ...}`` on every delivery of a session)."""
    key: tuple[tuple[Any, Any], ...] | None = None
    if len(detail) <= 4:
        key = tuple(detail.items())
        if all(type(k) is str and type(v) in _REMEMBERED for k, v in key):
            found = _DETAILS.get(key)
            if found is not None:
                return found
        else:
            key = None
    plain = plain_detail(detail)
    if not plain:
        return _NULL
    out = bytearray(b"\x02")
    _map(out, plain)
    encoded = bytes(out)
    if key is not None:
        if len(_DETAILS) >= _ENCODED_MAX:
            _DETAILS.clear()
        _DETAILS[key] = encoded
    return encoded


#: The types of a detail's values :func:`_encoded_detail` may remember it by (not ``int`` or
#: ``float``: ``True == 1 == 1.0`` would find another type's bytes).
_REMEMBERED: Final = frozenset({str, bool, type(None)})
_DETAILS: dict[tuple[tuple[Any, Any], ...], bytes] = {}

#: The zigzag varints of 0..63: one byte each (an attempt number).
_SMALL_LONGS: Final = tuple(bytes((n << 1,)) for n in range(64))

#: Avro strings already encoded (their length and UTF-8 bytes), by value: a session's events
#: repeat its id, its client's and each recipient's address. Bounded: cleared when full.
_ENCODED: dict[str, bytes] = {}
_ENCODED_MAX: Final = 65_536


def _repeated(value: Any) -> bytes:
    """:func:`_text`, remembered (for a value many events carry)."""
    if type(value) is not str:
        raise _Unsupported
    found = _ENCODED.get(value)
    if found is None:
        if len(_ENCODED) >= _ENCODED_MAX:
            _ENCODED.clear()
        found = _ENCODED[value] = _text(value)
    return found


def _text(value: Any) -> bytes:
    """An Avro string: the zigzag varint of its UTF-8 length, then the bytes."""
    if type(value) is not str:
        raise _Unsupported
    data = value.encode()
    size = len(data)
    if size < 64:
        return _SMALL_LONGS[size] + data
    return _long_bytes(size) + data


def _optional_text(value: Any) -> bytes:
    return _NULL if value is None else b"\x02" + _text(value)


def _long_bytes(value: Any) -> bytes:
    out = bytearray()
    _long(out, value)
    return bytes(out)


def _body(record: Mapping[str, Any]) -> bytes:
    out = bytearray()
    for name in _STRINGS:
        _string(out, record[name])
    for name in _OPTIONAL_BEFORE_STATUS:
        _optional_string(out, record.get(name))
    _string(out, record["status"])
    _long(out, record.get("attempt", 0))
    for name in _OPTIONAL_AFTER_ATTEMPT:
        _optional_string(out, record.get(name))
    _long(out, _millis(record["occurred_at"]))
    detail = record.get("detail")
    if detail is None:
        out += _NULL
    else:
        out += b"\x02"
        _map(out, detail)
    return bytes(out)


def _long(out: bytearray, value: Any) -> None:
    if type(value) is not int or not _LONG_MIN <= value <= _LONG_MAX:
        raise _Unsupported
    n = (value << 1) ^ (value >> 63)  # zigzag
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _string(out: bytearray, value: Any) -> None:
    out += _text(value)


def _optional_string(out: bytearray, value: Any) -> None:
    if value is None:
        out += _NULL
    else:
        out += b"\x02"
        _string(out, value)


def _millis(value: Any) -> int:
    # fastavro's conversion for an aware datetime, to the millisecond it would write.
    if type(value) is not datetime or value.tzinfo is None:
        raise _Unsupported
    delta = value - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1000 + int(delta.microseconds / 1000)


def _map(out: bytearray, values: Any) -> None:
    if type(values) is not dict:
        raise _Unsupported
    if values:
        _long(out, len(values))
        for key, value in values.items():
            _string(out, key)
            _scalar(out, value)
    out.append(0)


def _scalar(out: bytearray, value: Any) -> None:
    kind = type(value)
    if value is None:
        out += _NULL
    elif kind is bool:
        out += _BOOLEAN
        out.append(1 if value else 0)
    elif kind is int:
        out += _LONG
        _long(out, value)
    elif kind is float:
        out += _DOUBLE_BRANCH
        out += _DOUBLE.pack(value)
    elif kind is str:
        out += _STRING
        _string(out, value)
    else:
        raise _Unsupported  # an array or a map: fastavro writes those


#: Given a Confluent schema id, the writer schema (parsed), or None when unknown.
WriterLookup = Callable[[int], Any]


def decode_status(
    value: bytes | None,
    headers: Iterable[tuple[str, str | bytes | None]] | Mapping[str, str | bytes | None] | None,
    writer_schema: WriterLookup | None = None,
) -> dict[str, Any]:
    """A status event as a mapping, from any framing the worker writes (the Confluent wire
    format, schemaless Avro with the content-type header, or JSON).

    Without ``writer_schema``, a Confluent-framed value is read with the bundled schema, which
    is the one the worker registered. Raises :class:`DecodeFailed` naming the problem.
    """
    framing = sniff(value, header_map(headers), "status_event")
    assert value is not None  # sniff refuses an empty value
    if framing.kind == "json":
        try:
            data = json.loads(value)
        except ValueError as exc:
            raise DecodeFailed([FieldError("", f"not valid JSON: {exc}")]) from None
        if not isinstance(data, dict):
            raise DecodeFailed([FieldError("", "a status event must be a JSON object")])
        return data
    if framing.kind == "confluent":
        assert framing.schema_id is not None
        writer = writer_schema(framing.schema_id) if writer_schema is not None else None
        if writer is None:
            # Our own registration: the bytes were written with the bundled schema.
            return read_record("status_event", value[5:])
        return read_record("status_event", value, writer)
    return read_record("status_event", value)
