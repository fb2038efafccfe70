"""The worker's shared object (streams/app.py) holds every piece of state its agents keep between
events: two apps built in one process (tests, the benchmark) share none of it."""

from __future__ import annotations

import dataclasses
from typing import Any

from streams.app import Switchboard


def _bare() -> Switchboard:
    """A Switchboard with its required fields left empty: only its own state is looked at."""
    required = [
        f.name
        for f in dataclasses.fields(Switchboard)
        if f.init and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    fields: dict[str, Any] = dict.fromkeys(required)
    return Switchboard(**fields)


def test_two_apps_share_no_state() -> None:
    first, second = _bare(), _bare()
    for name in ("decoded_sessions", "armed_expiry", "background", "staged", "claims"):
        assert getattr(first, name) is not getattr(second, name), name
