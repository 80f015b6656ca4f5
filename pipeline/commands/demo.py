"""``musiclime demo``: explain a few generated tracks in-process and print their top features."""
from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tracks", type=int, default=3, help="generated tracks to explain")
    p.add_argument("--num-samples", type=int, default=500, help="perturbations per track")
    p.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from musiclime import AudioFactorization, LyricsFactorization, MusicLIME
    from musiclime.demo_rule import PlantedRuleModel, planted_track
    model = PlantedRuleModel()
    explainer = MusicLIME(num_samples=args.num_samples, seed=args.seed)
    rng = np.random.default_rng(args.seed)
    for i in range(args.tracks):
        stems, lyrics, truth = planted_track(rng, model.sample_rate)
        exp = explainer.explain(model, AudioFactorization(stems, model.sample_rate),
                                LyricsFactorization(lyrics), top_labels=1)
        print(f"track {i}: planted {truth}")
        print(exp.to_text(k=5))
        print()
    return 0
