"""The 16,000-sample i.i.d. reference explanations of ``bench/bench_sampling.py``, cached.

The reference is the best available estimate of what the surrogate estimates: per held-out
track, the true label's weights of every feature from 16,000 i.i.d. masks (seed 10,000,
``--design iid``), for each surrogate target (the probability, the paper's; the log-odds,
``--target auto``'s) fitted to the same predictions. They are the expensive part of the
benchmark (32,000 encoder passes a track), so each is computed once and kept in
``bench/results/sampling_references.json``, keyed by task, model hash, samples, target
(the probability's key has no suffix) and track; a rerun computes only what is missing.

    python bench/sampling_reference.py [--tracks 10] [--samples 16000] [--target log_odds]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import RESULTS, add_demo_arguments, demo_assets, machine, update_json  # noqa: E402

CACHE = RESULTS / "sampling_references.json"
REF_SEED = 10_000
TARGETS = ("probability", "log_odds")


def store_key(task: str, ckpt: str, samples: int, target: str) -> str:
    return f"{model_key(task, ckpt)}:{samples}" + ("" if target == "probability" else f":{target}")


def held_out(lib: Path, n: int) -> list[dict]:
    import pyarrow.parquet as pq
    return [r for r in pq.read_table(lib / "catalogue.parquet").to_pylist() if r["split"] == "test"][:n]


def model_key(task: str, ckpt: str) -> str:
    from musiclime.models.registry import folder_hash
    return f"{task}:{folder_hash(Path(ckpt))[:16]}"


def load(path: Path = CACHE) -> dict:
    return json.loads(path.read_text()) if path.exists() else {"references": {}}


def save(path: Path, entries: dict[str, dict[str, dict]]) -> None:
    """Merge ``{store key: {track_id: reference}}`` into the cache file (one process per
    task can compute references side by side)."""
    def merge(cache):
        cache = cache or {"references": {}}
        for key, tracks in entries.items():
            cache["references"].setdefault(key, {}).update(tracks)
        cache["machine"] = machine()
        return cache
    update_json(path, merge, indent=1)


def references(lib: Path, task: str, ckpt: str, rows: list[dict], samples: int = 16000,
               path: Path = CACHE, log=print, target: str = "probability") -> dict[str, dict]:
    """``{track_id: {"label": int, "weights": {feature_name: weight}, ...}}`` for ``rows``
    and ``target``, computing (and caching, for every target at once: one set of
    predictions) the ones not cached yet."""
    from musiclime import MusicLIME
    from musiclime.library import track_factorizations
    from musiclime.models import load_checkpoint
    cache = load(path)
    keys = {t: store_key(task, ckpt, samples, t) for t in TARGETS}
    stores = {t: cache["references"].setdefault(keys[t], {}) for t in TARGETS}
    store = stores[target]
    missing = [r for r in rows if r["track_id"] not in store]
    if missing:
        model = load_checkpoint(ckpt)
        for r in missing:
            af, lf = track_factorizations(lib, r, model.sample_rate)
            label = model.classes.index(r[task])
            t0 = time.perf_counter()
            ex = MusicLIME(num_samples=samples, design="iid", seed=REF_SEED)
            plan = ex.plan(af, lf, model=model)
            probs, rows_done = ex.predict(model, af, lf, plan.masks)
            seconds = time.perf_counter() - t0
            new = [t for t in TARGETS if r["track_id"] not in stores[t]]
            for t in new:
                ex = MusicLIME(num_samples=samples, design="iid", seed=REF_SEED, target=t)
                exp = ex.fit(plan, probs, model.classes, labels=[label], model_rows=rows_done)
                stores[t][r["track_id"]] = {"label": label, "seconds": seconds, "model_rows": exp.model_rows,
                                            "weights": {name: w for _, name, w in exp.as_list(label)},
                                            "score": exp.score[label], "topk": exp.topk}
            save(path, {keys[t]: {r["track_id"]: stores[t][r["track_id"]]} for t in new})
            log(f"reference {task} {r['track_id']}: {seconds:.0f} s", flush=True)
    return {r["track_id"]: store[r["track_id"]] for r in rows}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_demo_arguments(ap)
    ap.add_argument("--tracks", type=int, default=10)
    ap.add_argument("--samples", type=int, default=16000)
    ap.add_argument("--target", choices=TARGETS, default="probability")
    args = ap.parse_args(argv)
    lib, models = demo_assets(args)
    rows = held_out(lib, args.tracks)
    for task, ckpt in models:
        references(lib, task, ckpt, rows, args.samples, target=args.target)


if __name__ == "__main__":
    main()
