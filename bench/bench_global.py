"""Do the global importances reproduce the demo library's planted design?

For each task, explains held-out demo tracks with a trained multimodal default model
through the real pipeline (local Ray, provided stems), aggregates, and reports per class:
the audio/lyrics share, where the planted stem ranks among stems, and how many of the
class's top words are planted genre/emotion words.

    python bench/bench_global.py --library LIB --model genre=CKPT --model emotion=CKPT [--tracks 40]
    python bench/bench_global.py --fresh 100 --model ...   # a new library (seed 1): all held out

Per class, words are ranked by mean |weight| (the reference's global average importance)
and by mean signed weight (what pushes towards the class); both are reported.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import add_demo_arguments, demo_assets, write_result  # noqa: E402

PLANTED_STEM = {"genre": "drums", "emotion": "other"}


def main(argv=None) -> dict:
    import polars as pl
    import pyarrow as pa
    import pyarrow.parquet as pq

    from musiclime.library import EMOTION_WORDS, GENRE_WORDS
    from pipeline.catalogue import read_catalogue
    from pipeline.config import ExplainConfig
    from pipeline.driver import run_explain
    from pipeline.global_importance import aggregate, write_global_importance
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_demo_arguments(ap)
    ap.add_argument("--fresh", type=int, default=None,
                    help="generate a new demo library of this many tracks (seed --fresh-seed) and explain all of it")
    ap.add_argument("--fresh-seed", type=int, default=1)
    ap.add_argument("--tracks", type=int, default=40)
    ap.add_argument("--num-samples", type=int, default=300)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    out = Path(args.out or tempfile.mkdtemp(prefix="musiclime-global-"))
    library, models = demo_assets(args)
    if args.fresh:
        from musiclime.library import make_library
        fresh = out / "fresh-library"
        make_library(fresh, args.fresh, seed=args.fresh_seed)
        rows = read_catalogue(fresh / "catalogue.parquet")  # a new seed: every track is new to the model
    else:
        rows = [r for r in read_catalogue(library / "catalogue.parquet") if r["split"] == "test"][:args.tracks]
    for r in rows:
        r.pop("catalogue_row")
    cat = out / "catalogue.parquet"
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), cat)
    result = {"tracks": len(rows), "num_samples": args.num_samples, "tasks": {},
              "library": f"fresh, seed {args.fresh_seed}" if args.fresh else "test split"}
    for task, ckpt in models:
        s = run_explain(ExplainConfig(catalogue=str(cat), model=ckpt, out=str(out), separator="provided",
                                      num_samples=args.num_samples, run_id=task, labels="true", label_column=task),
                        show_progress=False)
        assert s.exit_code == 0, s.message
        vocab = GENRE_WORDS if task == "genre" else EMOTION_WORDS
        g = aggregate(out, runs=[task]).filter(pl.col("label_source") == "true")
        per_class = {}
        for label in sorted(set(g["label"])):
            gc = g.filter(pl.col("label") == label)
            stems = gc.filter(pl.col("level") == "stem").sort("mean_abs_weight", descending=True)["stem"].to_list()
            words = gc.filter(pl.col("level") == "word").sort("mean_abs_weight", descending=True)["token"].to_list()[:5]
            pushing = gc.filter(pl.col("level") == "word").sort("mean_weight", descending=True)["token"].to_list()[:5]
            segs = gc.filter(pl.col("level") == "stem_segment").sort("mean_abs_weight", descending=True)
            top_cells = [f"{a}@{b}" for a, b in zip(segs["stem"].to_list()[:5], segs["segment"].to_list()[:5])]
            share = gc.filter((pl.col("level") == "modality") & (pl.col("modality") == "audio"))["share_mean"][0]
            per_class[label] = {"audio_share": share, "lyrics_share": 1 - share, "stems_ranked": stems,
                                "planted_stem_rank": stems.index(PLANTED_STEM[task]) + 1,
                                "top5_words": words, "planted_in_top5_words": sum(w in vocab[label] for w in words),
                                "top5_words_by_mean_weight": pushing,
                                "planted_in_top5_words_by_mean_weight": sum(w in vocab[label] for w in pushing),
                                "top5_stem_segments": top_cells}
            print(task, label, f"audio {share:.2f}", "stems", stems, "words", words, flush=True)
        write_global_importance(out, aggregate(out, runs=[task]))
        result["tasks"][task] = {"per_class": per_class,
                                 "mean_audio_share": sum(c["audio_share"] for c in per_class.values()) / len(per_class)}
    result["out"] = str(out)
    print("wrote", write_result("global", result))
    return result


if __name__ == "__main__":
    main()
