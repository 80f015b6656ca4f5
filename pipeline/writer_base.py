"""What every output format's writer is (:class:`TableWriter`): the buffering, the batch's
tables and the interface the driver, the planner and the loop use. Formats: Parquet files
committed by rename (:mod:`pipeline.writer`), Delta tables committed by transaction
(:mod:`pipeline.delta_writer`)."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from pipeline import signals
from schemas.tables import ERRORS, EXPLANATIONS, TRACKS

if TYPE_CHECKING:
    from pipeline.lease_base import OutputLease

BATCH_TABLES = ("tracks", "explanations", "errors")  # what one batch writes; each format orders its commits


class TableWriter(ABC):
    """The one writer of a run, whatever the format: finished tracks and error rows buffered
    until a batch is due (``commit_every`` rows, or ``commit_seconds`` since the last
    commit), the batch's tables (:data:`BATCH_TABLES`), and a commit that SIGINT/SIGTERM
    wait for. A format commits a batch exactly once (``_commit``), finishes what a crashed
    writer left (``recover``), and reads back what it committed (``scan``)."""

    def __init__(
        self, run_id: str, invocation_id: str, commit_every: int, commit_seconds: float, lease: OutputLease | None
    ):
        self.run_id, self.invocation_id = run_id, invocation_id
        self.commit_every, self.commit_seconds = max(1, commit_every), commit_seconds
        self.lease = lease
        self._tracks: list[dict[str, Any]] = []
        self._expl: list[Any] = []  # pyarrow Tables
        self._errors: list[dict[str, Any]] = []
        self._last_commit = time.monotonic()
        self.commits = 0

    def add_track(self, track: dict[str, Any], explanations: Any) -> None:
        self._tracks.append(track)
        self._expl.append(explanations)

    def add_error(self, row: dict[str, Any]) -> None:
        self._errors.append(row)

    @property
    def pending(self) -> int:
        return len(self._tracks) + len(self._errors)

    def maybe_commit(self) -> bool:
        due = self.pending >= self.commit_every or (
            self.pending and time.monotonic() - self._last_commit >= self.commit_seconds
        )
        return self.commit() if due else False

    def commit(self) -> bool:
        """Commit the buffer as one batch; False when there was nothing to commit.
        SIGINT/SIGTERM wait until it is over (see :mod:`pipeline.signals`)."""
        with signals.deferred():
            return self._commit()

    @abstractmethod
    def _commit(self) -> bool:
        """Commit the buffer as one batch, exactly once; False when it was empty."""

    @abstractmethod
    def recover(self) -> int:
        """Finish the batches a crashed writer made durable, drop the others; returns how
        many were finished."""

    @abstractmethod
    def scan(self, table: str, columns: list[str], batch_rows: int = 16384) -> Iterator[dict[str, list[Any]]]:
        """Committed rows of this run's ``table``, a few columns at a time (bounded memory)."""

    @abstractmethod
    def drop_errors(self) -> None:
        """Remove this run's ``errors`` rows (``--retry-errors``): they are pending again."""

    def _batch_tables(self) -> dict[str, Any]:
        """The buffered batch as one Arrow table per table name (None when empty)."""
        import pyarrow as pa

        return {
            "explanations": pa.concat_tables([_conform(t, EXPLANATIONS) for t in self._expl]) if self._expl else None,
            "errors": pa.Table.from_pylist(self._errors, schema=ERRORS) if self._errors else None,
            "tracks": pa.Table.from_pylist(self._tracks, schema=TRACKS) if self._tracks else None,
        }

    def _batch_done(self) -> None:
        """The batch is durable: clear the buffer (nothing commits it twice)."""
        self._tracks, self._expl, self._errors = [], [], []
        self.commits += 1
        self._last_commit = time.monotonic()


def with_run_id(table: Any, run_id: str) -> Any:
    """``table`` with its run as the ``run_id`` partition column, as the tables hold it."""
    import pyarrow as pa

    return table.append_column(
        pa.field("run_id", pa.string(), nullable=False), pa.array([run_id] * table.num_rows, pa.string())
    )


def _conform(table: Any, schema: Any) -> Any:
    """``table`` in ``schema``: columns it lacks (a field added in a later release) as nulls."""
    import pyarrow as pa

    for f in schema:
        if f.name not in table.column_names:
            table = table.append_column(f.name, pa.nulls(table.num_rows, f.type))
    return table.select(schema.names).cast(schema)
