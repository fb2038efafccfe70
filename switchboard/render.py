"""Per-recipient message rendering: ``{{ name }}`` placeholders. Pure, and sandboxed by design.

The template language is deliberately tiny: a placeholder names a variable, optionally with a
fallback, and that is all. There is no attribute access, no indexing, no calls and no code, so
a template from a client can never reach anything but the variables it was given::

    Hello {{ name }}, your order {{ order_id }} shipped.
    Hello {{ name | default("there") }}!

Variables come from, later winning: ``transport.extras.template_vars``, then the recipient
profile (``name``, ``vars``). A placeholder with no value and no fallback is an error for that
recipient (:class:`MissingVariable`): sending "Hello ," is worse than not sending.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any, Final

__all__ = ["MissingVariable", "TemplateSyntaxError", "placeholders", "render"]

_PLACEHOLDER: Final = re.compile(
    r"""\{\{\s*
        (?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*
        (?:\|\s*default\(\s*(?:"(?P<dq>[^"]*)"|'(?P<sq>[^']*)')\s*\)\s*)?
    \}\}""",
    re.VERBOSE,
)
_ANY_BRACES: Final = re.compile(r"\{\{.*?\}\}", re.DOTALL)


class TemplateSyntaxError(ValueError):
    """A ``{{ ... }}`` that is not a variable name with an optional ``default("...")``."""


class MissingVariable(KeyError):
    """A placeholder has no value for this recipient and no default."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name

    def __str__(self) -> str:
        return f"template variable {self.name!r} has no value for this recipient"


def placeholders(template: str) -> set[str]:
    """Names used by ``template``; raises :class:`TemplateSyntaxError` on a malformed one."""
    return {part[0] for part in _compiled(template) if isinstance(part, tuple)}


def render(template: str, variables: Mapping[str, Any], *, escape_html: bool = False) -> str:
    """Fill ``template``'s placeholders from ``variables``.

    Args:
        escape_html: escape values for an HTML body (the template itself is trusted markup).

    Raises:
        MissingVariable: the first placeholder without a value or default.
        TemplateSyntaxError: a malformed placeholder.
    """
    parts = _compiled(template)
    if len(parts) == 1 and isinstance(parts[0], str):  # no placeholder: the template itself
        return parts[0]
    out: list[str] = []
    for part in parts:
        if isinstance(part, str):
            out.append(part)
            continue
        name, fallback = part
        value = variables.get(name)
        if value is None:
            if fallback is None:
                raise MissingVariable(name)
            value = fallback
        text = _text(value)
        out.append(html.escape(text) if escape_html else text)
    return "".join(out)


#: A template, parsed: its literal text and its placeholders (name, fallback), in order.
_Parts = tuple[str | tuple[str, str | None], ...]


@lru_cache(maxsize=256)
def _compiled(template: str) -> _Parts:
    """``template`` parsed once, then remembered: a campaign renders the same template for
    every recipient, and parsing it (and checking every ``{{ }}`` block) is most of the cost.
    A malformed template raises :class:`TemplateSyntaxError` (and is not remembered)."""
    for block in _ANY_BRACES.finditer(template):  # every {{ }} block, not only well-formed ones
        if _PLACEHOLDER.fullmatch(block.group(0)) is None:
            raise TemplateSyntaxError(
                f"{block.group(0)!r} is not a placeholder: use {{{{ name }}}} or "
                '{{ name | default("text") }}'
            )
    parts: list[str | tuple[str, str | None]] = []
    at = 0
    for match in _PLACEHOLDER.finditer(template):
        if match.start() > at:
            parts.append(template[at : match.start()])
        fallback = match.group("dq") if match.group("dq") is not None else match.group("sq")
        parts.append((match.group("name"), fallback))
        at = match.end()
    if at < len(template) or not parts:
        parts.append(template[at:])
    return tuple(parts)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
