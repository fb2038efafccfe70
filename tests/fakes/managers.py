"""Third-party service managers for tests, installed the way a plugin is: an entry point in
the group ``switchboard.service_managers`` (see :func:`install`).

``explode``  raises from ``on_message_send`` (after changing the message, which must be undone)
             and from ``on_delivery_report``: the message must still go out, unchanged.
``gate``     blocks a session whose audience holds a number ending in ``0000``, and scrubs
             numbers ending in ``9999`` (with reason ``test scrub``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from switchboard.managers import (
    ENTRY_POINT_GROUP,
    ReportContext,
    Scrub,
    SendContext,
    ServiceManagerBase,
    SessionStartContext,
    SessionStartResult,
)

__all__ = ["Exploding", "Gate", "install"]


class Exploding(ServiceManagerBase):
    name = "explode"
    description = "Fails on purpose."

    async def on_message_send(self, ctx: SendContext) -> Mapping[str, Any] | None:
        ctx.message.body = "CHANGED BY A FAILING MANAGER"
        raise RuntimeError("boom")

    async def on_delivery_report(self, ctx: ReportContext) -> None:
        raise ValueError("report boom")


class Gate(ServiceManagerBase):
    name = "gate"
    description = "Blocks or scrubs by the end of the number."

    async def on_session_start(self, ctx: SessionStartContext) -> SessionStartResult | None:
        if any(a.endswith("0000") for a in ctx.addresses):
            return SessionStartResult(block="a number ending in 0000 is not allowed")
        scrub = tuple(Scrub(a, "test scrub") for a in ctx.addresses if a.endswith("9999"))
        return SessionStartResult(scrub=scrub, detail={"seen": len(ctx.addresses)})


def install(directory: Path) -> Path:
    """Write a distribution's metadata into ``directory`` declaring both managers as entry
    points; a process with ``directory`` on its ``PYTHONPATH`` then finds them."""
    info = directory / "switchboard_test_managers-1.0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: switchboard-test-managers\nVersion: 1.0\n"
    )
    (info / "entry_points.txt").write_text(
        f"[{ENTRY_POINT_GROUP}]\n"
        "explode = tests.fakes.managers:Exploding\n"
        "gate = tests.fakes.managers:Gate\n"
    )
    return directory
