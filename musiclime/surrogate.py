"""The local linear surrogate: a pure function of (masks, probabilities, label).

Numerically the same as ``lime.lime_base.LimeBase.explain_instance_with_data`` with the
kernel ``sqrt(exp(-d^2 / width^2))`` on the cosine distance of each mask to row 0.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import sklearn.metrics
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import Ridge, lars_path

from musiclime.choices import Choice


class FeatureSelection(Choice):
    """lime's feature-selection modes."""
    AUTO = "auto"
    NONE = "none"
    FORWARD_SELECTION = "forward_selection"
    HIGHEST_WEIGHTS = "highest_weights"
    LASSO_PATH = "lasso_path"



@dataclass(frozen=True)
class SurrogateFit:
    """One label's local surrogate.

    Attributes:
        intercept: the Ridge intercept.
        weights: ``[(feature_index, weight), ...]`` of the selected features, by |weight|
            descending (ties keep selection order, as lime's ``sorted`` does).
        score: weighted R^2 of the surrogate on the samples.
        local_pred: the surrogate's prediction for row 0 (the unperturbed input).
    """
    intercept: float
    weights: list[tuple[int, float]]
    score: float
    local_pred: float


def kernel(distances: np.ndarray, kernel_width: float) -> np.ndarray:
    """LIME's exponential kernel, ``sqrt(exp(-d^2 / width^2))``."""
    return np.sqrt(np.exp(-(distances ** 2) / kernel_width ** 2))


def mask_distances(masks: np.ndarray, distance: str = "cosine") -> np.ndarray:
    """Distance of every mask row to row 0, ``[N]``, as lime computes it."""
    data = np.asarray(masks)
    return sklearn.metrics.pairwise_distances(data, data[0].reshape(1, -1), metric=distance).ravel()


def _forward_selection(data, labels, weights, num_features) -> np.ndarray:
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
    coef = Ridge(alpha=0.01, fit_intercept=True).fit(data, labels, sample_weight=weights).coef_
    weighted = coef * data[0]
    ranked = sorted(zip(range(data.shape[1]), weighted), key=lambda x: np.abs(x[1]), reverse=True)
    return np.array([i for i, _ in ranked[:num_features]], dtype=np.int64)


def _lasso_path(data, labels, weights, num_features) -> np.ndarray:
    wdata = (data - np.average(data, axis=0, weights=weights)) * np.sqrt(weights[:, None])
    wlabels = (labels - np.average(labels, weights=weights)) * np.sqrt(weights)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        _, _, coefs = lars_path(wdata, wlabels, method="lasso", verbose=False)
    nonzero = np.arange(wdata.shape[1])
    for i in range(len(coefs.T) - 1, 0, -1):
        nonzero = coefs.T[i].nonzero()[0]
        if len(nonzero) <= num_features:
            break
    return np.asarray(nonzero, dtype=np.int64)


def select_features(data: np.ndarray, labels: np.ndarray, weights: np.ndarray,
                    num_features: int, method: "str | FeatureSelection") -> np.ndarray:
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
                  feature_selection: "str | FeatureSelection" = "auto", distance: str = "cosine",
                  alpha: float = 1.0, distances: np.ndarray | None = None) -> SurrogateFit:
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
    y = probs[:, label]
    with warnings.catch_warnings():
        # alpha=0 fits in forward selection on constant columns are singular by design
        warnings.simplefilter("ignore")
        used = select_features(data, y, sample_weight, k, feature_selection)
        model = Ridge(alpha=alpha, fit_intercept=True)
        model.fit(data[:, used], y, sample_weight=sample_weight)
        score = model.score(data[:, used], y, sample_weight=sample_weight)
        local_pred = model.predict(data[0, used].reshape(1, -1))
    weights = sorted(zip(used.tolist(), model.coef_.tolist()), key=lambda x: np.abs(x[1]), reverse=True)
    return SurrogateFit(float(model.intercept_), [(int(i), float(w)) for i, w in weights],
                        float(score), float(np.ravel(local_pred)[0]))
