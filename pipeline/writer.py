"""The one writer of a run: buffers finished tracks and commits them exactly once.

Commit protocol (one batch of tracks = at most one file per table):
1. write the ``tracks``, ``explanations`` and ``errors`` files into
   ``_staging/<run>/<batch>/`` and fsync each file and the folder;
2. write ``READY`` (the batch's files and their target names) to a temporary name, fsync,
   rename it into place and fsync the folder. Once READY is durable the batch is done for
   the writer: its buffer is cleared and the sequence advanced, so no path commits it twice;
3. rename each file READY names into ``<table>/run_id=<run>/`` (same filesystem: atomic),
   fsync the table folders;
4. remove the staging folder.
A failure before READY discards the staged files and keeps the buffer (the next commit
retries it); a failure after READY is finished by the next commit or by :meth:`recover`,
which rolls forward exactly the files READY names and deletes batches without READY.
All of a track's rows travel in one batch, so each catalogue row ends in ``tracks`` or
``errors`` exactly once, and explanations once per (track, label, feature).
The :class:`~pipeline.lease.Lease` is checked before every commit.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

from pipeline import failpoints
from pipeline.writer_base import TableWriter

# tracks last: what a reader of progress looks at first
COMMIT_ORDER = ("explanations", "errors", "tracks")
READY = "READY"


def fsync_path(path: Path) -> None:
    """fsync a file, or a folder's entries (so a rename into it survives a power cut)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class RunWriter(TableWriter):
    def __init__(self, out: str | Path, run_id: str, invocation_id: str, commit_every: int = 64,
                 commit_seconds: float = 120.0, lease=None):
        super().__init__(run_id, invocation_id, commit_every, commit_seconds, lease)
        self.out = Path(out)
        self.staging = self.out / "_staging" / run_id
        self._seq = 0

    def partition(self, table: str) -> Path:
        return self.out / table / f"run_id={self.run_id}"

    # ---------------------------------------------------------------- recovery and state

    def recover(self) -> int:
        """Finish READY batches a crashed writer left and delete the others; returns the
        number rolled forward."""
        rolled = 0
        if not self.staging.is_dir():
            return 0
        for batch in sorted(self.staging.iterdir()):
            if batch.is_dir() and self._roll_forward(batch):
                rolled += 1
            else:
                shutil.rmtree(batch, ignore_errors=True)
        return rolled

    def _roll_forward(self, batch: Path) -> bool:
        """Move the files READY names into place (idempotent); False without a READY."""
        try:
            ready = json.loads((batch / READY).read_text())
        except (FileNotFoundError, ValueError):
            return False
        for table, target in ready["files"].items():
            src = batch / f"{table}.parquet"
            dst = self.out / target
            if src.is_file():
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.replace(src, dst)
                failpoints.hit(f"renamed:{table}")
                fsync_path(dst.parent)
        failpoints.hit("cleanup")
        shutil.rmtree(batch, ignore_errors=True)
        return True

    def _finish_ready_batches(self) -> None:
        if self.staging.is_dir():
            for batch in sorted(self.staging.iterdir()):
                if (batch / READY).is_file():
                    self._roll_forward(batch)

    def scan(self, table: str, columns: list[str], batch_rows: int = 16384) -> Iterator[dict[str, list]]:
        """Committed rows of this run's ``table``, a few columns at a time, one file at a
        time (bounded memory, whatever the run's size)."""
        import pyarrow.parquet as pq
        part = self.partition(table)
        if not part.is_dir():
            return
        for path in sorted(part.glob("*.parquet")):
            with pq.ParquetFile(path, pre_buffer=False) as f:
                for b in f.iter_batches(batch_size=batch_rows, columns=columns):
                    yield {c: b.column(c).to_pylist() for c in columns}

    def drop_errors(self) -> None:
        """Remove this run's ``errors`` rows (``--retry-errors``): those rows are then
        pending again; a crash half-way leaves them pending, never lost or doubled."""
        part = self.partition("errors")
        if part.is_dir():
            for f in sorted(part.glob("*.parquet")):
                f.unlink()
            fsync_path(part)

    def _commit(self) -> bool:
        self._finish_ready_batches()
        if not self.pending:
            return False
        if self.lease is not None:
            self.lease.check()
        batch = f"{int(time.time() * 1000):013d}-{self.invocation_id}-{self._seq:06d}"
        stage = self.staging / batch
        files = self._stage(stage, batch)
        # READY is durable: the batch is committed as far as this writer is concerned
        self._batch_done()
        self._seq += 1
        failpoints.hit("ready")
        self._roll_forward(stage)
        return bool(files)

    def _stage(self, stage: Path, batch: str) -> dict[str, str]:
        import pyarrow.parquet as pq
        tables = self._batch_tables()
        files: dict[str, str] = {}
        try:
            stage.mkdir(parents=True, exist_ok=True)
            for name in COMMIT_ORDER:
                if tables[name] is None:
                    continue
                path = stage / f"{name}.parquet"
                pq.write_table(tables[name], path, compression="zstd")
                fsync_path(path)
                files[name] = str(self.partition(name).relative_to(self.out) / f"part-{batch}.parquet")
                failpoints.hit(f"staged:{name}")
            fsync_path(stage)
            tmp = stage / f".{READY}.tmp"
            with open(tmp, "w") as f:
                json.dump({"batch": batch, "files": files, "rows": self.pending}, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, stage / READY)
            fsync_path(stage)
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)  # nothing of it was committed; the buffer stays
            raise
        return files
