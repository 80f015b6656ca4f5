"""``global_importance`` of an output: which explanations count, read batch by batch,
aggregated (:mod:`musiclime.aggregate`) and written back in the output's format.

By default the rows cover one night: the latest explanation of each track in that night's
catalogue, under its model and config (:func:`pipeline.output.latest_selection`); the
``run_id`` partition is that night. With ``runs``, each run is aggregated on its own
tracks, side by side (to compare models or settings).
"""
from __future__ import annotations

from musiclime import storage
from pipeline import output

FILES_PER_READ = 8  # explanation files joined at once: fewer joins, memory still bounded


def aggregate(out: str, runs: list[str] | None = None, topk: int = 5, min_word_tracks: int | None = None,
              min_score: float | None = None, night: str | None = None):
    """The global_importance rows (schemas.aggregates plus ``run_id``) as a Polars DataFrame.

    Memory: the selection (one row per counted track) plus sums per class and feature; the
    explanations stream through a few committed files at a time.
    """
    import polars as pl

    from musiclime.aggregate import aggregate_batches
    out = str(out)
    fmt = output.existing_format(out)
    if fmt is None:
        raise FileNotFoundError(f"no explanations in {out} (not a musiclime output)")
    docs = {d["run_id"]: d for d in output.runs(out)}
    cols = ["track_id", "predicted", "true_label", "score"]
    if runs:
        sel = output.frame(out, "tracks", cols, runs, fmt)
        covers = {r: docs.get(r, {}) for r in runs}
        label = {r: r for r in runs}
    else:
        doc, sel = output.latest_selection(out, night, fmt)
        covers = {doc["run_id"]: doc}
        label = {r: doc["run_id"] for r in sel["run_id"].unique().to_list()}
    if min_score is not None:
        sel = sel.filter(pl.col("score") >= min_score)
    sel = sel.select("run_id", "track_id", "predicted", "true_label")
    by_run = sel.partition_by("run_id", as_dict=True)

    def batches():
        expl_cols = ["track_id", "label", "modality", "stem", "segment", "token", "weight", "weight_se", "rank"]
        found = output.files(out, "explanations", sorted(label), fmt)
        for i in range(0, len(found), FILES_PER_READ):
            group = found[i:i + FILES_PER_READ]
            for run_id in dict.fromkeys(r for r, _ in group):
                part = by_run.get((run_id,))
                if part is None:
                    continue
                expl = pl.concat([pl.from_arrow(output.read_file(loc, "explanations", expl_cols))
                                  for r, loc in group if r == run_id])
                expl = expl.join(part.select("track_id"), on="track_id", how="semi")
                tracks = part.join(expl.select("track_id").unique(), on="track_id", how="semi")
                yield (expl.with_columns(pl.lit(label[run_id]).alias("run_id")),
                       tracks.with_columns(pl.lit(label[run_id]).alias("run_id")))

    try:
        df = aggregate_batches(batches(), topk, min_word_tracks)
    except FileNotFoundError:
        raise FileNotFoundError(f"no explanations in {out}" + (f" for runs {runs}" if runs else "")) from None
    meta = pl.DataFrame({"run_id": list(covers), "model_id": [d.get("model_id") for d in covers.values()],
                         "config_hash": [d.get("config_hash") for d in covers.values()]},
                        schema={"run_id": pl.String, "model_id": pl.String, "config_hash": pl.String})
    return df.join(meta, on="run_id", how="left")


def write_global_importance(out: str, df, fmt: str | None = None) -> list[str]:
    """Write each run's rows, replacing that run's earlier aggregate (never duplicating).

    ``parquet``: ``global_importance/run_id=<id>/part-0.parquet``, replaced whole (atomic);
    ``delta``: a Delta table, each run's rows replacing its earlier ones in one commit (a
    predicate overwrite): ``global_importance`` on a Delta output, ``global_importance_delta``
    beside the Parquet files on a Parquet output; ``iceberg`` (an Iceberg output's only
    format): the Iceberg table, each run's rows replaced in one commit. Default: the
    output's format.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.writer_base import with_run_id
    from schemas.aggregates import GLOBAL_IMPORTANCE
    out = str(out)
    have = output.existing_format(out) or "parquet"
    fmt = fmt or have
    if fmt not in ("parquet", "delta", "iceberg") or (fmt == "iceberg") != (have == "iceberg"):
        raise ValueError(f"format must be parquet or delta (iceberg on an Iceberg output), got {fmt!r}")
    written = []
    for (run_id,), part in df.group_by(["run_id"], maintain_order=True):
        table = part.drop("run_id").to_arrow().select(GLOBAL_IMPORTANCE.names).cast(GLOBAL_IMPORTANCE)
        if have == "parquet":
            sink = pa.BufferOutputStream()
            pq.write_table(table, sink, compression="zstd")
            loc = output.location(out, "global_importance", f"run_id={run_id}", "part-0.parquet")
            storage.write_atomic(loc, sink.getvalue().to_pybytes())
            written.append(loc)
        rows = with_run_id(table, str(run_id))
        if fmt == "iceberg":
            from pipeline.iceberg import IcebergTables
            IcebergTables.of_output(out).replace_run("global_importance", str(run_id), [rows], rows.schema)
            written.append(output.location(out, "global_importance"))
        if fmt == "delta":
            from deltalake import write_deltalake
            name = "global_importance" if have == "delta" else "global_importance_delta"
            quoted = str(run_id).replace("'", "''")
            uri = output.location(out, name)
            write_deltalake(uri if storage.is_uri(uri) else storage.filesystem(uri)[1], rows, mode="overwrite",
                            predicate=f"run_id = '{quoted}'", partition_by=["run_id"], schema_mode="merge")
            written.append(uri)
    return written
