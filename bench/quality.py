"""Explanation quality on the demo library, for a trained multimodal model per task:

- planted-truth recovery: precision@k of stems, segments, stem x segment and words;
- faithfulness: deletion curves (drop features in explanation order, watch the class
  probability fall) against a random order: area over the perturbation curve (AOPC);
- stability: top-10 Jaccard of the same track across seeds, as num_samples grows;
- unimodal vs multimodal (the paper's comparison): the same tracks explained perturbing
  the audio alone and both modalities; how the ranking of the audio features changes
  (top-10 Jaccard, Spearman correlation of the audio weights, planted-audio precision).

Faithfulness of i.i.d. vs grid sampling at equal encoder budget: bench/bench_sampling.py.

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

from bench.common import add_demo_arguments, demo_assets, write_result  # noqa: E402


def deletion_order(exp, label: int) -> list[int]:
    """Feature indices in the order a deletion curve removes them: the label's supporting
    features by weight, then the rest."""
    ranked = exp.as_list(label)
    index = {n: i for i, n in enumerate(exp.features.names)}
    return [index[n] for _, n, w in ranked if w > 0] + [index[n] for _, n, w in ranked if w <= 0]


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


def unimodal_vs_multimodal(model, lib, rows, task: str, planted: dict, num_samples: int, design: str = "auto") -> dict:
    """Audio-feature rankings of the same tracks, perturbing audio alone vs both modalities."""
    from scipy.stats import spearmanr

    from musiclime import MusicLIME
    from musiclime.library import track_factorizations
    from musiclime.quality import pooled_precision, precision_at_k
    jac, rho, prec = [], [], {"audio": [], "both": []}
    for r in rows:
        af, lf = track_factorizations(lib, r, model.sample_rate)
        label = model.classes.index(r[task])
        exps = {m: MusicLIME(num_samples=num_samples, seed=0, design=design).explain(model, af, lf, labels=[label], modality=m)
                for m in ("audio", "both")}
        weights = {m: dict((f, w) for mod, f, w in e.as_list(label) if mod == "audio") for m, e in exps.items()}
        names = sorted(weights["audio"])
        tops = {m: set(sorted(names, key=lambda f: -abs(weights[m].get(f, 0.0)))[:10]) for m in weights}
        jac.append(len(tops["audio"] & tops["both"]) / len(tops["audio"] | tops["both"]))
        rho.append(float(spearmanr([weights["audio"][f] for f in names],
                                   [weights["both"].get(f, 0.0) for f in names]).statistic))
        if r["track_id"] in planted and planted[r["track_id"]].audio:
            for m, e in exps.items():
                prec[m].append({k: v for k, v in precision_at_k(e, label, planted[r["track_id"]]).items() if k == "audio"})
    return {"tracks": len(rows), "top10_audio_jaccard": statistics.mean(jac), "audio_weight_spearman": statistics.mean(rho),
            "planted_audio_precision": {m: pooled_precision(v).get("audio") for m, v in prec.items()}}


def main(argv=None) -> dict:
    import pyarrow.parquet as pq

    from musiclime import MusicLIME
    from musiclime.library import track_factorizations
    from musiclime.models import load_checkpoint
    from musiclime.quality import planted_by_track, pooled_precision, precision_at_k
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_demo_arguments(ap)
    ap.add_argument("--tracks", type=int, default=10)
    ap.add_argument("--design", default="auto", choices=["auto", "iid", "foldover", "grid"],
                    help="mask design of every explanation (auto: the product default)")
    ap.add_argument("--num-samples", type=int, default=500)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--stability-samples", type=int, nargs="+", default=[250, 500, 1000])
    ap.add_argument("--stability-tracks", type=int, default=3)
    args = ap.parse_args(argv)
    lib, models = demo_assets(args)
    rows = [r for r in pq.read_table(lib / "catalogue.parquet").to_pylist() if r["split"] == "test"]
    truth = pq.read_table(lib / "ground_truth.parquet").to_pylist()
    rng = np.random.default_rng(0)
    result = {"tracks": args.tracks, "num_samples": args.num_samples, "design": args.design, "tasks": {}}
    for task, ckpt in models:
        model = load_checkpoint(ckpt)
        planted = planted_by_track(truth, task)
        per_track, per_track_abs, aopc_exp, aopc_rand = [], [], [], []
        for r in rows[:args.tracks]:
            af, lf = track_factorizations(lib, r, model.sample_rate)
            label = model.classes.index(r[task])
            exp = MusicLIME(num_samples=args.num_samples, seed=0, design=args.design).explain(model, af, lf, labels=[label])
            if r["track_id"] in planted:
                per_track.append(precision_at_k(exp, label, planted[r["track_id"]], k=5))
                per_track_abs.append(precision_at_k(exp, label, planted[r["track_id"]], k=5, rank="abs"))
            order = [i for i, w in exp.fits[label].weights if w > 0] + [i for i, w in exp.fits[label].weights if w <= 0]
            aopc_exp.append(deletion_aopc(model, af, lf, label, order))
            aopc_rand.append(deletion_aopc(model, af, lf, label, list(rng.permutation(len(order)))))
        stability = {}
        for n in args.stability_samples:
            jac = []
            for r in rows[:args.stability_tracks]:
                af, lf = track_factorizations(lib, r, model.sample_rate)
                label = model.classes.index(r[task])
                tops = [{f for _, f, _ in MusicLIME(num_samples=n, seed=s, design=args.design).explain(model, af, lf, labels=[label])
                         .as_list(label)[:10]} for s in range(args.seeds)]
                jac += [len(a & b) / len(a | b) for a, b in itertools.combinations(tops, 2)]
            stability[n] = statistics.mean(jac)
            print(task, "stability", n, round(stability[n], 3), flush=True)
        uni = unimodal_vs_multimodal(model, lib, rows[:args.stability_tracks], task, planted, args.num_samples,
                                     args.design)
        print(task, "unimodal vs multimodal", uni, flush=True)
        result["tasks"][task] = {"precision_at_5": pooled_precision(per_track),
                                 "precision_at_5_by_abs_weight": pooled_precision(per_track_abs),
                                 "unimodal_vs_multimodal": uni,
                                 "deletion_aopc": {"explanation_order": statistics.mean(aopc_exp),
                                                   "random_order": statistics.mean(aopc_rand)},
                                 "top10_jaccard_across_seeds": stability}
        print(task, result["tasks"][task], flush=True)
    print("wrote", write_result("quality", result))
    return result


if __name__ == "__main__":
    main()
