"""Plain text tables for the command line. Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["render_rows"]


def render_rows(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """``rows`` as a table of ``columns`` (headers in capitals), one line per row, columns
    aligned but the last, which is left unpadded (the long text goes there). A missing or null
    value is ``-``; whitespace in a value (a newline in an error text) becomes single spaces."""
    header = [c.upper().replace("_", " ") for c in columns]
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(r[i]) for r in [header, *cells]) for i in range(len(columns) - 1)]

    def line(values: list[str]) -> str:
        padded = [value.ljust(widths[i]) for i, value in enumerate(values[:-1])]
        return "  ".join([*padded, values[-1]]).rstrip()

    return "\n".join(line(r) for r in [header, *cells])


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return " ".join(str(value).split())
