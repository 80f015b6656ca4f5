"""``musiclime aggregate``: global importances per class from an output (folder or URI)."""
from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", help="output of `musiclime explain`: a folder or a URI (s3://bucket/prefix)")
    p.add_argument("--night", default=None,
                   help="the run (night) to cover: the latest explanation of each track in its catalogue, under "
                        "its model and config (default: the latest run)")
    p.add_argument("--runs", nargs="*", default=None,
                   help="aggregate these runs each on its own tracks, side by side, instead of one night")
    p.add_argument("--topk", type=int, default=5, help="k of topk_frequency")
    p.add_argument("--min-word-tracks", type=int, default=None,
                   help="tracks a word must appear in (default max(3, ceil(1%% of the class's tracks)))")
    p.add_argument("--min-score", type=float, default=None, help="only tracks whose surrogate R^2 is at least this")
    p.add_argument("--format", default=None, choices=["parquet", "delta", "iceberg"],
                   help="default: the output's format (run.json); delta on a Parquet output also writes the "
                        "Delta table global_importance_delta")


def run(args: argparse.Namespace) -> int:
    from pipeline.global_importance import aggregate, write_global_importance
    from pipeline.output import existing_format, location
    out = args.out.rstrip("/")
    if existing_format(out) is None:
        print(f"musiclime aggregate: no explanations in {out} (not a musiclime output)")
        return 2
    try:
        df = aggregate(out, args.runs, args.topk, args.min_word_tracks, args.min_score, night=args.night)
    except (ValueError, FileNotFoundError) as e:
        print(f"musiclime aggregate: {e}")
        return 2
    files = write_global_importance(out, df, args.format)
    covers = ", ".join(sorted(set(df["run_id"])))
    print(f"{df.height} global_importance rows ({covers}) in {location(out, 'global_importance')}"
          + (f" ({len(files)} writes)" if files else ""))
    return 0
