"""Held-out accuracy and macro-F1 of audio-only, lyrics-only and multimodal default models
on the demo library, for genre and emotion, over several training seeds.

    python bench/bench_models.py [--tracks 400] [--seeds 0 1 2] [--epochs 30]

Writes bench/results/models.json and bench/results/models.md (and each run's
evaluation.parquet/.md under the work directory).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import RESULTS, write_result  # noqa: E402
from musiclime.evaluation import evaluate_models, markdown_table  # noqa: E402
from musiclime.library import make_library  # noqa: E402
from musiclime.training import train_default  # noqa: E402

MODALITIES = ("both", "audio", "lyrics")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tracks", type=int, default=400)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--tasks", nargs="+", default=["genre", "emotion"])
    ap.add_argument("--work", default=None, help="directory for the library and checkpoints")
    args = ap.parse_args(argv)
    work = Path(args.work or tempfile.mkdtemp(prefix="musiclime-bench-models-"))
    lib = work / f"library-{args.tracks}"
    make_library(lib, args.tracks, seed=0)
    runs = []
    for task in args.tasks:
        for seed in args.seeds:
            specs = []
            for modality in MODALITIES:
                out = work / "models" / f"{task}-{modality}-{seed}"
                if not (out / "config.json").is_file():
                    train_default(lib, task, modality, out, epochs=args.epochs, seed=seed, verbose=False)
                specs.append(str(out))
            table, md = evaluate_models(lib, task, specs, "test", work / "eval" / f"{task}-{seed}")
            for r in table.to_pylist():
                runs.append(dict(r, seed=seed))
                print(task, r["modality"], seed, round(r["macro_f1"], 3), flush=True)
    summary = []
    for task in args.tasks:
        for modality in MODALITIES:
            f1 = [r["macro_f1"] for r in runs if r["task"] == task and r["modality"] == modality]
            acc = [r["accuracy"] for r in runs if r["task"] == task and r["modality"] == modality]
            summary.append(dict(task=task, modality=modality, macro_f1=statistics.mean(f1),
                                macro_f1_std=statistics.pstdev(f1), accuracy=statistics.mean(acc),
                                seeds=len(f1), n_test=runs[0]["n"]))
    mean = {(s["task"], s["modality"]): s["macro_f1"] for s in summary}
    checks = {}
    for task in args.tasks:
        checks[f"{task}: multimodal > audio-only"] = mean[(task, "both")] > mean[(task, "audio")]
        checks[f"{task}: multimodal > lyrics-only"] = mean[(task, "both")] > mean[(task, "lyrics")]
    if "emotion" in args.tasks:
        checks["emotion: audio-only > lyrics-only"] = mean[("emotion", "audio")] > mean[("emotion", "lyrics")]
    md = markdown_table(summary, ["task", "modality", "macro_f1", "macro_f1_std", "accuracy", "seeds", "n_test"])
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "models.md").write_text(md)
    path = write_result("models", {"tracks": args.tracks, "epochs": args.epochs, "seeds": args.seeds,
                                   "summary": summary, "runs": runs, "checks": checks})
    print(md)
    print(checks)
    print("wrote", path)
    return {"summary": summary, "checks": checks}


if __name__ == "__main__":
    main()
