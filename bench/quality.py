"""Explanation quality on the demo library, for a trained multimodal model per task:

- planted-truth recovery: precision@k of stems, segments, stem x segment and words;
- faithfulness: deletion curves (drop features in explanation order, watch the class
  probability fall) against a random order: area over the perturbation curve (AOPC);
- stability: top-10 Jaccard of the same track across seeds, as num_samples grows.

    python bench/quality.py --library LIB --model genre=CKPT --model emotion=CKPT [--tracks 10]
"""
from __future__ import annotations

import argparse
import itertools
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import write_result  # noqa: E402


def deletion_aopc(model, af, lf, label: int, order: list[int], steps: int = 10) -> float:
    """Mean drop of p(label) as the first 1..steps features of ``order`` are removed."""
    from musiclime.protocol import as_probs
    n = af.n_features + lf.n_features
    masks = np.ones((steps + 1, n), np.uint8)
    for i in range(1, steps + 1):
        masks[i:, order[i - 1]] = 0
    p = as_probs(model.predict_proba(af.compose(masks[:, :af.n_features]), lf.compose(masks[:, af.n_features:])),
                 steps + 1, len(model.classes))[:, label]
    return float(np.mean(p[0] - p[1:]))


def main(argv=None) -> dict:
    import pyarrow.parquet as pq

    from musiclime import MusicLIME
    from musiclime.library import track_factorizations
    from musiclime.models import load_checkpoint
    from musiclime.quality import planted_by_track, pooled_precision, precision_at_k
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--library", required=True)
    ap.add_argument("--model", action="append", required=True, help="TASK=CHECKPOINT")
    ap.add_argument("--tracks", type=int, default=10)
    ap.add_argument("--num-samples", type=int, default=500)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--stability-samples", type=int, nargs="+", default=[250, 500, 1000])
    ap.add_argument("--stability-tracks", type=int, default=3)
    args = ap.parse_args(argv)
    lib = Path(args.library)
    rows = [r for r in pq.read_table(lib / "catalogue.parquet").to_pylist() if r["split"] == "test"]
    truth = pq.read_table(lib / "ground_truth.parquet").to_pylist()
    rng = np.random.default_rng(0)
    result = {"tracks": args.tracks, "num_samples": args.num_samples, "tasks": {}}
    for spec in args.model:
        task, ckpt = spec.split("=", 1)
        model = load_checkpoint(ckpt)
        planted = planted_by_track(truth, task)
        per_track, aopc_exp, aopc_rand = [], [], []
        for r in rows[:args.tracks]:
            af, lf = track_factorizations(lib, r, model.sample_rate)
            label = model.classes.index(r[task])
            exp = MusicLIME(num_samples=args.num_samples, seed=0).explain(model, af, lf, labels=[label])
            if r["track_id"] in planted:
                per_track.append(precision_at_k(exp, label, planted[r["track_id"]], k=5))
            order = [i for i, w in exp.fits[label].weights if w > 0] + [i for i, w in exp.fits[label].weights if w <= 0]
            aopc_exp.append(deletion_aopc(model, af, lf, label, order))
            aopc_rand.append(deletion_aopc(model, af, lf, label, list(rng.permutation(len(order)))))
        stability = {}
        for n in args.stability_samples:
            jac = []
            for r in rows[:args.stability_tracks]:
                af, lf = track_factorizations(lib, r, model.sample_rate)
                label = model.classes.index(r[task])
                tops = [{f for _, f, _ in MusicLIME(num_samples=n, seed=s).explain(model, af, lf, labels=[label])
                         .as_list(label)[:10]} for s in range(args.seeds)]
                jac += [len(a & b) / len(a | b) for a, b in itertools.combinations(tops, 2)]
            stability[n] = statistics.mean(jac)
            print(task, "stability", n, round(stability[n], 3), flush=True)
        result["tasks"][task] = {"precision_at_5": pooled_precision(per_track),
                                 "deletion_aopc": {"explanation_order": statistics.mean(aopc_exp),
                                                   "random_order": statistics.mean(aopc_rand)},
                                 "top10_jaccard_across_seeds": stability}
        print(task, result["tasks"][task], flush=True)
    print("wrote", write_result("quality", result))
    return result


if __name__ == "__main__":
    main()
