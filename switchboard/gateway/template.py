"""``{{placeholder}}`` templates for an HTTP gateway's URL, headers and body. Pure.

A template is the JSON-like value written in ``clients.yaml`` (a mapping, a list, a string, a
number...). Rendering replaces placeholders with the values of one request:

* A string that is **exactly one placeholder** (``"{{attempt}}"``, ``"{{to}}"``) becomes the
  value itself and keeps its type: a number stays a number, the addresses of a bulk request stay a
  list, a mapping in ``extras`` stays a mapping.
* A placeholder **inside a longer string** (``"Bearer {{secrets.token}}"``) is replaced by the
  value's text: nothing for an absent value, the addresses joined with ``,``, ``true``/``false``,
  JSON for a list or mapping.
* A **key whose rendered value is empty** (absent, ``""``, ``[]``, ``{}``) is dropped, and so is
  an empty list item, so an optional field (``{{subject}}``, ``{{from}}``) does not reach the
  gateway as ``""``. Only values that held a placeholder are dropped: a literal ``""`` stays.
* In a **bulk** request (``to`` is a list of addresses), a list of exactly one item that uses
  ``{{to}}`` (the innermost, when such lists nest) is repeated once per address, with ``{{to}}``
  standing for that address: the ``"destinations": [{"to": "{{to}}"}]`` of gateways that take
  one object per recipient.

Placeholders name the fields of the message (:data:`FIELDS`), ``extras.<key>`` (the
instruction's ``transport.extras``) and ``secrets.<name>`` (a variable declared under the
channel's ``secrets``). An unknown name or an unclosed ``{{`` is found by :meth:`Template.compile`,
when the configuration is applied, never at the first send.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, Final

__all__ = ["FIELDS", "Template", "is_empty", "text_of"]

#: The message fields a template can name (besides ``extras.<key>`` and ``secrets.<name>``).
FIELDS: Final = (
    "to",
    "body",
    "subject",
    "from",
    "file_url",
    "reference",
    "session_id",
    "attempt",
    "channel",
    "locale",
)
_PLACEHOLDER: Final = re.compile(r"\{\{\s*([^{}\s]*)\s*\}\}")
_KEY: Final = re.compile(r"[A-Za-z0-9_\-]+")


def is_empty(value: Any) -> bool:
    """Whether a rendered value counts as empty (its key is then dropped)."""
    return value is None or (isinstance(value, str | list | dict | tuple) and not value)


def text_of(value: Any) -> str:
    """A value as it reads inside a longer string."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ",".join(text_of(v) for v in value)
    if isinstance(value, Mapping):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return str(value)


@dataclass(frozen=True, slots=True)
class Template:
    """A checked template. ``names`` are the placeholders it uses (``extras.x``, ``to``...)."""

    source: Any
    names: frozenset[str]

    @classmethod
    def compile(
        cls, source: Any, where: str, secrets: Collection[str], problems: list[str]
    ) -> Template:
        """Check ``source``; append ``"<where>: <problem>"`` to ``problems`` for each problem."""
        names: set[str] = set()
        _check(source, where, secrets, names, problems)
        return cls(source, frozenset(names))

    def uses(self, name: str) -> bool:
        return name in self.names

    def render(self, values: Mapping[str, Any]) -> Any:
        """The rendered value (module docs). ``values`` maps a field to its value, and
        ``extras``/``secrets`` to mappings; ``to`` is a string, or a list in a bulk request."""
        return _render(self.source, values)

    def render_text(self, values: Mapping[str, Any], escape: Callable[[str], str] = str) -> str:
        """A string template rendered as text, each value passed through ``escape`` (a URL's
        percent-encoding). Whole-value placeholders are text here too."""
        return _PLACEHOLDER.sub(
            lambda m: escape(text_of(lookup(values, m.group(1)))), str(self.source)
        )


def lookup(values: Mapping[str, Any], name: str) -> Any:
    """The value of placeholder ``name``: a field, or ``extras.<key>`` / ``secrets.<name>``."""
    head, dot, tail = name.partition(".")
    if dot:
        scope = values.get(head)
        return scope.get(tail) if isinstance(scope, Mapping) else None
    return values.get(name)


def _check(
    node: Any, where: str, secrets: Collection[str], names: set[str], problems: list[str]
) -> None:
    if isinstance(node, str):
        for match in _PLACEHOLDER.finditer(node):
            name = match.group(1)
            problem = _name_problem(name, secrets)
            if problem is not None:
                problems.append(f"{where}: {problem}")
            names.add(name)
        rest = _PLACEHOLDER.sub("", node)
        if "{{" in rest or "}}" in rest:
            problems.append(f"{where}: an unclosed or malformed {{{{placeholder}}}}")
    elif isinstance(node, Mapping):
        for key, value in node.items():
            if not isinstance(key, str):
                problems.append(f"{where}: keys must be strings, not {key!r}")
            _check(value, f"{where}.{key}", secrets, names, problems)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            _check(item, f"{where}[{i}]", secrets, names, problems)
    elif not (node is None or isinstance(node, bool | int | float)):
        problems.append(f"{where}: {type(node).__name__} is not a JSON value")


def _name_problem(name: str, secrets: Collection[str]) -> str | None:
    head, dot, tail = name.partition(".")
    if not dot and name in FIELDS:
        return None
    if head == "extras" and _KEY.fullmatch(tail):
        return None
    if head == "secrets" and tail in secrets:
        return None
    if head == "secrets":
        declared = ", ".join(sorted(secrets)) or "none"
        return f"{{{{{name}}}}} names a secret not declared under `secrets` (declared: {declared})"
    known = ", ".join(FIELDS)
    return f"unknown placeholder {{{{{name}}}}}; known: {known}, extras.<key>, secrets.<name>"


def _uses_to(node: Any) -> bool:
    if isinstance(node, str):
        return any(m.group(1) == "to" for m in _PLACEHOLDER.finditer(node))
    if isinstance(node, Mapping):
        return any(_uses_to(v) for v in node.values())
    if isinstance(node, list):
        return any(_uses_to(v) for v in node)
    return False


def _repeats(node: list[Any]) -> bool:
    """Whether a bulk request repeats this list per address (module docs)."""
    return len(node) == 1 and _uses_to(node[0]) and not _holds_repeat(node[0])


def _holds_repeat(node: Any) -> bool:
    if isinstance(node, list):
        return _repeats(node) or any(_holds_repeat(v) for v in node)
    if isinstance(node, Mapping):
        return any(_holds_repeat(v) for v in node.values())
    return False


def _has_placeholder(node: Any) -> bool:
    if isinstance(node, str):
        return _PLACEHOLDER.search(node) is not None
    if isinstance(node, Mapping):
        return any(_has_placeholder(v) for v in node.values())
    if isinstance(node, list):
        return any(_has_placeholder(v) for v in node)
    return False


def _render(node: Any, values: Mapping[str, Any]) -> Any:
    if isinstance(node, str):
        whole = _PLACEHOLDER.fullmatch(node)
        if whole is not None:
            value = lookup(values, whole.group(1))
            return list(value) if isinstance(value, tuple) else value
        return _PLACEHOLDER.sub(lambda m: text_of(lookup(values, m.group(1))), node)
    if isinstance(node, Mapping):
        out: dict[str, Any] = {}
        for key, item in node.items():
            value = _render(item, values)
            if not (is_empty(value) and _has_placeholder(item)):
                out[key] = value
        return out
    if isinstance(node, list):
        addresses = values.get("to")
        if isinstance(addresses, list | tuple) and _repeats(node):
            # Bulk: one item per address (module docs).
            items = [_render(node[0], {**values, "to": address}) for address in addresses]
            return [v for v in items if not is_empty(v)]
        return [
            value
            for item in node
            if not (is_empty(value := _render(item, values)) and _has_placeholder(item))
        ]
    return node
