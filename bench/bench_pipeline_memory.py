"""Peak driver and PredictorActor memory of `explain` for small and large catalogues:
backpressure should keep both flat however many tracks there are.

    python bench/bench_pipeline_memory.py [--sizes 50 500]
Each size runs in its own process (so peaks do not mix) on a fresh local Ray.
"""
from __future__ import annotations

import argparse
import json
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


def child(library: str, tracks: int, out: str) -> None:
    from pipeline.config import ExplainConfig
    from pipeline.driver import run_explain
    s = run_explain(ExplainConfig(catalogue=f"{library}/catalogue.parquet", model="bench_mem_plugin:make", out=out,
                                  separator="provided", num_samples=64, limit=tracks, run_id=f"mem{tracks}",
                                  commit_every=64), show_progress=False)
    print(json.dumps({"tracks": tracks, "exit_code": s.exit_code, "explained": s.explained, "seconds": s.seconds,
                      "driver_peak_rss_mb": s.driver_peak_rss_mb,
                      "predictor_peak_rss_mb": max(a["peak_rss_mb"] for a in s.actors)}))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", type=int, nargs="+", default=[50, 500])
    ap.add_argument("--child", nargs=3, metavar=("LIBRARY", "TRACKS", "OUT"))
    args = ap.parse_args(argv)
    if args.child:
        return child(args.child[0], int(args.child[1]), args.child[2])
    from musiclime.library import make_library
    work = Path(tempfile.mkdtemp(prefix="musiclime-mem-"))
    (work / "bench_mem_plugin.py").write_text(PLUGIN)
    lib = work / "lib"
    make_library(lib, max(args.sizes), seed=0, seconds=3.0)
    runs = []
    for n in args.sizes:
        env = {**__import__("os").environ, "PYTHONPATH": str(work)}
        r = subprocess.run([sys.executable, __file__, "--child", str(lib), str(n), str(work / f"out{n}")],
                           capture_output=True, text=True, env=env, check=True)
        runs.append(json.loads(r.stdout.strip().splitlines()[-1]))
        print(runs[-1], flush=True)
    small, large = runs[0], runs[-1]
    result = {"runs": runs,
              "driver_growth": large["driver_peak_rss_mb"] / small["driver_peak_rss_mb"],
              "predictor_growth": large["predictor_peak_rss_mb"] / small["predictor_peak_rss_mb"]}
    print("wrote", write_result("pipeline_memory", result))
    return result


if __name__ == "__main__":
    main()
