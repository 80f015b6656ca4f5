"""How much precision the sampling goals need, in i.i.d. samples, and what the designs give.

``bench_sampling.py`` measures each design against the goals; this asks why they are missed
and by how much, with the estimator's own error model. The i.i.d. surrogate's weights are,
to a good approximation, independent normal estimates of the reference's weights whose
standard errors shrink as ``1 / sqrt(N)`` (``weight_se`` is calibrated for ``iid``:
``tests/test_designs.py``). So, per held-out track with a 16,000-sample reference:

1. fit the paper's setting once (1,000 i.i.d. samples, the log-odds target) for each
   feature's standard error ``se_1000``;
2. simulate N-sample explanations as ``reference + se_1000 * sqrt(1000 / N) * z`` (and the
   reference's own noise at 16,000), and compute what ``bench_sampling.py`` measures: the
   top-10 Jaccard to the reference and across 5 seeds (median and 10th percentile over
   tracks of each track's expected value);
3. anchor the model on the measured paper row: its 1,000 samples measure as ``anchor *
   1000`` modelled ones (the model is a little optimistic: real errors have heavier tails
   and correlations). Then read off the i.i.d. samples the stability goal needs, and each
   measured design's i.i.d.-equivalent N (the N whose simulated Jaccard to the reference
   equals the design's measured one, from ``sampling_log_odds.json``): how much less work
   than the paper it would need to match the paper's Jaccard, and to meet the stability goal.

    python bench/bench_precision.py [--tracks 10] [--reps 400]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import RESULTS, add_demo_arguments, demo_assets, write_result  # noqa: E402
from bench.sampling_reference import held_out, references  # noqa: E402

TOP, SEEDS, BASE_N, REF_N = 10, 5, 1000, 16000
GRID = (250, 500, 1000, 1500, 2000, 3000, 4000, 6000, 8000, 12000, 16000, 24000, 32000, 64000, 128000)
GOAL_MEDIAN, GOAL_P10 = 0.9, 0.8


def top_mask(w: np.ndarray) -> np.ndarray:
    """``bool [..., F]``: the top-``TOP`` |weight| of each row."""
    idx = np.argpartition(-np.abs(w), TOP - 1, axis=-1)[..., :TOP]
    out = np.zeros(w.shape, dtype=bool)
    np.put_along_axis(out, idx, True, axis=-1)
    return out


def jaccard(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a & b).sum(-1) / np.maximum((a | b).sum(-1), 1)


def simulate(ref: np.ndarray, se: np.ndarray, n: int, reps: int, rng: np.random.Generator) -> tuple[float, float]:
    """Expected (top-10 Jaccard to the reference, top-10 Jaccard across ``SEEDS`` seeds) of an
    ``n``-sample i.i.d. explanation of one track."""
    sd, sd_ref = se * np.sqrt(BASE_N / n), se * np.sqrt(BASE_N / REF_N)
    est = top_mask(ref + sd * rng.standard_normal((reps, SEEDS, len(ref))))
    truth = top_mask(ref + sd_ref * rng.standard_normal((reps, 1, len(ref))))
    to_ref = jaccard(est[:, 0], truth[:, 0]).mean()
    pairs = [jaccard(est[:, i], est[:, j]) for i in range(SEEDS) for j in range(i + 1, SEEDS)]
    return float(to_ref), float(np.mean(pairs))


def curve(tracks: list[dict], reps: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for n in GRID:
        sims = [simulate(np.array(t["ref"]), np.array(t["se"]), n, reps, rng) for t in tracks]
        stab = [s for _, s in sims]
        out.append({"n": n, "jaccard_to_ref": float(np.mean([j for j, _ in sims])),
                    "stability_median": float(np.median(stab)), "stability_p10": float(np.percentile(stab, 10))})
    return out


def inverse(rows: list[dict], key: str, value: float) -> float | None:
    """The N (log-interpolated) at which ``key`` reaches ``value``; None past the grid."""
    xs, ys = np.log([r["n"] for r in rows]), np.array([r[key] for r in rows])
    if value <= ys[0]:
        return float(rows[0]["n"]) if value == ys[0] else None
    for i in range(1, len(ys)):
        if ys[i] >= value:
            f = (value - ys[i - 1]) / (ys[i] - ys[i - 1]) if ys[i] > ys[i - 1] else 1.0
            return float(np.exp(xs[i - 1] + f * (xs[i] - xs[i - 1])))
    return None


def value_at(rows: list[dict], n: float, key: str) -> float:
    """``key`` at ``n`` samples, log-interpolated on the curve."""
    return float(np.interp(np.log(n), np.log([r["n"] for r in rows]), [r[key] for r in rows]))


def measured(task: str, ref_ids: list[str]) -> dict[str, dict]:
    """Per setting of ``sampling_log_odds.json`` (view, name): mean Jaccard to the reference
    over ``ref_ids``, stability median over the same tracks, and model rows."""
    from bench.bench_sampling import jaccard as jac
    doc = json.loads((RESULTS / "sampling_log_odds.json").read_text())["tasks"][task]
    out = {}
    for view, v in doc.items():
        for name, s in v["summary"].items():
            per = [t["settings"].get(name) for t in v["per_track"] if t["track_id"] in ref_ids]
            per = [runs for runs in per if runs]
            if not per:  # the paper's row of the predict_proba view: the late-fusion runs
                continue
            stab = [np.mean([jac(set(a["top"]), set(b["top"])) for i, a in enumerate(r) for b in r[i + 1:]])
                    for r in per]
            out[f"{view}: {name}"] = {"view": view, "name": name, "model_rows": s["model_rows"],
                                      "work_ratio": s.get("work_ratio"),
                                      "jaccard_to_ref": float(np.mean([x["jaccard_to_ref"] for r in per for x in r])),
                                      "stability_median": float(np.median(stab))}
    return out


def paper_fits(lib, task: str, ckpt: str, rows: list[dict], refs: dict, reuse: dict) -> list[dict]:
    """Per track: the reference's weights and the paper setting's standard errors, by
    feature (reused from an earlier result of the same tracks)."""
    from musiclime import MusicLIME
    from musiclime.library import track_factorizations
    from musiclime.models import load_checkpoint
    if [t["track_id"] for t in reuse.get("tracks", [])] == [r["track_id"] for r in rows]:
        return reuse["tracks"]
    model = load_checkpoint(ckpt)
    tracks = []
    for r in rows:
        af, lf = track_factorizations(lib, r, model.sample_rate)
        label = model.classes.index(r[task])
        exp = MusicLIME(num_samples=BASE_N, design="iid", target="log_odds", seed=0).explain(model, af, lf, labels=[label])
        se = {n: s for _, n, _, s in exp.as_list(label, with_se=True)}
        ref = refs[r["track_id"]]["weights"]
        names = sorted(ref)
        tracks.append({"track_id": r["track_id"], "names": names, "ref": [ref[n] for n in names],
                       "se": [se[n] for n in names]})
        print(task, r["track_id"], "median se", round(float(np.median(tracks[-1]["se"])), 4), flush=True)
    return tracks


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_demo_arguments(ap)
    ap.add_argument("--tracks", type=int, default=10, help="held-out tracks with a cached 16k reference")
    ap.add_argument("--reps", type=int, default=400, help="simulated explanation sets per track and N")
    ap.add_argument("--refit", action="store_true", help="refit the paper setting even where an earlier result has it")
    args = ap.parse_args(argv)
    lib, models = demo_assets(args)
    rows = held_out(lib, args.tracks)
    earlier = {} if args.refit or not (RESULTS / "precision.json").exists() else \
        json.loads((RESULTS / "precision.json").read_text())["tasks"]
    result = {"tracks": len(rows), "reps": args.reps, "seeds": SEEDS, "base_n": BASE_N, "ref_n": REF_N,
              "target": "log_odds", "goal": {"stability_median": GOAL_MEDIAN, "stability_p10": GOAL_P10}, "tasks": {}}
    for task, ckpt in models:
        refs = references(lib, task, ckpt, rows, REF_N, target="log_odds")
        tracks = paper_fits(lib, task, ckpt, rows, refs, earlier.get(task, {}))
        rows_n = curve(tracks, args.reps)
        designs = measured(task, [t["track_id"] for t in tracks])
        for d in designs.values():
            d["iid_equivalent_n"] = inverse(rows_n, "jaccard_to_ref", d["jaccard_to_ref"])
        # the model's check: the paper's 1,000 samples measured as this many modelled ones
        anchor = designs["late_fusion: iid 1000 (paper)"]["iid_equivalent_n"] / BASE_N
        need = {k: inverse(rows_n, k, g) for k, g in (("stability_median", GOAL_MEDIAN), ("stability_p10", GOAL_P10))}
        n_star = None if None in need.values() else max(need.values())
        for d in designs.values():
            n_eq = d["iid_equivalent_n"]
            # an i.i.d. sample costs one row of each encoder (late fusion) or one full row;
            # efficiency: i.i.d. samples' worth per row of work, against the paper's own
            per_sample = 2 if d["view"] == "late_fusion" else 1
            d["real_iid_equivalent_n"] = None if n_eq is None else n_eq / anchor
            d["work_ratio_at_paper_jaccard"] = None if n_eq is None else n_eq * per_sample / d["model_rows"] / anchor
            d["work_ratio_at_stability_goal"] = (None if n_eq is None or n_star is None
                                                 else n_eq * per_sample / d["model_rows"] * BASE_N / n_star)
            print(task, d["view"], d["name"], {k: (round(v, 2) if isinstance(v, float) else v) for k, v in d.items()},
                  flush=True)
        for x in rows_n:
            print(task, x, flush=True)
        # the anchored model's stability of the paper's setting, to set beside the measured
        modelled = {k: value_at(rows_n, anchor * BASE_N, k) for k in ("stability_median", "stability_p10")}
        result["tasks"][task] = {"curve": rows_n, "anchor": anchor, "paper_modelled": modelled, "n_for_goal": need, "n_star": n_star,
                                 "real_n_star": None if n_star is None else n_star / anchor,
                                 "designs": designs, "tracks": tracks}
    print("wrote", write_result("precision", result))
    return result


if __name__ == "__main__":
    main()
