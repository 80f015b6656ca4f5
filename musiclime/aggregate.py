"""Global importances: local weights aggregated per class with a lazy Polars query.

One pass over all ``explanations/`` files (streamed), joined with ``tracks/`` for the
predicted and true labels. Levels: ``stem``, ``segment``, ``stem_segment``, ``word``,
``modality``. A track contributes to a class through the explanation of that class:
``label_source='predicted'`` when it is the track's prediction, ``'true'`` when it is its
catalogue label (both when they agree).
"""
from __future__ import annotations

import math
from pathlib import Path


def default_min_word_tracks(n_class_tracks: int) -> int:
    """A word must appear in this many of a class's tracks to be ranked."""
    return max(3, math.ceil(0.01 * n_class_tracks))


def _scan(out: Path, table: str):
    import polars as pl
    return pl.scan_parquet(str(out / table / "**" / "*.parquet"), hive_partitioning=True)


def aggregate(out: str | Path, runs: list[str] | None = None, topk: int = 5, min_word_tracks: int | None = None,
              min_score: float | None = None):
    """The global_importance rows as a Polars DataFrame (see schemas.aggregates)."""
    import polars as pl
    out = Path(out)
    tracks = _scan(out, "tracks").select("run_id", "track_id", "predicted", "true_label", "score")
    if runs:
        tracks = tracks.filter(pl.col("run_id").is_in(runs))
    if min_score is not None:
        tracks = tracks.filter(pl.col("score") >= min_score)
    expl = _scan(out, "explanations").select("run_id", "track_id", "label", "modality", "stem", "segment", "token",
                                              "weight", "rank")
    # one row per (track, explained label, source) the track belongs to
    src = pl.concat([
        tracks.select("run_id", "track_id", pl.col("predicted").alias("label"), pl.lit("predicted").alias("label_source")),
        tracks.filter(pl.col("true_label").is_not_null())
              .select("run_id", "track_id", pl.col("true_label").alias("label"), pl.lit("true").alias("label_source")),
    ])
    rows = expl.join(src, on=["run_id", "track_id", "label"], how="inner").with_columns(
        pl.col("weight").abs().alias("abs_w"), (pl.col("rank") <= topk).alias("in_top"))
    keys = ["run_id", "label", "label_source"]
    n_class = src.join(expl.select("run_id", "track_id", "label").unique(), on=["run_id", "track_id", "label"]) \
                 .group_by(keys).agg(pl.col("track_id").n_unique().alias("n_class_tracks"))
    audio = rows.filter(pl.col("modality") == "audio")

    def audio_level(level: str, by: list[str]):
        # per track: sum over the level's features; then the mean over the class's tracks
        per_track = audio.group_by(keys + ["track_id"] + by).agg(
            pl.col("weight").sum().alias("w"), pl.col("abs_w").sum().alias("aw"), pl.col("in_top").any().alias("top"))
        return (per_track.group_by(keys + by)
                .agg(pl.col("aw").sum().alias("s_abs"), pl.col("w").sum().alias("s_w"), pl.col("top").sum().alias("s_top"))
                .join(n_class, on=keys)
                .with_columns((pl.col("s_abs") / pl.col("n_class_tracks")).alias("mean_abs_weight"),
                              (pl.col("s_w") / pl.col("n_class_tracks")).alias("mean_weight"),
                              (pl.col("s_top") / pl.col("n_class_tracks")).alias("topk_frequency"),
                              pl.col("n_class_tracks").alias("n_tracks"), pl.lit(level).alias("level"),
                              pl.lit("audio").alias("modality")))

    parts = [audio_level("stem", ["stem"]), audio_level("segment", ["segment"]),
             audio_level("stem_segment", ["stem", "segment"])]
    words = (rows.filter(pl.col("modality") == "lyrics").with_columns(pl.col("token").str.to_lowercase())
             .group_by(keys + ["track_id", "token"])
             .agg(pl.col("weight").sum().alias("w"), pl.col("abs_w").sum().alias("aw"), pl.col("in_top").any().alias("top"))
             .group_by(keys + ["token"])
             .agg(pl.col("aw").mean().alias("mean_abs_weight"), pl.col("w").mean().alias("mean_weight"),
                  pl.col("top").mean().alias("topk_frequency"), pl.len().alias("n_tracks"))
             .join(n_class, on=keys)
             .filter(pl.col("n_tracks") >= (pl.lit(min_word_tracks) if min_word_tracks is not None else
                                            pl.max_horizontal(pl.lit(3), (pl.col("n_class_tracks") * 0.01).ceil())))
             .with_columns(pl.lit("word").alias("level"), pl.lit("lyrics").alias("modality")))
    parts.append(words)
    shares = (rows.group_by(keys + ["track_id"])
              .agg((pl.col("abs_w") * (pl.col("modality") == "audio")).sum().alias("a"), pl.col("abs_w").sum().alias("t"))
              .with_columns(pl.when(pl.col("t") > 0).then(pl.col("a") / pl.col("t")).otherwise(0.5).alias("audio"))
              .with_columns((1 - pl.col("audio")).alias("lyrics")))
    for mod in ("audio", "lyrics"):
        parts.append(shares.group_by(keys).agg(
            pl.col(mod).mean().alias("share_mean"), pl.col(mod).quantile(0.25, "linear").alias("share_q25"),
            pl.col(mod).median().alias("share_q50"), pl.col(mod).quantile(0.75, "linear").alias("share_q75"),
            (pl.col("t") * pl.col(mod)).mean().alias("mean_abs_weight"), pl.len().alias("n_tracks"))
            .with_columns(pl.lit("modality").alias("level"), pl.lit(mod).alias("modality")))
    cols = {"run_id": pl.String, "label": pl.String, "label_source": pl.String, "level": pl.String,
            "modality": pl.String, "stem": pl.String, "segment": pl.Int32, "token": pl.String,
            "mean_abs_weight": pl.Float64, "mean_weight": pl.Float64, "n_tracks": pl.Int64, "topk_frequency": pl.Float64,
            "share_mean": pl.Float64, "share_q25": pl.Float64, "share_q50": pl.Float64, "share_q75": pl.Float64}
    aligned = [p.with_columns([pl.lit(None, dtype=t).alias(c) for c, t in cols.items() if c not in p.collect_schema().names()])
               .select([pl.col(c).cast(t) for c, t in cols.items()]) for p in parts]
    return pl.concat(aligned).sort(["run_id", "label_source", "label", "level", "mean_abs_weight"],
                                   descending=[False, False, False, False, True]).collect(engine="streaming")


def write_global_importance(out: str | Path, df, fmt: str = "parquet") -> list[Path]:
    """Write one Parquet file per run under ``global_importance/run_id=<id>/`` (replacing
    that run's previous aggregate atomically); ``fmt='delta'`` also appends a Delta table."""
    import os
    import shutil
    import uuid

    import pyarrow.parquet as pq

    from schemas.aggregates import GLOBAL_IMPORTANCE
    if fmt not in ("parquet", "delta"):
        raise ValueError(f"format must be parquet or delta, got {fmt!r}")
    out = Path(out)
    written = []
    for (run_id,), part in df.group_by(["run_id"], maintain_order=True):
        table = part.drop("run_id").to_arrow().cast(GLOBAL_IMPORTANCE)
        final = out / "global_importance" / f"run_id={run_id}"
        tmp = out / "global_importance" / f".run_id={run_id}.{uuid.uuid4().hex[:8]}.tmp"
        tmp.mkdir(parents=True)
        pq.write_table(table, tmp / "part-0.parquet", compression="zstd")
        old = final.with_name(final.name + f".old-{uuid.uuid4().hex[:8]}")
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
        written.append(final / "part-0.parquet")
        if fmt == "delta":
            from deltalake import write_deltalake
            write_deltalake(str(out / "global_importance_delta"), part.to_arrow(), mode="append",
                            partition_by=["run_id"])
    return written
