"""The output lease as an object on a store with conditional writes and no rename.

The lease is created only if absent (``If-None-Match: *``), refreshed only while it is the
version this driver wrote (``If-Match: <its ETag>``) and taken over only from the stale
version that was read (``If-Match: <the stale ETag>``), so of two drivers racing exactly
one wins. Staleness is judged on the store's own clock (the object's ``Last-Modified``
against the response's ``Date``), not the drivers'. One subclass per store says how it
writes on a condition: S3 (and S3-compatible stores) through boto3, Azure Blob through
its SDK. ``gs://`` outputs are refused: GCS has the needed preconditions (generations),
but no emulator the tests can start honours them, so nothing here could prove them.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
from abc import abstractmethod
from email.utils import parsedate_to_datetime

from musiclime import azure_blob
from pipeline.lease_base import LEASE_FILE, LeaseHeld, OutputLease, is_stale

REFUSED = {"gs": "GCS's generation preconditions are untested here (no emulator honours them), so gs:// is "
                  "read-only: catalogues, audio and stems may be read from it"}


def object_lease(out: str, run_id: str, stale_after: float = 60.0) -> ObjectLease:
    """The lease of an object-store output; ValueError for a store without one."""
    scheme = out.partition("://")[0]
    if scheme in ("s3", "s3a"):
        return S3Lease(out, run_id, stale_after)
    if azure_blob.is_azure(out):
        return AzureLease(out, run_id, stale_after)
    why = REFUSED.get(scheme, "the output lease needs conditional writes")
    raise ValueError(f"--out {out}: {scheme}:// is not supported for outputs ({why}); outputs go to a local or "
                     f"NFS path, s3:// (S3 and S3-compatible stores) or az:// / abfss:// (Azure Blob)")


class ObjectLease(OutputLease):
    """The lease as one object beside the output's tables (``<out>/_lease.json``)."""

    def __init__(self, out: str, run_id: str, stale_after: float = 60.0):
        super().__init__(run_id, stale_after)
        self.path = out.rstrip("/") + "/" + LEASE_FILE
        self._etag: str | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ the store's part
    @abstractmethod
    def _put(self, if_match: str | None) -> str | None:
        """Write the lease's document: only if absent (``if_match`` None) or only if its
        ETag is ``if_match``. The new ETag, or None when the condition failed."""

    @abstractmethod
    def _get(self) -> tuple[bytes | None, str | None, float, float]:
        """(body, ETag, Last-Modified, the response's Date) as POSIX seconds; (None, None,
        0, 0) when there is no lease."""

    @abstractmethod
    def _delete(self, if_match: str) -> None:
        """Remove the lease if its ETag is still ``if_match`` (else leave it)."""

    # ------------------------------------------------------------------ the protocol
    def _doc(self) -> bytes:
        return json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "run_id": self.run_id,
                           "token": self.token, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                           "stale_after_s": self.stale_after}).encode()

    def _holder(self) -> tuple[dict | None, str | None, float]:
        """(holder, ETag, age in seconds on the store's clock); (None, None, inf) when absent."""
        body, etag, modified, now = self._get()
        if etag is None:
            return None, None, float("inf")
        try:
            holder = json.loads(body or b"")
        except ValueError:
            holder = None
        return holder, etag, now - modified

    def acquire(self) -> ObjectLease:
        for _ in range(5):
            etag = self._put(None)
            if etag is None:
                holder, old, age = self._holder()
                if old is None:
                    continue  # released meanwhile: create again
                if not is_stale(holder, age, self.stale_after):
                    raise LeaseHeld(holder or {}, self)
                etag = self._put(old)  # of two drivers taking over, one wins
                if etag is None:
                    continue
            self._etag, self.held = etag, True
            self._thread = threading.Thread(target=self._beat, name="musiclime-lease", daemon=True)
            self._thread.start()
            return self
        raise LeaseHeld(self.read() or {}, self)

    def read(self) -> dict | None:
        return self._holder()[0]

    def _beat(self) -> None:
        period = max(0.5, self.stale_after / 6)
        while not self._stop.wait(period):
            with self._lock:
                try:
                    etag = self._put(self._etag)
                except Exception:
                    continue  # a failed refresh: the next one may pass; check() decides
                if etag is None:
                    return  # taken over: check() fails the next commit
                self._etag = etag

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.held and self._etag is not None:
            with self._lock:
                self._delete(self._etag)
        self.held = False


class S3Lease(ObjectLease):
    """On S3 and S3-compatible stores (boto3: the standard AWS chain, ``AWS_*`` variables,
    ``~/.aws``, instance roles)."""

    def __init__(self, out: str, run_id: str, stale_after: float = 60.0):
        super().__init__(out, run_id, stale_after)
        rest = self.path.partition("://")[2]
        self.bucket, _, self.key = rest.partition("/")
        self._client = None

    @property
    def client(self):
        if self._client is None:
            import boto3
            self._client = boto3.client("s3")
        return self._client

    def _put(self, if_match: str | None) -> str | None:
        from botocore.exceptions import ClientError
        condition = {"IfNoneMatch": "*"} if if_match is None else {"IfMatch": if_match}
        try:
            return self.client.put_object(Bucket=self.bucket, Key=self.key, Body=self._doc(),
                                          ContentType="application/json", **condition)["ETag"]
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict",
                                                           "NoSuchKey", "412", "409", "404"):
                return None
            raise

    def _get(self) -> tuple[bytes | None, str | None, float, float]:
        from botocore.exceptions import ClientError
        try:
            r = self.client.get_object(Bucket=self.bucket, Key=self.key)
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None, None, 0.0, 0.0
            raise
        date = r["ResponseMetadata"].get("HTTPHeaders", {}).get("date")
        now = parsedate_to_datetime(date).timestamp() if date else time.time()
        return r["Body"].read(), r["ETag"], r["LastModified"].timestamp(), now

    def _delete(self, if_match: str) -> None:
        from botocore.exceptions import ClientError
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.key, IfMatch=if_match)
        except ClientError:
            pass  # no longer ours (taken over): leave it


class AzureLease(ObjectLease):
    """On Azure Blob Storage (the account and credential of :mod:`musiclime.azure_blob`)."""

    def __init__(self, out: str, run_id: str, stale_after: float = 60.0):
        super().__init__(out, run_id, stale_after)
        self._client = None

    @property
    def client(self):
        if self._client is None:
            self._client = azure_blob.blob_client(self.path)
        return self._client

    def _put(self, if_match: str | None) -> str | None:
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
        from azure.storage.blob import ContentSettings
        condition = ({"overwrite": False} if if_match is None else
                     {"overwrite": True, "etag": if_match, "match_condition": MatchConditions.IfNotModified})
        try:
            return self.client.upload_blob(self._doc(), content_settings=ContentSettings("application/json"),
                                           **condition)["etag"]
        except (ResourceExistsError, ResourceModifiedError, ResourceNotFoundError):
            return None

    def _get(self) -> tuple[bytes | None, str | None, float, float]:
        from azure.core.exceptions import ResourceNotFoundError
        dates: list[str] = []
        try:
            d = self.client.download_blob(raw_response_hook=lambda r: dates.append(r.http_response.headers["Date"]))
            body = d.readall()
        except ResourceNotFoundError:
            return None, None, 0.0, 0.0
        now = parsedate_to_datetime(dates[-1]).timestamp() if dates else time.time()
        return body, d.properties.etag, d.properties.last_modified.timestamp(), now

    def _delete(self, if_match: str) -> None:
        from azure.core import MatchConditions
        from azure.core.exceptions import HttpResponseError
        try:
            self.client.delete_blob(etag=if_match, match_condition=MatchConditions.IfNotModified)
        except HttpResponseError:
            pass  # no longer ours (taken over) or gone: leave it
