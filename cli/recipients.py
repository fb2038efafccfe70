"""``switchboard status ID --status ...``: a session's deliveries in some statuses, with why,
read page by page through the API's ``?status=`` filter (``switchboard/console.py``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final
from urllib.parse import quote

from cli.table import render_rows

__all__ = ["collect", "render_table"]

_COLUMNS: Final = ("index", "channel", "recipient", "status", "reason", "error_code", "error")


def render_table(entries: Sequence[Mapping[str, Any]]) -> str:
    """The deliveries of a session document (its ``recipients``) as a text table, one line
    each: index, channel, recipient, status, reason, code and the error text."""
    return render_rows(entries, _COLUMNS)


def collect(
    fetch: Callable[[str], tuple[int, Any]], session_id: str, statuses: frozenset[str]
) -> tuple[int, Any, list[dict[str, Any]]]:
    """Every delivery of a session in ``statuses``, page by page through the API's filter.

    ``fetch(path)`` answers ``(HTTP status, body)``. Answers ``(200, the last page's document,
    the deliveries)``, or the first answer that is not 200 with its body and what was read."""
    query = "status=" + ",".join(sorted(statuses))  # the API reads one comma list
    found: list[dict[str, Any]] = []
    offset: int | None = 0
    document: Any = None
    while offset is not None:
        path = f"/v1/sessions/{quote(session_id, safe='')}?{query}&offset={offset}&limit=500"
        status, document = fetch(path)
        if status != 200 or not isinstance(document, dict):
            return status, document, found
        found.extend(document.get("recipients") or [])
        offset = document.get("next_offset")
    return 200, document, found
