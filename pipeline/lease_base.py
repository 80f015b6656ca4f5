"""What every output lease is (:class:`OutputLease`): one driver per output, kept alive by
a heartbeat thread, checked by the writer before every commit. Kinds: a file created with
O_EXCL (:class:`pipeline.lease.Lease`), an object written with conditional PUTs
(:class:`pipeline.object_lease.ObjectLease`)."""

from __future__ import annotations

import os
import socket
import threading
import uuid
from abc import ABC, abstractmethod
from typing import Any

LEASE_FILE = "_lease.json"


class LeaseHeld(RuntimeError):
    """Another live driver holds the output."""

    def __init__(self, holder: dict[str, Any], lease: OutputLease):
        self.holder = holder
        path = lease.path
        super().__init__(
            f"{str(path).rsplit('/', 1)[0]} is in use by another musiclime driver: host {holder.get('host')!r}, "
            f"pid {holder.get('pid')}, started {holder.get('started')}, run {holder.get('run_id')!r} "
            f"(its lease {path} is refreshed while it runs; a dead holder's lease is taken over "
            f"after {holder.get('stale_after_s')} s without a heartbeat)"
        )


class LeaseLost(RuntimeError):
    """This driver's lease is gone or held by another driver: it must not commit."""


class OutputLease(ABC):
    """Holds an output for one driver. ``token`` names this holder in the lease's document;
    ``held`` is True between :meth:`acquire` and :meth:`release`."""

    path: Any  # where the lease lives (a Path, or an object store URI)

    def __init__(self, run_id: str, stale_after: float = 60.0):
        self.run_id, self.stale_after = run_id, float(stale_after)
        self.token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.held = False

    @abstractmethod
    def acquire(self) -> OutputLease:
        """Take the lease (a stale one is taken over) or raise :class:`LeaseHeld`; starts
        the heartbeat."""

    @abstractmethod
    def read(self) -> dict[str, Any] | None:
        """The lease's document as stored now (None: no lease)."""

    @abstractmethod
    def release(self) -> None:
        """Stop the heartbeat and remove the lease if it is still ours."""

    def check(self) -> None:
        """Raise :class:`LeaseLost` unless this driver still holds the lease."""
        holder = self.read()
        if not self.held or holder is None or holder.get("token") != self.token:
            raise LeaseLost(
                f"this driver no longer holds {self.path}"
                + (f" (now held by host {holder.get('host')!r} pid {holder.get('pid')})" if holder else "")
            )

    def __enter__(self) -> OutputLease:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def is_stale(holder: dict[str, Any] | None, age: float, stale_after: float) -> bool:
    """A lease ``age`` seconds after its last heartbeat may be taken over: its holder is a
    dead process on this host, or silent past its deadline (an unreadable lease, one being
    written, only once older than ``stale_after``)."""
    if holder is None:
        return age > stale_after
    if holder.get("host") == socket.gethostname() and not _pid_alive(int(holder.get("pid", -1))):
        return True
    return age > float(holder.get("stale_after_s", stale_after))


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
