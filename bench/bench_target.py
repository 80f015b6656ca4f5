"""Which surrogate target for a confident model: the class probability or its log-odds.

The demo model as trained (T = 1) and made confident by a temperature on its
log-probabilities (``softmax(log p / T)``, T = 0.1: the same ranking of classes, a
saturated softmax, as a model trained to near-zero loss gives). Per held-out track and seed, one set
of masks (``--design foldover``, 500 samples) and its probabilities are fitted with both
targets, so the targets differ only in what the surrogate fits. Measured per target:
surrogate R^2, top-10 Jaccard across seeds, deletion AOPC (drop of the label's probability
as the top 1..10 supporting features are removed) and planted precision@5 (the demo
library's ground truth, features ranked by signed weight).

    python bench/bench_target.py [--tracks 10 --seeds 3 --temperatures 1 0.1]
"""
from __future__ import annotations

import argparse
import itertools
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import add_demo_arguments, demo_assets, write_result  # noqa: E402
from bench.quality import deletion_aopc  # noqa: E402
from bench.sampling_reference import held_out  # noqa: E402

TARGETS = ("probability", "log_odds")


class Sharpened:
    """``model`` with its probabilities sharpened by a temperature (predict_proba only)."""

    def __init__(self, model, temperature: float):
        self.model, self.t = model, float(temperature)
        self.classes, self.sample_rate = model.classes, model.sample_rate

    def predict_proba(self, audio, lyrics):
        from musiclime.protocol import as_probs
        p = as_probs(self.model.predict_proba(audio, lyrics), len(lyrics), len(self.classes))
        z = np.log(np.clip(p, 1e-300, None)) / self.t
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)


def main(argv=None) -> dict:
    import pyarrow.parquet as pq

    from musiclime import MusicLIME
    from musiclime.library import track_factorizations
    from musiclime.models import load_checkpoint
    from musiclime.quality import planted_by_track, pooled_precision, precision_at_k
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_demo_arguments(ap)
    ap.add_argument("--tracks", type=int, default=10)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--samples", type=int, default=500)
    ap.add_argument("--temperatures", type=float, nargs="+", default=[1.0, 0.1])
    args = ap.parse_args(argv)
    lib, models = demo_assets(args)
    rows = held_out(lib, args.tracks)
    truth = pq.read_table(lib / "ground_truth.parquet").to_pylist()
    result = {"tracks": len(rows), "seeds": args.seeds, "samples": args.samples, "design": "foldover",
              "temperatures": args.temperatures, "tasks": {}}
    for (task, ckpt), temperature in itertools.product(models, args.temperatures):
        model = Sharpened(load_checkpoint(ckpt), temperature)
        planted = planted_by_track(truth, task)
        per = {t: {"r2": [], "aopc": [], "tops": [], "precision": []} for t in TARGETS}
        top_p = []
        for r in rows:
            af, lf = track_factorizations(lib, r, model.sample_rate)
            label = model.classes.index(r[task])
            tops = {t: [] for t in TARGETS}
            for seed in range(args.seeds):
                ex = MusicLIME(num_samples=args.samples, design="foldover", seed=seed)
                plan = ex.plan(af, lf)
                probs, _ = ex.predict(model, af, lf, plan.masks)
                top_p.append(float(probs[0].max()))
                for t in TARGETS:
                    exp = MusicLIME(num_samples=args.samples, design="foldover", seed=seed, target=t).fit(
                        plan, probs, model.classes, labels=[label])
                    ranked = exp.as_list(label)
                    index = {n: i for i, n in enumerate(exp.features.names)}
                    order = [index[n] for _, n, w in sorted(ranked, key=lambda x: -x[2])]
                    per[t]["r2"].append(exp.score[label])
                    per[t]["aopc"].append(deletion_aopc(model, af, lf, label, order))
                    tops[t].append({n for _, n, _ in ranked[:10]})
                    if seed == 0 and r["track_id"] in planted:
                        per[t]["precision"].append(precision_at_k(exp, label, planted[r["track_id"]], k=5))
            for t in TARGETS:
                per[t]["tops"].append(statistics.mean(len(a & b) / len(a | b)
                                                      for a, b in itertools.combinations(tops[t], 2)))
            print(task, r["track_id"], {t: round(per[t]["r2"][-1], 3) for t in TARGETS}, flush=True)
        out = {"mean_top_probability": statistics.mean(top_p)}
        for t in TARGETS:
            pooled = pooled_precision(per[t]["precision"])
            out[t] = {"r2_mean": statistics.mean(per[t]["r2"]), "r2_median": statistics.median(per[t]["r2"]),
                      "jaccard_across_seeds": statistics.mean(per[t]["tops"]),
                      "aopc": statistics.mean(per[t]["aopc"]),
                      "planted_precision_overall": pooled.get("overall"), "planted_precision_audio": pooled.get("audio"),
                      "planted_precision_lyrics": pooled.get("lyrics")}
        result["tasks"][f"{task} T={temperature:g}"] = out
        print(task, out, flush=True)
    print("wrote", write_result("target", result))
    return result


if __name__ == "__main__":
    main()
