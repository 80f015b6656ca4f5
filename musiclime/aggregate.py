"""Global importances: local weights aggregated per class with Polars.

One pass over the explanations, a committed batch at a time, joined with the tracks that
count (for the predicted and true labels); only mergeable sums are kept. Reading an
output's tables is :mod:`pipeline.global_importance`'s part. Levels: ``stem``, ``segment``, ``stem_segment``, ``word``,
``modality``. A track contributes to a class through the explanation of that class:
``label_source='predicted'`` when it is the track's prediction, ``'true'`` when it is its
catalogue label (both when they agree).
"""
from __future__ import annotations

import math


def default_min_word_tracks(n_class_tracks: int) -> int:
    """A word must appear in this many of a class's tracks to be ranked."""
    return max(3, math.ceil(0.01 * n_class_tracks))


KEYS = ["run_id", "label", "label_source"]
AUDIO_LEVELS = {"stem": ["stem"], "segment": ["segment"], "stem_segment": ["stem", "segment"]}
# Partial sums are re-reduced every this many files, so memory holds O(classes x features)
# sums whatever the catalogue size (plus one float per track and class for the quartiles).
REDUCE_EVERY = 32


def _partials(expl, tracks, topk: int) -> dict:
    """Mergeable sums of one batch of tracks (every row of each of its tracks is here)."""
    import polars as pl
    src = pl.concat([
        tracks.select("run_id", "track_id", pl.col("predicted").alias("label"), pl.lit("predicted").alias("label_source")),
        tracks.filter(pl.col("true_label").is_not_null())
              .select("run_id", "track_id", pl.col("true_label").alias("label"), pl.lit("true").alias("label_source")),
    ])
    if "weight_se" not in expl.columns:
        expl = expl.with_columns(pl.lit(None, dtype=pl.Float64).alias("weight_se"))
    rows = expl.join(src, on=["run_id", "track_id", "label"], how="inner").with_columns(
        pl.col("weight").abs().alias("abs_w"), (pl.col("rank") <= topk).alias("in_top"),
        # a variance, and how many rows had none: sums of both merge across batches
        pl.col("weight_se").pow(2).fill_null(0.0).alias("var_w"), pl.col("weight_se").is_null().alias("no_se"))
    out = {"n_class": rows.group_by(KEYS).agg(pl.col("track_id").n_unique().alias("n"))}
    audio = rows.filter(pl.col("modality") == "audio")
    for level, by in AUDIO_LEVELS.items():
        # per track: the sum over the level's features, and whether any is in the top-k
        out[level] = (audio.group_by(KEYS + ["track_id"] + by)
                      .agg(pl.col("weight").sum().alias("w"), pl.col("abs_w").sum().alias("aw"),
                           pl.col("in_top").any().alias("top"), pl.col("var_w").sum().alias("v"),
                           pl.col("no_se").sum().alias("m"))
                      .group_by(KEYS + by)
                      .agg(pl.col("aw").sum().alias("s_abs"), pl.col("w").sum().alias("s_w"),
                           pl.col("top").sum().alias("s_top"), pl.col("v").sum().alias("s_var"),
                           pl.col("m").sum().alias("s_missing")))
    out["word"] = (rows.filter(pl.col("modality") == "lyrics").with_columns(pl.col("token").str.to_lowercase())
                   .group_by(KEYS + ["track_id", "token"])
                   .agg(pl.col("weight").sum().alias("w"), pl.col("abs_w").sum().alias("aw"),
                        pl.col("in_top").any().alias("top"), pl.col("var_w").sum().alias("v"),
                        pl.col("no_se").sum().alias("m"))
                   .group_by(KEYS + ["token"])
                   .agg(pl.col("aw").sum().alias("s_abs"), pl.col("w").sum().alias("s_w"),
                        pl.col("top").sum().alias("s_top"), pl.col("v").sum().alias("s_var"),
                        pl.col("m").sum().alias("s_missing"), pl.len().alias("n_tracks")))
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


def _mean_se(n: str):
    """sqrt(summed variances) / n, null when any contributing weight had no standard error."""
    import polars as pl
    return (pl.when(pl.col("s_missing") == 0).then(pl.col("s_var").sqrt() / pl.col(n))
            .otherwise(None).alias("mean_weight_se"))


def aggregate_batches(batches, topk: int = 5, min_word_tracks: int | None = None):
    """The global_importance rows (see schemas.aggregates) plus ``run_id``, as a Polars
    DataFrame, from ``(explanations, tracks)`` pairs of Polars DataFrames.

    ``explanations`` has ``run_id, track_id, label, modality, stem, segment, token, weight,
    rank`` and holds every row of each of its tracks (a committed batch); ``tracks`` has
    ``run_id, track_id, predicted, true_label``: the tracks to count, under the ``run_id``
    their rows are grouped by. Only mergeable sums are kept between pairs: memory stays flat
    as the number of pairs grows.
    """
    import polars as pl
    by = {"n_class": KEYS, **{lv: KEYS + b for lv, b in AUDIO_LEVELS.items()}, "word": KEYS + ["token"], "share": []}
    acc: dict = {k: [] for k in by}  # lists of partial frames, then one frame each
    for i, (expl, tracks) in enumerate(batches):
        for k, df in _partials(expl, tracks, topk).items():
            acc[k].append(df)
        if (i + 1) % REDUCE_EVERY == 0:
            acc = {k: [_reduce(v, by[k])] for k, v in acc.items()}
    if not acc["n_class"]:
        raise FileNotFoundError("no explanations to aggregate")
    acc = {k: _reduce(v, by[k]) for k, v in acc.items()}
    n_class = acc["n_class"].rename({"n": "n_class_tracks"})
    parts = []
    for level in AUDIO_LEVELS:
        parts.append(acc[level].join(n_class, on=KEYS).with_columns(
            (pl.col("s_abs") / pl.col("n_class_tracks")).alias("mean_abs_weight"),
            (pl.col("s_w") / pl.col("n_class_tracks")).alias("mean_weight"),
            _mean_se("n_class_tracks"),
            (pl.col("s_top") / pl.col("n_class_tracks")).alias("topk_frequency"),
            pl.col("n_class_tracks").alias("n_tracks"), pl.lit(level).alias("level"), pl.lit("audio").alias("modality")))
    threshold = (pl.lit(min_word_tracks) if min_word_tracks is not None else
                 pl.max_horizontal(pl.lit(3), (pl.col("n_class_tracks") * 0.01).ceil()))
    parts.append(acc["word"].join(n_class, on=KEYS).filter(pl.col("n_tracks") >= threshold).with_columns(
        (pl.col("s_abs") / pl.col("n_tracks")).alias("mean_abs_weight"),
        (pl.col("s_w") / pl.col("n_tracks")).alias("mean_weight"),
        _mean_se("n_tracks"),
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
              "mean_abs_weight": pl.Float64, "mean_weight": pl.Float64, "mean_weight_se": pl.Float64,
              "n_tracks": pl.Int64,
              "topk_frequency": pl.Float64, "share_mean": pl.Float64, "share_q25": pl.Float64,
              "share_q50": pl.Float64, "share_q75": pl.Float64}
    aligned = [p.with_columns([pl.lit(None, dtype=t).alias(c) for c, t in schema.items() if c not in p.columns])
               .select([pl.col(c).cast(t) for c, t in schema.items()]) for p in parts]
    return pl.concat(aligned).sort(["run_id", "label_source", "label", "level", "mean_abs_weight"],
                                   descending=[False, False, False, False, True])
