"""``musiclime report``: a self-contained report.html for an output directory."""
from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", help="output directory of `musiclime explain` (aggregated or not)")
    p.add_argument("--tracks-per-class", type=int, default=3, help="tracks shown per class in the track view")
    p.add_argument("--max-tracks", type=int, default=20)
    p.add_argument("--no-audio", action="store_true", help="do not embed audio clips")
    p.add_argument("--run-id", default=None, help="run to report (default: the latest)")


def run(args: argparse.Namespace) -> int:
    from pipeline.report import build_report
    path = build_report(args.out, args.tracks_per_class, args.max_tracks, audio=not args.no_audio, run_id=args.run_id)
    print(f"report: {path}")
    return 0
