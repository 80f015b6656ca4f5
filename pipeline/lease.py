"""One driver per output folder: a lease file created atomically, kept alive by a heartbeat.

``<out>/_lease.json`` is created with O_EXCL (atomic on local filesystems and on NFS v3+),
names its holder (host, pid, start time, a random token) and is touched every
``stale_after / 6`` seconds. Another driver may take it over only when it is stale: no
heartbeat for ``stale_after`` seconds, or a holder on this host whose process is gone.
The writer calls :meth:`Lease.check` before every commit, so a driver that lost its lease
(paused past the deadline, then taken over) stops instead of committing beside the new one.
Heartbeats compare file times across hosts: keep the cluster's clocks in sync (NTP).
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path

LEASE_FILE = "_lease.json"


class LeaseHeld(RuntimeError):
    """Another live driver holds the output."""

    def __init__(self, holder: dict, path: Path):
        self.holder = holder
        super().__init__(
            f"{path.parent} is in use by another musiclime driver: host {holder.get('host')!r}, "
            f"pid {holder.get('pid')}, started {holder.get('started')}, run {holder.get('run_id')!r} "
            f"(its lease {path} is refreshed while it runs; a dead holder's lease is taken over "
            f"after {holder.get('stale_after_s')} s without a heartbeat)")


class LeaseLost(RuntimeError):
    """This driver's lease is gone or held by another driver: it must not commit."""


class Lease:
    def __init__(self, out: str | Path, run_id: str, stale_after: float = 60.0):
        self.path = Path(out) / LEASE_FILE
        self.run_id, self.stale_after = run_id, float(stale_after)
        self.token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.held = False

    # ------------------------------------------------------------------ acquire / release
    def acquire(self) -> "Lease":
        doc = {"host": socket.gethostname(), "pid": os.getpid(), "run_id": self.run_id, "token": self.token,
               "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "stale_after_s": self.stale_after}
        for _ in range(5):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._take_over_if_stale()
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(doc, f)
                f.flush()
                os.fsync(f.fileno())
            self.held = True
            self._thread = threading.Thread(target=self._beat, name="musiclime-lease", daemon=True)
            self._thread.start()
            return self
        raise LeaseHeld(self.read() or {}, self.path)

    def _take_over_if_stale(self) -> None:
        holder = self.read()
        if not self._stale(holder):
            raise LeaseHeld(holder or {}, self.path)
        # Move the stale lease aside under a unique name: of two drivers taking over at once
        # only one rename succeeds; the other sees FileNotFoundError and retries the create.
        aside = self.path.with_name(f"{LEASE_FILE}.stale-{uuid.uuid4().hex}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        moved = _read_json(aside)
        if holder and moved and moved.get("token") != holder.get("token"):
            # a new holder appeared between our read and the rename: give its lease back
            try:
                os.link(aside, self.path)
            except FileExistsError:
                pass
            os.unlink(aside)
            raise LeaseHeld(moved, self.path)
        os.unlink(aside)

    def _stale(self, holder: dict | None) -> bool:
        try:
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return True
        if holder is None:  # unreadable (being written): only stale once old
            return age > self.stale_after
        if holder.get("host") == socket.gethostname() and not _pid_alive(int(holder.get("pid", -1))):
            return True
        return age > float(holder.get("stale_after_s", self.stale_after))

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.held and (self.read() or {}).get("token") == self.token:
            self.path.unlink(missing_ok=True)
        self.held = False

    # ------------------------------------------------------------------ checks
    def read(self) -> dict | None:
        return _read_json(self.path)

    def check(self) -> None:
        """Raise :class:`LeaseLost` unless this driver still holds the lease."""
        holder = self.read()
        if not self.held or holder is None or holder.get("token") != self.token:
            raise LeaseLost(f"this driver no longer holds {self.path}"
                            + (f" (now held by host {holder.get('host')!r} pid {holder.get('pid')})" if holder else ""))

    def _beat(self) -> None:
        period = max(0.5, self.stale_after / 6)
        while not self._stop.wait(period):
            if (self.read() or {}).get("token") != self.token:
                return  # taken over: check() fails the next commit
            try:
                os.utime(self.path)
            except FileNotFoundError:
                return

    def __enter__(self) -> "Lease":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError, OSError):
        return None


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
