"""Reading an audience from a file for ``switchboard send --audience FILE``. Pure.

Three formats, chosen by the file's extension:

* ``.csv``: a header row naming profile fields (``phone``, ``email``, ``push_token``, ``slack``,
  ``name``, ``timezone``, ``locale``); any other column becomes a template variable (``vars``).
  Empty cells are left out.
* ``.jsonl``: one JSON value per line: an address string or a recipient profile object.
* anything else: one address per line.

Blank lines and lines starting with ``#`` are skipped (not in CSV). Values are passed through as
read: validation is the service's, which names every invalid entry by its position.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Final

__all__ = ["AudienceFileError", "read_audience"]

PROFILE_FIELDS: Final = frozenset(
    {"phone", "email", "push_token", "slack", "name", "timezone", "locale"}
)


class AudienceFileError(ValueError):
    """The file cannot be read as an audience; the message names the line."""


def read_audience(path: Path) -> Iterator[Any]:
    """The audience entries of ``path``, one at a time (a million lines never sit in a list
    here; the caller decides)."""
    with path.open(encoding="utf-8", newline="") as handle:
        if path.suffix.lower() == ".csv":
            yield from _csv(handle)
        elif path.suffix.lower() == ".jsonl":
            yield from _jsonl(handle)
        else:
            yield from _lines(handle)


def _lines(lines: Iterable[str]) -> Iterator[str]:
    for line in lines:
        text = line.strip()
        if text and not text.startswith("#"):
            yield text


def _jsonl(lines: Iterable[str]) -> Iterator[Any]:
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise AudienceFileError(f"line {number}: not JSON: {exc.msg}") from None
        if not isinstance(value, str | dict):
            raise AudienceFileError(
                f"line {number}: expected an address string or a profile object"
            )
        yield value


def _csv(lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    reader = csv.DictReader(lines)
    if not reader.fieldnames:
        raise AudienceFileError(
            "line 1: a CSV audience needs a header row (phone, email, name, ...)"
        )
    for row in reader:
        profile: dict[str, Any] = {}
        variables: dict[str, str] = {}
        for column, cell in row.items():
            if column is None:
                raise AudienceFileError(f"line {reader.line_num}: more cells than header columns")
            value = (cell or "").strip()
            if not value:
                continue
            if column in PROFILE_FIELDS:
                profile[column] = value
            else:
                variables[column] = value
        if variables:
            profile["vars"] = variables
        if profile:
            yield profile
