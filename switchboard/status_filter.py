"""Which deliveries a reader asks for by status: the ``?status=`` of ``GET /v1/sessions/{id}``
(and ``switchboard status ID --status ...``, which asks it). Pure.

The filter is a set of delivery statuses, given as repeated values or comma lists
(``?status=deferred&status=failed`` or ``?status=deferred,failed``); a value that is not a
delivery status is refused, naming each one (the API answers 400).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from switchboard.status import STATUSES

__all__ = ["DELIVERY_STATUSES", "parse_statuses"]

#: What a delivery can be in (``completed`` is a session's own status, never a delivery's).
DELIVERY_STATUSES: Final[tuple[str, ...]] = tuple(s for s in STATUSES if s != "completed")


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
