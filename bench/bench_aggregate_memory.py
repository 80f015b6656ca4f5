"""Peak memory and time of `aggregate` on synthetic explanations: 10k to 1M rows.

Each size runs in its own process; rows are tracks x 60 features (40 audio + 20 words),
written in batches of 64 tracks (one tracks + one explanations file each) as the
pipeline's writer commits them (``commit_every=64``).

    python bench/bench_aggregate_memory.py [--rows 10000 100000 1000000]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import write_result  # noqa: E402


def make(out: Path, rows: int) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from schemas.tables import EXPLANATIONS, TRACKS
    rng = np.random.default_rng(0)
    per_track = 60
    n_tracks = rows // per_track
    classes = ["c0", "c1", "c2", "c3", "c4"]
    stems = ["vocals", "drums", "bass", "other"]
    vocab = [f"w{i}" for i in range(500)]
    (out / "tracks" / "run_id=r").mkdir(parents=True)
    (out / "explanations" / "run_id=r").mkdir(parents=True)
    chunk = 64  # tracks per committed batch, the writer's default
    for start in range(0, n_tracks, chunk):
        ids = [f"t{i}" for i in range(start, min(n_tracks, start + chunk))]
        pred = rng.integers(0, 5, len(ids))
        tr = {f.name: [None] * len(ids) for f in TRACKS}
        tr.update(track_id=ids, catalogue_row=list(range(start, start + len(ids))), seed=[0] * len(ids),
                  predicted=[classes[p] for p in pred], probabilities=[[0.2] * 5] * len(ids),
                  explained_labels=[[classes[p]] for p in pred], status=["ok"] * len(ids), score=[0.9] * len(ids))
        pq.write_table(pa.Table.from_pydict(tr, schema=TRACKS), out / "tracks" / "run_id=r" / f"p{start}.parquet")
        k = len(ids)
        tid = np.repeat(ids, per_track)
        f = np.tile(np.arange(per_track), k)
        audio = f < 40
        w = rng.normal(0, 0.05, k * per_track)
        ex = {"track_id": tid, "label": np.repeat([classes[p] for p in pred], per_track),
              "label_index": np.repeat(pred, per_track).astype(np.int32),
              "modality": np.where(audio, "audio", "lyrics"),
              "feature": np.where(audio, "x", "w"),
              "stem": pa.array([stems[i % 4] if a else None for i, a in zip(f, audio)]),
              "segment": pa.array([int(i // 4) if a else None for i, a in zip(f, audio)], pa.int32()),
              "start_s": pa.array([None] * len(f), pa.float64()), "end_s": pa.array([None] * len(f), pa.float64()),
              "token": pa.array([None if a else vocab[int(x)] for a, x in zip(audio, rng.integers(0, 500, len(f)))]),
              "token_index": pa.array([None] * len(f), pa.int32()), "weight": w,
              "rank": np.tile(np.arange(1, per_track + 1), k).astype(np.int32)}
        pq.write_table(pa.Table.from_pydict(ex).cast(EXPLANATIONS), out / "explanations" / "run_id=r" / f"p{start}.parquet")


def child(out: str) -> None:
    from pipeline.global_importance import aggregate
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # the imports' share
    t0 = time.perf_counter()
    g = aggregate(out, runs=["r"])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": time.perf_counter() - t0, "rows_out": g.height, "peak_rss_mb": peak,
                      "rss_before_mb": before, "above_import_peak_mb": peak - before}))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--child")
    args = ap.parse_args(argv)
    if args.child:
        return child(args.child)
    runs = []
    for rows in args.rows:
        d = Path(tempfile.mkdtemp(prefix="musiclime-aggmem-"))
        make(d, rows)
        r = subprocess.run([sys.executable, __file__, "--child", str(d)], capture_output=True, text=True, check=True)
        runs.append({"rows": rows, **json.loads(r.stdout.strip().splitlines()[-1])})
        print(runs[-1], flush=True)
    result = {"runs": runs, "memory_growth": runs[-1]["peak_rss_mb"] / runs[0]["peak_rss_mb"],
              "above_import_peak_mb": [r["above_import_peak_mb"] for r in runs]}
    print("wrote", write_result("aggregate_memory", result))
    return result


if __name__ == "__main__":
    main()
