"""Explain time per track: the reference loop vs our explainer vs the limit.

Model: a small log-mel CNN audio encoder + bag-of-words lyrics + MLP head (random init;
speed only), 10 s at 16 kHz, 4 stems x 10 segments, ~60-word lyric, num_samples 1000.
The limit is the bare forward rows/s at the best batch size over (1, 4, 16, 64, 256).

    python bench/bench_core.py [--num-samples 1000] [--repeats 3]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import forward_limit, synthetic_track, timed_interleaved, write_result  # noqa: E402
from bench.reference import reference_explain  # noqa: E402
from musiclime import AudioFactorization, LyricsFactorization, MusicLIME  # noqa: E402
from musiclime.explainer import auto_batch_size  # noqa: E402
from musiclime.models import BagOfWordsEncoder, LateFusionClassifier, LogMelCNN  # noqa: E402


class PlainModel:
    """The same network seen only through predict_proba (no late-fusion reuse)."""

    def __init__(self, net: LateFusionClassifier):
        self.net, self.classes, self.sample_rate = net, net.classes, net.sample_rate

    def predict_proba(self, audio, lyrics):
        return self.net.predict_proba(audio, lyrics)


def build_model(sample_rate: int = 16000, seed: int = 0) -> LateFusionClassifier:
    torch.manual_seed(seed)
    return LateFusionClassifier(LogMelCNN(sample_rate), BagOfWordsEncoder(),
                                ["c0", "c1", "c2", "c3", "c4"], sample_rate).eval()


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--num-samples", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args(argv)
    sr = 16000
    stems, lyric = synthetic_track(sr, args.seconds)
    net = build_model(sr)
    plain = PlainModel(net)
    af, lf = AudioFactorization(stems, sr), LyricsFactorization(lyric)
    n = args.num_samples

    explainer = MusicLIME(num_samples=n, seed=0)
    masks = explainer.plan(af, lf).masks
    ready_audio = af.compose(masks[:256, :af.n_features])
    ready_texts = lf.compose(masks[:256, af.n_features:])
    limit = forward_limit(net.predict_proba, ready_audio, ready_texts)

    secs, outs = timed_interleaved({
        "reference_loop": lambda: reference_explain(plain, stems, 10, lyric, n, label=0),
        "ours_plain": lambda: explainer.explain(plain, af, lf, labels=[0]),
        "ours_late_fusion": lambda: explainer.explain(net, af, lf, labels=[0])}, args.repeats)
    t_ref, t_plain, t_late = secs["reference_loop"], secs["ours_plain"], secs["ours_late_fusion"]
    exp_plain, exp_late = outs["ours_plain"], outs["ours_late_fusion"]
    result = {
        "model": "logmel-cnn + bag-of-words + MLP (random init)", "sample_rate": sr,
        "seconds": args.seconds, "num_samples": n, "n_features": af.n_features + lf.n_features,
        "auto_batch_size": auto_batch_size("cpu"),
        "limit": limit,
        "seconds_per_track": {"reference_loop": t_ref, "ours_plain": t_plain, "ours_late_fusion": t_late},
        "rows_per_s": {"reference_loop": n / t_ref, "ours_plain": n / t_plain, "ours_late_fusion": n / t_late},
        "limit_ratio": {"reference_loop": n / t_ref / limit["rows_per_s"],
                        "ours_plain": n / t_plain / limit["rows_per_s"],
                        "ours_late_fusion": n / t_late / limit["rows_per_s"]},
        "speedup_vs_reference": {"ours_plain": t_ref / t_plain, "ours_late_fusion": t_ref / t_late},
        "ours_stage_seconds": exp_plain.timings,
        "model_rows": {"ours_plain": exp_plain.model_rows, "ours_late_fusion": exp_late.model_rows},
    }
    path = write_result("core", result)
    for k in ("limit_ratio", "speedup_vs_reference", "seconds_per_track"):
        print(k, {a: round(b, 3) for a, b in result[k].items()})
    print("limit", round(limit["rows_per_s"], 1), "rows/s at batch", limit["best_batch"],
          {k: round(v, 1) for k, v in limit["per_batch_rows_per_s"].items()})
    print("wrote", path)
    return result


if __name__ == "__main__":
    main()
