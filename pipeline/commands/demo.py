"""``musiclime demo``: the offline demo end to end.

Builds the demo library (cached), trains the default genre model on it (cached), then
explains held-out tracks and prints their top features beside the planted truth.
"""
from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tracks", type=int, default=5, help="held-out tracks to explain")
    p.add_argument("--library-tracks", type=int, default=400, help="size of the generated library")
    p.add_argument("--num-samples", type=int, default=500, help="perturbations per track")
    p.add_argument("--epochs", type=int, default=30, help="training epochs of the default model")
    p.add_argument("--seed", type=int, default=0)


def prepare(library_tracks: int, seed: int, epochs: int, task: str = "genre"):
    """The cached demo library and default model (built when missing or stale)."""
    import json

    from musiclime.library import make_library
    from musiclime.models.registry import default_checkpoint, musiclime_home
    from musiclime.training import library_hash, train_default
    from pipeline.progress import Progress
    lib = musiclime_home() / f"demo-library-{library_tracks}-{seed}"
    bar = Progress(library_tracks, "tracks generated")
    make_library(lib, library_tracks, seed, progress=lambda d, t: bar.update(d))
    bar.close()
    ckpt = default_checkpoint(task)
    cfg = ckpt / "config.json"
    if not (cfg.is_file() and json.loads(cfg.read_text()).get("library") == library_hash(lib)):
        print(f"training the default {task} model on {lib} ...", flush=True)
        train_default(lib, task, "both", ckpt, epochs=epochs, seed=seed)
    return lib, ckpt


def run(args: argparse.Namespace) -> int:
    import pyarrow.parquet as pq

    from musiclime import MusicLIME
    from musiclime.library import track_factorizations
    from musiclime.models import load_checkpoint
    from musiclime.quality import planted_by_track
    lib, ckpt = prepare(args.library_tracks, args.seed, args.epochs)
    model = load_checkpoint(ckpt)
    planted = planted_by_track(pq.read_table(lib / "ground_truth.parquet").to_pylist(), "genre")
    rows = [r for r in pq.read_table(lib / "catalogue.parquet").to_pylist() if r["split"] == "test"]
    explainer = MusicLIME(num_samples=args.num_samples, seed=args.seed)
    for r in rows[:args.tracks]:
        af, lf = track_factorizations(lib, r, model.sample_rate)
        exp = explainer.explain(model, af, lf, top_labels=1)
        truth = planted.get(r["track_id"])
        print(f"{r['track_id']}: true genre {r['genre']}; planted "
              f"{sorted(f'drums@{s}' for _, s in truth.audio) + sorted(truth.words) if truth else 'nothing'}")
        print(exp.to_text(k=6))
        print()
    return 0
