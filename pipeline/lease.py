"""One driver per output folder: a lease file created atomically, kept alive by a heartbeat.

``<out>/_lease.json`` is created with O_EXCL (atomic on local filesystems and on NFS v3+),
names its holder (host, pid, start time, a random token) and is touched every
``stale_after / 6`` seconds. Another driver may take it over only when it is stale: no
heartbeat for ``stale_after`` seconds, or a holder on this host whose process is gone.
The writer calls :meth:`Lease.check` before every commit, so a driver that lost its lease
(paused past the deadline, then taken over) stops instead of committing beside the new one.
Heartbeats compare file times across hosts: keep the cluster's clocks in sync (NTP).

On an object store (``s3://``) there is no O_EXCL and no rename: :class:`ObjectLease`
creates the lease with a conditional PUT (``If-None-Match: *``), refreshes it with
``If-Match: <its ETag>`` and takes a stale one over with ``If-Match: <the stale ETag>``, so
of two drivers racing exactly one wins. Staleness is judged on the store's own clock
(the object's ``Last-Modified`` against the response's ``Date``), not the drivers'.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path

from pipeline.lease_base import LeaseHeld, LeaseLost, OutputLease  # noqa: F401 (the lease's errors live here too)

LEASE_FILE = "_lease.json"


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



class ObjectLease(OutputLease):
    """The lease as an object on an S3-compatible store (conditional writes)."""

    def __init__(self, out: str, run_id: str, stale_after: float = 60.0):
        scheme, _, rest = out.rstrip("/").partition("://")
        if scheme not in ("s3", "s3a"):
            raise ValueError(f"--out {out}: the output lease needs conditional writes, implemented for s3:// "
                             f"(S3 and S3-compatible stores); {scheme}:// is not supported for outputs")
        self.bucket, _, prefix = rest.partition("/")
        self.key = (prefix.strip("/") + "/" if prefix.strip("/") else "") + LEASE_FILE
        super().__init__(run_id, stale_after)
        self.path = f"{scheme}://{self.bucket}/{self.key}"
        self._etag: str | None = None
        self._lock = threading.Lock()
        self._client = None

    @property
    def client(self):
        if self._client is None:
            import boto3  # the standard AWS chain: AWS_* variables, ~/.aws, instance roles
            self._client = boto3.client("s3")
        return self._client

    def _doc(self) -> bytes:
        return json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "run_id": self.run_id,
                           "token": self.token, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                           "stale_after_s": self.stale_after}).encode()

    def _put(self, **condition) -> str | None:
        """The lease written on a condition; its new ETag, or None when the condition failed."""
        from botocore.exceptions import ClientError
        try:
            return self.client.put_object(Bucket=self.bucket, Key=self.key, Body=self._doc(),
                                          ContentType="application/json", **condition)["ETag"]
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict",
                                                           "NoSuchKey", "412", "409", "404"):
                return None
            raise

    def _get(self) -> tuple[dict | None, str | None, float]:
        """(holder, ETag, age in seconds on the store's clock); (None, None, inf) when absent."""
        from botocore.exceptions import ClientError
        try:
            r = self.client.get_object(Bucket=self.bucket, Key=self.key)
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None, None, float("inf")
            raise
        from email.utils import parsedate_to_datetime
        body = r["Body"].read()
        date = r["ResponseMetadata"].get("HTTPHeaders", {}).get("date")
        now = parsedate_to_datetime(date).timestamp() if date else time.time()
        age = now - r["LastModified"].timestamp()
        try:
            holder = json.loads(body)
        except ValueError:
            holder = None
        return holder, r["ETag"], age

    def acquire(self) -> ObjectLease:
        for _ in range(5):
            etag = self._put(IfNoneMatch="*")
            if etag is None:
                holder, old, age = self._get()
                if old is None:
                    continue  # released meanwhile: create again
                if not is_stale(holder, age, self.stale_after):
                    raise LeaseHeld(holder or {}, self)
                etag = self._put(IfMatch=old)  # of two drivers taking over, one wins
                if etag is None:
                    continue
            self._etag, self.held = etag, True
            self._thread = threading.Thread(target=self._beat, name="musiclime-lease", daemon=True)
            self._thread.start()
            return self
        raise LeaseHeld(self.read() or {}, self)

    def read(self) -> dict | None:
        return self._get()[0]

    def _beat(self) -> None:
        period = max(0.5, self.stale_after / 6)
        while not self._stop.wait(period):
            with self._lock:
                try:
                    etag = self._put(IfMatch=self._etag)
                except Exception:
                    continue  # a failed refresh: the next one may pass; check() decides
                if etag is None:
                    return  # taken over: check() fails the next commit
                self._etag = etag

    def release(self) -> None:
        from botocore.exceptions import ClientError
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.held:
            with self._lock:
                try:
                    self.client.delete_object(Bucket=self.bucket, Key=self.key, IfMatch=self._etag)
                except ClientError:
                    pass  # no longer ours (taken over): leave it
        self.held = False



def make_lease(out: str, run_id: str, stale_after: float = 60.0) -> OutputLease:
    """The lease for an output: a file on local and NFS paths, a conditional object on S3."""
    from musiclime import storage
    if storage.is_object_store(out):
        return ObjectLease(out, run_id, stale_after)
    return Lease(storage.filesystem(out)[1], run_id, stale_after)


def is_stale(holder: dict | None, age: float, stale_after: float) -> bool:
    """A lease ``age`` seconds after its last heartbeat may be taken over: its holder is a
    dead process on this host, or silent past its deadline (an unreadable lease, one being
    written, only once older than ``stale_after``)."""
    if holder is None:
        return age > stale_after
    if holder.get("host") == socket.gethostname() and not _pid_alive(int(holder.get("pid", -1))):
        return True
    return age > float(holder.get("stale_after_s", stale_after))


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
