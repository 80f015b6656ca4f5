"""The ``--quality`` presets on a real pretrained tagger: musicnn (MagnaTagATune) over the
rendered-score tracks of ``bench/bench_musicnn.py``, beside the demo models' table of
``bench/bench_presets.py``.

musicnn is a ``predict_proba``-only model, explained audio alone (4 stems x 10 segments of
a 3-s excerpt, one musicnn patch), so work is counted in model rows. Per track, the first
tag of its kind that the model predicts (``choir`` ..., ``strings`` ...) is explained with
each preset under several seeds, and compared with two references of the track (the
hidden-variable check):

- ``iid``: 16,000 i.i.d. masks, fitted with the run's own target (probability for
  ``paper``, log-odds for the others), from one set of predictions;
- ``cross``: the ``orthogonal`` design (the steady preset's) at ``--cross-rows`` model
  rows, log-odds.

Reported per preset as for the demo models: rows, top-10 Jaccard and deletion AOPC to each
reference (paired standard errors against ``paper``), stability across seeds (median and
10th percentile), ``topk_resolved``. One process per core, one thread each; a track is
written as it ends (``results/musicnn-presets.jsonl``) and a stopped run resumes.

    python bench/bench_musicnn_presets.py --tracks 6 --workers 2
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_musicnn import _init_worker  # noqa: E402
from bench.bench_presets import PRESETS, run_preset, summarize  # noqa: E402
from bench.bench_sampling import jaccard, top_set  # noqa: E402
from bench.common import RESULTS, write_result  # noqa: E402
from bench.sampling_reference import REF_SEED  # noqa: E402

VIEW = "predict_proba"
SEEDS = {"paper": 3, "steady": 3, "fast": 5}


def chosen(tracks: int, scores: Path) -> list[dict]:
    """``tracks`` of musicnn.json's explained tracks, evenly spread, choirs and quartets in
    turn (a run stopped early still has both kinds)."""
    detail = [t for t in json.loads(scores.read_text())["tracks_detail"] if t["explained"]]
    step = len(detail) / tracks
    picked = [detail[round(i * step)] for i in range(min(tracks, len(detail)))]
    kinds = [[t for t in picked if t["kind"].startswith(k)] for k in ("choir", "strings")]
    return [t for pair in itertools.zip_longest(*kinds) for t in pair if t is not None]


def _factorizations(track: str, lib: str):
    import pyarrow.parquet as pq
    import soundfile as sf

    from musiclime.factorization import AudioFactorization, LyricsFactorization
    from musiclime.scores import STEMS

    row = next(r for r in pq.read_table(Path(lib) / "catalogue.parquet").to_pylist() if r["track_id"] == track)
    stems = np.stack([sf.read(Path(lib) / row[f"{s}_path"], dtype="float32")[0] for s in STEMS])
    return AudioFactorization(stems, 16000, n_segments=10, stem_names=STEMS), LyricsFactorization("")


def _reference(model, af, lf, label: int, design: str, rows: int, targets: tuple[str, ...]) -> dict[str, dict]:
    """One set of predictions at ``rows`` masks of ``design``, fitted with each target."""
    from musiclime import MusicLIME

    t0 = time.perf_counter()
    ex = MusicLIME(num_samples=rows, design=design, seed=REF_SEED)
    plan = ex.plan(af, lf, modality="audio", model=model)
    probs, done = ex.predict(model, af, lf, plan.masks)
    seconds = time.perf_counter() - t0
    out = {}
    for target in targets:
        exp = MusicLIME(num_samples=rows, design=design, seed=REF_SEED, target=target).fit(
            plan, probs, model.classes, labels=[label], model_rows=done
        )
        out[target] = {"seconds": seconds, "model_rows": done, "topk": exp.topk,
                       "weights": {name: w for _, name, w in exp.as_list(label)}}
    return out


def explain_track(t: dict, lib: str, ref_rows: int, cross_rows: int, seeds: dict[str, int]) -> dict:
    """One track: every preset's runs, and its two references."""
    from bench import bench_musicnn

    model = bench_musicnn._MODEL
    af, lf = _factorizations(t["track"], lib)
    tag = t["explained"][0]
    label = model.classes.index(tag)
    runs = {p: [run_preset(model, VIEW, p, af, lf, label, s, measure_fit=s == 0, modality="audio")
                for s in range(seeds[p])] for p in PRESETS}
    refs = _reference(model, af, lf, label, "iid", ref_rows, ("probability", "log_odds"))
    cross = _reference(model, af, lf, label, "orthogonal", cross_rows, ("log_odds",))["log_odds"]
    print(t["track"], tag, {p: round(np.mean([x["seconds"] for x in v]), 1) for p, v in runs.items()},
          f"reference {refs['log_odds']['seconds']:.0f} s", file=sys.stderr, flush=True)
    return {"track_id": t["track"], "kind": t["kind"], "tag": tag, "runs": runs, "refs": refs, "cross": cross}


def score(per_track: list[dict]) -> dict:
    """Jaccard of every run to its track's references, then bench_presets' summaries."""
    for entry in per_track:
        entry["ref_resolved"] = entry["refs"]["log_odds"]["topk"] == "resolved"
        for runs in entry["runs"].values():
            for x in runs:
                own = entry["refs"]["probability" if x["target"] == "probability" else "log_odds"]
                x["jaccard_iid"] = jaccard(set(x["top"]), top_set(own["weights"]))
                x["jaccard_cross"] = jaccard(set(x["top"]), top_set(entry["cross"]["weights"]))
    return {p: summarize(per_track, p) for p in PRESETS}


def main(argv=None) -> dict:
    from concurrent.futures import ProcessPoolExecutor

    from musiclime.models.registry import musiclime_home

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tracks", type=int, default=6)
    ap.add_argument("--workers", type=int, default=2, help="processes, one thread each")
    ap.add_argument("--ref-samples", type=int, default=16000)
    ap.add_argument("--cross-rows", type=int, default=4000, help="model rows of the orthogonal reference")
    ap.add_argument("--library", help="the rendered scores (default: bench_musicnn's, n40-s3 under $MUSICLIME_HOME)")
    ap.add_argument("--out-dir", default=None, help="results folder (default bench/results)")
    ap.add_argument("--smoke", action="store_true", help="2 seeds, small references: checks the script runs")
    ap.add_argument("--summary-only", action="store_true",
                    help="explain nothing: summarize the tracks of the log so far (a run stopped early)")
    args = ap.parse_args(argv)
    out_dir = Path(args.out_dir) if args.out_dir else RESULTS
    lib = args.library or str(musiclime_home() / "scores" / "n40-s3")
    seeds = {p: 2 for p in PRESETS} if args.smoke else SEEDS
    picked = chosen(args.tracks, RESULTS / "musicnn.json")
    log = out_dir / "musicnn-presets.jsonl"
    done = {json.loads(x)["track_id"] for x in log.read_text().splitlines()} if log.is_file() else set()
    todo = [t for t in picked if t["track"] not in done and not args.summary_only]
    with ProcessPoolExecutor(args.workers, initializer=_init_worker) as pool, log.open("a") as f:
        n = len(todo)
        for entry in pool.map(explain_track, todo, [lib] * n, [args.ref_samples] * n, [args.cross_rows] * n,
                              [seeds] * n):
            f.write(json.dumps(entry) + "\n")
            f.flush()
    wanted = {t["track"] for t in picked}
    per_track = [e for e in map(json.loads, log.read_text().splitlines()) if e["track_id"] in wanted]
    summary = score(per_track)
    for p, s in summary.items():
        print(f"{p}: rows {s['model_rows']:.0f}, jaccard iid {s['jaccard_iid']:.2f} cross {s['jaccard_cross']:.2f}, "
              f"stability {s['stability_median']:.2f}/{s['stability_p10']:.2f}", file=sys.stderr)
    result = {"model": "musicnn:MTT", "view": VIEW, "modality": "audio", "tracks": len(per_track),
              "seeds": seeds, "ref_samples": args.ref_samples, "cross_rows": args.cross_rows,
              "cross_design": "orthogonal", "summary": summary,
              "per_track": [{k: v for k, v in e.items() if k not in ("refs", "cross")}
                            | {"ref_seconds": e["refs"]["log_odds"]["seconds"], "ref_topk": e["refs"]["log_odds"]["topk"]}
                            for e in per_track]}
    path = write_result("musicnn_presets" if not args.smoke else "musicnn_presets_smoke", result, out_dir=out_dir)
    print("wrote", path)
    return result


if __name__ == "__main__":
    main()
