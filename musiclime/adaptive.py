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
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import TYPE_CHECKING

import numpy as np

from musiclime.runner import ModelRunner, OutputCache

if TYPE_CHECKING:
    from musiclime.explainer import MusicLIME, Plan
    from musiclime.explanation import Explanation
    from musiclime.surrogate import SurrogateFit

RESOLVED, TIED, UNRESOLVED = "resolved", "tied", "unresolved"


def topk_state(fits: Iterable[SurrogateFit], k: int, confidence: float = 0.95,
               tie_tolerance: float = 0.05) -> tuple[str, float]:
    """``(state, separation)`` of the top-``k`` over every label's fit: ``resolved`` when
    each label's k-th weight stands above its (k+1)-th by at least ``z(confidence)``
    standard errors of the gap, ``tied`` when some label's gap is, with that confidence,
    under ``tie_tolerance`` of its k-th |weight| and the others are resolved or tied,
    else ``unresolved``. ``separation`` is the smallest gap in standard errors."""
    z = NormalDist().inv_cdf(confidence)
    states, seps = [], []
    for fit in fits:
        sep = fit.topk_separation(k)
        seps.append(sep)
        if sep >= z:
            states.append(RESOLVED)
            continue
        if k < len(fit.weights) and len(fit.se) == len(fit.weights) and np.isfinite(sep):
            kth, nxt = abs(fit.weights[k - 1][1]), abs(fit.weights[k][1])
            upper = (kth - nxt) + z * float(np.hypot(fit.se[k - 1], fit.se[k]))
            if upper < tie_tolerance * kth:
                states.append(TIED)
                continue
        states.append(UNRESOLVED)
    if not states:
        return RESOLVED, float("inf")
    state = UNRESOLVED if UNRESOLVED in states else (TIED if TIED in states else RESOLVED)
    finite = [s for s in seps if not np.isnan(s)]
    return state, (min(finite) if len(finite) == len(seps) else float("nan"))


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
    last, and model outputs already computed are reused) until :func:`topk_state` is not
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
