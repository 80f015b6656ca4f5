"""Progress: a redrawn line on a terminal; elsewhere (job logs) a status record through the
``musiclime.progress`` logger every ``status_every`` seconds, with its numbers as fields."""
from __future__ import annotations

import sys
import time


class Progress:
    """``update(done, failed=0, extra="")`` redraws one line on a terminal at most every
    ``interval`` seconds; elsewhere it logs a status record at most every ``status_every``."""

    def __init__(self, total: int, unit: str = "items", interval: float = 0.5, stream=None,
                 status_every: float = 30.0):
        self.total, self.unit = total, unit
        self.stream = stream or sys.stderr
        self.t0 = time.perf_counter()
        self._last = 0.0
        self.done = self.failed = 0
        self.extra = ""
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.interval = interval if self.tty else status_every

    def fields(self) -> dict:
        elapsed = time.perf_counter() - self.t0
        rate = self.done / elapsed if elapsed > 0 else 0.0
        left = self.total - self.done - self.failed
        return {"done": self.done + self.failed, "total": self.total, "failed": self.failed, "unit": self.unit,
                "per_s": round(rate, 3), "elapsed_s": round(elapsed, 1),
                "eta_s": round(left / rate, 1) if rate > 0 else None, "extra": self.extra}

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
            if self.tty:
                self.stream.write("\r" + self.line())
                self.stream.flush()
            else:
                import logging
                logging.getLogger("musiclime.progress").info("status: " + self.line(), extra={"fields": self.fields()})

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
