"""A session's recipients filtered by status: the ``?status=`` of ``GET /v1/sessions/{id}``
and the table ``switchboard status ID --status ...`` prints. Pure.

The filter is a set of delivery statuses, given as repeated values or comma lists
(``?status=deferred&status=failed`` or ``?status=deferred,failed``); a value that is not a
delivery status is refused, naming each one (the API answers 400).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final
from urllib.parse import quote

from switchboard.status import STATUSES
from switchboard.table import render_rows

__all__ = ["DELIVERY_STATUSES", "collect", "parse_statuses", "render_table"]

#: What a delivery can be in (``completed`` is a session's own status, never a delivery's).
DELIVERY_STATUSES: Final[tuple[str, ...]] = tuple(s for s in STATUSES if s != "completed")

_COLUMNS: Final = ("index", "channel", "recipient", "status", "reason", "error_code", "error")


def parse_statuses(values: Iterable[str]) -> frozenset[str]:
    """The statuses named by ``values`` (each a status or a comma list of them; blanks are
    ignored). Raises ``ValueError`` naming every value that is not a delivery status."""
    wanted: set[str] = set()
    unknown: list[str] = []
    for value in values:
        for name in value.split(","):
            name = name.strip()
            if not name:
                continue
            if name in DELIVERY_STATUSES:
                wanted.add(name)
            elif name not in unknown:
                unknown.append(name)
    if unknown:
        shown = ", ".join(repr(name[:40]) for name in unknown[:10])
        raise ValueError(
            f"unknown status {shown}: use one or more of {', '.join(DELIVERY_STATUSES)}"
        )
    return frozenset(wanted)


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
    query = "&".join(f"status={name}" for name in sorted(statuses))
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
