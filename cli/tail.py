"""``switchboard tail``: what it shows of a status event, and which events it shows. Pure.

The Kafka side (a consumer with no group, assigned every partition of the status topic) is in
``cli.main``; here are the parts worth testing on their own: reading a value in any of
the status topic's framings, the filter, and the one-line rendering.

A value the tool cannot read is shown as such (``?`` and the reason), never skipped in silence
and never fatal: ``tail`` is a diagnostic tool, and an unreadable event is a finding.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from switchboard.errors import DecodeFailed, FieldError
from switchboard.wire import header_map, read_record, sniff

__all__ = ["Filter", "decode_status", "render"]

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


@dataclass(frozen=True, slots=True)
class Filter:
    """Which events to show: all conditions given must hold."""

    client_id: str | None = None
    session_id: str | None = None
    statuses: frozenset[str] = frozenset()

    def __call__(self, event: dict[str, Any]) -> bool:
        return (
            (self.client_id is None or event.get("client_id") == self.client_id)
            and (self.session_id is None or event.get("session_id") == self.session_id)
            and (not self.statuses or event.get("status") in self.statuses)
        )


def render(event: dict[str, Any], *, as_json: bool = False) -> str:
    """One line for ``event``: JSON (for ``jq``), or columns for a person.

    The columns: time (UTC), session, status, channel and recipient (``-`` for session
    events), the attempt, then the error or, for ``completed``, the counts.
    """
    if as_json:
        return json.dumps(event, sort_keys=True, default=_json_default, ensure_ascii=False)
    when = _when(event.get("occurred_at"))
    parts = [
        when,
        str(event.get("session_id", "?")),
        f"{event.get('status', '?'):<11}",
        f"{event.get('channel') or '-':<8}",
        str(event.get("recipient") or "-"),
    ]
    if event.get("attempt"):
        parts.append(f"attempt {event['attempt']}")
    if event.get("error_code") or event.get("error"):
        parts.append(
            " ".join(str(e) for e in ("error", event.get("error_code"), event.get("error")) if e)
        )
    detail = event.get("detail") or {}
    if event.get("status") == "completed" and isinstance(detail.get("counts"), dict):
        counts = detail["counts"]
        parts.append(" ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    return "  ".join(parts)


def _json_default(value: Any) -> str:
    # The same form as webhook bodies and the HTTP API: ISO 8601 UTC with a Z.
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return str(value)


def _when(at: Any) -> str:
    """``HH:MM:SS.mmm`` UTC, from Avro's datetime or JSON's milliseconds or ISO text."""
    if isinstance(at, (int, float)):
        at = datetime.fromtimestamp(at / 1000, UTC)
    elif isinstance(at, str):
        try:
            at = datetime.fromisoformat(at)
        except ValueError:
            return str(at)
    if isinstance(at, datetime):
        return at.astimezone(UTC).strftime("%H:%M:%S.%f")[:-3]
    return "--:--:--.---"
