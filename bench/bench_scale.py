"""Scale of `explain`: catalogue size x CPU workers -> tracks/h and peak memory.

Time should grow linearly with the tracks (constant seconds per track once Ray is up) and
memory stay flat (backpressure bounds the tracks in flight), and two workers should beat
one. The model is a cheap plugin (the pipeline's own costs are what is measured: decode,
stems, masks, surrogate fits, commits), 3 s demo tracks, 64 samples per track.

    python bench/bench_scale.py [--sizes 10 200 2000] [--workers 1 2] [--layout-tracks 6]
Each (size, workers) runs in its own process (so peaks do not mix) on a fresh local Ray;
results in bench/results/scale.json and two plots beside it (scale_time.png, scale_memory.png).

``--layout-tracks`` also measures, per track, the bytes each stage hands to the next (what
Ray stores in its object store and moves between nodes: the pickled record, numpy buffers
included) and the seconds of each stage, for the two layouts of demucs separation: inside
the GPU stage (what the job runs) vs a separate separator actor before the predictor (the
old layout). The stages run in-process (they import no Ray), on a small random-init demucs
(no pretrained weights offline), on CPU: bytes are exact, seconds are this machine's.
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


def stage_layout(library: Path, tracks: int, work: Path) -> dict:
    """Per-track bytes between stages and seconds per stage: demucs in the GPU stage vs in a
    separate actor (same tracks, same model, same explainer)."""
    import pickle
    import statistics
    import time

    from musiclime.explainer import ExplainerSpec
    from musiclime.gpu_stage import ExplainStage
    from musiclime.separation import StemCache, get_separator
    from musiclime.stages import decode, fit
    from pipeline.catalogue import read_catalogue
    from pipeline.config import ExplainConfig
    from tests.demucs_tiny import save_tiny_demucs

    def size(obj) -> int:
        return len(pickle.dumps(obj, protocol=5))
    repo = save_tiny_demucs(work / "demucs")
    spec = ExplainerSpec(num_samples=64)
    rows = read_catalogue(library / "catalogue.parquet", limit=tracks)
    per = {"gpu_stage": [], "separate_actor": []}
    for layout in per:
        cfg = ExplainConfig(catalogue=str(library / "catalogue.parquet"), model="bench_mem_plugin:make",
                            out=str(work / "o"), separator="demucs", demucs_model="tiny", demucs_repo=str(repo),
                            stem_cache=str(work / f"stems-{layout}"), num_samples=64)
        options = {"model_name": "tiny", "repo": str(repo)}
        if layout == "gpu_stage":
            stage = ExplainStage(cfg.model, spec, "both", cfg.segments, "cpu",
                                 separator=("demucs", options, cfg.stem_cache))
        else:
            stage = ExplainStage(cfg.model, spec, "both", cfg.segments, "cpu")
            separator, cache = get_separator("demucs", **options, device="cpu"), StemCache(cfg.stem_cache)
        for row in rows:
            t0 = time.perf_counter()
            inp = decode(row, cfg.decode_spec(), 16000)
            t1 = time.perf_counter()
            moved = {"decode_to_next": size(inp)}
            sep_s = 0.0
            if layout == "separate_actor":
                stems, _ = cache.separate(separator, inp.mix, inp.sample_rate)
                inp.stems, inp.mix = stems.numpy(), None
                sep_s = time.perf_counter() - t1
                moved["separator_to_predictor"] = size(inp)
            t2 = time.perf_counter()
            pred = stage(inp)
            t3 = time.perf_counter()
            moved["predictor_to_fit"] = size(pred)
            fit(pred, cfg.fit_spec(pred.model_id), "bench")
            t4 = time.perf_counter()
            if layout == "gpu_stage":
                sep_s = pred.input.timings.get("separate_s", 0.0)
            per[layout].append({"bytes": moved, "bytes_total": sum(moved.values()),
                                "seconds": {"decode": t1 - t0, "separate": sep_s,
                                            "predict": t3 - t2 - (sep_s if layout == "gpu_stage" else 0.0),
                                            "fit": t4 - t3}})

    def mean(xs):
        return sum(xs) / len(xs)
    out = {"tracks": len(rows), "track_seconds": 3.0, "num_samples": 64}
    for layout, recs in per.items():
        out[layout] = {"bytes_per_track": mean([r["bytes_total"] for r in recs]),
                       "bytes_per_hop": {k: mean([r["bytes"][k] for r in recs]) for k in recs[0]["bytes"]},
                       # the median: the first track also pays demucs' warm-up
                       "seconds_per_stage": {k: statistics.median([r["seconds"][k] for r in recs])
                                             for k in recs[0]["seconds"]}}
    out["bytes_ratio_separate_actor_vs_gpu_stage"] = (out["separate_actor"]["bytes_per_track"]
                                                      / out["gpu_stage"]["bytes_per_track"])
    return out


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
    ap.add_argument("--layout-tracks", type=int, default=6, help="tracks for the stage-layout measurement (0: skip)")
    ap.add_argument("--layout-only", action="store_true",
                    help="only the stage-layout measurement, merged into the existing results")
    ap.add_argument("--child", nargs=4, metavar=("LIBRARY", "TRACKS", "WORKERS", "OUT"))
    args = ap.parse_args(argv)
    if args.child:
        return child(args.child[0], int(args.child[1]), int(args.child[2]), args.child[3])
    from musiclime.library import make_library
    work = Path(tempfile.mkdtemp(prefix="musiclime-mem-"))
    (work / "bench_mem_plugin.py").write_text(PLUGIN)
    lib = work / "lib"
    if args.layout_only:
        from bench.common import RESULTS
        make_library(lib, args.layout_tracks, seed=0, seconds=3.0)
        sys.path.insert(0, str(work))
        result = json.loads((RESULTS / "scale.json").read_text())
        result["stage_layout"] = stage_layout(lib, args.layout_tracks, work)
        print(json.dumps(result["stage_layout"], indent=1))
        print("wrote", write_result("scale", result))
        return result
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
    if args.layout_tracks:
        sys.path.insert(0, str(work))
        result["stage_layout"] = stage_layout(lib, args.layout_tracks, work)
        print(json.dumps(result["stage_layout"], indent=1), flush=True)
    from bench.common import RESULTS
    out_dir = Path(os.environ.get("OUT") or RESULTS)
    out_dir.mkdir(parents=True, exist_ok=True)
    result["plots"] = [p.name for p in plot(runs, out_dir)]
    print("wrote", write_result("scale", result))
    return result


if __name__ == "__main__":
    main()
