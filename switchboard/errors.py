"""Switchboard's exceptions.

::

    SwitchboardError
    ├── ConfigError            configuration (settings, clients.yaml) is unusable
    ├── MissingState           a piece of state that must exist does not (never "nothing to do")
    ├── InvalidInput           an input was read but is not acceptable; carries every FieldError
    │   ├── DecodeFailed       the bytes could not be read at all (encoding, schema)
    │   └── ValidationFailed   the instruction was read but breaks the rules
    └── (transports.errors.TransportError and its retryable / permanent / suppressed kinds)

Input errors are never raised for the first problem only: validation collects every problem,
each with the path of the field it concerns, so a client fixes its request in one round.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "ConfigError",
    "DecodeFailed",
    "FieldError",
    "InvalidInput",
    "MissingState",
    "SwitchboardError",
    "ValidationFailed",
]


@dataclass(frozen=True, slots=True)
class FieldError:
    """One problem with one field. ``field`` is a path such as ``audience[1].phone``, or ``""``
    when the problem concerns the whole input."""

    field: str
    error: str

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "error": self.error}


class SwitchboardError(Exception):
    """Root of Switchboard's exceptions."""


class ConfigError(SwitchboardError):
    """Configuration is unusable. The message says which file or variable, and why."""


class MissingState(SwitchboardError):
    """State an agent needs is not where it must be (a session's row, an audience chunk). An
    error to surface (the event goes to the rejected topic, the deliveries it concerns are
    reported failed), never read as "nothing to do"."""


class InvalidInput(SwitchboardError):
    """An input is not acceptable. ``errors`` lists every problem found."""

    def __init__(self, errors: Iterable[FieldError]) -> None:
        self.errors: Sequence[FieldError] = tuple(errors)
        if not self.errors:
            raise ValueError("InvalidInput needs at least one FieldError")
        summary = "; ".join(f"{e.field or '<message>'}: {e.error}" for e in self.errors[:5])
        more = f" (and {len(self.errors) - 5} more)" if len(self.errors) > 5 else ""
        super().__init__(summary + more)

    def as_dicts(self) -> list[dict[str, str]]:
        return [e.as_dict() for e in self.errors]


class DecodeFailed(InvalidInput):
    """The message's bytes could not be decoded (unknown encoding, wrong schema, bad JSON)."""


class ValidationFailed(InvalidInput):
    """The instruction was decoded but breaks the contract's rules."""
