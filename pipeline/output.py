"""An output of ``musiclime explain``: where it is, which format its tables have, its runs.

An output is a folder or a URI (``s3://bucket/prefix``). Its tables (``tracks``,
``explanations``, ``errors``, ``members``, ``global_importance``) are either
hive-partitioned Parquet files committed by rename (:class:`pipeline.writer.RunWriter`,
local and NFS paths) or Delta tables partitioned by ``run_id`` committed with application
transactions (:class:`pipeline.delta_writer.DeltaRunWriter`, object stores). The format is
chosen once (``--format auto``: Delta on object stores) and recorded in ``run.json`` and
``runs/<run>.json``; every later run, ``aggregate`` and ``report`` follow it.

``members`` is the catalogue a run was given (track_id, catalogue_row, content_key): what
"the latest catalogue" means for incremental nights (see :func:`latest_selection`).
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from musiclime import storage
from pipeline.config import OutputFormat

if TYPE_CHECKING:
    from pipeline.iceberg import IcebergTables
    from pipeline.writer_base import TableWriter

RUN_TABLES = ("tracks", "explanations", "errors", "members")


def location(out: str, *parts: str) -> str:
    loc = str(out).rstrip("/") or "/"
    for p in parts:
        loc = storage.join(loc, p)
    return loc


def read_json(loc: str) -> dict | None:
    try:
        return json.loads(storage.read_bytes(loc))
    except (FileNotFoundError, ValueError):
        return None
    except OSError as e:  # object stores answer a missing key with an OSError naming it
        if storage.info(loc).type.name == "NotFound":
            return None
        raise e


def existing_format(out: str) -> str | None:
    """The format an output already has (run.json, else what its tables look like)."""
    doc = read_json(location(out, "run.json")) or {}
    if doc.get("format"):
        return doc["format"]
    if storage.is_dir(location(out, "tracks", "_delta_log")):
        return "delta"
    if storage.is_dir(location(out, "tracks", "metadata")):
        return "iceberg"
    if storage.is_dir(location(out, "tracks")):
        return "parquet"
    return None


def resolve_format(out: str, requested: str = "auto") -> str:
    """``--format`` for this output: a standing output keeps its format (asking for the
    other is a usage error); ``auto`` is Delta on object stores, Parquet elsewhere; Parquet
    on an object store is refused (its commit is a rename, which object stores lack)."""
    want = OutputFormat.parse(requested)
    have = existing_format(out)
    if have is not None:
        if want is not OutputFormat.AUTO and want.value != have:
            raise ValueError(f"{out} already holds {have} tables; it cannot take --format {want.value} "
                             f"(use another --out, or --format {have})")
        return have
    if want is OutputFormat.AUTO:
        return "delta" if storage.is_object_store(out) else "parquet"
    if want is OutputFormat.PARQUET and storage.is_object_store(out):
        raise ValueError(f"--format parquet commits files by rename, which {out.split('://')[0]}:// does not have: "
                         f"use --format delta (or auto) for an object-store output")
    return want.value


def resolve_iceberg(out: str, catalog: str, namespace: str) -> IcebergTables:
    """The Iceberg tables of an output: those its ``run.json`` names, else in ``catalog`` and
    ``namespace`` (a standing output asked for others is a usage error)."""
    from pipeline.iceberg import IcebergTables
    if storage.is_object_store(out) and out.partition("://")[0] not in ("s3", "s3a"):
        raise ValueError(f"--format iceberg: {out}: Iceberg tables are tested on local paths and s3:// only; use "
                         "--format delta on this store")
    doc = read_json(location(out, "run.json")) or {}
    if doc.get("iceberg"):
        have = IcebergTables.of_output(out, doc)
        if (have.catalog_name, have.namespace) != (catalog, namespace):
            raise ValueError(f"{out} holds Iceberg tables in catalog {have.catalog_name!r}, namespace "
                             f"{have.namespace!r}: use --iceberg-catalog {have.catalog_name} --iceberg-namespace "
                             f"{have.namespace}, or another --out")
        return have
    tables = IcebergTables(out, catalog, namespace)
    tables.catalog  # noqa: B018 (an unknown catalog is a usage error before anything is written)
    return tables


def open_writer(fmt: str, out: str, run_id: str, invocation_id: str, commit_every: int = 64,
                lease=None, iceberg: IcebergTables | None = None) -> TableWriter:
    """The run's one writer for ``fmt`` (see :class:`~pipeline.writer_base.TableWriter`)."""
    if fmt == "iceberg":
        from pipeline.iceberg_writer import IcebergRunWriter
        return IcebergRunWriter(out, run_id, invocation_id, commit_every, lease=lease, tables=iceberg)
    if fmt == "delta":
        from pipeline.delta_writer import DeltaRunWriter
        return DeltaRunWriter(out, run_id, invocation_id, commit_every, lease=lease)
    from pipeline.writer import RunWriter
    return RunWriter(storage.filesystem(out)[1], run_id, invocation_id, commit_every, lease=lease)


# ------------------------------------------------------------------------------ runs

def runs(out: str) -> list[dict]:
    """Every run's ``runs/<run>.json``, oldest first (by its first start)."""
    docs = []
    for loc in storage.children(location(out, "runs")):
        if loc.endswith(".json"):
            doc = read_json(loc)
            if doc and doc.get("run_id"):
                docs.append(doc)
    return sorted(docs, key=lambda d: (d.get("started") or d.get("updated") or "", d["run_id"]))


# ------------------------------------------------------------------------------ reading tables

def table_schema(table: str):
    """This release's Arrow schema of ``table`` plus the ``run_id`` partition column."""
    import pyarrow as pa

    from schemas.aggregates import GLOBAL_IMPORTANCE
    from schemas.tables import ALL
    schema = {**ALL, "global_importance": GLOBAL_IMPORTANCE}[table]
    return schema.append(pa.field("run_id", pa.string()))


def files(out: str, table: str, run_ids: list[str] | None = None, fmt: str | None = None) -> list[tuple[str, str]]:
    """``(run_id, file location)`` of every data file of ``table`` (of ``run_ids`` only,
    when given), sorted: committed Parquet files, or the files of the Delta table's current
    version. Each file holds whole tracks (a writer commit is one file per table)."""
    fmt = fmt or existing_format(out) or "parquet"
    want = set(run_ids) if run_ids is not None else None
    found = []
    if fmt == "iceberg":
        from pipeline.iceberg import IcebergTables
        return sorted(IcebergTables.of_output(out).files(table, want))
    if fmt == "delta":
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError
        try:
            dt = DeltaTable(delta_uri(out, table))
        except TableNotFoundError:
            return []
        filters = [("run_id", "in", sorted(want))] if want else None
        if want is not None and not want:
            return []
        for uri in dt.file_uris(file_pruning_predicate=filters):
            found.append((_run_of(uri), uri if storage.is_uri(out) else uri.removeprefix("file://")))
    else:
        for part in storage.children(location(out, table)):
            name = part.rstrip("/").rsplit("/", 1)[-1]
            if not name.startswith("run_id="):
                continue
            run_id = name.split("=", 1)[1]
            if want is not None and run_id not in want:
                continue
            found += [(run_id, f) for f in storage.list_files(part) if f.endswith(".parquet")
                      and "/." not in f[len(part):]]
    return sorted(found)


def _run_of(uri: str) -> str:
    for piece in uri.split("/"):
        if piece.startswith("run_id="):
            from urllib.parse import unquote
            return unquote(piece.split("=", 1)[1])
    raise ValueError(f"{uri} is not under a run_id= partition")


def delta_uri(out: str, table: str) -> str:
    return storage.native(location(out, table))


def read_file(loc: str, table: str, columns: list[str] | None = None):
    """One data file as a ``pyarrow.Table`` in this release's schema: a column it lacks
    (written before the column existed) reads as null; one this release does not know is
    left out."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    schema = table_schema(table)
    names = columns or [n for n in schema.names if n != "run_id"]
    with storage.open_input(loc) as f:
        pf = pq.ParquetFile(f)
        t = pf.read(columns=[n for n in names if n in pf.schema_arrow.names])
    cols = []
    for n in names:
        typ = schema.field(n).type
        cols.append(t.column(n).cast(typ) if n in t.column_names else pa.nulls(t.num_rows, typ))
    return pa.table(cols, names=names)


def scan_table(out: str, table: str, columns: list[str] | None = None, run_ids: list[str] | None = None,
               fmt: str | None = None) -> Iterator:
    """``pyarrow.Table`` per data file, with ``run_id`` added: bounded memory whatever the size."""
    import pyarrow as pa
    for run_id, loc in files(out, table, run_ids, fmt):
        t = read_file(loc, table, [c for c in columns if c != "run_id"] if columns else None)
        yield t.append_column("run_id", pa.array([run_id] * t.num_rows, pa.string()))


def frame(out: str, table: str, columns: list[str] | None = None, run_ids: list[str] | None = None,
          fmt: str | None = None):
    """A whole table (of some runs, some columns) as one ``polars.DataFrame``."""
    import polars as pl
    import pyarrow as pa
    parts = list(scan_table(out, table, columns, run_ids, fmt))
    if not parts:
        schema = table_schema(table)
        names = (columns or [n for n in schema.names if n != "run_id"]) + ["run_id"]
        return pl.from_arrow(pa.schema([schema.field(n) for n in dict.fromkeys(names)]).empty_table())
    return pl.from_arrow(pa.concat_tables(parts))


# ------------------------------------------------------------------------------ nights

def night_doc(out: str, night: str | None = None) -> dict:
    """The run an aggregate or report covers: ``night`` or the latest run started."""
    docs = runs(out)
    if night is not None:
        for d in docs:
            if d["run_id"] == night:
                return d
        if files(out, "tracks", [night]):  # tables written by another tool, without runs/<run>.json
            return {"run_id": night}
        raise ValueError(f"no run {night!r} in {out} (runs: {', '.join(d['run_id'] for d in docs) or 'none'})")
    if not docs:
        raise FileNotFoundError(f"no runs in {out} (no runs/*.json)")
    return docs[-1]


def latest_selection(out: str, night: str | None = None, fmt: str | None = None):
    """Which explanation stands for each track of a night's catalogue.

    For every member of the night's catalogue (track_id, content_key): the latest run, up
    to that night and under the night's model and config hash, whose ``tracks`` has that
    track with that content key. A track whose content changed and whose new explanation
    failed has none (its stale explanation is not used); removed tracks are not members.

    Returns ``(night doc, polars.DataFrame[run_id, track_id, predicted, true_label, score])``.
    """
    import polars as pl
    doc = night_doc(out, night)
    order = {d["run_id"]: i for i, d in enumerate(runs(out))}
    order.setdefault(doc["run_id"], len(order))
    cfg = doc.get("config_hash")
    eligible = [r for r, i in order.items() if i <= order[doc["run_id"]]]
    members = frame(out, "members", ["track_id", "content_key"], [doc["run_id"]], fmt).drop("run_id")
    tracks = frame(out, "tracks", ["track_id", "content_key", "config_hash", "predicted", "true_label", "score"],
                   eligible, fmt)
    if cfg is not None:
        tracks = tracks.filter(pl.col("config_hash") == cfg)
    if members.height:
        tracks = tracks.join(members, on=["track_id", "content_key"], how="semi", nulls_equal=True)
    else:  # an output written before members existed: the night's own tracks
        tracks = tracks.filter(pl.col("run_id") == doc["run_id"])
    sel = (tracks.with_columns(pl.col("run_id").replace_strict(order, default=-1, return_dtype=pl.Int64)
                               .alias("_order"))
           .sort("_order").unique("track_id", keep="last", maintain_order=True)
           .select("run_id", "track_id", "predicted", "true_label", "score"))
    return doc, sel


# ------------------------------------------------------------------------------ a run's catalogue

class MembersWriter:
    """Streams a run's catalogue (track_id, catalogue_row, content_key) into its ``members``
    partition, replacing what an earlier invocation of the run wrote (in one step: a rename
    of one file, or one Delta predicate overwrite). Memory: one batch."""

    def __init__(self, out: str, fmt: str, run_id: str, iceberg: IcebergTables | None = None):
        import tempfile
        self.out, self.fmt, self.run_id, self.iceberg = str(out), fmt, run_id, iceberg
        self._dir = tempfile.mkdtemp(prefix="musiclime-members-")
        self._tmp = f"{self._dir}/members.parquet"
        self._writer: Any = None  # a pyarrow ParquetWriter once the first batch comes

    def add(self, track_ids: list, rows: list[int], keys: list[str]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        from schemas.tables import MEMBERS
        batch = pa.Table.from_pydict({"track_id": track_ids, "catalogue_row": rows, "content_key": keys},
                                     schema=MEMBERS)
        if self._writer is None:
            self._writer = pq.ParquetWriter(self._tmp, MEMBERS, compression="zstd")
        self._writer.write_table(batch)

    def close(self) -> None:
        import os
        import shutil

        import pyarrow as pa
        import pyarrow.parquet as pq

        from schemas.tables import MEMBERS
        try:
            if self._writer is None:
                pq.write_table(MEMBERS.empty_table(), self._tmp)
            else:
                self._writer.close()
            f = pq.ParquetFile(self._tmp)
            schema = MEMBERS.append(pa.field("run_id", pa.string(), nullable=False))

            def batches():
                for b in f.iter_batches(batch_size=65536):
                    yield pa.RecordBatch.from_arrays(
                        b.columns + [pa.array([self.run_id] * b.num_rows, pa.string())], schema=schema)
            if self.fmt == "iceberg":
                from pipeline.iceberg import IcebergTables
                tables = self.iceberg or IcebergTables.of_output(self.out)
                tables.replace_run("members", self.run_id, (pa.Table.from_batches([b]) for b in batches()), schema)
            elif self.fmt == "delta":
                from deltalake import write_deltalake
                quoted = self.run_id.replace("'", "''")
                write_deltalake(delta_uri(self.out, "members"), pa.RecordBatchReader.from_batches(schema, batches()),
                                mode="overwrite", predicate=f"run_id = '{quoted}'", partition_by=["run_id"])
            else:
                final = location(self.out, "members", f"run_id={self.run_id}", "part-0.parquet")
                if storage.is_object_store(final):
                    storage.write_bytes(final, open(self._tmp, "rb").read())
                else:
                    path = storage.filesystem(final)[1]
                    os.makedirs(os.path.dirname(path), exist_ok=True)
                    shutil.copyfile(self._tmp, path + ".tmp")
                    os.replace(path + ".tmp", path)
        finally:
            shutil.rmtree(self._dir, ignore_errors=True)


def history(out: str, fmt: str, config_hash: str, run_id: str, with_errors: bool):
    """Sorted :func:`pipeline.worklist.version_digest` values of every (track, content key)
    that runs other than ``run_id`` under ``config_hash`` committed to ``tracks`` (and
    ``errors`` unless retried): what an incremental night need not do again."""
    import numpy as np

    from pipeline.worklist import DIGEST, version_digest
    earlier = [d["run_id"] for d in runs(out) if d.get("config_hash") == config_hash and d["run_id"] != run_id]
    parts = []
    for table in ("tracks", "errors") if with_errors else ("tracks",):
        for t in scan_table(out, table, ["track_id", "content_key"], earlier, fmt):
            ids, keys = t.column("track_id").to_pylist(), t.column("content_key").to_pylist()
            parts.append(np.array([version_digest(i, k) for i, k in zip(ids, keys) if i and k], dtype=DIGEST))
    found = np.concatenate(parts) if parts else np.zeros(0, DIGEST)
    return np.unique(found)
