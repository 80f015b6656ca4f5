"""Explanation validity on a real pretrained model: musicnn (MagnaTagATune) on rendered scores
whose stems are known exactly (musiclime/scores.py: choirs in ``vocals``; string quartets in
``other`` and ``bass``; some with a drum part in ``drums``).

For each track, the tags of its kind that the model predicts (among its top ``--top`` tags)
are explained, audio alone, over the provided stems x 10 segments. A tag's explanation is
*valid* when the stem with the largest share of the tag's supporting weight (the sum of its
features' positive weights) is the stem that makes the sound: vocals for the voice tags,
other or bass for the string tags. No anchor in the product reports this; it is reported
whatever it shows, with the failures listed.

Also the CPU throughput (one thread): tracks per core-hour at each setting.

    python bench/bench_musicnn.py --tracks 40 --shard 0/2 & python bench/bench_musicnn.py --tracks 40 --shard 1/2
    python bench/bench_musicnn.py --tracks 40 --merge 2
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import RESULTS, write_result  # noqa: E402

VOICE = ("choir", "choral", "vocal", "singing")
STRINGS = ("strings", "violin", "cello", "classical")
EXPECTED = {"voice": ("vocals",), "strings": ("other", "bass")}
# the product's defaults (a fixed count: the foldover design, log-odds target) and the paper's
# and the --quality presets (musiclime.presets; "paper" is the paper preset's setting exactly)
SETTINGS = {
    "default": dict(num_samples=1000),
    "paper": dict(num_samples=1000, design="iid", target="probability"),
    "fast": dict(quality="fast"),
    "steady": dict(quality="steady"),
}


def stem_shares(exp, label: int, stems: tuple[str, ...]) -> dict[str, float]:
    """Each stem's share of the label's positive (supporting) audio weight."""
    support = dict.fromkeys(stems, 0.0)
    for modality, name, w in exp.as_list(label):
        if modality == "audio" and w > 0:
            support[name.split("@")[0]] += w
    total = sum(support.values())
    return {s: (v / total if total > 0 else 0.0) for s, v in support.items()}


def explained_tags(probs: np.ndarray, classes: list[str], kind: str, top: int) -> list[tuple[str, str]]:
    """``(group, tag)`` of the track's kind among its ``top`` most probable tags."""
    group, tags = ("voice", VOICE) if kind.startswith("choir") else ("strings", STRINGS)
    ranked = [classes[i] for i in np.argsort(-probs)[:top]]
    return [(group, t) for t in tags if t in ranked]


_MODEL = None


def _init_worker() -> None:
    import torch

    from musiclime.models.musicnn import MusicnnTagger

    global _MODEL
    torch.set_num_threads(1)  # throughput per core: one process per core
    _MODEL = MusicnnTagger("MTT")


def explain_track(r: dict, lib: str, top: int, only: tuple[str, ...] | None = None) -> dict:
    """One track: its top tags, and per setting the explained tags' stem shares and seconds."""
    import soundfile as sf
    import torch

    from musiclime import MusicLIME
    from musiclime.factorization import AudioFactorization, LyricsFactorization
    from musiclime.scores import STEMS

    model = _MODEL
    stems = np.stack([sf.read(Path(lib) / r[f"{s}_path"], dtype="float32")[0] for s in STEMS])
    af = AudioFactorization(stems, 16000, n_segments=10, stem_names=STEMS)
    probs = model.predict_proba(torch.from_numpy(stems.sum(0))[None])[0].numpy()
    tags = explained_tags(probs, model.classes, r["kind"], top)
    out = {
        "track": r["track_id"],
        "kind": r["kind"],
        "piece": r["piece"],
        "top5": [model.classes[i] for i in np.argsort(-probs)[:5]],
        "explained": [t for _, t in tags],
        "settings": {},
    }
    labels = [model.classes.index(t) for _, t in tags]
    for name, kw in SETTINGS.items() if tags else ():
        if only and name not in only:
            continue
        t0 = time.perf_counter()
        exp = MusicLIME(seed=0, **kw).explain(model, af, LyricsFactorization(""), labels=labels, modality="audio")
        seconds = time.perf_counter() - t0
        results = []
        for (group, tag), lab in zip(tags, labels):
            shares = stem_shares(exp, lab, STEMS)
            best = max(shares, key=lambda s: shares[s])
            results.append(
                {
                    "tag": tag,
                    "top_stem": best,
                    "valid": best in EXPECTED[group],
                    "shares": {s: round(v, 3) for s, v in shares.items()},
                }
            )
        out["settings"][name] = {"seconds": seconds, "tags": results}
    print(
        r["track_id"],
        r["kind"],
        out["explained"],
        {n: sum(t["valid"] for t in v["tags"]) for n, v in out["settings"].items()},
        file=sys.stderr,
        flush=True,
    )
    return out


def run(args) -> list[dict]:
    """The explained tracks of this shard (``--shard I/N``: every N-th track from the I-th)."""
    from concurrent.futures import ProcessPoolExecutor

    import pyarrow.parquet as pq

    from musiclime.models.registry import musiclime_home
    from musiclime.scores import make_score_library

    lib = Path(args.library or musiclime_home() / "scores" / f"n{args.tracks}-s{args.seconds:g}")
    rows = pq.read_table(make_score_library(lib, tracks=args.tracks, seconds=args.seconds)).to_pylist()
    i, n = (int(x) for x in args.shard.split("/"))
    rows = rows[i::n]
    path = RESULTS / f"musicnn-shard-{i}.jsonl"
    if args.add:  # more settings on the tracks of the standing result that have tags to explain
        explained = {
            t["track"] for t in json.loads((RESULTS / "musicnn.json").read_text())["tracks_detail"] if t["settings"]
        }
        rows = [r for r in rows if r["track_id"] in explained]
        path = RESULTS / f"musicnn-add-{i}.jsonl"
    done = {json.loads(line)["track"] for line in path.read_text().splitlines()} if path.is_file() else set()
    rows = [r for r in rows if r["track_id"] not in done]  # a shard resumes where it stopped
    with ProcessPoolExecutor(args.workers, initializer=_init_worker) as pool, path.open("a") as f:
        for track in pool.map(
            explain_track, rows, [str(lib)] * len(rows), [args.top] * len(rows), [tuple(args.add or ())] * len(rows)
        ):
            f.write(json.dumps(track) + "\n")  # each track as it ends: a stopped run keeps its tracks
            f.flush()
    return [json.loads(line) for line in path.read_text().splitlines()]


def summarize(tracks: list[dict], args) -> dict:
    out: dict = {
        "tracks": len(tracks),
        "of_tracks": args.tracks,
        "seconds": args.seconds,
        "top": args.top,
        "settings": {},
        "tracks_detail": sorted(tracks, key=lambda t: t["track"]),
    }
    explained = [t for t in tracks if t["settings"]]
    for name in SETTINGS:
        has = [t for t in explained if name in t["settings"]]  # --add may measure a setting on a shard only
        if not has:
            continue
        results = [dict(tag, track=t["track"], piece=t["piece"]) for t in has for tag in t["settings"][name]["tags"]]
        by_tag: dict = {}
        for res in results:
            by_tag.setdefault(res["tag"], {"valid": 0, "of": 0})
            by_tag[res["tag"]]["valid"] += res["valid"]
            by_tag[res["tag"]]["of"] += 1
        sec = float(np.mean([t["settings"][name]["seconds"] for t in has]))
        out["settings"][name] = {
            **SETTINGS[name],
            "tracks": len(has),
            "explained": len(results),
            "valid": sum(r["valid"] for r in results),
            "valid_share": sum(r["valid"] for r in results) / max(1, len(results)),
            "by_tag": dict(sorted(by_tag.items())),
            "seconds_per_track": sec,
            "tracks_per_core_hour": 3600.0 / sec if sec else None,
            "failures": [r for r in results if not r["valid"]],
        }
    out["tracks_without_a_predicted_tag"] = len(tracks) - len(explained)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tracks", type=int, default=40)
    ap.add_argument("--seconds", type=float, default=3.0, help="excerpt length (3 s: one musicnn patch)")
    ap.add_argument("--top", type=int, default=10, help="a tag is 'predicted' when among the track's top N")
    ap.add_argument("--library", help="where the rendered scores go (default: under $MUSICLIME_HOME)")
    ap.add_argument("--workers", type=int, default=2, help="processes, one thread each")
    ap.add_argument("--smoke", action="store_true", help="20 rows per explanation: checks that the script runs")
    ap.add_argument(
        "--shard", default="0/1", help="I/N: every N-th track from the I-th (results/musicnn-shard-I.jsonl, resumed)"
    )
    ap.add_argument("--merge", type=int, metavar="N", help="merge N shards' results into results/musicnn.json")
    ap.add_argument(
        "--add",
        nargs="+",
        choices=list(SETTINGS),
        metavar="SETTING",
        help="run only these settings on the explained tracks of results/musicnn.json "
        "(results/musicnn-add-I.jsonl; --merge adds them)",
    )
    args = ap.parse_args()
    if args.smoke:
        for kw in SETTINGS.values():
            kw["num_samples"] = 20 if "quality" not in kw else kw.get("num_samples", 20)
    if args.merge:
        shards = [RESULTS / f"musicnn-shard-{i}.jsonl" for i in range(args.merge)]
        tracks = [json.loads(line) for p in shards if p.is_file() for line in p.read_text().splitlines()]
        if not tracks:  # only added settings: onto the standing result's tracks
            tracks = json.loads((RESULTS / "musicnn.json").read_text())["tracks_detail"]
        by_id = {t["track"]: t for t in tracks}
        for p in [RESULTS / f"musicnn-add-{i}.jsonl" for i in range(args.merge)]:
            for line in p.read_text().splitlines() if p.is_file() else ():
                added = json.loads(line)
                by_id[added["track"]]["settings"].update(added["settings"])
        result = summarize(tracks, args)
        for name, s in result["settings"].items():
            print(
                f"{name}: {s['valid']}/{s['explained']} valid ({s['valid_share']:.0%}), "
                f"{s['tracks_per_core_hour']:.0f} tracks per core-hour",
                file=sys.stderr,
            )
        print(write_result("musicnn", result))
        return
    print(f"{len(run(args))} tracks in shard {args.shard}", file=sys.stderr)


if __name__ == "__main__":
    main()
