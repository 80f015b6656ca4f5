"""The one writer of a run on Iceberg tables (:mod:`pipeline.staged_writer`'s protocol): a
table's mark for a run is its property ``musiclime.batch.<run_id>``, set by the same
commit as the batch's rows (see :mod:`pipeline.iceberg`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pipeline.iceberg import IcebergTables, mark_key
from pipeline.staged_writer import StagedRunWriter


class IcebergRunWriter(StagedRunWriter):
    def __init__(self, out: str, run_id: str, invocation_id: str, commit_every: int = 64,
                 commit_seconds: float = 120.0, lease: Any = None, tables: IcebergTables | None = None):
        super().__init__(out, run_id, invocation_id, commit_every, commit_seconds, lease)
        self.tables = tables or IcebergTables.of_output(self.out)

    def version_of(self, name: str) -> int:
        return self.tables.mark(name, self.run_id)

    def _append(self, name: str, table: Any, seq: int) -> None:
        self.tables.append(name, table, {mark_key(self.run_id): str(seq)})

    def scan(self, table: str, columns: list[str], batch_rows: int = 16384) -> Iterator[dict[str, list]]:
        """Committed rows of this run's ``table``, a few columns at a time (bounded memory)."""
        from pipeline.iceberg import where

        t = self.tables.table(table)
        if t is None:
            return
        scan = t.scan(row_filter=where("EqualTo", "run_id", self.run_id), selected_fields=tuple(columns))
        for b in scan.to_arrow_batch_reader():
            for start in range(0, b.num_rows, batch_rows):
                part = b.slice(start, batch_rows)
                yield {c: part.column(c).to_pylist() for c in columns}

    def drop_errors(self) -> None:
        """Remove this run's ``errors`` rows (``--retry-errors``) in one Iceberg commit."""
        self.tables.delete_run("errors", self.run_id)
