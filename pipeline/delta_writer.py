"""The one writer of a run on Delta tables (:mod:`pipeline.staged_writer`'s protocol): a
table's mark for a run is the Delta application transaction ``(app_id =
"musiclime:<run>", version = seq)`` that the batch's commit carries."""
from __future__ import annotations

from collections.abc import Iterator

from musiclime import storage
from pipeline.staged_writer import StagedRunWriter


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class DeltaRunWriter(StagedRunWriter):
    def __init__(self, out: str, run_id: str, invocation_id: str, commit_every: int = 64,
                 commit_seconds: float = 120.0, lease=None):
        super().__init__(out, run_id, invocation_id, commit_every, commit_seconds, lease)
        self.app_id = f"musiclime:{run_id}"

    def uri(self, table: str) -> str:
        """Where a table lives (a path or URI deltalake opens)."""
        return storage.native(storage.join(self.out, table))

    def _table(self, name: str):
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError
        try:
            return DeltaTable(self.uri(name))
        except TableNotFoundError:
            return None

    def version_of(self, name: str) -> int:
        dt = self._table(name)
        return (dt.transaction_version(self.app_id) or 0) if dt is not None else 0

    def _append(self, name: str, table, seq: int) -> None:
        from deltalake import CommitProperties, Transaction, write_deltalake
        write_deltalake(self.uri(name), table, mode="append", partition_by=["run_id"], schema_mode="merge",
                        commit_properties=CommitProperties(app_transactions=[Transaction(self.app_id, seq)]))

    def scan(self, table: str, columns: list[str], batch_rows: int = 16384) -> Iterator[dict[str, list]]:
        """Committed rows of this run's ``table``, a few columns at a time (bounded memory)."""
        dt = self._table(table)
        if dt is None:
            return
        ds = storage.delta_dataset(dt, self.uri(table), file_pruning_predicate=[("run_id", "=", self.run_id)])
        for b in ds.to_batches(columns=columns, batch_size=batch_rows):
            if b.num_rows:
                yield {c: b.column(c).to_pylist() for c in columns}

    def drop_errors(self) -> None:
        """Remove this run's ``errors`` rows (``--retry-errors``) in one Delta commit."""
        dt = self._table("errors")
        if dt is not None:
            dt.delete(f"run_id = {_quote(self.run_id)}")
