"""The local linear surrogate: a pure function of (masks, probabilities, label).

Numerically the same as ``lime.lime_base.LimeBase.explain_instance_with_data`` with the
kernel ``sqrt(exp(-d^2 / width^2))`` on the cosine distance of each mask to row 0.
"""
from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from musiclime.choices import Choice


class FeatureSelection(Choice):
    """lime's feature-selection modes."""
    AUTO = "auto"
    NONE = "none"
    FORWARD_SELECTION = "forward_selection"
    HIGHEST_WEIGHTS = "highest_weights"
    LASSO_PATH = "lasso_path"



class Target(Choice):
    """What the surrogate fits: the explained class's probability (the reference's), or
    its log-odds ``log(p / (1 - p))`` with ``p`` clipped to ``[1e-6, 1 - 1e-6]`` (SHAP's
    logit link: a confident model's saturated probability barely moves when features are
    removed, its log-odds does). ``auto`` is resolved by :func:`resolve_target`."""
    AUTO = "auto"
    PROBABILITY = "probability"
    LOG_ODDS = "log_odds"


# bench/bench_target.py: log-odds beat probability on R^2, stability, AOPC and planted
# precision for both demo tasks, as trained and made confident (docs/benchmarks.md table).
AUTO_TARGET = Target.LOG_ODDS
LOGIT_CLIP = 1e-6


def resolve_target(target: str | Target, design: str = "auto") -> Target:
    """``auto`` -> :data:`AUTO_TARGET`, except under the reference's ``iid`` design, which
    keeps the reference's probability (``--design iid`` reproduces the paper exactly)."""
    target = Target.parse(target)
    if target is not Target.AUTO:
        return target
    return Target.PROBABILITY if design == "iid" else AUTO_TARGET


def target_values(probs: np.ndarray, label: int, target: str | Target = Target.PROBABILITY) -> np.ndarray:
    """``[N]`` values the surrogate of ``label`` fits."""
    target = resolve_target(target)
    p = np.asarray(probs, dtype=np.float64)[:, label]
    if target is Target.LOG_ODDS:
        p = np.clip(p, LOGIT_CLIP, 1 - LOGIT_CLIP)
        return np.log(p) - np.log1p(-p)
    return p


@dataclass(frozen=True)
class SurrogateFit:
    """One label's local surrogate.

    Attributes:
        intercept: the Ridge intercept.
        weights: ``[(feature_index, weight), ...]`` of the selected features, by |weight|
            descending (ties keep selection order, as lime's ``sorted`` does).
        score: weighted R^2 of the surrogate on the samples.
        local_pred: the surrogate's prediction for row 0 (the unperturbed input).
        se: standard error of each weight, in the order of ``weights``
            (:func:`weight_standard_errors`; NaN where the samples cannot tell).
    """
    intercept: float
    weights: list[tuple[int, float]]
    score: float
    local_pred: float
    se: tuple[float, ...] = ()

    def topk_separation(self, k: int) -> float:
        """How far the k-th largest |weight| stands above the (k+1)-th, in standard errors
        of their difference (inf when there is no (k+1)-th feature, NaN when unknown)."""
        if k >= len(self.weights):
            return float("inf")
        if len(self.se) != len(self.weights):
            return float("nan")
        gap = abs(self.weights[k - 1][1]) - abs(self.weights[k][1])
        sd = float(np.hypot(self.se[k - 1], self.se[k]))
        return float("inf") if sd == 0 and gap > 0 else (gap / sd if sd > 0 else float("nan"))


def weight_standard_errors(data: np.ndarray, y: np.ndarray, sample_weight: np.ndarray, coef: np.ndarray,
                           intercept: float, alpha: float,
                           clusters: list[tuple[np.ndarray, np.ndarray | None]] | None = None) -> np.ndarray:
    """Cluster-robust sandwich standard errors of a weighted Ridge fit's coefficients, ``[K]``.

    ``V = A^-1 M A^-1`` with ``A = Xc' W Xc + alpha I`` (``Xc`` the weighted-centred
    design) and ``M`` the outer products of the score ``sum_i w_i xc_i e_i`` summed within
    each independent unit of the design (``clusters``: ``[(unit id per row [N], the
    columns that side draws or None)]``; rows alone for i.i.d. masks, a mask and its
    complement for folded designs), scaled by ``G / (G - K - 1)`` for ``G`` units
    and ``K`` coefficients (so that an orthogonal design's residual variance is
    unbiased). Crossed designs (audio x lyrics half-masks) pass two unit arrays and get the
    two-way estimate ``M_audio + M_lyrics - M_cell`` (Cameron, Gelbach and Miller), where
    each side's correction counts that side's own columns only. A side marked balanced
    (a third element True: an orthogonal half-design) first removes from its units' scores
    of the other side's coefficients the part linear in the unit's half-mask, which such a
    design averages out exactly. NaN where a side has
    fewer units than coefficients (the samples cannot estimate their own error).
    """
    x = np.asarray(data, dtype=np.float64)
    n, k = x.shape
    sw = np.asarray(sample_weight, dtype=np.float64)
    xc = x - np.average(x, axis=0, weights=sw)
    resid = y - (x @ coef + intercept)
    a_inv = np.linalg.pinv(xc.T @ (sw[:, None] * xc) + alpha * np.eye(k))
    scores = xc * (sw * resid)[:, None]
    units = clusters or [(np.arange(n), None)]

    def meat(ids: np.ndarray, cols: np.ndarray | None, balanced: bool = False) -> np.ndarray:
        _, first, ids = np.unique(ids, return_index=True, return_inverse=True)
        g = int(ids.max()) + 1
        summed = np.zeros((g, k))
        np.add.at(summed, ids.ravel(), scores)
        kk = k if cols is None else int(np.sum(cols))
        if balanced and cols is not None and kk:
            # the side's design averages any part of a unit's score that is linear in the
            # unit's own half-mask exactly (balanced, orthogonal columns): only the rest varies
            # (the other side's coefficients: a unit's own coefficients are odd in it)
            own = np.asarray(cols, bool)
            z = np.column_stack([np.ones(g), x[first][:, own]])
            other = summed[:, ~own]
            summed[:, ~own] = other - z @ np.linalg.lstsq(z, other, rcond=None)[0]
        scale = g / (g - kk - 1) if g > kk + 1 else np.nan
        return scale * (summed.T @ summed)

    if len(units) == 1:
        var = np.diag(a_inv @ meat(*units[0]) @ a_inv)
    else:
        bal_a: list
        bal_l: list
        (ca, cols_a, *bal_a), (cl, cols_l, *bal_l) = units
        cells = np.asarray(ca, dtype=np.int64) * (int(np.max(cl)) + 1) + np.asarray(cl)
        va = np.diag(a_inv @ meat(ca, cols_a, bool(bal_a and bal_a[0])) @ a_inv)
        vl = np.diag(a_inv @ meat(cl, cols_l, bool(bal_l and bal_l[0])) @ a_inv)
        vc = np.diag(a_inv @ meat(cells, None) @ a_inv)
        var = np.maximum(va + vl - vc, np.maximum(va, vl))
    return np.sqrt(np.clip(var, 0, None))


def kernel(distances: np.ndarray, kernel_width: float) -> np.ndarray:
    """LIME's exponential kernel, ``sqrt(exp(-d^2 / width^2))``."""
    return np.sqrt(np.exp(-(distances ** 2) / kernel_width ** 2))


def mask_distances(masks: np.ndarray, distance: str = "cosine") -> np.ndarray:
    """Distance of every mask row to row 0, ``[N]``, as lime computes it."""
    data = np.asarray(masks)
    import sklearn.metrics  # scikit-learn loads with the first fit, not with the options
    return sklearn.metrics.pairwise_distances(data, data[0].reshape(1, -1), metric=distance).ravel()


def _forward_selection(data, labels, weights, num_features) -> np.ndarray:
    from sklearn.linear_model import Ridge
    clf = Ridge(alpha=0, fit_intercept=True)
    used: list[int] = []
    for _ in range(min(num_features, data.shape[1])):
        best, best_score = 0, -100000000.0
        for f in range(data.shape[1]):
            if f in used:
                continue
            cols = used + [f]
            clf.fit(data[:, cols], labels, sample_weight=weights)
            score = clf.score(data[:, cols], labels, sample_weight=weights)
            if score > best_score:
                best, best_score = f, score
        used.append(best)
    return np.array(used, dtype=np.int64)


def _highest_weights(data, labels, weights, num_features) -> np.ndarray:
    from sklearn.linear_model import Ridge
    coef = Ridge(alpha=0.01, fit_intercept=True).fit(data, labels, sample_weight=weights).coef_
    weighted = coef * data[0]
    ranked = sorted(zip(range(data.shape[1]), weighted), key=lambda x: np.abs(x[1]), reverse=True)
    return np.array([i for i, _ in ranked[:num_features]], dtype=np.int64)


def _lasso_path(data, labels, weights, num_features) -> np.ndarray:
    wdata = (data - np.average(data, axis=0, weights=weights)) * np.sqrt(weights[:, None])
    wlabels = (labels - np.average(labels, weights=weights)) * np.sqrt(weights)
    with warnings.catch_warnings():
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import lars_path
        warnings.simplefilter("ignore", ConvergenceWarning)
        _, _, coefs = lars_path(wdata, wlabels, method="lasso", verbose=False)
    nonzero = np.arange(wdata.shape[1])
    for i in range(len(coefs.T) - 1, 0, -1):
        nonzero = coefs.T[i].nonzero()[0]
        if len(nonzero) <= num_features:
            break
    return np.asarray(nonzero, dtype=np.int64)


def select_features(data: np.ndarray, labels: np.ndarray, weights: np.ndarray,
                    num_features: int, method: str | FeatureSelection) -> np.ndarray:
    """Indices of the features the surrogate is fitted on (lime's selection rules)."""
    method = FeatureSelection.parse(method)
    if method is FeatureSelection.AUTO:
        method = (FeatureSelection.FORWARD_SELECTION if num_features <= 6
                  else FeatureSelection.HIGHEST_WEIGHTS)
    if method is FeatureSelection.NONE:
        return np.arange(data.shape[1])
    if method is FeatureSelection.FORWARD_SELECTION:
        return _forward_selection(data, labels, weights, num_features)
    if method is FeatureSelection.HIGHEST_WEIGHTS:
        return _highest_weights(data, labels, weights, num_features)
    return _lasso_path(data, labels, weights, num_features)


def fit_surrogate(masks, probs, label: int, kernel_width: float = 25, num_features: int | None = None,
                  feature_selection: str | FeatureSelection = "auto", distance: str = "cosine",
                  alpha: float = 1.0, distances: np.ndarray | None = None,
                  target: str | Target = Target.PROBABILITY,
                  clusters: list[tuple[np.ndarray, np.ndarray | None]] | None = None) -> SurrogateFit:
    """Fit the weighted Ridge surrogate of one label.

    Args:
        masks: ``[N, F]`` 0/1 samples; row 0 is the unperturbed input.
        probs: ``[N, C]`` model probabilities of each sample.
        label: column of ``probs`` to explain.
        kernel_width: LIME kernel width (the reference uses 25).
        num_features: features to keep; None keeps all ``F``.
        feature_selection: ``auto`` | ``none`` | ``forward_selection`` |
            ``highest_weights`` | ``lasso_path``.
        distance: metric of ``sklearn.metrics.pairwise_distances`` to row 0.
        alpha: Ridge regularisation of the final fit.
        distances: precomputed ``[N]`` distances (skips recomputing them per label).
        target: ``probability`` (lime's) or ``log_odds`` of the label (:class:`Target`).
        clusters: the design's independent units for the standard errors
            (:func:`weight_standard_errors`); None: every row is one.

    Columns that never vary get weight 0 (Ridge centres them away); they never crash a fit.
    """
    data = np.asarray(masks, dtype=np.float64)
    probs = np.asarray(probs, dtype=np.float64)
    if data.ndim != 2 or probs.ndim != 2 or len(data) != len(probs):
        raise ValueError(f"masks [N, F] and probs [N, C] must have the same N; got "
                         f"{data.shape} and {probs.shape}")
    if not 0 <= label < probs.shape[1]:
        raise ValueError(f"label {label} is not a column of probs {probs.shape}")
    if data.shape[1] == 0:
        raise ValueError("no features to explain")
    k = data.shape[1] if num_features is None else int(num_features)
    if k < 1:
        raise ValueError(f"num_features must be >= 1, got {num_features}")
    if distances is None:
        distances = mask_distances(data, distance)
    sample_weight = kernel(np.asarray(distances, dtype=np.float64), kernel_width)
    y = target_values(probs, label, target)
    with warnings.catch_warnings():
        # alpha=0 fits in forward selection on constant columns are singular by design
        warnings.simplefilter("ignore")
        used = select_features(data, y, sample_weight, k, feature_selection)
        from sklearn.linear_model import Ridge
        model = Ridge(alpha=alpha, fit_intercept=True)
        model.fit(data[:, used], y, sample_weight=sample_weight)
        score = model.score(data[:, used], y, sample_weight=sample_weight)
        local_pred = model.predict(data[0, used].reshape(1, -1))
        units = [(u[0], None if u[1] is None else np.asarray(u[1])[used], *u[2:]) for u in clusters or []]
        se = weight_standard_errors(data[:, used], y, sample_weight, model.coef_, model.intercept_, alpha, units)
    ranked = sorted(zip(used.tolist(), model.coef_.tolist(), se.tolist()), key=lambda x: np.abs(x[1]), reverse=True)
    return SurrogateFit(float(model.intercept_), [(int(i), float(w)) for i, w, _ in ranked],
                        float(score), float(np.ravel(local_pred)[0]), tuple(float(e) for _, _, e in ranked))


# the top-k of a fit (see topk_state): what num_samples="auto" stops on and tracks record
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
