"""Work to a trustworthy explanation: i.i.d. vs grid sampling, fixed vs ``num_samples="auto"``.

On the trained demo model (late fusion: log-mel CNN + MiniLM), per held-out track and
seed, samples grow in rounds exactly as ``num_samples="auto"`` grows them (each round a
superset of the last; outputs of masks already seen are reused), for both designs:

- i.i.d.: 250, 500, 1000, 2000, 4000 joint rows (two encoder passes per row);
- grid: sides 32 .. 512 (one audio and one lyrics pass per half-mask, 16 rows each).

Every round records its encoder passes, cumulative wall time, bootstrap stability (the
stopping rule), top-10 Jaccard to an independent 8,000-sample i.i.d. explanation (the
"truth" of the track), top-10 Jaccard across seeds, and deletion AOPC (faithfulness).
The reference is the i.i.d. round at 1,000 samples (the reference implementation draws
the same masks and runs the model on every one: 2,000 encoder passes). From the rounds,
``auto`` at a stability target stops at the first round that reaches it.

    python bench/bench_sampling.py --library LIB --model genre=CKPT [--tracks 4 --seeds 3]
"""
from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import add_demo_arguments, demo_assets, write_result  # noqa: E402
from bench.quality import deletion_aopc  # noqa: E402

TOP = 10


def top_set(exp, label: int, k: int = TOP) -> set[str]:
    return {f for _, f, _ in exp.as_list(label)[:k]}


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a | b else 1.0


def run_rounds(explainer, steps, model, af, lf, label: int, ref: set) -> list[dict]:
    """The rounds of ``num_samples="auto"``, without stopping, each measured."""
    from musiclime.explainer import OutputCache
    cache, out, explaining, checking = OutputCache(), [], 0.0, 0.0
    for n, grid in steps:
        t0 = time.perf_counter()
        plan = explainer.plan(af, lf, "both", num_samples=n, grid_size=grid)
        probs, _ = explainer.predict(model, af, lf, plan.masks, cache=cache)
        exp = explainer.fit(plan, probs, model.classes, [label])
        t1 = time.perf_counter()
        stab = explainer.bootstrap_stability(plan, probs, exp)
        explaining += t1 - t0
        checking += time.perf_counter() - t1
        w = exp.fits[label].weights
        order = [i for i, x in w if x > 0] + [i for i, x in w if x <= 0]
        out.append({"num_samples": len(plan.masks), "grid_side": grid[0] if grid else None,
                    "encoder_passes": cache.rows_computed, "seconds": explaining + checking,
                    "seconds_explaining": explaining,
                    "stability": stab, "jaccard_to_8000": jaccard(top_set(exp, label), ref),
                    "aopc": deletion_aopc(model, af, lf, label, order), "top": sorted(top_set(exp, label))})
    return out


def auto_stop(rounds: list[dict], target: float) -> dict:
    """What ``num_samples="auto"`` with this target would have returned."""
    for r in rounds:
        if r["stability"] >= target:
            return r
    return rounds[-1]


def summarize(per_track: list[dict], targets) -> dict:
    """Means over tracks and seeds, per design and round; and auto at each target."""
    out = {}
    for design in ("iid", "grid"):
        runs = [(t, s, rounds) for t in per_track for s, rounds in enumerate(t[design])]
        n_rounds = min(len(r) for _, _, r in runs)
        curve = []
        for i in range(n_rounds):
            rows = [r[i] for _, _, r in runs]
            across = [jaccard(set(a[design][s1][i]["top"]), set(a[design][s2][i]["top"]))
                      for a in per_track for s1, s2 in itertools.combinations(range(len(a[design])), 2)]
            curve.append({k: statistics.mean(r[k] for r in rows)
                          for k in ("num_samples", "encoder_passes", "seconds", "stability", "jaccard_to_8000", "aopc")}
                         | {"jaccard_across_seeds": statistics.mean(across) if across else None})
        auto = {}
        for tau in targets:
            stops = [auto_stop(r, tau) for _, _, r in runs]
            auto[str(tau)] = {k: statistics.mean(r[k] for r in stops)
                              for k in ("num_samples", "encoder_passes", "seconds", "jaccard_to_8000", "aopc")}
        out[design] = {"rounds": curve, "auto": auto}
    return out


def main(argv=None) -> dict:
    import pyarrow.parquet as pq

    from musiclime import MusicLIME
    from musiclime.library import track_factorizations
    from musiclime.models import load_checkpoint
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_demo_arguments(ap)
    ap.add_argument("--tracks", type=int, default=4)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--ref-samples", type=int, default=8000)
    ap.add_argument("--iid-max", type=int, default=4000)
    ap.add_argument("--grid-max", type=int, default=512)
    ap.add_argument("--targets", type=float, nargs="+", default=[0.8, 0.85, 0.9, 0.95])
    args = ap.parse_args(argv)
    lib, models = demo_assets(args)
    rows = [r for r in pq.read_table(lib / "catalogue.parquet").to_pylist() if r["split"] == "test"][:args.tracks]
    result = {"tracks": len(rows), "seeds": args.seeds, "ref_samples": args.ref_samples, "top_k": TOP, "tasks": {}}
    for task, ckpt in models:
        model = load_checkpoint(ckpt)
        per_track = []
        for r in rows:
            af, lf = track_factorizations(lib, r, model.sample_rate)
            label = model.classes.index(r[task])
            t0 = time.perf_counter()
            ref_exp = MusicLIME(num_samples=args.ref_samples, design="iid", seed=10_000).explain(model, af, lf, labels=[label])
            ref = top_set(ref_exp, label)
            entry = {"track_id": r["track_id"], "ref_seconds": time.perf_counter() - t0, "iid": [], "grid": []}
            for seed in range(args.seeds):
                iid = MusicLIME(num_samples="auto", design="iid", max_samples=args.iid_max, seed=seed)
                entry["iid"].append(run_rounds(iid, iid.schedule(lf), model, af, lf, label, ref))
                grid = MusicLIME(num_samples="auto", design="grid", seed=seed)
                entry["grid"].append(run_rounds(grid, [s for s in grid.schedule(lf) if s[1][0] <= args.grid_max],
                                                model, af, lf, label, ref))
                print(task, r["track_id"], seed, "iid", [(x["num_samples"], round(x["jaccard_to_8000"], 2),
                                                         round(x["stability"], 2)) for x in entry["iid"][-1]],
                      "grid", [(x["grid_side"], round(x["jaccard_to_8000"], 2), round(x["stability"], 2))
                               for x in entry["grid"][-1]], flush=True)
            per_track.append(entry)
        summary = summarize(per_track, args.targets)
        ref_round = min(summary["iid"]["rounds"], key=lambda x: abs(x["num_samples"] - 1000))
        summary["reference_1000"] = ref_round
        result["tasks"][task] = {"summary": summary, "per_track": per_track}
        print(task, "reference@1000", ref_round, flush=True)
        for design in ("iid", "grid"):
            for tau, a in summary[design]["auto"].items():
                print(task, design, "auto", tau, {k: round(v, 3) for k, v in a.items()},
                      "work ratio", round(ref_round["encoder_passes"] / a["encoder_passes"], 2), flush=True)
    print("wrote", write_result("sampling", result))
    return result


if __name__ == "__main__":
    main()
