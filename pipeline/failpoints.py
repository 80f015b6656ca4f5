"""Named points where fault-injection tests break a run on purpose.

``MUSICLIME_FAILPOINTS="ready=kill,renamed:tracks=raise@2"``: at the named point, SIGKILL
this process (``kill``) or raise :class:`InjectedFault` (``raise``), on every hit or only
on the N-th (``@N``). Unset (always, outside tests) a hit is one dictionary lookup.
"""
from __future__ import annotations

import os
import signal

ENV = "MUSICLIME_FAILPOINTS"
_hits: dict[str, int] = {}


class InjectedFault(RuntimeError):
    """Raised at a failpoint by a test."""


def hit(name: str) -> None:
    spec = os.environ.get(ENV)
    if not spec:
        return
    _hits[name] = _hits.get(name, 0) + 1
    for item in spec.split(","):
        point, _, action = item.strip().partition("=")
        if point != name:
            continue
        action, _, nth = action.partition("@")
        if nth and _hits[name] != int(nth):
            continue
        if action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif action == "raise":
            raise InjectedFault(f"failpoint {name}")
        else:
            raise ValueError(f"{ENV}: unknown action {action!r} at {name!r} (kill or raise)")
