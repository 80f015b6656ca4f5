"""``musiclime library make``: generate the offline demo library; ``musiclime library scan``:
the catalogue a folder of audio files gives, with its tags, to inspect or edit."""
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
    sc = sub.add_parser("scan", help="write the catalogue a folder of audio files gives (ids, paths, sidecar "
                                     "lyrics, tags) as Parquet: explaining it gives the folder's rows")
    sc.add_argument("folder", help="a folder of audio files (a path or URI)")
    sc.add_argument("--out", required=True, help="the catalogue to write (.parquet)")


def run(args: argparse.Namespace) -> int:
    if args.action == "scan":
        return _scan(args)
    from musiclime.library import make_library
    from pipeline.progress import Progress
    bar = Progress(args.tracks, "tracks")
    path = make_library(args.out, args.tracks, args.seed, args.sample_rate, args.seconds,
                        progress=lambda done, total: bar.update(done))
    bar.close()
    print(f"catalogue: {path}")
    return 0


def _scan(args: argparse.Namespace) -> int:
    import sys
    import time

    from pipeline.catalogue import CatalogueError
    from pipeline.folder import write_catalogue
    t0 = time.perf_counter()
    try:
        n, skipped = write_catalogue(args.folder, args.out)
    except (CatalogueError, ValueError) as e:
        print(f"musiclime library scan: {e}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - t0
    print(f"catalogue: {args.out}: {n} tracks in {seconds:.1f}s ({n / max(seconds, 1e-9):.0f} files/s)")
    if skipped.total:
        print(skipped.describe())
    return 0
