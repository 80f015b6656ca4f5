"""The one writer of a run: buffers finished tracks and commits them atomically.

Commit protocol (one batch of tracks = at most one file per table):
1. write ``tracks``, ``explanations`` and ``errors`` files into ``_staging/<run>/<batch>/``;
2. write ``READY`` there;
3. rename each file into ``<table>/run_id=<run>/`` (same filesystem: atomic);
4. remove the staging folder.
On start, :meth:`recover` rolls a READY batch forward (finishes step 3) and deletes a
batch without READY. So a crash at any point loses nothing that was committed and leaves
no half batch: every catalogue row ends in ``tracks`` or ``errors`` exactly once.
"""
from __future__ import annotations

import os
import shutil
import time
import uuid
from pathlib import Path

from schemas.tables import ALL, ERRORS, EXPLANATIONS, TRACKS

TABLES = ("explanations", "errors", "tracks")  # tracks last: what resume reads first


class RunWriter:
    def __init__(self, out: str | Path, run_id: str, invocation_id: str, commit_every: int = 64,
                 commit_seconds: float = 120.0):
        self.out = Path(out)
        self.run_id, self.invocation_id = run_id, invocation_id
        self.commit_every, self.commit_seconds = max(1, commit_every), commit_seconds
        self.staging = self.out / "_staging" / run_id
        self._tracks: list[dict] = []
        self._expl: list = []
        self._errors: list[dict] = []
        self._last_commit = time.monotonic()
        self.commits = 0

    def partition(self, table: str) -> Path:
        return self.out / table / f"run_id={self.run_id}"

    # ---------------------------------------------------------------- recovery and state

    def recover(self) -> int:
        """Finish or discard batches a crashed writer left; returns batches rolled forward."""
        rolled = 0
        if not self.staging.is_dir():
            return 0
        for batch in sorted(self.staging.iterdir()):
            if (batch / "READY").is_file():
                for table in TABLES:
                    src = batch / f"{table}.parquet"
                    if src.is_file():
                        self.partition(table).mkdir(parents=True, exist_ok=True)
                        os.replace(src, self.partition(table) / f"part-{batch.name}.parquet")
                rolled += 1
            shutil.rmtree(batch, ignore_errors=True)
        return rolled

    def _read(self, table: str, columns: list[str]):
        import pyarrow.dataset as ds
        part = self.partition(table)
        if not part.is_dir() or not any(part.glob("*.parquet")):
            return None
        return ds.dataset(str(part), format="parquet", schema=ALL[table]).to_table(columns=columns)

    def committed(self) -> tuple[set[int], dict[int, str]]:
        """Catalogue rows already in ``tracks``, and those in ``errors`` (row -> track id)."""
        ok, err = set(), {}
        t = self._read("tracks", ["catalogue_row"])
        if t is not None:
            ok = set(t.column("catalogue_row").to_pylist())
        e = self._read("errors", ["catalogue_row", "track_id"])
        if e is not None:
            err = dict(zip(e.column("catalogue_row").to_pylist(), e.column("track_id").to_pylist()))
        return ok, err

    def drop_error_rows(self, rows: set[int]) -> None:
        """Remove these catalogue rows from ``errors`` (``--retry-errors``), file by file,
        each rewritten under a temporary name and renamed into place."""
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq
        part = self.partition("errors")
        if not rows or not part.is_dir():
            return
        for f in sorted(part.glob("*.parquet")):
            t = pq.read_table(f, schema=ERRORS)
            keep = t.filter(pc.invert(pc.is_in(t["catalogue_row"], value_set=pa.array(sorted(rows)))))
            if keep.num_rows == t.num_rows:
                continue
            if keep.num_rows == 0:
                f.unlink()
            else:
                tmp = f.with_name(f".{f.name}.tmp")
                pq.write_table(keep, tmp, compression="zstd")
                os.replace(tmp, f)

    # ---------------------------------------------------------------- buffering and commits

    def add_track(self, track: dict, explanations) -> None:
        self._tracks.append(track)
        self._expl.append(explanations)

    def add_error(self, row: dict) -> None:
        self._errors.append(row)

    @property
    def pending(self) -> int:
        return len(self._tracks) + len(self._errors)

    def maybe_commit(self) -> bool:
        due = self.pending >= self.commit_every or (
            self.pending and time.monotonic() - self._last_commit >= self.commit_seconds)
        return self.commit() if due else False

    def commit(self) -> bool:
        import pyarrow as pa
        import pyarrow.parquet as pq
        if not self.pending:
            return False
        batch = f"{int(time.time() * 1000):013d}-{self.invocation_id}-{uuid.uuid4().hex[:8]}"
        stage = self.staging / batch
        stage.mkdir(parents=True, exist_ok=True)
        tables = {
            "tracks": pa.Table.from_pylist(self._tracks, schema=TRACKS) if self._tracks else None,
            "explanations": pa.concat_tables([t.cast(EXPLANATIONS) for t in self._expl]) if self._expl else None,
            "errors": pa.Table.from_pylist(self._errors, schema=ERRORS) if self._errors else None,
        }
        for name, table in tables.items():
            if table is not None:
                pq.write_table(table, stage / f"{name}.parquet", compression="zstd")
        (stage / "READY").write_text(str(self.pending))
        for name in TABLES:
            src = stage / f"{name}.parquet"
            if src.is_file():
                self.partition(name).mkdir(parents=True, exist_ok=True)
                os.replace(src, self.partition(name) / f"part-{batch}.parquet")
        shutil.rmtree(stage, ignore_errors=True)
        self._tracks, self._expl, self._errors = [], [], []
        self._last_commit = time.monotonic()
        self.commits += 1
        return True
