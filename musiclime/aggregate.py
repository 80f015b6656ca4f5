"""Global importances: local weights aggregated per class with Polars.

One pass over all ``explanations/`` files, a committed batch at a time, joined with the
batch's ``tracks/`` file for the predicted and true labels; only mergeable sums are kept. Levels: ``stem``, ``segment``, ``stem_segment``, ``word``,
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


KEYS = ["run_id", "label", "label_source"]
AUDIO_LEVELS = {"stem": ["stem"], "segment": ["segment"], "stem_segment": ["stem", "segment"]}
# Partial sums are re-reduced every this many files, so memory holds O(classes x features)
# sums whatever the catalogue size (plus one float per track and class for the quartiles).
REDUCE_EVERY = 32


def _file_pairs(out: Path, runs: list[str] | None):
    """``(run_id, explanations file, tracks file or None)``: the writer commits a batch's
    tracks and explanations under the same file name, and every row of a track in one
    batch, so per-track sums can be taken file by file."""
    for run_dir in sorted((out / "explanations").glob("run_id=*")):
        run_id = run_dir.name.split("=", 1)[1]
        if runs and run_id not in runs:
            continue
        for f in sorted(run_dir.rglob("*.parquet")):
            twin = out / "tracks" / run_dir.name / f.relative_to(run_dir)
            yield run_id, f, (twin if twin.is_file() else None)


def _tracks_of(out: Path, run_id: str, twin: Path | None, ids, min_score: float | None):
    import polars as pl
    cols = ["track_id", "predicted", "true_label", "score"]
    if twin is not None:
        t = pl.read_parquet(twin, columns=cols)
    else:  # a batch without its twin (written by another tool): look its tracks up
        t = pl.scan_parquet(str(out / "tracks" / f"run_id={run_id}" / "**" / "*.parquet")).select(cols) \
              .filter(pl.col("track_id").is_in(pl.Series(list(ids), dtype=pl.String).implode())).collect()
    if min_score is not None:
        t = t.filter(pl.col("score") >= min_score)
    return t.with_columns(pl.lit(run_id).alias("run_id"))


def _partials(expl, tracks, topk: int) -> dict:
    """Mergeable sums of one batch of tracks (every row of each of its tracks is here)."""
    import polars as pl
    src = pl.concat([
        tracks.select("run_id", "track_id", pl.col("predicted").alias("label"), pl.lit("predicted").alias("label_source")),
        tracks.filter(pl.col("true_label").is_not_null())
              .select("run_id", "track_id", pl.col("true_label").alias("label"), pl.lit("true").alias("label_source")),
    ])
    rows = expl.join(src, on=["run_id", "track_id", "label"], how="inner").with_columns(
        pl.col("weight").abs().alias("abs_w"), (pl.col("rank") <= topk).alias("in_top"))
    out = {"n_class": rows.group_by(KEYS).agg(pl.col("track_id").n_unique().alias("n"))}
    audio = rows.filter(pl.col("modality") == "audio")
    for level, by in AUDIO_LEVELS.items():
        # per track: the sum over the level's features, and whether any is in the top-k
        out[level] = (audio.group_by(KEYS + ["track_id"] + by)
                      .agg(pl.col("weight").sum().alias("w"), pl.col("abs_w").sum().alias("aw"),
                           pl.col("in_top").any().alias("top"))
                      .group_by(KEYS + by)
                      .agg(pl.col("aw").sum().alias("s_abs"), pl.col("w").sum().alias("s_w"),
                           pl.col("top").sum().alias("s_top")))
    out["word"] = (rows.filter(pl.col("modality") == "lyrics").with_columns(pl.col("token").str.to_lowercase())
                   .group_by(KEYS + ["track_id", "token"])
                   .agg(pl.col("weight").sum().alias("w"), pl.col("abs_w").sum().alias("aw"),
                        pl.col("in_top").any().alias("top"))
                   .group_by(KEYS + ["token"])
                   .agg(pl.col("aw").sum().alias("s_abs"), pl.col("w").sum().alias("s_w"),
                        pl.col("top").sum().alias("s_top"), pl.len().alias("n_tracks")))
    out["share"] = (rows.group_by(KEYS + ["track_id"])
                    .agg((pl.col("abs_w") * (pl.col("modality") == "audio")).sum().alias("a"),
                         pl.col("abs_w").sum().alias("t"))
                    .select(*KEYS, pl.col("t").cast(pl.Float32),
                            pl.when(pl.col("t") > 0).then(pl.col("a") / pl.col("t")).otherwise(0.5).alias("audio")))
    return out


def _reduce(parts: list, by: list[str]):
    import polars as pl
    df = pl.concat(parts, how="vertical_relaxed")
    if not by:  # per-track rows (the shares): kept whole for exact quartiles
        return df
    sums = [c for c in df.columns if c not in by]
    return df.group_by(by).agg([pl.col(c).sum() for c in sums])


def aggregate(out: str | Path, runs: list[str] | None = None, topk: int = 5, min_word_tracks: int | None = None,
              min_score: float | None = None):
    """The global_importance rows as a Polars DataFrame (see schemas.aggregates).

    Reads the explanations one committed batch at a time and keeps only mergeable sums
    per (run, class, feature group): memory stays flat as the catalogue grows.
    """
    import polars as pl
    out = Path(out)
    by = {"n_class": KEYS, **{lv: KEYS + b for lv, b in AUDIO_LEVELS.items()}, "word": KEYS + ["token"], "share": []}
    acc: dict[str, list] = {k: [] for k in by}
    cols = ["track_id", "label", "modality", "stem", "segment", "token", "weight", "rank"]
    for i, (run_id, f, twin) in enumerate(_file_pairs(out, runs)):
        expl = pl.read_parquet(f, columns=cols).with_columns(pl.lit(run_id).alias("run_id"))
        tracks = _tracks_of(out, run_id, twin, expl["track_id"].unique(), min_score)
        for k, df in _partials(expl, tracks, topk).items():
            acc[k].append(df)
        if (i + 1) % REDUCE_EVERY == 0:
            acc = {k: [_reduce(v, by[k])] for k, v in acc.items()}
    if not acc["n_class"]:
        raise FileNotFoundError(f"no explanations under {out / 'explanations'}"
                                + (f" for runs {runs}" if runs else ""))
    acc = {k: _reduce(v, by[k]) for k, v in acc.items()}
    n_class = acc["n_class"].rename({"n": "n_class_tracks"})
    parts = []
    for level in AUDIO_LEVELS:
        parts.append(acc[level].join(n_class, on=KEYS).with_columns(
            (pl.col("s_abs") / pl.col("n_class_tracks")).alias("mean_abs_weight"),
            (pl.col("s_w") / pl.col("n_class_tracks")).alias("mean_weight"),
            (pl.col("s_top") / pl.col("n_class_tracks")).alias("topk_frequency"),
            pl.col("n_class_tracks").alias("n_tracks"), pl.lit(level).alias("level"), pl.lit("audio").alias("modality")))
    threshold = (pl.lit(min_word_tracks) if min_word_tracks is not None else
                 pl.max_horizontal(pl.lit(3), (pl.col("n_class_tracks") * 0.01).ceil()))
    parts.append(acc["word"].join(n_class, on=KEYS).filter(pl.col("n_tracks") >= threshold).with_columns(
        (pl.col("s_abs") / pl.col("n_tracks")).alias("mean_abs_weight"),
        (pl.col("s_w") / pl.col("n_tracks")).alias("mean_weight"),
        (pl.col("s_top") / pl.col("n_tracks")).alias("topk_frequency"),
        pl.lit("word").alias("level"), pl.lit("lyrics").alias("modality")))
    shares = acc["share"].with_columns(pl.col("t").cast(pl.Float64), (1 - pl.col("audio")).alias("lyrics"))
    for mod in ("audio", "lyrics"):
        parts.append(shares.group_by(KEYS).agg(
            pl.col(mod).mean().alias("share_mean"), pl.col(mod).quantile(0.25, "linear").alias("share_q25"),
            pl.col(mod).median().alias("share_q50"), pl.col(mod).quantile(0.75, "linear").alias("share_q75"),
            (pl.col("t") * pl.col(mod)).mean().alias("mean_abs_weight"), pl.len().alias("n_tracks"))
            .with_columns(pl.lit("modality").alias("level"), pl.lit(mod).alias("modality")))
    schema = {"run_id": pl.String, "label": pl.String, "label_source": pl.String, "level": pl.String,
              "modality": pl.String, "stem": pl.String, "segment": pl.Int32, "token": pl.String,
              "mean_abs_weight": pl.Float64, "mean_weight": pl.Float64, "n_tracks": pl.Int64,
              "topk_frequency": pl.Float64, "share_mean": pl.Float64, "share_q25": pl.Float64,
              "share_q50": pl.Float64, "share_q75": pl.Float64}
    aligned = [p.with_columns([pl.lit(None, dtype=t).alias(c) for c, t in schema.items() if c not in p.columns])
               .select([pl.col(c).cast(t) for c, t in schema.items()]) for p in parts]
    return pl.concat(aligned).sort(["run_id", "label_source", "label", "level", "mean_abs_weight"],
                                   descending=[False, False, False, False, True])


def write_global_importance(out: str | Path, df, fmt: str = "parquet") -> list[Path]:
    """Write one Parquet file per run under ``global_importance/run_id=<id>/`` (replacing
    that run's previous aggregate atomically); ``fmt='delta'`` also writes the Delta table
    ``global_importance_delta``, where each run's rows replace that run's earlier ones in one
    commit (a predicate overwrite): aggregating again never duplicates rows."""
    import os
    import shutil
    import uuid

    import pyarrow as pa
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
            rows = table.append_column(pa.field("run_id", pa.string(), nullable=False),
                                       pa.array([run_id] * table.num_rows, pa.string()))
            quoted = str(run_id).replace("'", "''")
            write_deltalake(str(out / "global_importance_delta"), rows, mode="overwrite",
                            predicate=f"run_id = '{quoted}'", partition_by=["run_id"])
    return written
