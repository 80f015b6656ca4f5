"""``num_samples="auto"``: draw the design's rounds until the explanation's top-k is
settled, judged on the very surrogate that is written.

The rule is tie-aware (after S-LIME, Zhou et al., KDD 2021): after each round, for every
explained label, the k-th and (k+1)-th largest |weight| are compared with their standard
errors (:func:`musiclime.surrogate.weight_standard_errors`). Sampling stops when the gap
is positive with ``confidence`` (the top-k is *resolved*), or when even the gap's upper
confidence bound is below ``tie_tolerance`` of the k-th weight (the two are *tied*: more
samples would only order two equal features), or at the design's last round
(*unresolved*).
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from musiclime.runner import ModelRunner, OutputCache
from musiclime.surrogate import UNRESOLVED

if TYPE_CHECKING:
    from musiclime.explainer import MusicLIME, Plan
    from musiclime.explanation import Explanation

@dataclass(frozen=True)
class Adaptive:
    """Where ``num_samples="auto"`` settled: the final plan, its probabilities, and the
    explanation fitted on it (``model_rows`` over all rounds, ``topk``, ``rounds``)."""
    plan: Plan
    probs: np.ndarray
    explanation: Explanation


def sample_until_resolved(explainer: MusicLIME, model, af, lf,
                          labels: Sequence[int] | Callable[[np.ndarray], Sequence[int]] | None = None,
                          top_labels: int | None = 1, modality: str = "both", seed: int | None = None,
                          progress=None) -> Adaptive:
    """Grow the samples round by round (:meth:`MusicLIME.rounds`; each round extends the
    last, and model outputs already computed are reused) until :func:`musiclime.surrogate.topk_state` is not
    ``unresolved`` or the rounds run out.

    ``labels`` may be a function of the unperturbed probabilities ``[C]`` (the pipeline
    knows which labels it explains only once the model has seen the track).
    """
    runner, cache, rounds = ModelRunner(model, explainer.batch_size), OutputCache(), []
    timings = {"plan_s": 0.0, "predict_s": 0.0, "fit_s": 0.0}
    design = explainer.design_for(model)
    for size in explainer.rounds(af, lf, modality, model):
        t1 = time.perf_counter()
        plan = explainer.plan(af, lf, modality, seed, design=design, size=size)
        t2 = time.perf_counter()
        probs, _ = runner.predict(af, lf, plan.masks, progress, cache)
        t3 = time.perf_counter()
        chosen = labels(probs[0]) if callable(labels) else labels
        exp = explainer.fit(plan, probs, model.classes, chosen, top_labels, model_rows=cache.rows_computed)
        timings["plan_s"] += t2 - t1
        timings["predict_s"] += t3 - t2
        timings["fit_s"] += time.perf_counter() - t3
        rounds.append((len(plan.masks), cache.rows_computed, exp.separation))
        if exp.topk != UNRESOLVED:
            break
    exp = dataclasses.replace(exp, rounds=tuple(rounds), timings=timings)
    return Adaptive(plan, probs, exp)
