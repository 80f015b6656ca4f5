"""``musiclime demo``: the offline demo end to end.

Builds the demo library (cached), trains the default genre model on it (cached), explains
held-out tracks with the Ray pipeline, aggregates global importances and writes the report.
"""
from __future__ import annotations

import argparse

from pipeline.config import int_or_auto


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="demo_out", help="output directory")
    p.add_argument("--tracks", type=int, default=40, help="held-out tracks to explain")
    p.add_argument("--library-tracks", type=int, default=400, help="size of the generated library")
    p.add_argument("--num-samples", type=int_or_auto, default=300, help="perturbations per track, or 'auto'")
    p.add_argument("--separator", default="provided", choices=["provided", "hpss", "none"],
                   help="provided: the library's true stems; hpss: separate the mixes")
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
    from pathlib import Path

    import polars as pl
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.catalogue import read_catalogue
    from pipeline.config import ExplainConfig
    from pipeline.driver import run_explain
    from pipeline.global_importance import aggregate, write_global_importance
    from pipeline.report import build_report
    lib, ckpt = prepare(args.library_tracks, args.seed, args.epochs)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = [r for r in read_catalogue(lib / "catalogue.parquet") if r["split"] == "test"][:args.tracks]
    for r in rows:
        r.pop("catalogue_row")
    cat = out / "catalogue.parquet"
    pq.write_table(pa.Table.from_pylist(rows), cat)
    print(f"explaining {len(rows)} held-out demo tracks on a local Ray ...", flush=True)
    s = run_explain(ExplainConfig(catalogue=str(cat), model=str(ckpt), out=str(out), separator=args.separator,
                                  num_samples=args.num_samples, seed=args.seed, run_id="demo", label_column="genre"))
    if s.exit_code not in (0, 3):
        print(f"explain failed: {s.message}")
        return s.exit_code
    g = aggregate(str(out), runs=["demo"])
    write_global_importance(str(out), g)
    report = build_report(out)
    top = (g.filter((pl.col("label_source") == "predicted") & (pl.col("level") == "stem_segment"))
           .sort("mean_abs_weight", descending=True).group_by("label", maintain_order=True).head(2))
    words = (g.filter((pl.col("label_source") == "predicted") & (pl.col("level") == "word"))
             .sort("mean_abs_weight", descending=True).group_by("label", maintain_order=True).head(3))
    share = g.filter((pl.col("level") == "modality") & (pl.col("modality") == "audio") &
                     (pl.col("label_source") == "predicted"))
    print(f"\n{s.explained} explained, {s.failed} failed. Global importances per predicted genre:")
    for label in sorted(set(top["label"])):
        ss = [f"{r['stem']}@{r['segment']}" for r in top.filter(pl.col("label") == label).iter_rows(named=True)]
        ws = words.filter(pl.col("label") == label)["token"].to_list()
        a = share.filter(pl.col("label") == label)["share_mean"]
        print(f"  {label:11s} audio share {a[0]:.0%}  top stem-segments {', '.join(ss)}  top words {', '.join(ws)}")
    print(f"\ntables:  {out}/tracks, {out}/explanations, {out}/errors, {out}/global_importance (Parquet, run_id=demo)")
    print(f"report:  {report}")
    print(f"\nsearch, see and hear any track (read-only, on 127.0.0.1):\n  musiclime serve {args.out}")
    return 0
