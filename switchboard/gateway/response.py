"""How an HTTP gateway's answer maps to each address's outcome. Pure.

The order of the checks (:func:`classify`):

1. The HTTP status is in ``success`` (default ``2xx``) and, when ``success_when`` is set, the
   JSON answer's field at its path has one of the expected values: the request succeeded.
2. Otherwise, the status is in ``retryable`` (default ``429`` and ``5xx``), or ``retryable_when``
   matches the JSON answer: a **retryable** failure (the dispatcher tries again, per the
   session's ``retries``).
3. Anything else is a **permanent** failure: trying again cannot help (a ``400``, a ``401``, a
   ``2xx`` whose ``success_when`` field says "invalid number").

The provider message id is the value at ``message_id`` (a path such as ``data.message_id`` or
``messages.0.id``: dots between keys, whole numbers index lists). A bulk request (one request
for many addresses) shares that outcome among its addresses, unless ``bulk.results`` names the
answer's list of per-address results: each address then takes its own item (matched by the
item's ``bulk.match`` field, else by position), its own id (``bulk.message_id``) and, with
``bulk.success_when``, its own verdict. An address the gateway accepted the request for but
left out of the list keeps the request's success, without an id: it was most likely sent, and
sending it again would more likely duplicate it than help.

An answer that is not JSON is read as ``None`` at every path: a plain ``200 OK`` succeeds when no
``success_when`` is set.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

__all__ = ["Condition", "Outcome", "ResponseRules", "StatusRanges", "classify", "path_get"]

_DIGITS: Final = re.compile(r"\D")
#: The most characters of a gateway's error text kept in a status event.
ERROR_TEXT_MAX: Final = 200


def path_get(value: Any, path: str | None) -> Any:
    """The value at ``path`` (``data.items.0.id``) in a parsed JSON answer, or None."""
    if path is None:
        return None
    for part in path.split("."):
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


@dataclass(frozen=True, slots=True)
class StatusRanges:
    """HTTP statuses as inclusive ranges (``2xx`` is 200-299)."""

    ranges: tuple[tuple[int, int], ...]

    def __contains__(self, status: object) -> bool:
        return isinstance(status, int) and any(lo <= status <= hi for lo, hi in self.ranges)


@dataclass(frozen=True, slots=True)
class Condition:
    """The JSON answer's field at ``path`` has one of ``values`` (``"200"`` matches ``200``)."""

    path: str
    values: tuple[Any, ...]

    def holds(self, payload: Any) -> bool:
        found = path_get(payload, self.path)
        return found is not None and any(_same(found, v) for v in self.values)


@dataclass(frozen=True, slots=True)
class ResponseRules:
    """The ``response`` and ``bulk`` options that read an answer (see :mod:`config`)."""

    success: StatusRanges
    retryable: StatusRanges
    success_when: Condition | None = None
    retryable_when: Condition | None = None
    message_id: str | None = None
    error: str | None = None
    error_code: str | None = None
    results: str | None = None
    match: str | None = None
    result_id: str | None = None
    result_success_when: Condition | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one address of a request came to. ``code`` and ``error`` describe a failure."""

    kind: Literal["ok", "retryable", "permanent"]
    message_id: str | None = None
    code: str | None = None
    error: str | None = None
    #: Seconds the gateway asked to wait (``Retry-After``), on a retryable failure.
    retry_after: float | None = None


def parse_json(body: bytes) -> Any:
    """The answer as JSON, or None when it is empty or not JSON."""
    try:
        return json.loads(body) if body.strip() else None
    except (ValueError, UnicodeDecodeError):
        return None


def classify(
    rules: ResponseRules,
    status: int,
    payload: Any,
    addresses: Sequence[str],
    retry_after: float | None = None,
) -> list[Outcome]:
    """One :class:`Outcome` per address, in order (module docs). ``payload`` is the parsed
    JSON answer (:func:`parse_json`), None when there is none; ``retry_after`` the answer's
    ``Retry-After`` in seconds, kept on a retryable failure."""
    ok = status in rules.success and (
        rules.success_when is None or rules.success_when.holds(payload)
    )
    if not ok:
        retry = status in rules.retryable or (
            rules.retryable_when is not None and rules.retryable_when.holds(payload)
        )
        failure = Outcome(
            "retryable" if retry else "permanent",
            code=_text(path_get(payload, rules.error_code)) or f"http-{status}",
            error=_failure_text(rules, status, payload),
            retry_after=retry_after if retry else None,
        )
        return [failure] * len(addresses)
    shared = Outcome("ok", message_id=_text(path_get(payload, rules.message_id)))
    items = path_get(payload, rules.results)
    if rules.results is None or not isinstance(items, list):
        return [shared] * len(addresses)
    return [_per_address(rules, items, i, address) for i, address in enumerate(addresses)]


def _per_address(rules: ResponseRules, items: list[Any], position: int, address: str) -> Outcome:
    if rules.match is not None:
        item = next((it for it in items if _same_address(path_get(it, rules.match), address)), None)
    else:
        item = items[position] if position < len(items) else None
    if item is None:
        return Outcome("ok")  # accepted with the request, but not listed (module docs)
    if rules.result_success_when is not None and not rules.result_success_when.holds(item):
        found = path_get(item, rules.result_success_when.path)
        return Outcome(
            "permanent",
            code=_text(path_get(item, rules.error_code)) or "gateway-refused",
            error=_clip(
                _text(path_get(item, rules.error))
                or f"the gateway refused this address ({rules.result_success_when.path}: {found!r})"
            ),
        )
    return Outcome("ok", message_id=_text(path_get(item, rules.result_id)))


def _failure_text(rules: ResponseRules, status: int, payload: Any) -> str:
    said = _text(path_get(payload, rules.error))
    if status in rules.success and rules.success_when is not None:
        found = path_get(payload, rules.success_when.path)
        base = f"the gateway answered HTTP {status} with {rules.success_when.path}: {found!r}"
    else:
        base = f"the gateway answered HTTP {status}"
    return _clip(f"{base}: {said}" if said else base)


def _same(found: Any, expected: Any) -> bool:
    if found == expected and type(found) is type(expected):
        return True
    # A gateway answering "200" where 200 was configured (or the reverse) means the same.
    scalar = (str, int, float)
    return (
        isinstance(found, scalar)
        and isinstance(expected, scalar)
        and not isinstance(found, bool)
        and not isinstance(expected, bool)
        and str(found) == str(expected)
    )


def _same_address(found: Any, address: str) -> bool:
    """A gateway may answer the number as sent, or normalised to its digits."""
    if not isinstance(found, str | int) or isinstance(found, bool):
        return False
    found = str(found)
    return found == address or (
        _DIGITS.sub("", found) != "" and _DIGITS.sub("", found) == _DIGITS.sub("", address)
    )


def _text(value: Any) -> str | None:
    if isinstance(value, bool) or value is None or isinstance(value, dict | list):
        return None
    text = str(value)
    return text or None


def _clip(text: str) -> str:
    return text if len(text) <= ERROR_TEXT_MAX else text[: ERROR_TEXT_MAX - 1] + "…"
