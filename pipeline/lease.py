"""One driver per output folder: a lease file created atomically, kept alive by a heartbeat.

``<out>/_lease.json`` is created with O_EXCL (atomic on local filesystems and on NFS v3+),
names its holder (host, pid, start time, a random token) and is touched every
``stale_after / 6`` seconds. Another driver may take it over only when it is stale: no
heartbeat for ``stale_after`` seconds, or a holder on this host whose process is gone.
The writer calls :meth:`Lease.check` before every commit, so a driver that lost its lease
(paused past the deadline, then taken over) stops instead of committing beside the new one.
Heartbeats compare file times across hosts: keep the cluster's clocks in sync (NTP).

On an object store (``s3://``, ``az://``) there is no O_EXCL and no rename: the lease is
an object written with conditional writes (:mod:`pipeline.object_lease`).
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path

from pipeline.lease_base import LEASE_FILE, LeaseHeld, LeaseLost, OutputLease, is_stale  # noqa: F401 (the errors live there too)
from pipeline.object_lease import AzureLease, ObjectLease, S3Lease, object_lease  # noqa: F401


class Lease(OutputLease):
    """The lease as a file, created with O_EXCL (local and NFS paths)."""

    def __init__(self, out: str | Path, run_id: str, stale_after: float = 60.0):
        super().__init__(run_id, stale_after)
        self.path = Path(out) / LEASE_FILE

    # ------------------------------------------------------------------ acquire / release
    def acquire(self) -> Lease:
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
        raise LeaseHeld(self.read() or {}, self)

    def _take_over_if_stale(self) -> None:
        holder = self.read()
        if not self._stale(holder):
            raise LeaseHeld(holder or {}, self)
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
            raise LeaseHeld(moved, self)
        os.unlink(aside)

    def _stale(self, holder: dict | None) -> bool:
        try:
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return True
        return is_stale(holder, age, self.stale_after)

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

    def _beat(self) -> None:
        period = max(0.5, self.stale_after / 6)
        while not self._stop.wait(period):
            if (self.read() or {}).get("token") != self.token:
                return  # taken over: check() fails the next commit
            try:
                os.utime(self.path)
            except FileNotFoundError:
                return



def make_lease(out: str, run_id: str, stale_after: float = 60.0) -> OutputLease:
    """The lease for an output: a file on local and NFS paths, a conditional object on an
    object store (S3, Azure Blob); other stores are refused (ValueError)."""
    from musiclime import storage
    if storage.is_object_store(out):
        return object_lease(out, run_id, stale_after)
    return Lease(storage.filesystem(out)[1], run_id, stale_after)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError, OSError):
        return None
