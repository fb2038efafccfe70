"""Time-zone helpers. Pure."""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["is_zone_name"]


def is_zone_name(name: Any) -> bool:
    """Whether ``name`` is an IANA time-zone name this machine's tz database knows."""
    if not isinstance(name, str) or not name or name.startswith("/") or ".." in name:
        return False
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return False
    return True
