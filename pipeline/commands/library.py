"""``musiclime library make``: generate the offline demo library."""
from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    m = sub.add_parser("make", help="generate tracks with planted evidence (stems, mix, lyrics, labels)")
    m.add_argument("--out", required=True, help="library directory")
    m.add_argument("--tracks", type=int, default=400)
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--sample-rate", type=int, default=16000, help="Hz")
    m.add_argument("--seconds", type=float, default=10.0, help="track length in seconds")


def run(args: argparse.Namespace) -> int:
    from musiclime.library import make_library
    from pipeline.progress import Progress
    bar = Progress(args.tracks, "tracks")
    path = make_library(args.out, args.tracks, args.seed, args.sample_rate, args.seconds,
                        progress=lambda done, total: bar.update(done))
    bar.close()
    print(f"catalogue: {path}")
    return 0
