"""A terminal progress line: done/total, failures, rate, ETA (no dependencies)."""
from __future__ import annotations

import sys
import time


class Progress:
    """``update(done, failed=0, extra="")`` redraws one line on stderr at most every
    ``interval`` seconds (every call when stderr is not a terminal would flood logs, so
    then one line per ``interval``)."""

    def __init__(self, total: int, unit: str = "items", interval: float = 0.5, stream=None):
        self.total, self.unit, self.interval = total, unit, interval
        self.stream = stream or sys.stderr
        self.t0 = time.perf_counter()
        self._last = 0.0
        self.done = self.failed = 0
        self.extra = ""
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()

    def line(self) -> str:
        elapsed = time.perf_counter() - self.t0
        rate = self.done / elapsed if elapsed > 0 else 0.0
        left = self.total - self.done - self.failed
        eta = left / rate if rate > 0 else float("nan")
        eta_s = f"{eta:.0f}s" if eta == eta else "?"
        failed = f", {self.failed} failed" if self.failed else ""
        extra = f", {self.extra}" if self.extra else ""
        return (f"{self.done + self.failed}/{self.total} {self.unit}{failed}{extra}, "
                f"{elapsed:.0f}s elapsed, ETA {eta_s}")

    def update(self, done: int, failed: int | None = None, extra: str | None = None, force: bool = False) -> None:
        self.done = done
        if failed is not None:
            self.failed = failed
        if extra is not None:
            self.extra = extra
        now = time.perf_counter()
        if force or now - self._last >= self.interval or self.done + self.failed >= self.total:
            self._last = now
            self.stream.write(("\r" if self.tty else "") + self.line() + ("" if self.tty else "\n"))
            self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
