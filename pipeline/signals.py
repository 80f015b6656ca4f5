"""SIGINT and SIGTERM as KeyboardInterrupt, never in the middle of a commit.

``ray job stop`` and pod evictions send SIGTERM; Ctrl-C sends SIGINT. Both become a
KeyboardInterrupt in the driver's main thread, which commits what is complete and exits 1.
Inside :func:`deferred` (the writer's commit) the signal is held and raised when the
commit is over, so an interrupt can never fall between READY and the buffer being cleared.
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager

_state = {"depth": 0, "pending": None, "active": False}


def _handler(signum, frame):
    if _state["depth"]:
        _state["pending"] = signum
        return
    raise KeyboardInterrupt(f"signal {signum}")


@contextmanager
def interrupts_as_keyboard_interrupt():
    """Install the handlers for the duration (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _handler) for s in (signal.SIGINT, signal.SIGTERM)}
    _state["active"] = True
    try:
        yield
    finally:
        _state["active"] = False
        for s, h in previous.items():
            signal.signal(s, h)


def reinstall() -> None:
    """Take SIGINT/SIGTERM back after ``ray.init``: Ray's core installs a C++ handler that
    dumps a stack and aborts the driver, which would skip the final commit."""
    if _state["active"] and threading.current_thread() is threading.main_thread():
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, _handler)


@contextmanager
def deferred():
    _state["depth"] += 1
    try:
        yield
    finally:
        _state["depth"] -= 1
        if _state["depth"] == 0 and _state["pending"] is not None:
            signum, _state["pending"] = _state["pending"], None
            raise KeyboardInterrupt(f"signal {signum}")
