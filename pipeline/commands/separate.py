"""``musiclime separate``: separate a catalogue into the stem cache."""
from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("catalogue", help="Parquet, CSV, JSONL, or a folder of audio with sidecar .txt lyrics")
    p.add_argument("--separator", default="hpss", choices=["hpss", "demucs"])
    p.add_argument("--out", required=True, help="stem cache directory (reused by `explain --stem-cache`)")
    p.add_argument("--sample-rate", type=int, default=16000, help="Hz of the stems (the model's rate)")
    p.add_argument("--max-seconds", type=float, default=30.0, help="longer audio: the middle window")
    p.add_argument("--demucs-model", default="htdemucs")
    p.add_argument("--demucs-repo", default=None, help="folder with the demucs weights (see docs/models.md)")
    p.add_argument("--trust-pickle", action="store_true", help="allow a legacy demucs .th pickle from --demucs-repo")
    p.add_argument("--address", default=None, help="Ray address (auto, local, ray://...): separate as Ray tasks")


def separator_options(args: argparse.Namespace) -> dict:
    if args.separator != "demucs":
        return {}
    return {"model_name": args.demucs_model, "repo": args.demucs_repo, "allow_pickle": args.trust_pickle}


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.catalogue import CatalogueError, read_catalogue
    from pipeline.progress import Progress
    from pipeline.separate import separate_catalogue
    try:
        rows = read_catalogue(args.catalogue)
    except CatalogueError as e:
        print(f"musiclime separate: {e}")
        return 2
    bar = Progress(len(rows), "tracks separated")
    recs = separate_catalogue(rows, args.separator, separator_options(args), args.out, args.sample_rate,
                              args.max_seconds, args.address, progress=lambda ok, bad: bar.update(ok, bad))
    bar.close()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(recs), Path(args.out) / "separated.parquet")
    hits = sum(bool(r["cache_hit"]) for r in recs)
    bad = [r for r in recs if r["status"] != "ok"]
    print(f"{len(recs) - len(bad)} separated ({hits} from the cache), {len(bad)} failed; manifest "
          f"{Path(args.out) / 'separated.parquet'}")
    for r in bad:
        print(f"  {r['track_id']}: {r['error_type']}: {r['message']}")
    return 3 if bad else 0
