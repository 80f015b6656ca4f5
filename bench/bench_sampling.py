"""Model work to a trustworthy explanation: sampling designs against the paper's setting.

On the trained demo models (late fusion: log-mel CNN + MiniLM), per held-out track:

- **reference**: a 16,000-sample i.i.d. explanation of the true label
  (``bench/sampling_reference.py``; cached in ``bench/results``);
- **baseline**: the paper's setting, 1,000 i.i.d. samples (``--design iid``);
- the designs, each at whole blocks and at exactly the goal's work (``at 10x`` late fusion,
  ``at 4x`` ``predict_proba``: whole blocks, then pairs of the next, sized per track).

Each setting runs twice: on the late-fusion model (the explainer runs each encoder once per
distinct half-mask) and on the same model seen as ``predict_proba`` only (every joint row
is one full model pass). Work is counted where it happens: audio-encoder rows and
text-encoder rows (a counting wrapper around the model), or full model rows. Quality per
track and seed: top-10 Jaccard to the reference, deletion AOPC (mean drop of the label's
probability as the top 1..10 positive features are removed), and the top-10 Jaccard
across seeds (stability: per track the mean over seed pairs; median and 10th percentile
over tracks).

Every setting, the baseline and the reference fit the same ``--target``: ``probability``
(the paper's; results in ``sampling.json``) or ``log_odds`` (``--target auto``'s outside
``--design iid``; results in ``sampling_log_odds.json``).

    python bench/bench_sampling.py [--tracks 20 --ref-tracks 10 --seeds 5 --baseline-seeds 3]
                                   [--target log_odds] [--only SETTING ...]

``--only`` runs the named settings and merges them into the earlier result of the same
options (as does one process per task: ``--model genre`` beside ``--model emotion``).
"""
from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import add_demo_arguments, demo_assets, write_result  # noqa: E402
from bench.quality import deletion_aopc, deletion_order  # noqa: E402
from bench.sampling_reference import held_out, references  # noqa: E402

TOP = 10
# name -> (model view, MusicLIME kwargs); the baseline is the paper's setting
SETTINGS = {
    "late_fusion": {
        "iid 1000 (paper)": dict(num_samples=1000, design="iid"),
        "orthogonal-grid, 1 block": dict(blocks=1, design="orthogonal-grid"),
        "orthogonal-grid, 2 blocks": dict(blocks=2, design="orthogonal-grid"),
        "orthogonal-grid, at 10x": dict(work=10, design="orthogonal-grid"),
        "grid 128x128 (before)": dict(num_samples=2048, design="grid", grid_size=(128, 128)),
    },
    "predict_proba": {
        "iid 1000 (paper)": dict(num_samples=1000, design="iid"),
        "orthogonal, 1 block": dict(blocks=1, design="orthogonal"),
        "orthogonal, 2 blocks": dict(blocks=2, design="orthogonal"),
        "orthogonal, at 4x": dict(work=4, design="orthogonal"),
        "iid 250 (before)": dict(num_samples=250, design="iid"),
    },
}
# settings measured on every track with all seeds (stability over --tracks); the others on
# the reference tracks with --baseline-seeds seeds
FULL = {"orthogonal-grid, 1 block", "orthogonal-grid, at 10x", "orthogonal, at 4x"}
BASELINE = "iid 1000 (paper)"
BASELINE_SAMPLES = 1000


class Counting:
    """The model, counting the rows each part of it runs. ``joint=True`` hides the
    late-fusion methods, so the explainer sees a ``predict_proba``-only model."""

    def __init__(self, model, joint: bool):
        self.model, self.classes, self.sample_rate = model, model.classes, model.sample_rate
        self.audio_rows = self.text_rows = self.full_rows = 0
        if not joint:
            self.embed_audio, self.embed_lyrics, self.head = self._embed_audio, self._embed_lyrics, self._head
            self.embed_lyrics_masks = self._embed_lyrics_masks

    def predict_proba(self, audio, lyrics):
        self.full_rows += len(lyrics)
        return self.model.predict_proba(audio, lyrics)

    def _embed_audio(self, audio):
        self.audio_rows += len(audio)
        return self.model.embed_audio(audio)

    def _embed_lyrics(self, lyrics):
        self.text_rows += len(lyrics)
        return self.model.embed_lyrics(lyrics)

    def _embed_lyrics_masks(self, lf, masks):
        self.text_rows += len(masks)
        return self.model.embed_lyrics_masks(lf, masks)

    def _head(self, a, b):
        return self.model.head(a, b)

    def work(self) -> dict:
        if self.full_rows:  # a full pass runs both encoders
            return {"audio_rows": self.full_rows, "text_rows": self.full_rows, "model_rows": self.full_rows}
        return {"audio_rows": self.audio_rows, "text_rows": self.text_rows,
                "model_rows": self.audio_rows + self.text_rows}


def blocks_within(design: str, layout, ratio: float, view: str):
    """The size of the most blocks (whole, then pairs of the next) whose work is at most the
    paper's / ``ratio``: encoder rows (audio + text) for late fusion, model rows otherwise."""
    from musiclime import designs
    d = designs.get(design)
    if not (view == "late_fusion" and d.crossed):  # joint rows: the design's own size
        return d.size(int(BASELINE_SAMPLES / ratio), layout)
    # encoder rows are the sides' sum, not the product size() fits: step through the pairs
    per = designs.hadamard_order(layout.n_audio + layout.n_lyrics + 1)  # finer than either side's
    k = per
    while sum(d.side_rows(layout, (k + 1) / per)) <= 2 * BASELINE_SAMPLES / ratio:
        k += 1
    return d.at(layout, k / per)


def top_set(weights: dict[str, float] | list, k: int = TOP) -> set[str]:
    items = weights.items() if isinstance(weights, dict) else weights
    return {f for f, _ in sorted(items, key=lambda t: -abs(t[1]))[:k]}


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a | b else 1.0


def run_one(model, view: str, kwargs: dict, af, lf, label: int, seed: int, ref: dict | None,
            target: str = "probability") -> dict:
    from musiclime import MusicLIME, designs
    from musiclime.masks import Modality
    counting = Counting(model, joint=view == "predict_proba")
    layout = designs.MaskShape(af.n_features, lf.n_features, Modality.BOTH)
    if "blocks" in kwargs:  # the design's size at that many blocks, as joint rows
        kwargs = dict(kwargs)
        kwargs["num_samples"] = designs.get(kwargs["design"]).at(layout, kwargs.pop("blocks")).num_samples
    if "work" in kwargs:  # the most (fractional) blocks within the baseline's work / ``work``
        kwargs = dict(kwargs)
        kwargs["num_samples"] = blocks_within(kwargs["design"], layout, kwargs.pop("work"), view).num_samples
    t0 = time.perf_counter()
    exp = MusicLIME(seed=seed, target=target, **kwargs).explain(counting, af, lf, labels=[label])
    seconds = time.perf_counter() - t0
    ranked = exp.as_list(label)
    order = deletion_order(exp, label)
    out = {"seed": seed, "seconds": seconds, "num_samples": exp.num_samples, **counting.work(),
           "topk": exp.topk, "separation": exp.separation, "rounds": len(exp.rounds) or 1,
           "top": sorted(top_set([(n, w) for _, n, w in ranked])),
           "aopc": deletion_aopc(model, af, lf, label, order)}
    if ref is not None:
        out["jaccard_to_ref"] = jaccard(set(out["top"]), top_set(ref["weights"]))
    return out


def summarize(per_track: list[dict], name: str) -> dict:
    runs = [r for t in per_track for r in t["settings"].get(name, [])]
    with_ref = [r for r in runs if "jaccard_to_ref" in r]
    stab = []
    for t in per_track:
        tops = [set(r["top"]) for r in t["settings"].get(name, [])]
        if len(tops) >= 2:
            stab.append(statistics.mean(jaccard(a, b) for a, b in itertools.combinations(tops, 2)))
    mean = lambda rows, k: statistics.mean(r[k] for r in rows) if rows else None  # noqa: E731
    return {"runs": len(runs), "tracks": len(per_track), "audio_rows": mean(runs, "audio_rows"),
            "text_rows": mean(runs, "text_rows"), "model_rows": mean(runs, "model_rows"),
            "num_samples": mean(runs, "num_samples"), "seconds": mean(runs, "seconds"),
            "jaccard_to_ref": mean(with_ref, "jaccard_to_ref"), "ref_runs": len(with_ref),
            "aopc": mean(with_ref, "aopc"),
            "stability_median": float(np.median(stab)) if stab else None,
            "stability_p10": float(np.percentile(stab, 10)) if stab else None, "stability_tracks": len(stab),
            "topk_resolved": mean([{"v": r["topk"] == "resolved"} for r in runs], "v") if runs else None}


def main(argv=None) -> dict:
    from musiclime.library import track_factorizations
    from musiclime.models import load_checkpoint
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_demo_arguments(ap)
    ap.add_argument("--tracks", type=int, default=20, help="held-out tracks for stability")
    ap.add_argument("--ref-tracks", type=int, default=10, help="of those, tracks with a 16k reference")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--baseline-seeds", type=int, default=3)
    ap.add_argument("--ref-samples", type=int, default=16000)
    ap.add_argument("--views", nargs="+", default=list(SETTINGS))
    ap.add_argument("--target", choices=("probability", "log_odds"), default="probability")
    ap.add_argument("--no-before", action="store_true",
                    help="skip the settings marked (before), which an earlier run already compared")
    ap.add_argument("--only", nargs="+", default=None, metavar="SETTING",
                    help="run only these settings, merged into the earlier result of the same options")
    args = ap.parse_args(argv)
    settings = {view: {n: k for n, k in named.items() if not (args.no_before and n.endswith("(before)"))
                       and (args.only is None or n in args.only)}
                for view, named in SETTINGS.items()}
    lib, models = demo_assets(args)
    rows = held_out(lib, args.tracks)
    result = {"tracks": len(rows), "ref_tracks": args.ref_tracks, "seeds": args.seeds,
              "baseline_seeds": args.baseline_seeds, "ref_samples": args.ref_samples, "top_k": TOP,
              "target": args.target, "no_before": args.no_before, "tasks": {}}
    for task, ckpt in models:
        refs = references(lib, task, ckpt, rows[:args.ref_tracks], args.ref_samples, target=args.target)
        model = load_checkpoint(ckpt)
        task_out = {}
        for view in args.views:
            per_track = []
            for i, r in enumerate(rows):
                af, lf = track_factorizations(lib, r, model.sample_rate)
                label = model.classes.index(r[task])
                ref = refs.get(r["track_id"]) if i < args.ref_tracks else None
                entry = {"track_id": r["track_id"], "settings": {}}
                for name, kwargs in settings[view].items():
                    if name == BASELINE and view == "predict_proba":
                        continue  # the same masks and probabilities as in the late-fusion view
                    if name not in FULL and ref is None:
                        continue
                    seeds = args.seeds if name in FULL else args.baseline_seeds
                    entry["settings"][name] = [run_one(model, view, kwargs, af, lf, label, s, ref, args.target)
                                              for s in range(seeds)]
                per_track.append(entry)
                print(task, view, r["track_id"], {n: (round(statistics.mean(x["model_rows"] for x in v)),
                                                      round(statistics.mean(x.get("jaccard_to_ref", -1) for x in v), 2))
                                                  for n, v in entry["settings"].items()}, flush=True)
            summary = {name: summarize(per_track, name) for name in settings[view]}
            if view == "predict_proba":  # the paper's masks are the same; count its rows as full passes
                base = dict(task_out["late_fusion"]["summary"][BASELINE]) \
                    if BASELINE in task_out.get("late_fusion", {}).get("summary", {}) else None
                if base:
                    base["model_rows"] = base["num_samples"]
                    base["audio_rows"] = base["text_rows"] = base["num_samples"]
                    summary[BASELINE] = base
            task_out[view] = {"summary": summary, "per_track": per_track}
        result["tasks"][task] = task_out
    name = "sampling" if args.target == "probability" else f"sampling_{args.target}"
    path = write_result(name, result, merge=merge_results)
    for task, t in json.loads(path.read_text())["tasks"].items():
        for view, v in t.items():
            for setting, x in v["summary"].items():
                print(task, view, setting, {k: (round(y, 3) if isinstance(y, float) else y) for k, y in x.items()})
    print("wrote", path)
    return result


def merge_results(old: dict | None, result: dict) -> dict:
    """``result`` merged into an earlier result of the same options: the tasks, views and
    settings it did not run are kept (one process per task can run side by side; ``--only``
    adds settings), then every setting's work ratio is taken against the baseline."""
    same = ("tracks", "ref_tracks", "seeds", "baseline_seeds", "ref_samples", "target")
    if old and all(old.get(k) == result.get(k) for k in same):
        tasks = old["tasks"]
        for task, t in result["tasks"].items():
            for view, v in t.items():
                into = tasks.setdefault(task, {}).setdefault(view, {"summary": {}, "per_track": []})
                into["summary"].update(v["summary"])
                by_id = {e["track_id"]: e for e in into["per_track"]}
                for e in v["per_track"]:
                    by_id.setdefault(e["track_id"], {"track_id": e["track_id"], "settings": {}})["settings"].update(e["settings"])
                into["per_track"] = list(by_id.values())
        order = ("genre", "emotion")  # the demo's, as the README tables list them
        result["tasks"] = dict(sorted(tasks.items(), key=lambda kv: (order + (kv[0],)).index(kv[0])))
        result["no_before"] = old.get("no_before", False) and result["no_before"]
    for t in result["tasks"].values():
        for view, v in t.items():
            # the README lists the settings in the order they are declared
            v["summary"] = {n: v["summary"][n] for n in SETTINGS[view] if n in v["summary"]}
            base = v["summary"].get(BASELINE)
            for s in v["summary"].values():
                if base and s.get("model_rows"):
                    s["work_ratio"] = base["model_rows"] / s["model_rows"]
    return result


if __name__ == "__main__":
    main()
