"""Progress of long operations on the command line: a bar on a terminal, milestones otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress"]


class Progress:
    """``Progress(total, "uploading", unit="B")``, then ``advance(n)`` as work is done."""

    def __init__(
        self, total: int, label: str, *, unit: str = "", stream: TextIO | None = None
    ) -> None:
        self.total = max(1, total)
        self.label = label
        self.unit = unit
        self.done = 0
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self._started = time.monotonic()
        self._last_tenth = -1
        self._last_draw = 0.0

    def advance(self, n: int) -> None:
        self.done = min(self.total, self.done + n)
        fraction = self.done / self.total
        if self.tty:
            now = time.monotonic()
            if now - self._last_draw >= 0.1 or self.done == self.total:
                self._last_draw = now
                filled = int(fraction * 30)
                rate = self.done / max(1e-9, now - self._started)
                self.stream.write(
                    f"\r{self.label} [{'#' * filled}{'.' * (30 - filled)}] {fraction:6.1%} "
                    f"{self.done:,}/{self.total:,}{self.unit} ({rate:,.0f}{self.unit}/s)"
                )
                self.stream.flush()
        elif int(fraction * 10) > self._last_tenth:
            self._last_tenth = int(fraction * 10)
            self.stream.write(
                f"{self.label}: {fraction:.0%} ({self.done:,}/{self.total:,}{self.unit})\n"
            )
            self.stream.flush()

    def finish(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
