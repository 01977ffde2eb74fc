"""A progress bar with the rate and the time left, on stderr.

On a terminal it redraws one line in place; elsewhere (a CI log, a file) it prints a plain
line at every tenth of the work and at least every ``PLAIN_INTERVAL`` seconds.
"""

from __future__ import annotations

import math
import sys
import time
from typing import TextIO

__all__ = ["Progress", "format_seconds"]

#: Seconds between redraws on a terminal, and between plain lines elsewhere.
REDRAW_INTERVAL, PLAIN_INTERVAL = 0.2, 30.0
BAR_WIDTH = 24


def format_seconds(seconds: float) -> str:
    """``3h05m``, ``4m12s`` or ``7.3s``."""
    if not math.isfinite(seconds):
        return "?"
    if seconds >= 3600:
        return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"
    if seconds >= 60:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{seconds:.1f}s"


class Progress:
    """Counts finished jobs out of ``total`` and shows it.

    Parameters
    ----------
    total : int
        Jobs to run in this run (those already done are not counted).
    label : str
        What is counted, e.g. "sweep".
    enabled : bool
        False: show nothing.
    stream : text file, optional
        Default ``sys.stderr``.
    """

    def __init__(self, total: int, label: str, *, enabled: bool = True,
                 stream: TextIO | None = None):
        self.total, self.label, self.enabled = total, label, enabled and total > 0
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.done = self.failed = 0
        self.start = time.perf_counter()
        self._shown_at = -math.inf
        self._shown_tenth = 0

    def update(self, *, failed: bool = False) -> None:
        """One more job finished (``failed``: without the result it was for)."""
        self.done += 1
        self.failed += failed
        if not self.enabled:
            return
        now = time.perf_counter()
        if self.tty:
            if now - self._shown_at >= REDRAW_INTERVAL or self.done == self.total:
                self._shown_at = now
                self.stream.write("\r" + self.line() + "\033[K")
                self.stream.flush()
            return
        tenth = 10 * self.done // self.total
        if tenth > self._shown_tenth or now - self._shown_at >= PLAIN_INTERVAL:
            self._shown_tenth, self._shown_at = tenth, now
            self.stream.write(self.line() + "\n")
            self.stream.flush()

    def line(self) -> str:
        """The bar: done of total, failures, rate, time so far and time left."""
        elapsed = time.perf_counter() - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        left = (self.total - self.done) / rate if rate > 0 else math.inf
        filled = BAR_WIDTH * self.done // max(self.total, 1)
        bar = f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] " if self.tty else ""
        failed = f", {self.failed} failed" if self.failed else ""
        return (f"{self.label}: {bar}{self.done}/{self.total}{failed}, {rate:.2f}/s, "
                f"{format_seconds(elapsed)} elapsed, {format_seconds(left)} left")

    def close(self) -> None:
        """End the bar's line on a terminal."""
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()
