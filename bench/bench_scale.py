"""Scale of `explain`: catalogue size x CPU workers -> tracks/h and peak memory.

Time should grow linearly with the tracks (constant seconds per track once Ray is up) and
memory stay flat (backpressure bounds the tracks in flight), and two workers should beat
one. The model is a cheap plugin (the pipeline's own costs are what is measured: decode,
stems, masks, surrogate fits, commits), 3 s demo tracks, 64 samples per track.

    python bench/bench_scale.py [--sizes 10 200 2000] [--workers 1 2]
Each (size, workers) runs in its own process (so peaks do not mix) on a fresh local Ray;
results in bench/results/scale.json and two plots beside it (scale_time.png, scale_memory.png).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import write_result  # noqa: E402

PLUGIN = '''
import torch
class Loud:
    classes = ["quiet", "loud"]
    sample_rate = 16000
    def predict_proba(self, audio, lyrics):
        e = audio.pow(2).mean(1).clamp(max=1)
        return torch.stack([1 - e, e], 1)
def make():
    return Loud()
'''


def child(library: str, tracks: int, workers: int, out: str) -> None:
    from pipeline.config import ExplainConfig
    from pipeline.driver import run_explain
    s = run_explain(ExplainConfig(catalogue=f"{library}/catalogue.parquet", model="bench_mem_plugin:make", out=out,
                                  separator="provided", num_samples=64, limit=tracks, run_id=f"scale{tracks}",
                                  predictors=workers, surrogate_workers=workers, commit_every=64),
                    show_progress=False)
    import pyarrow.dataset as ds
    timings = ds.dataset(f"{out}/tracks", format="parquet", partitioning="hive").to_table(columns=["timings"])
    stages = {k: float(sum(t[k] for t in timings.column("timings").to_pylist()))
              for k in ("decode_s", "separate_s", "predict_s", "fit_s")}
    print(json.dumps({"tracks": tracks, "workers": workers, "exit_code": s.exit_code, "explained": s.explained,
                      "stage_seconds_summed_over_tracks": stages,
                      "seconds": s.seconds, "tracks_per_hour": s.explained / s.seconds * 3600,
                      "driver_peak_rss_mb": s.driver_peak_rss_mb,
                      "predictor_peak_rss_mb": max(a["peak_rss_mb"] for a in s.actors),
                      "predictor_rss_anon_mb": max(a.get("rss_anon_mb", 0.0) for a in s.actors),
                      "predictor_rss_shmem_mb": max(a.get("rss_shmem_mb", 0.0) for a in s.actors)}))


def plot(runs: list[dict], out_dir: Path) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    paths = []
    for name, keys, ylabel in (("scale_time", ["seconds"], "wall seconds"),
                               ("scale_memory", ["driver_peak_rss_mb", "predictor_peak_rss_mb"], "peak RSS (MB)")):
        fig, ax = plt.subplots(figsize=(6, 4))
        for w in sorted({r["workers"] for r in runs}):
            rs = sorted((r for r in runs if r["workers"] == w), key=lambda r: r["tracks"])
            for k in keys:
                ax.plot([r["tracks"] for r in rs], [r[k] for r in rs], marker="o",
                        label=f"{w} worker{'s' if w > 1 else ''}" + ("" if len(keys) == 1 else f", {k.split('_')[0]}"))
        ax.set_xlabel("tracks in the catalogue")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        paths.append(out_dir / f"{name}.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10, 200, 2000])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--child", nargs=4, metavar=("LIBRARY", "TRACKS", "WORKERS", "OUT"))
    args = ap.parse_args(argv)
    if args.child:
        return child(args.child[0], int(args.child[1]), int(args.child[2]), args.child[3])
    from musiclime.library import make_library
    work = Path(tempfile.mkdtemp(prefix="musiclime-mem-"))
    (work / "bench_mem_plugin.py").write_text(PLUGIN)
    lib = work / "lib"
    make_library(lib, max(args.sizes), seed=0, seconds=3.0)
    runs = []
    for w in args.workers:
        for n in args.sizes:
            env = {**os.environ, "PYTHONPATH": str(work)}
            r = subprocess.run([sys.executable, __file__, "--child", str(lib), str(n), str(w), str(work / f"out{n}-{w}")],
                               capture_output=True, text=True, env=env, check=True)
            runs.append(json.loads(r.stdout.strip().splitlines()[-1]))
            print(runs[-1], flush=True)
    result = {"runs": runs, "per_workers": {}}
    for w in args.workers:
        rs = sorted((r for r in runs if r["workers"] == w), key=lambda r: r["tracks"])
        small, large = rs[0], rs[-1]
        result["per_workers"][w] = {
            # seconds per extra track between the smallest and the largest catalogue
            "marginal_seconds_per_track": (large["seconds"] - small["seconds"]) / (large["tracks"] - small["tracks"]),
            "tracks_per_hour_largest": large["tracks_per_hour"],
            "driver_growth": large["driver_peak_rss_mb"] / small["driver_peak_rss_mb"],
            "predictor_growth": large["predictor_peak_rss_mb"] / small["predictor_peak_rss_mb"]}
    if len(args.workers) > 1:
        a, b = (result["per_workers"][w]["tracks_per_hour_largest"] for w in (min(args.workers), max(args.workers)))
        result["workers_speedup_largest"] = b / a
    from bench.common import RESULTS
    out_dir = Path(os.environ.get("OUT") or RESULTS)
    out_dir.mkdir(parents=True, exist_ok=True)
    result["plots"] = [p.name for p in plot(runs, out_dir)]
    print("wrote", write_result("scale", result))
    return result


if __name__ == "__main__":
    main()
