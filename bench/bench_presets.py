"""The ``--quality`` presets measured: what each costs and how close and steady it is.

On the trained demo models (late fusion), per held-out track, the true label explained
with each preset (:mod:`musiclime.presets`) under ``--seeds`` seeds, in two views of the
same model (``bench/bench_sampling.py``'s): late fusion (encoder rows counted) and
``predict_proba`` only (model rows). Each run is compared with two references of the
track (the hidden-variable check: a reference drawn like one preset favours it):

- ``iid``: 16,000 i.i.d. masks (``bench/sampling_reference.py``), fitted with the run's
  own target (the paper's probability, or the log-odds the other presets fit);
- ``cross``: ``orthogonal-cross`` at ``--cross-work`` encoder rows (log-odds), the
  steady preset's design at several times its work.

Per preset and view: work, top-10 Jaccard and deletion AOPC to each reference (paired
standard errors against ``paper``), stability across seeds (median and 10th percentile
over all tracks, and over the tracks whose top-10 the 16k reference resolves),
``topk_resolved``, and the fit's seconds and peak memory.

    python bench/bench_presets.py [--tracks 10 --seeds 5] [--model genre]
"""
from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_sampling import Counting, jaccard, top_set  # noqa: E402
from bench.common import RESULTS, add_demo_arguments, demo_assets, write_result  # noqa: E402
from bench.quality import deletion_aopc, deletion_order  # noqa: E402
from bench.sampling_reference import REF_SEED, held_out, load, model_key, references, save  # noqa: E402

PRESETS = ("paper", "steady", "fast")
VIEWS = ("late_fusion", "predict_proba")


def cross_references(lib, task, ckpt, rows, work: int, cache: Path, log=print) -> dict[str, dict]:
    """The ``orthogonal-cross`` reference of each track at ``work`` encoder rows, cached
    beside the i.i.d. ones (key ``...:cross<work>``)."""
    from musiclime import MusicLIME, designs
    from musiclime.library import track_factorizations
    from musiclime.masks import Modality
    from musiclime.models import load_checkpoint
    key = f"{model_key(task, ckpt)}:cross{work}:log_odds"
    store = load(cache)["references"].get(key, {})
    missing = [r for r in rows if r["track_id"] not in store]
    model = load_checkpoint(ckpt) if missing else None
    for r in missing:
        af, lf = track_factorizations(lib, r, model.sample_rate)
        label = model.classes.index(r[task])
        shape = designs.MaskShape(af.n_features, lf.n_features, Modality.BOTH)
        size = designs.get("orthogonal-cross").for_work(work, shape, True)
        t0 = time.perf_counter()
        ex = MusicLIME(design="orthogonal-cross", target="log_odds", seed=REF_SEED)
        plan = ex.plan(af, lf, model=model, size=size)
        probs, rows_done = ex.predict(model, af, lf, plan.masks)
        exp = ex.fit(plan, probs, model.classes, labels=[label], model_rows=rows_done)
        store[r["track_id"]] = {"label": label, "seconds": time.perf_counter() - t0, "encoder_rows": sum(size.grid),
                                "joint_rows": size.num_samples, "topk": exp.topk,
                                "weights": {name: w for _, name, w in exp.as_list(label)}}
        save(cache, {key: {r["track_id"]: store[r["track_id"]]}})
        log(f"cross reference {task} {r['track_id']}: {store[r['track_id']]['seconds']:.0f} s", flush=True)
    return {r["track_id"]: store[r["track_id"]] for r in rows}


def run_preset(model, view: str, quality: str, af, lf, label: int, seed: int, measure_fit: bool,
               modality: str = "both") -> dict:
    from musiclime import MusicLIME
    counting = Counting(model, joint=view == "predict_proba")
    ex = MusicLIME(quality=quality, seed=seed)
    t0 = time.perf_counter()
    ev = ex.evaluate(counting, af, lf, labels=[label], modality=modality)
    t1 = time.perf_counter()
    if measure_fit:
        tracemalloc.start()
    exp = ex.fit(ev.plan, ev.probs, model.classes, labels=[label], model_rows=ev.model_rows)
    fit_s = time.perf_counter() - t1
    peak = tracemalloc.get_traced_memory()[1] if measure_fit else None
    if measure_fit:
        tracemalloc.stop()
    ranked = exp.as_list(label)
    order = deletion_order(exp, label)
    return {"seed": seed, "seconds": t1 - t0 + fit_s, "fit_s": fit_s, "fit_peak_mb": peak and peak / 2**20,
            "design": exp.design, "target": exp.target, "num_samples": exp.num_samples, **counting.work(),
            "topk": exp.topk, "top": sorted(top_set([(n, w) for _, n, w in ranked])),
            "aopc": deletion_aopc(model, af, lf, label, order)}


def _stability(tops: list[set]) -> float | None:
    return statistics.mean(jaccard(a, b) for a, b in itertools.combinations(tops, 2)) if len(tops) > 1 else None


def summarize(per_track: list[dict], preset: str, baseline: str = "paper") -> dict:
    """Means over tracks and seeds; paired differences to ``baseline`` per track."""
    out: dict = {}
    runs = [r for t in per_track for r in t["runs"].get(preset, [])]
    if not runs:
        return out
    mean = lambda k: statistics.mean(r[k] for r in runs if r.get(k) is not None)  # noqa: E731
    for k in ("audio_rows", "text_rows", "model_rows", "num_samples", "seconds", "fit_s", "aopc"):
        out[k] = mean(k)
    peaks = [r["fit_peak_mb"] for r in runs if r.get("fit_peak_mb")]
    out["fit_peak_mb"] = max(peaks) if peaks else None
    out["design"], out["target"] = runs[0]["design"], runs[0]["target"]
    out["topk_resolved"] = statistics.mean(r["topk"] == "resolved" for r in runs)
    for ref in ("iid", "cross"):
        scored = [t for t in per_track if t["runs"][preset][0].get(f"jaccard_{ref}") is not None]
        out[f"jaccard_{ref}_tracks"] = len(scored)
        out[f"jaccard_{ref}"] = statistics.mean(r[f"jaccard_{ref}"] for t in scored for r in t["runs"][preset]) \
            if scored else None
        diffs = [statistics.mean(r[f"jaccard_{ref}"] for r in t["runs"][preset])
                 - statistics.mean(r[f"jaccard_{ref}"] for r in t["runs"][baseline]) for t in scored]
        out[f"jaccard_{ref}_diff"], out[f"jaccard_{ref}_se"] = _paired(diffs)
    diffs = [statistics.mean(r["aopc"] for r in t["runs"][preset]) - statistics.mean(r["aopc"] for r in t["runs"][baseline])
             for t in per_track if preset in t["runs"] and baseline in t["runs"]]
    out["aopc_diff"], out["aopc_se"] = _paired(diffs)
    stab = [(_stability([set(r["top"]) for r in t["runs"][preset]]), t.get("ref_resolved")) for t in per_track
            if preset in t["runs"]]
    allv = [s for s, _ in stab if s is not None]
    res = [s for s, ok in stab if s is not None and ok]
    out["seeds"] = len(runs) // max(1, len(per_track))
    out["stability_median"] = float(np.median(allv)) if allv else None
    out["stability_p10"] = float(np.percentile(allv, 10)) if allv else None
    out["stability_tracks"] = len(allv)
    out["stability_resolved_median"] = float(np.median(res)) if res else None
    out["stability_resolved_p10"] = float(np.percentile(res, 10)) if res else None
    out["stability_resolved_tracks"] = len(res)
    return out


def _paired(diffs: list[float]) -> tuple[float | None, float | None]:
    if len(diffs) < 2:
        return (diffs[0] if diffs else None), None
    return statistics.mean(diffs), statistics.stdev(diffs) / len(diffs) ** 0.5


def measure(model, lib, rows, task: str, args) -> dict:
    """Every preset's runs per view and track: work, top-10, AOPC, fit cost (no references)."""
    from musiclime.library import track_factorizations
    task_out: dict = {}
    for view in VIEWS:
        per_track = []
        for i, r in enumerate(rows):
            af, lf = track_factorizations(lib, r, model.sample_rate)
            label = model.classes.index(r[task])
            entry = {"track_id": r["track_id"], "runs": {}}
            for preset in PRESETS:
                if view == "predict_proba" and preset == "paper":
                    # i.i.d. masks: the same rows and probabilities as in the late-fusion view
                    entry["runs"]["paper"] = [dict(x, audio_rows=x["num_samples"], text_rows=x["num_samples"],
                                                   model_rows=x["num_samples"])
                                              for x in task_out["late_fusion"][i]["runs"]["paper"]]
                    continue
                seeds = {("predict_proba", "steady"): args.pp_steady_seeds,
                         ("late_fusion", "paper"): args.paper_seeds}.get((view, preset), args.seeds)
                entry["runs"][preset] = [run_preset(model, view, preset, af, lf, label, s, measure_fit=s == 0)
                                         for s in range(seeds)]
            per_track.append(entry)
            print(task, view, r["track_id"], {p: round(statistics.mean(x["model_rows"] for x in v))
                                              for p, v in entry["runs"].items()}, flush=True)
        task_out[view] = per_track
    return task_out


def score(task_out: dict, refs: dict, cross: dict) -> dict:
    """Jaccard to the references each track has, then the summaries."""
    out = {}
    for view, per_track in task_out.items():
        for entry in per_track:
            tid = entry["track_id"]
            entry["ref_resolved"] = refs["log_odds"].get(tid, {}).get("topk") == "resolved" if tid in refs["log_odds"] \
                else None
            for runs in entry["runs"].values():
                for x in runs:
                    own = refs["probability" if x["target"] == "probability" else "log_odds"].get(tid)
                    x["jaccard_iid"] = jaccard(set(x["top"]), top_set(own["weights"])) if own else None
                    x["jaccard_cross"] = jaccard(set(x["top"]), top_set(cross[tid]["weights"])) if tid in cross \
                        else None
        out[view] = {"summary": {p: summarize(per_track, p) for p in PRESETS}, "per_track": per_track}
    return out


def main(argv=None) -> dict:
    from musiclime.models import load_checkpoint
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_demo_arguments(ap)
    ap.add_argument("--tracks", type=int, default=10)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--paper-seeds", type=int, default=3, help="seeds of the paper's preset (the baseline)")
    ap.add_argument("--pp-steady-seeds", type=int, default=2,
                    help="seeds of steady in the predict_proba view (its cost is the paper's)")
    ap.add_argument("--ref-samples", type=int, default=16000)
    ap.add_argument("--ref-tracks", type=int, default=10, help="tracks that get the i.i.d. reference (the costly one)")
    ap.add_argument("--cross-work", type=int, default=4000, help="encoder rows of the cross reference")
    ap.add_argument("--out-dir", default=None, help="results folder (default bench/results; its references cache too)")
    args = ap.parse_args(argv)
    out_dir = Path(args.out_dir) if args.out_dir else RESULTS
    cache = out_dir / "sampling_references.json"
    lib, models = demo_assets(args)
    rows = held_out(lib, args.tracks)
    result = {"tracks": len(rows), "seeds": args.seeds, "paper_seeds": args.paper_seeds,
              "pp_steady_seeds": args.pp_steady_seeds, "ref_samples": args.ref_samples,
              "cross_work": args.cross_work, "tasks": {}}
    path = None
    for task, ckpt in models:
        model = load_checkpoint(ckpt)
        runs = measure(model, lib, rows, task, args)
        # the runs first, then the references, cheapest first: each written as it comes
        refs: dict = {"probability": {}, "log_odds": {}}
        cross: dict = {}
        steps = [("cross", rows)] + [("iid", [r]) for r in rows[:args.ref_tracks]]
        for kind, some in [("none", [])] + steps:
            if kind == "cross":
                cross = cross_references(lib, task, ckpt, some, args.cross_work, cache)
            elif kind == "iid":
                for t in refs:
                    refs[t].update(references(lib, task, ckpt, some, args.ref_samples, path=cache, target=t))
            result["tasks"][task] = score(runs, refs, cross)
            result["tasks"][task]["references"] = {"iid_tracks": len(refs["log_odds"]), "cross_tracks": len(cross)}
            path = write_result("presets", result, out_dir=out_dir, merge=_merge)
    print("wrote", path)
    return result


def _merge(old: dict | None, result: dict) -> dict:
    """One process per task can run side by side: the tasks this run did not measure stay."""
    same = ("tracks", "seeds", "ref_samples", "cross_work")
    if old and all(old.get(k) == result.get(k) for k in same):
        result["tasks"] = {**old["tasks"], **result["tasks"]}
        order = ("genre", "emotion")
        result["tasks"] = dict(sorted(result["tasks"].items(), key=lambda kv: (order + (kv[0],)).index(kv[0])))
    return result


if __name__ == "__main__":
    main()
