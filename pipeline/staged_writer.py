"""Exactly once without rename (object stores): the commit protocol that the table formats
with transactions share (Delta: :mod:`pipeline.delta_writer`; Iceberg:
:mod:`pipeline.iceberg_writer`).

Each of ``tracks``, ``explanations`` and ``errors`` is a table of the format under the
output, partitioned by ``run_id``. One batch of tracks is committed in steps:

1. its rows are staged as Parquet objects under ``_staging/run_id=<run>/<seq>/`` (one PUT
   each);
2. a manifest ``_manifests/run_id=<run>/<seq>.json`` naming the staged files and the
   batch's tracks is written (one PUT: durable and whole, or absent). From here the batch is
   done for the writer: its buffer is cleared and the sequence advanced;
3. each table gets one commit of the staged rows that also records ``seq`` as the run's
   high-water mark in the table itself, in the same commit (Delta: an application
   transaction; Iceberg: a table property); a table whose mark for the run is already
   ``>= seq`` has the batch and is skipped;
4. the staged objects and the manifest are removed.

A crash before the manifest leaves only staged objects, which :meth:`recover` deletes (the
rows are recomputed); a crash after it leaves a manifest, which the next commit or
:meth:`recover` rolls into every table whose mark is still lower. A retried or resumed
commit is a no-op, nothing is lost. All of a track's rows travel in one batch, as in
:mod:`pipeline.writer`, whose interface this class shares. The output's lease is checked
before every commit, so one driver writes at a time and the read-mark-then-commit of step
3 is not raced.
"""

from __future__ import annotations

import json
from abc import abstractmethod
from typing import Any

from musiclime import storage
from pipeline import failpoints
from pipeline.writer_base import TableWriter, with_run_id

COMMIT_ORDER = ("tracks", "explanations", "errors")  # a resume rolls any of them forward


class StagedRunWriter(TableWriter):
    """The protocol above; a format says how a table's mark is read (:meth:`version_of`)
    and how staged rows are committed with it (:meth:`_append`)."""

    def __init__(
        self,
        out: str,
        run_id: str,
        invocation_id: str,
        commit_every: int = 64,
        commit_seconds: float = 120.0,
        lease: Any = None,
    ):
        super().__init__(run_id, invocation_id, commit_every, commit_seconds, lease)
        self.out = str(out).rstrip("/")
        self.manifests = storage.join(self.out, f"_manifests/run_id={run_id}")
        self.staging = storage.join(self.out, f"_staging/run_id={run_id}")
        self._seq: int | None = None

    @abstractmethod
    def version_of(self, name: str) -> int:
        """The last batch sequence committed to ``name`` for this run (0: none)."""

    @abstractmethod
    def _append(self, name: str, table: Any, seq: int) -> None:
        """Append ``table`` (with its ``run_id`` column) to ``name`` and set the run's mark
        to ``seq``, in one commit."""

    # ---------------------------------------------------------------- recovery and state

    def recover(self) -> int:
        """Roll every durable manifest forward, delete staged batches without one; returns
        the number of manifests rolled forward."""
        rolled = 0
        for m in storage.children(self.manifests):
            if m.endswith(".json"):
                self._roll_forward(m)
                rolled += 1
        for d in storage.children(self.staging):
            storage.delete_dir(d)  # staged before a crash, never made durable by a manifest
        self._seq = max([self.version_of(t) for t in COMMIT_ORDER], default=0) + 1
        return rolled

    def _roll_forward(self, manifest: str) -> None:
        """Commit the batch a manifest names into each table that lacks it (idempotent)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        doc = json.loads(storage.read_bytes(manifest))
        seq = int(doc["seq"])
        for name in COMMIT_ORDER:
            staged = doc["files"].get(name)
            if staged is None or self.version_of(name) >= seq:
                continue
            table = pq.read_table(pa.BufferReader(storage.read_bytes(staged)))
            self._append(name, with_run_id(table, self.run_id), seq)
            failpoints.hit(f"commit:{name}")
        failpoints.hit("cleanup")
        storage.delete_dir(storage.join(self.staging, f"{seq:010d}"))
        storage.delete(manifest)

    # ---------------------------------------------------------------- commits

    def _commit(self) -> bool:
        if self._seq is None:
            self.recover()
        for m in storage.children(self.manifests):  # a batch an earlier commit left half-way
            if m.endswith(".json"):
                self._roll_forward(m)
        if not self.pending:
            return False
        if self.lease is not None:
            self.lease.check()
        seq = self._seq
        if seq is None:  # recover() above reads it from the tables
            raise RuntimeError("the writer's batch sequence was never read")
        manifest = self._stage(seq)
        self._batch_done()
        self._seq = seq + 1
        failpoints.hit("manifest")
        self._roll_forward(manifest)
        return True

    def _stage(self, seq: int) -> str:
        import pyarrow as pa
        import pyarrow.parquet as pq

        tables = self._batch_tables()
        folder = storage.join(self.staging, f"{seq:010d}")
        files = {}
        for name in COMMIT_ORDER:
            if tables[name] is None:
                continue
            sink = pa.BufferOutputStream()
            pq.write_table(tables[name], sink, compression="zstd")
            files[name] = storage.join(folder, f"{name}.parquet")
            storage.write_bytes(files[name], sink.getvalue().to_pybytes())
            failpoints.hit(f"staged:{name}")
        manifest = storage.join(self.manifests, f"{seq:010d}.json")
        doc = {
            "seq": seq,
            "run_id": self.run_id,
            "invocation_id": self.invocation_id,
            "files": files,
            "tracks": [t["track_id"] for t in self._tracks],
            "errors": len(self._errors),
        }
        storage.write_atomic(manifest, json.dumps(doc).encode())
        return manifest
