"""``musiclime aggregate``: global importances per class from an output directory."""
from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", help="output directory of `musiclime explain`")
    p.add_argument("--runs", nargs="*", default=None, help="run ids to aggregate (default: all, side by side)")
    p.add_argument("--topk", type=int, default=5, help="k of topk_frequency")
    p.add_argument("--min-word-tracks", type=int, default=None,
                   help="tracks a word must appear in (default max(3, ceil(1%% of the class's tracks)))")
    p.add_argument("--min-score", type=float, default=None, help="only tracks whose surrogate R^2 is at least this")
    p.add_argument("--format", default="parquet", choices=["parquet", "delta"])


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from musiclime.aggregate import aggregate, write_global_importance
    out = Path(args.out)
    if not (out / "explanations").is_dir():
        print(f"musiclime aggregate: no explanations/ in {out}")
        return 2
    df = aggregate(out, args.runs, args.topk, args.min_word_tracks, args.min_score)
    files = write_global_importance(out, df, args.format)
    print(f"{df.height} global_importance rows for {len(files)} run(s) in {out / 'global_importance'}")
    return 0
